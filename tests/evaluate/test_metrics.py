import math

import pytest
import torch
from torchmetrics.text import SQuAD

from langneurons.errors import LangNeuronsError
from langneurons.evaluate import metrics
from langneurons.evaluate.metrics import (
    MIN_RESAMPLING_UNITS,
    ScoreSummary,
    accuracy,
    bootstrap_ci,
    compare_accuracy,
    correctness,
    enough_units,
    mcnemar,
    paired_bootstrap,
    paired_proportion_interval,
    resampling_interval,
    squad_scores,
    summarize,
    tango_statistic,
    unavailable,
    wilson_interval,
)

# (prediction, gold answers, exact match, F1), F1 worked out by hand from the SQuAD v1.1
# definition: normalise (lower-case, drop punctuation, drop a/an/the, split on whitespace),
# F1 = 2PR/(P+R) over the token multisets, maximum over gold answers.
SQUAD_CASES = [
    ("The Eiffel Tower!", ["eiffel tower"], 100.0, 100.0),  # article + punctuation + case
    ("PARIS", ["paris"], 100.0, 100.0),  # case
    ("U.S.A.", ["USA"], 100.0, 100.0),  # punctuation inside a word
    ("an apple", ["apple"], 100.0, 100.0),  # article removed as a word
    ("anapple", ["apple"], 0.0, 0.0),  # ... but not inside a word
    ("blue whale", ["whale", "the blue whale"], 100.0, 100.0),  # second gold answer matches
    ("the big red barn", ["red barn door"], 0.0, 200.0 / 3.0),  # P = R = 2/3
    ("go go go", ["go"], 0.0, 50.0),  # P = 1/3, R = 1: repeated tokens count once per gold token
    ("red barn", ["red barn door", "barn"], 0.0, 80.0),  # max(0.8, 2/3)
    ("", ["paris"], 0.0, 0.0),  # empty prediction
    ("in 1976", ["1976", "in  1976."], 100.0, 100.0),  # whitespace collapsed
]


@pytest.mark.parametrize("prediction, golds, exact, f1", SQUAD_CASES)
def test_squad_scores_follow_the_official_v1_1_definition(prediction, golds, exact, f1):
    (score,) = squad_scores([prediction], [golds])
    assert score[0] == pytest.approx(exact)
    assert score[1] == pytest.approx(f1)


def test_mean_of_per_example_squad_scores_equals_torchmetrics_aggregate():
    predictions = [case[0] for case in SQUAD_CASES]
    references = [case[1] for case in SQUAD_CASES]
    scores = squad_scores(predictions, references)
    metric = SQuAD()
    metric.update(
        [{"prediction_text": p, "id": str(i)} for i, p in enumerate(predictions)],
        [{"answers": {"text": g, "answer_start": [0] * len(g)}, "id": str(i)} for i, g in enumerate(references)],
    )
    aggregate = metric.compute()
    assert sum(s[0] for s in scores) / len(scores) == pytest.approx(aggregate["exact_match"].item())
    assert sum(s[1] for s in scores) / len(scores) == pytest.approx(aggregate["f1"].item(), rel=1e-6)


def test_squad_scores_reject_mismatched_or_empty_references():
    with pytest.raises(LangNeuronsError, match="differ in length"):
        squad_scores(["a"], [["a"], ["b"]])
    with pytest.raises(LangNeuronsError, match="non-empty list"):
        squad_scores(["a"], [[]])
    with pytest.raises(LangNeuronsError, match="non-empty list"):
        squad_scores(["a"], ["a"])
    with pytest.raises(LangNeuronsError, match="must be strings"):
        squad_scores([None], [["a"]])


def test_accuracy_is_a_percentage_with_per_example_correctness():
    predictions, labels = [0, 1, 2, 1], [0, 1, 1, 1]
    assert correctness(predictions, labels).tolist() == [True, True, False, True]
    assert accuracy(predictions, labels) == 75.0
    assert accuracy(torch.tensor([2, 2]), torch.tensor([0, 1])) == 0.0
    with pytest.raises(LangNeuronsError):
        accuracy([0, 1], [0])


def test_bootstrap_of_constant_values_has_zero_width():
    assert bootstrap_ci([42.0] * 30) == (42.0, 42.0)


