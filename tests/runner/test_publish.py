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
    publish_run(finished_run, tmp_path / "docs" / "results", name="second", readme=readme)
    block = readme.read_text()
    first, second = block.index("](docs/results/second/report/report.md)"), block.index("](docs/results/tiny/report/")
    assert first < second  # the result just published first, every other published result's claims kept
    assert block.count("| claim (source) |") == 2 and block.count(README_START) == 1
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


# ---------------------------------------------------------------- hostile input (issue 21, items 4, 7, 8)


def _tree(folder):
    """Every path under ``folder`` with its bytes (files) or None (folders): what a refusal must leave as it was."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("name", ["../victim", "../../victim", "..", ".", "", "a/b", "a\\b", "nul\0name"])
def test_a_result_name_that_is_not_one_plain_name_is_refused_and_nothing_is_deleted(name, finished_run, tmp_path):
    results = tmp_path / "docs" / "results"
    results.mkdir(parents=True)
    (results / "kept").mkdir()
    (results / "kept" / "README.md").write_text("earlier result")
    victim = tmp_path / "docs" / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("precious")
    before = _tree(tmp_path / "docs")
    with pytest.raises(LangNeuronsError, match="must be one plain name"):
        publish_run(finished_run, results, name=name)
    assert _tree(tmp_path / "docs") == before


def test_an_absolute_result_name_is_refused(finished_run, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("precious")
    with pytest.raises(LangNeuronsError, match="must be one plain name"):
        publish_run(finished_run, tmp_path / "results", name=str(elsewhere))
    assert (elsewhere / "precious.txt").read_text() == "precious" and not (tmp_path / "results").exists()


def test_a_config_name_with_a_path_is_refused_as_the_default_result_name(finished_run, tmp_path):
    manifest = json.loads((finished_run / "manifest.json").read_text())
    manifest["config"]["name"] = "../escaped"
    (finished_run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LangNeuronsError, match="must be one plain name"):
        publish_run(finished_run, tmp_path / "docs" / "results")
    assert not (tmp_path / "docs").exists()


def test_a_result_folder_linked_outside_the_results_folder_is_not_deleted(finished_run, tmp_path):
    results, outside = tmp_path / "results", tmp_path / "outside"
    results.mkdir()
    outside.mkdir()
    (outside / "precious.txt").write_text("precious")
    (results / "linked").symlink_to(outside, target_is_directory=True)
    with pytest.raises(LangNeuronsError, match="not inside the results folder"):
        publish_run(finished_run, results, name="linked")
    assert (outside / "precious.txt").read_text() == "precious"


@pytest.mark.parametrize("where", ["results/leak.csv", "identify"])
def test_a_symbolic_link_in_the_run_is_refused_before_anything_is_written(where, finished_run, tmp_path):
    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE KEY")
    link = finished_run / where
    if where == "identify":  # a linked folder: identify/ -> a folder holding a 'neurons.json' secret
        folder = tmp_path / "private" / "lape"
        folder.mkdir(parents=True)
        (folder / "neurons.json").write_text("PRIVATE KEY")
        shutil.rmtree(link)
        link.symlink_to(folder.parent, target_is_directory=True)
    else:
        link.symlink_to(secret)
    with pytest.raises(LangNeuronsError, match="is a symbolic link"):
        publish_run(finished_run, tmp_path / "results", name="tiny-model")
    assert not (tmp_path / "results").exists()


def _damage_manifest(run, text):
    (run / "manifest.json").write_text(text)


@pytest.mark.parametrize("text, message", [("{not json", "is not valid JSON"), ('{"stages": {}}', "has no config"),
                                           ("[1, 2]", "has no config")])
def test_a_damaged_manifest_is_refused_before_anything_is_written(text, message, finished_run, tmp_path):
    _damage_manifest(finished_run, text)
    with pytest.raises(LangNeuronsError, match=message):
        publish_run(finished_run, tmp_path / "results", name="tiny-model")
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("content, message", [
    (None, "README to update not found"),
    ("no markers", "has no <!-- langneurons:claims:start -->"),
    (f"{README_END}\nold\n{README_START}\n", "followed by one"),
    (f"{README_START}\n{README_END}\n{README_START}\n{README_END}\n", "exactly one"),
])
def test_a_readme_that_cannot_be_updated_is_refused_before_anything_is_written(content, message, finished_run,
                                                                               tmp_path):
    readme = tmp_path / "README.md"
    if content is not None:
        readme.write_text(content)
    with pytest.raises(LangNeuronsError, match=message):
        publish_run(finished_run, tmp_path / "docs" / "results", readme=readme)
    assert not (tmp_path / "docs").exists()
    assert (readme.read_text() == content) if content is not None else not readme.exists()


def test_a_readme_directory_is_refused(finished_run, tmp_path):
    with pytest.raises(LangNeuronsError, match="README to update not found"):
        publish_run(finished_run, tmp_path / "docs" / "results", readme=tmp_path)
    assert not (tmp_path / "docs").exists()


def test_absolute_and_relative_readme_paths_give_the_same_links(finished_run, tmp_path, monkeypatch):
    texts = []
    for absolute in (True, False):
        readme = tmp_path / "README.md"
        readme.write_text(f"{README_START}\n{README_END}\n")
        monkeypatch.chdir(tmp_path)
        publish_run(finished_run, "docs/results", readme=readme if absolute else "README.md")
        texts.append(readme.read_text())
    assert texts[0] == texts[1] and "](docs/results/tiny/report/report.md)" in texts[0]
