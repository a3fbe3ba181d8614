"""Learning curves: rows per step with the dev score where it was measured; PNG + SVG + CSV."""

import csv

import pytest

from langneurons.errors import LangNeuronsError
from langneurons.finetune.figures import curve_rows, write_learning_curve

METADATA = {"task": "xnli", "losses": [1.2, 1.0, 0.8], "smoothed_loss": [1.2, 1.1, 1.0],
            "curve": [{"step": 0, "dev_metric": "accuracy", "dev_score": 33.0, "dev_n": 9},
                      {"step": 2, "dev_metric": "accuracy", "dev_score": 50.0, "dev_n": 9}]}


def test_rows_carry_the_dev_score_only_where_it_was_measured():
    rows = curve_rows(METADATA)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert [r["dev_score"] for r in rows] == [33.0, "", 50.0, ""]
    assert rows[3]["loss"] == 0.8 and rows[3]["smoothed_loss"] == 1.0


def test_figure_and_table_are_written(tmp_path):
    paths = write_learning_curve(METADATA, tmp_path)
    assert sorted(p.name for p in paths) == ["learning_curve.csv", "learning_curve.png", "learning_curve.svg"]
    with open(tmp_path / "learning_curve.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 4
    with pytest.raises(LangNeuronsError, match="no losses"):
        write_learning_curve({"losses": []}, tmp_path)


def test_the_kept_step_of_an_early_stopped_run_is_marked():
    from langneurons.finetune.figures import learning_curve_figure

    figure = learning_curve_figure(dict(METADATA, early_stopping={"best_step": 2, "best_score": 50.0}))
    dev_axis = figure.axes[1]
    assert [line.get_xdata()[0] for line in dev_axis.get_lines() if line.get_label() == "kept (step 2)"] == [2]


def test_the_report_table_shows_the_kept_dev_score_and_the_dev_chosen_learning_rate():
    from langneurons.finetune.stage import _dev_scores, _learning_rate

    assert _dev_scores(METADATA["curve"], {"best_step": 2, "best_score": 50.0}) == \
        "33.0 → 50.0 (n=9); kept step 2: 50.0"
    search = {"candidates": [1e-4, 1e-3], "dev_scores": [40.0, 55.5], "steps": 30}
    assert _learning_rate({"config": {"learning_rate": 1e-3}, "lr_search": search}) == \
        "0.001 (dev, 30 steps: 0.0001: 40.0, 0.001: 55.5; the grid's largest: a better rate may lie above it)"
    search = {"candidates": [1e-4, 3e-4, 1e-3], "dev_scores": [40.0, 50.0, 45.0], "steps": 30}
    assert _learning_rate({"config": {"learning_rate": 3e-4}, "lr_search": search}) == \
        "0.0003 (dev, 30 steps: 0.0001: 40.0, 0.0003: 50.0, 0.001: 45.0)"  # inside the grid: nothing to add
    assert _learning_rate({"config": {"learning_rate": 1e-4}, "lr_search": search}).endswith(
        "; the grid's smallest: a better rate may lie below it)")
    assert _learning_rate({"config": {"learning_rate": 2e-4}}) == "0.0002"