def test_bootstrap_ci_of_a_fair_binomial_matches_the_normal_approximation():
    # 200 correct of 400: mean 50%, standard error 100 * sqrt(0.25 / 400) = 2.5 points,
    # so the 95% interval is about 50 -/+ 4.9.
    values = torch.tensor([100.0, 0.0]).repeat(200)
    low, high = bootstrap_ci(values, n_resamples=4000, seed=1)
    assert low == pytest.approx(50 - 1.96 * 2.5, abs=0.6)
    assert high == pytest.approx(50 + 1.96 * 2.5, abs=0.6)
    assert bootstrap_ci(values, n_resamples=4000, seed=1) == (low, high)  # seeded
    narrow_low, narrow_high = bootstrap_ci(values, n_resamples=4000, confidence=0.5, seed=1)
    assert low < narrow_low < 50 < narrow_high < high


def test_bootstrap_in_small_chunks_gives_the_same_kind_of_interval(monkeypatch):
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 1000)  # 2 resamples of 400 per chunk
    values = torch.tensor([100.0, 0.0]).repeat(200)
    low, high = bootstrap_ci(values, n_resamples=2001, seed=0)
    assert low == pytest.approx(45.1, abs=0.8) and high == pytest.approx(54.9, abs=0.8)
    assert len(metrics._bootstrap_means(values, 2001, seed=0)) == 2001


def test_summarize_reports_mean_n_and_interval():
    summary = summarize([100.0, 0.0, 100.0, 100.0] * 5, "accuracy", n_resamples=500)
    assert isinstance(summary, ScoreSummary)
    assert (summary.metric, summary.n, summary.score) == ("accuracy", 20, 75.0)
    assert 0.0 <= summary.ci_low <= 75.0 <= summary.ci_high <= 100.0
    few = summarize([100.0, 0.0, 100.0, 100.0], "accuracy", n_resamples=500)  # 4 examples < 20: no interval
    assert (few.n, few.score, few.ci_low, few.ci_high) == (4, 75.0, None, None)
    with pytest.raises(LangNeuronsError):
        summarize([], "accuracy")
    with pytest.raises(LangNeuronsError, match="NaN"):
        summarize([1.0, float("nan")], "f1")


def test_paired_bootstrap_of_identical_systems_finds_no_difference():
    scores = torch.rand(300, generator=torch.Generator().manual_seed(0)) * 100
    comparison = paired_bootstrap(scores, scores.clone())
    assert (comparison.delta, comparison.ci_low, comparison.ci_high) == (0.0, 0.0, 0.0)
    assert comparison.p_value == 1.0


def test_paired_bootstrap_of_a_clearly_better_system_has_a_tiny_p_value():
    generator = torch.Generator().manual_seed(0)
    a = (torch.rand(400, generator=generator) < 0.5).double() * 100  # ~50% correct
    b = torch.full((400,), 100.0)  # always correct
    comparison = paired_bootstrap(a, b, n_resamples=999)
    assert comparison.delta == pytest.approx(100.0 - a.mean().item())
    assert comparison.ci_low > 0
    assert comparison.p_value == pytest.approx(1 / 1000)  # no resample reaches the null


def test_paired_bootstrap_p_value_is_large_for_a_noisy_small_difference():
    a = torch.tensor([100.0, 0.0] * 50)
    b = torch.tensor([100.0, 0.0] * 49 + [100.0, 100.0])  # one extra correct of 100
    comparison = paired_bootstrap(a, b, n_resamples=2000)
    assert comparison.delta == pytest.approx(1.0)
    assert comparison.p_value > 0.2


def test_mcnemar_exact_p_value_on_a_hand_computed_case():
    # 6 examples only B gets right, 1 only A gets right, 5 both right, 3 both wrong.
    correct_a = [False] * 6 + [True] + [True] * 5 + [False] * 3
    correct_b = [True] * 6 + [False] + [True] * 5 + [False] * 3
    # two-sided exact binomial, n = 7, k = 1: 2 * (C(7,0) + C(7,1)) / 2^7 = 16 / 128
    expected = 2 * (math.comb(7, 0) + math.comb(7, 1)) / 2**7
    assert mcnemar(correct_a, correct_b) == pytest.approx(expected) == pytest.approx(0.125)
    assert mcnemar(correct_b, correct_a) == pytest.approx(0.125)  # symmetric


