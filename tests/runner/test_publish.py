"""Publishing a run: tables, figures, report, config and manifest copied with the run's layout;
never the per-example predictions, adapters or statistics; the claims table in the index and in
the README's marked block."""

import json
import re
import shutil

import pytest

from langneurons.errors import LangNeuronsError
from langneurons.report.publish import README_END, README_START, publish_run


@pytest.fixture
def finished_run(tiny_run, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(tiny_run[2], target)
    return target


def test_a_published_run_holds_reports_tables_and_figures_but_no_predictions_or_weights(finished_run, tmp_path):
    publication = publish_run(finished_run, tmp_path / "results", name="tiny-model")
    folder = tmp_path / "results" / "tiny-model"
    names = {p.relative_to(folder).as_posix() for p in publication.files}
    assert {"config.yaml", "manifest.json", "report/report.md", "claims/claims.md", "claims/claims.json",
            "results/scores.csv", "ppxc/lape/ppxc.png", "identify/lape/neurons.json"} <= names
    assert "finetune/attention/learning_curve.png" in names
    assert not [n for n in names if n.endswith((".jsonl", ".safetensors", ".txt"))]
    report = (folder / "report" / "report.md").read_text()
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", report):  # every figure of the report is there
        assert (folder / "report" / link).resolve().is_file(), link
    index = publication.index.read_text()
    assert "## [tiny-model](tiny-model/report/report.md)" in index
    assert (finished_run / "claims" / "claims.md").read_text() in index


def test_the_readme_block_is_replaced_and_the_rest_kept(finished_run, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{README_START}\nold\n{README_END}\n\nafter\n")
    publish_run(finished_run, tmp_path / "docs" / "results", readme=readme)
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n\n") and text.endswith("\n\nafter\n") and "old" not in text
    assert "](docs/results/tiny/report/report.md)" in text and "| claim (source) |" in text
    readme.write_text("no markers")
    with pytest.raises(LangNeuronsError, match="no <!-- langneurons:claims:start -->"):
        publish_run(finished_run, tmp_path / "docs" / "results", readme=readme)


def test_a_run_without_claims_is_published_with_its_report_but_cannot_fill_the_readme(finished_run, tmp_path):
    shutil.rmtree(finished_run / "claims")
    publication = publish_run(finished_run, tmp_path / "results", name="no-claims")
    index = publication.index.read_text()
    assert "## [no-claims](no-claims/report/report.md)" in index and "No claims section" in index
    assert "Other results" not in index
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_START}\n{README_END}\n")
    with pytest.raises(LangNeuronsError, match="has no claims for the README block"):
        publish_run(finished_run, tmp_path / "results", readme=readme)
    with pytest.raises(LangNeuronsError, match="not a langneurons run directory"):
        publish_run(tmp_path / "nothing", tmp_path / "results")


def test_steering_continuations_and_examples_are_never_published(finished_run, tmp_path):
    steering = finished_run / "steering"
    steering.mkdir(exist_ok=True)
    for name in ("generations.jsonl", "examples.json", "steering.csv"):
        (steering / name).write_text("x")
    publication = publish_run(finished_run, tmp_path / "results", name="tiny-model")
    names = {p.relative_to(publication.directory).as_posix() for p in publication.files}
    assert "steering/steering.csv" in names
    assert not {"steering/generations.jsonl", "steering/examples.json"} & names


def test_builtin_steering_examples_are_published_and_corpus_ones_are_not(finished_run, tmp_path):
    import json

    examples = finished_run / "steering-examples"
    examples.mkdir()
    (examples / "examples.json").write_text("[]")
    for prompts, published in (("builtin", True), ("/data/flores", False)):
        (examples / "steering.json").write_text(json.dumps({"meta": {"options": {"prompts": prompts}}, "rows": []}))
        publication = publish_run(finished_run, tmp_path / "results", name="tiny-model")
        names = {p.relative_to(publication.directory).as_posix() for p in publication.files}
        assert ("steering-examples/examples.json" in names) is published
