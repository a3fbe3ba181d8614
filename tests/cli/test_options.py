"""The model options are defined once and reach every command that loads a model."""

import pytest
import typer
from typer.testing import CliRunner

from langneurons.cli import app
from langneurons.cli.options import ModelChoice, model_options

MODEL_FLAGS = ("--model", "--revision", "--dtype", "--device-map", "--load-in-4bit", "--gguf-file")


@pytest.mark.parametrize("command", ["collect", "ppl-matrix", "finetune", "evaluate"])
def test_every_model_loading_command_has_all_model_options(command):
    help_text = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
    for flag in MODEL_FLAGS:
        assert flag in help_text, (command, flag)


def test_the_options_arrive_bundled_as_one_model_choice():
    received = {}
    demo = typer.Typer()

    @demo.command()
    @model_options
    def show(count: int = 1, model: ModelChoice = ModelChoice()) -> None:
        received.update(count=count, model=model)

    result = CliRunner().invoke(demo, ["--count", "3", "-m", "some/model", "--dtype", "bfloat16", "--load-in-4bit"])
    assert result.exit_code == 0, result.output
    assert received == {"count": 3, "model": ModelChoice(name="some/model", dtype="bfloat16", load_in_4bit=True)}
    CliRunner().invoke(demo, [])
    assert received["model"] == ModelChoice()  # the defaults: the embedded model in float32


def test_the_command_line_the_config_and_the_harness_share_one_model_options_class():
    from langneurons.models.loading import ModelOptions
    from langneurons.runner.config import ModelConfig, load_config

    assert ModelChoice is ModelOptions and ModelConfig is ModelOptions
    assert load_config({"languages": ["en"], "model": {"name": "x", "dtype": "bfloat16"}}).model == ModelOptions(
        "x", dtype="bfloat16")


def test_a_command_without_a_model_parameter_is_a_programming_error():
    with pytest.raises(TypeError, match="needs a 'model: ModelChoice' parameter"):
        model_options(lambda count=1: None)