def test_mcnemar_without_discordant_pairs_is_one():
    assert mcnemar([True, False, True], [True, False, True]) == 1.0


def test_compare_accuracy_reports_points_of_b_minus_a_with_mcnemar():
    correct_a = [False] * 6 + [True] + [True] * 5 + [False] * 3
    correct_b = [True] * 6 + [False] + [True] * 5 + [False] * 3
    comparison = compare_accuracy(correct_a, correct_b, n_resamples=500)
    assert comparison.delta == pytest.approx(100.0 * (11 - 6) / 15)
    assert comparison.p_value == pytest.approx(0.125)  # the exact test stands at any n
    assert comparison.test == "mcnemar exact, Tango score CI" and comparison.n == 15
    assert comparison.ci_low is None and comparison.ci_high is None  # 15 examples < 20: no bootstrap interval
    larger = compare_accuracy(correct_a * 2, correct_b * 2, n_resamples=500)
    assert larger.ci_low <= larger.delta <= larger.ci_high


# ------------------------------------------------------------------ the minimum number of units


def test_the_minimum_number_of_resampling_units_is_twenty():
    assert MIN_RESAMPLING_UNITS == 20
    assert not enough_units(19) and enough_units(20)
    assert unavailable(9) == "n/a (9 units < 20)"


def test_one_unit_gives_no_interval_and_no_p_value():
    assert bootstrap_ci([42.0]) == (None, None)
    assert summarize([42.0], "f1").ci_low is None
    comparison = paired_bootstrap([10.0], [90.0])
    assert comparison.delta == 80.0
    assert (comparison.ci_low, comparison.ci_high, comparison.p_value, comparison.n) == (None, None, None, 1)
    # the resampled values of one unit are all equal: the guard refuses the zero-width interval
    assert resampling_interval(torch.full((1000,), 2.387, dtype=torch.float64), units=1) is None


def test_nineteen_units_are_too_few_and_twenty_are_enough():
    values = torch.arange(20, dtype=torch.float64)
    assert bootstrap_ci(values[:19]) == (None, None)
    low, high = bootstrap_ci(values)
    assert low < values.mean().item() < high


def test_interval_of_a_known_normal_covers_the_mean_with_the_textbook_width():
    # 200 units from N(5, 2^2): the 95% interval of the mean is about mean +- 1.96 * 2 / sqrt(200)
    sd, n = 2.0, 200
    values = 5.0 + sd * torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    low, high = bootstrap_ci(values, n_resamples=4000, seed=0)
    assert low < 5.0 < high
    assert high - low == pytest.approx(2 * 1.96 * sd / math.sqrt(n), rel=0.15)
    means = metrics._bootstrap_means(values, 4000, seed=0)
    assert resampling_interval(means, units=n) == pytest.approx((low, high))


# ------------------------------------------------------------------ paired proportions (Tango's score interval)


def test_two_systems_that_never_disagree_get_an_interval_of_width_above_zero():
    """The demo's defect: 20 pairs, both right on the same 10. A bootstrap of the 0/100 differences
    is [0, 0]; the score interval is +-z^2 / (n + z^2) (no discordant pair: Z(d) = -sqrt(n d / (1 - d)))."""
    z2 = 1.959963984540054**2
    low, high = paired_proportion_interval(0, 0, 20)
    assert (low, high) == pytest.approx((-z2 / (20 + z2), z2 / (20 + z2)), abs=1e-9)
    comparison = compare_accuracy([True] * 10 + [False] * 10, [True] * 10 + [False] * 10)
    assert comparison.delta == 0.0 and comparison.ci_high - comparison.ci_low > 30.0  # about +-16.1 points


def _likelihood_statistic(only_a: int, only_b: int, n: int, delta: float) -> float:
    """Tango's Z(delta) with the constrained maximum likelihood found numerically (an independent check
    of the closed-form root): maximise the multinomial log-likelihood over q = P(A only) with P(B only)
    = q + delta."""
    from scipy.optimize import minimize_scalar

    both = n - only_a - only_b

    def negative_log_likelihood(q):
        cells = [(only_a, q), (only_b, q + delta), (both, 1.0 - 2.0 * q - delta)]
        return -sum(count * math.log(max(p, 1e-300)) for count, p in cells if count)

    lower, upper = max(0.0, -delta), (1.0 - delta) / 2.0
    q = minimize_scalar(negative_log_likelihood, bounds=(lower, upper), method="bounded",
                        options={"xatol": 1e-13}).x
    return (only_b - only_a - n * delta) / math.sqrt(n * (2.0 * q + delta * (1.0 - delta)))


