"""The stability commands end to end on a tiny local model: collect --replicates, stability,
identify --method ap and --min-frequency, agreement; bad input is a one-line error."""

import json

import pytest
from tiny import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-stability")
    tiny_model("llama").save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    corpus = root / "corpus"
    corpus.mkdir()
    for lang, text in {"en": "the cat sat on the mat", "fr": "le chat est sur le tapis", "es": "el gato está en la alfombra"}.items():
        (corpus / f"{lang}.txt").write_text("\n".join(f"{text} {i}" for i in range(60)), encoding="utf-8")
    return root


def test_replicates_stability_ap_stable_sets_and_agreement(workspace, langneurons):
    stats = workspace / "stats"
    result = langneurons("collect", "--model", workspace / "model", "--corpus", workspace / "corpus", "-l", "en,fr,es",
                         "--token-budget", "400", "--heldout-budget", "40", "--block-length", "16", "--out", stats,
                         "--replicates", "5", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert (stats / "en.replicates.safetensors").is_file()
    assert json.loads((stats / "manifest.json").read_text())["options"]["replicates"] == 5

    out = workspace / "stability"
    result = langneurons("stability", "-s", stats, "--top-rate", "0.1", "--resamples", "20", "--splits", "4",
                         "-o", out, "--no-figures")
    assert result.returncode == 0, result.stderr
    assert "chance J" in result.stdout and "20 resamples of 5 chunks" in result.stdout
    rows = json.loads((out / "stability.json").read_text())["table"]
    assert [row["language"] for row in rows] == ["en", "es", "fr"]  # the folder's languages, sorted
    assert all(0 <= row["chance_jaccard"] < 1 for row in rows)

    result = langneurons("identify", "-s", stats, "--method", "lape", "--top-rate", "0.1", "--min-frequency", "0.6",
                         "--resamples", "20", "-o", workspace / "stable.json", "--no-figures")
    assert result.returncode == 0, result.stderr
    stable = json.loads((workspace / "stable.json").read_text())
    assert stable["parameters"]["resampling"]["resamples"] == 20
    assert all(value >= 0.6 for values in stable["frequency"].values() for value in values)

    result = langneurons("identify", "-s", stats, "--method", "ap", "-o", workspace / "ap.json", "--no-figures")
    assert result.returncode == 0, result.stderr
    assert json.loads((workspace / "ap.json").read_text())["method"] == "ap"

    result = langneurons("agreement", stats, workspace / "ap.json", "--method", "act-prob", "-o", workspace / "agree",
                         "--no-figures")
    assert result.returncode == 0, result.stderr
    assert "chance" in result.stdout
    assert len(json.loads((workspace / "agree" / "agreement.json").read_text())["rows"]) == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["collect", "-l", "en", "--replicates", "0", "--model", "./missing-model"], "--replicates must be at least 1"),
        (["stability", "-s", "missing-folder"], "statistics folder not found"),
        (["stability", "--method", "random"], "stability resamples lape, act-prob"),
        (["stability", "--resamples", "0"], "need resamples >= 1"),
        (["identify", "--method", "ap", "--min-frequency", "0.8"], "--min-frequency works with lape, act-prob"),
        (["identify", "--min-frequency", "1.5"], "--min-frequency must be in (0, 1]"),
        (["agreement", "missing.json", "other.json"], "not found"),
    ],
)
def test_bad_input_is_a_one_line_error(args, message, tmp_path, langneurons):
    result = langneurons(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_stability_without_replicates_says_how_to_get_them(workspace, langneurons, tmp_path):
    stats = workspace / "plain-stats"
    result = langneurons("collect", "--model", workspace / "model", "--corpus", workspace / "corpus", "-l", "en,fr",
                         "--token-budget", "100", "--heldout-budget", "20", "--block-length", "16", "--out", stats,
                         "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "replicates" not in json.loads((stats / "manifest.json").read_text())["options"]
    result = langneurons("stability", "-s", stats, "-o", tmp_path / "out")
    assert result.returncode != 0 and "collect them with 'langneurons collect --replicates R'" in result.stderr
