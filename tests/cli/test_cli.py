"""The command line: every command has --help, the core commands run end to end on a tiny
local model, and bad input ends with a one-line error and a non-zero exit."""

import json
import subprocess
import sys

import pytest
from tiny import tiny_model, tiny_tokenizer

COMMANDS = ["architectures", "collect", "merge", "identify", "plot"]


def langneurons(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "langneurons", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = root / "model"
    tiny_model("llama").save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    corpus = root / "corpus"
    corpus.mkdir()
    for lang, text in {"en": "the cat sat on the mat", "fr": "le chat est sur le tapis", "es": "el gato está en la alfombra"}.items():
        (corpus / f"{lang}.txt").write_text("\n".join(f"{text} {i}" for i in range(60)), encoding="utf-8")
    return root


def test_every_command_has_help():
    from typer.testing import CliRunner

    from langneurons.cli import app

    runner = CliRunner()
    for command in COMMANDS:
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, command
        assert "Usage" in result.output


def test_collect_identify_plot_end_to_end(workspace):
    stats = workspace / "stats"
    result = langneurons("collect", "--model", workspace / "model", "--corpus", workspace / "corpus", "-l", "en,fr,es",
                         "--token-budget", "400", "--heldout-budget", "40", "--block-length", "16", "--out", stats,
                         "--no-progress")
    assert result.returncode == 0, result.stderr
    assert {p.name for p in stats.iterdir()} >= {"en.safetensors", "fr.heldout.safetensors", "manifest.json"}
    manifest = json.loads((stats / "manifest.json").read_text())
    assert manifest["token_counts"]["en"] == 390  # 26 blocks x 15 text tokens
    result = langneurons("identify", "-s", stats, "--method", "lape", "-o", workspace / "lape.json", "--top-rate", "0.1")
    assert result.returncode == 0, result.stderr
    assert "lape neurons" in result.stdout
    assert (workspace / "lape_figures" / "neuron_counts.png").stat().st_size > 0
    result = langneurons("identify", "-s", stats, "--method", "act-prob", "-o", workspace / "ap.safetensors", "--no-figures")
    assert result.returncode == 0, result.stderr
    result = langneurons("plot", workspace / "lape.json", "--venn", "en,fr")
    assert result.returncode == 0, result.stderr
    assert (workspace / "lape_figures" / "neuron_venn_en_fr.svg").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["identify", "-s", "missing-folder"], "statistics folder not found"),
        (["collect", "-l", "en,xx", "--model", "missing/model/path"], "unknown language code 'xx'"),
        (["collect", "-l", "en", "--model", "./missing-model"], "model path not found"),
        (["identify", "--method", "magic"], "unknown method 'magic'"),
        (["plot", "missing.json"], "not found"),
    ],
)
def test_bad_input_is_a_one_line_error_with_nonzero_exit(args, message, tmp_path):
    result = langneurons(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