@pytest.mark.parametrize("only_a,only_b,n", [(5, 10, 100), (12, 3, 40), (0, 4, 25), (30, 31, 500)])
def test_the_bounds_are_where_the_score_statistic_reaches_z(only_a, only_b, n):
    low, high = paired_proportion_interval(only_a, only_b, n)
    assert low < (only_b - only_a) / n < high
    assert _likelihood_statistic(only_a, only_b, n, low) == pytest.approx(1.959964, abs=2e-4)
    assert _likelihood_statistic(only_a, only_b, n, high) == pytest.approx(-1.959964, abs=2e-4)
    assert tango_statistic(only_a, only_b, n, low) == pytest.approx(1.959964, abs=1e-6)


def test_the_interval_is_close_to_wald_for_many_pairs_and_mirrors_when_a_and_b_swap():
    # n = 10000, 600 only-B, 400 only-A: Wald 0.02 +- 1.96 sqrt((0.1 - 0.0004) / 10000) = 0.02 +- 0.006186
    low, high = paired_proportion_interval(400, 600, 10000)
    assert (low, high) == pytest.approx((0.02 - 0.006186, 0.02 + 0.006186), abs=1e-4)
    assert paired_proportion_interval(600, 400, 10000) == pytest.approx((-high, -low))


def test_a_one_sided_table_reaches_the_end_of_the_range():
    assert paired_proportion_interval(0, 20, 20)[1] == 1.0  # B right wherever A is wrong, on every pair
    assert paired_proportion_interval(20, 0, 20)[0] == -1.0


def test_the_score_interval_covers_the_truth_about_95_percent_of_the_time():
    """400 simulated experiments of 60 pairs from (P(A only), P(B only)) = (0.10, 0.05)."""
    generator = torch.Generator().manual_seed(0)
    cells = torch.multinomial(torch.tensor([0.10, 0.05, 0.85]), 400 * 60, replacement=True,
                              generator=generator).reshape(400, 60)
    covered = 0
    for row in cells:
        low, high = paired_proportion_interval(int((row == 0).sum()), int((row == 1).sum()), 60)
        covered += low <= -0.05 <= high
    assert 0.92 <= covered / 400 <= 0.985


@pytest.mark.parametrize("counts", [(-1, 0, 5), (3, 3, 5), (0, 0, 0), (1.5, 0, 5), (True, 0, 5)])
def test_impossible_paired_counts_are_refused(counts):
    with pytest.raises(LangNeuronsError):
        paired_proportion_interval(*counts)


def test_a_zero_or_hundred_score_gets_the_wilson_interval_which_is_never_zero_width():
    all_right = summarize([100.0] * 20, "accuracy")
    low, high = wilson_interval(20, 20)
    assert (all_right.ci_low, all_right.ci_high) == pytest.approx((100 * low, 100.0))
    assert all_right.ci_low < 100.0  # a bootstrap says [100, 100]
    assert summarize([0.0] * 19, "accuracy").ci_low is None  # 19 examples < 20: no interval


def test_constant_paired_differences_get_the_wilson_bound_not_a_point():
    """F1 of two systems that agree on all 25 examples: the bootstrap is [0, 0]; with the largest
    possible difference of 100 points the interval is +-100 z^2 / (25 + z^2) = +-13.3 points."""
    z2 = 1.959963984540054**2
    scores = [float(v) for v in range(0, 100, 4)]
    agreeing = paired_bootstrap(scores, scores, largest_difference=100.0)
    assert agreeing.delta == 0.0 and agreeing.p_value == 1.0
    assert (agreeing.ci_low, agreeing.ci_high) == pytest.approx((-100 * z2 / (25 + z2), 100 * z2 / (25 + z2)))
    shifted = paired_bootstrap(scores, [s + 2.0 for s in scores], largest_difference=100.0)
    share = z2 / (25 + z2)
    assert (shifted.ci_low, shifted.ci_high) == pytest.approx((2.0 - 102.0 * share, 2.0 + 98.0 * share))
    assert paired_bootstrap(scores, scores).ci_high == 0.0  # without a bound: the plain bootstrap
