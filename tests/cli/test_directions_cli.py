"""The direction study from the command line: collect --residual, identify --method diffmean (and
random --like a direction set), ppl-matrix --directions; bad input is one line."""

import pytest
import torch

from langneurons.directions.direction_set import DirectionSet


def test_collect_identify_and_directional_ppl_matrix(workspace, langneurons, tmp_path):
    stats = tmp_path / "stats"
    result = langneurons("collect", "--model", workspace / "model", "--corpus", workspace / "corpus", "-l", "en,fr,es",
                         "--token-budget", "200", "--heldout-budget", "40", "--block-length", "16", "--out", stats,
                         "--residual", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert (stats / "en.residual.safetensors").exists()
    result = langneurons("identify", "-s", stats, "--method", "diffmean", "--rank", "2")
    assert result.returncode == 0, result.stderr
    assert "diffmean directions" in result.stdout
    directions = DirectionSet.load(tmp_path / "diffmean.safetensors")
    assert directions.languages == ["en", "es", "fr"] and directions.rank == 2
    result = langneurons("identify", "--method", "random", "--like", tmp_path / "diffmean.safetensors", "--seed", "1")
    assert result.returncode == 0, result.stderr
    random = DirectionSet.load(tmp_path / "diffmean.random.safetensors")
    torch.testing.assert_close(random.norms(), directions.norms())
    result = langneurons("ppl-matrix", "--model", workspace / "model", "--directions", tmp_path / "diffmean.safetensors",
                         "-s", stats, "--layers", "1", "--weighting", "spread", "--token-budget", "30", "--out", tmp_path / "ppxc",
                         "--cache-dir", tmp_path / "cache", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "directions" in result.stdout
    rows = (tmp_path / "ppxc" / "ppxc.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 3 * 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["identify", "-s", "missing", "--method", "diffmean"], "statistics folder not found"),
        (["identify", "-s", ".", "--method", "diffmean", "-o", "d.json"], ".safetensors"),
        (["identify", "-s", ".", "--method", "diffmean"], "collect them with --residual"),
        (["ppl-matrix", "--model", "./missing"], "either --neurons"),
        (["ppl-matrix", "-n", "a.json", "--directions", "d.safetensors", "--model", "./missing"], "either --neurons"),
        (["ppl-matrix", "--directions", "d.safetensors", "--action", "zero", "--model", "./missing"], "action is ablate"),
        (["ppl-matrix", "--directions", "d.safetensors", "--layers", "3-1", "--model", "./missing"], "bad layer range"),
        (["ppl-matrix", "--directions", "d.safetensors", "--weighting", "x", "--model", "./missing"], "random weighting"),
    ],
)
def test_bad_input_is_a_one_line_error_with_nonzero_exit(args, message, tmp_path, langneurons):
    result = langneurons(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
