"""Honest selection: a seeded dev/test split of the prompts, and the best condition chosen on dev rows only."""

import pytest

from langneurons.errors import LangNeuronsError
from langneurons.steer.selection import best_condition, best_of, dev_count, selection_split, split_labels


def test_the_split_is_seeded_disjoint_and_sized_by_the_fraction():
    labels = split_labels(10, 0.5, seed=0)
    assert len(labels) == 10 and labels.count("dev") == 5 and labels.count("test") == 5
    assert split_labels(10, 0.5, seed=0) == labels  # same seed, same split
    assert any(split_labels(10, 0.5, seed=s) != labels for s in range(1, 5))
    assert split_labels(7, 0.5).count("dev") == 3  # floor: the odd prompt goes to test
    assert dev_count(50, 0.3) == 15 and dev_count(3, 0.5) == 1
    assert split_labels(4, 0.0) == ["test"] * 4
    with pytest.raises(LangNeuronsError, match="leaves no dev prompt"):
        split_labels(1, 0.5)
    with pytest.raises(LangNeuronsError, match="dev_fraction must be in"):
        dev_count(4, 1.0)


def _rows(values):
    """Rows of hand-built results: values[(condition, split)] = (fluent target rate, target rate) per pair."""
    rows = []
    for (condition, split), per_pair in values.items():
        for (fluent, target), pair in zip(per_pair, ("en>fr", "en>hi")):
            source, target_language = pair.split(">")
            rows.append({"source": source, "target": target_language, "condition": condition, "split": split,
                         "neuron_set": condition.split(":")[0] if ":" in condition else None,
                         "fluent_target_rate": fluent, "target_rate": target})
    return rows


def test_the_best_condition_is_the_best_on_dev_even_when_another_is_best_on_test():
    rows = _rows({
        ("baseline", "dev"): [(0, 0), (0, 0)], ("baseline", "test"): [(0, 0), (0, 0)],
        # best on dev (mean fluent 60), worse on test
        ("lape:activate:add=2", "dev"): [(70, 90), (50, 80)], ("lape:activate:add=2", "test"): [(40, 90), (30, 70)],
        # best on test (mean fluent 90), worse on dev
        ("lape:activate:add=4", "dev"): [(60, 100), (40, 98)], ("lape:activate:add=4", "test"): [(90, 100), (90, 100)],
        # a loop-maker: the highest raw target rate everywhere, few fluent continuations
        ("lape:both:add=8", "dev"): [(10, 100), (10, 100)], ("lape:both:add=8", "test"): [(10, 100), (10, 100)],
        ("random:activate:add=4", "dev"): [(95, 95), (95, 95)], ("random:activate:add=4", "test"): [(0, 0), (0, 0)],
    })
    assert selection_split(rows) == "dev"
    assert best_condition(rows, "lape") == "lape:activate:add=2"
    assert best_condition(rows, "lape", split="test") == "lape:activate:add=4"
    # by the raw target rate the loop-maker would win
    assert best_condition(rows, "lape", metric="target_rate") == "lape:both:add=8"
    # any family of conditions, by name (e.g. direction conditions)
    assert best_of(rows, ["lape:both:add=8", "lape:activate:add=4"]) == "lape:activate:add=4"
    assert best_condition(rows, "random") == "random:activate:add=4"
    assert best_condition(rows, "diffmean") is None


def test_ties_go_to_the_higher_target_rate_then_to_the_first_condition():
    rows = _rows({("lape:a", "dev"): [(50, 60), (50, 60)], ("lape:b", "dev"): [(50, 90), (50, 90)],
                  ("lape:c", "dev"): [(50, 90), (50, 90)]})
    assert best_condition(rows, "lape") == "lape:b"
    assert best_condition(rows, "lape", tie_break=None) == "lape:a"


def test_without_dev_rows_the_choice_falls_back_to_test_rows():
    rows = _rows({("lape:a", "test"): [(10, 10), (10, 10)], ("lape:b", "test"): [(20, 20), (20, 20)]})
    assert selection_split(rows) == "test" and best_condition(rows, "lape") == "lape:b"
    legacy = [{k: v for k, v in r.items() if k != "split"} for r in rows]  # results written before the split
    assert best_condition(legacy, "lape") == "lape:b"
