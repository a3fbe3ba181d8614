"""The stage registry: every study declared once (config section, run, report section, published
files), and a new study joins the runner, the report and ``publish`` by one registry entry."""

import json
from dataclasses import dataclass, fields
from pathlib import Path

from langneurons import registry
from langneurons.runner.config import ExperimentConfig
from langneurons.stage import Stage

PUBLISHED_BEFORE_THE_REGISTRY = {
    "config.yaml", "manifest.json", "report/report.md",
    "identify/*/neurons.json", "identify/*/*.png", "identify/*/*.svg", "identify/*/*_figures/*.png",
    "identify/*/*_figures/*.svg", "identify/*/*.csv",
    "ppxc/*/ppxc.json", "ppxc/*/ppxc.csv", "ppxc/*/ppxc_specificity.csv", "ppxc/*/ppxc.png", "ppxc/*/ppxc.svg",
    "finetune/*/langneurons_finetune.json", "finetune/*/learning_curve.*", "finetune/*/perplexity.json",
    "finetune/*/equal_parameters.json", "lm_eval_ppl/*/perplexity.json",
    "evaluate/*/scores.csv", "evaluate/*/scores.json",
    "results/*.csv", "results/*.json", "results/*.png", "results/*.svg",
    "claims/claims.*", "claims/power.*",
    "stability/*/stability.csv", "stability/*/stability.json", "stability/*/stable.json", "stability/*/*.png",
    "stability/*/*.svg",
    "steering/steering.csv", "steering/steering.json", "steering/*.png", "steering/*.svg",
    "agreement/*.csv", "agreement/*.json", "agreement/*.png", "agreement/*.svg",
    "steering-examples/steering.json", "steering-examples/steering.csv", "steering-examples/examples.json",
}
DIRECTIONS_PUBLISHED = {  # issue 19's directional PPXC, added with the registry
    "direction_ppxc/*/ppxc.json", "direction_ppxc/*/ppxc.csv", "direction_ppxc/*/ppxc_specificity.csv",
    "direction_ppxc/*/ppxc.png", "direction_ppxc/*/ppxc.svg",
}
TARGETS_PUBLISHED = {"claims/targets.*"}  # issue 18's learning targets, a table of the claims stage


def test_every_stage_section_is_a_field_of_the_experiment_config_and_names_are_unique():
    config_fields = {f.name for f in fields(ExperimentConfig)}
    names = [stage.name for stage in registry.STAGES]
    assert len(names) == len(set(names))
    assert all(stage.section is None or stage.section in config_fields for stage in registry.STAGES)


def test_the_runner_order_and_the_report_order():
    assert [s.name for s in registry.STAGES if s.run is not None] == [
        "statistics", "identify", "direction-sets", "stability", "ppxc", "direction_ppxc", "steering", "finetune",
        "evaluation", "lm_eval", "lm_perplexity", "claims"]
    assert [s.name for s in registry.report_order()] == [
        "claims", "identify", "stability", "agreement", "ppxc", "direction_ppxc", "steering", "finetune", "evaluation",
        "lm_eval"]


def test_the_published_files_are_those_published_before_the_registry():
    patterns = registry.published_patterns()
    assert len(patterns) == len(set(patterns)) and set(patterns) == (
        PUBLISHED_BEFORE_THE_REGISTRY | DIRECTIONS_PUBLISHED | TARGETS_PUBLISHED)


@dataclass(frozen=True)
class Toy:
    """A new study as a package would declare it: a run, a report section, published files."""

    @staticmethod
    def run(context) -> None:
        def compute(directory: Path) -> None:
            sets = len(context.neuron_set("lape").languages)
            (directory / "toy.json").write_text(json.dumps({"languages": sets}))

        context.stage("toy", {"neurons": context.records["identify/lape"].product}, compute, product=("toy.json",))

    @staticmethod
    def report(run_dir: Path, manifest: dict) -> list:
        data = json.loads((run_dir / "toy" / "toy.json").read_text())
        return [("h2", "Toy study"), ("p", f"{data['languages']} languages")]


def test_one_registry_entry_adds_a_study_to_the_runner_the_report_and_publish(
        tmp_path, monkeypatch, make_config, make_fixtures, make_loader):
    from langneurons.report.publish import publish_run
    from langneurons.runner.run import run_experiment

    toy = Stage("toy", None, Toy.run, report=Toy.report, published=("toy/toy.json",))
    monkeypatch.setattr(registry, "STAGES", registry.STAGES + (toy,))
    make_fixtures(tmp_path)
    config = make_config(tmp_path)
    for key in ("ppxc", "tasks", "finetune", "evaluation", "claims"):
        config.pop(key)
    config["identification"] = config["identification"][:1]
    result = run_experiment(config, tmp_path / "run", loader=make_loader(), progress=False)
    assert result.computed == ["statistics", "identify/lape", "toy"]
    assert json.loads((tmp_path / "run" / "toy" / "toy.json").read_text()) == {"languages": 3}
    assert "## Toy study\n\n3 languages" in (tmp_path / "run" / "report" / "report.md").read_text()
    published = publish_run(tmp_path / "run", tmp_path / "results", name="tiny")
    assert (published.directory / "toy" / "toy.json").is_file()
    again = run_experiment(config, tmp_path / "run", loader=make_loader(), progress=False)
    assert again.cached == ["statistics", "identify/lape", "toy"]
