"""Outcome rates and their Wilson intervals, against hand computation."""

import math

import pytest

from langneurons.errors import LangNeuronsError
from langneurons.evaluate.metrics import wilson_interval
from langneurons.steer.langid import Identification
from langneurons.steer.metric import language_rates, outcome


def test_wilson_interval_by_hand():
    # k = 3, n = 10, z = 1.959964: p = 0.3, z^2 = 3.841459
    # centre = (0.3 + 3.841459/20) / (1 + 0.3841459) = 0.4920729 / 1.3841459 = 0.3555066
    # half = 1.959964 / 1.3841459 * sqrt(0.021 + 3.841459/400) = 1.4160097 * 0.1749390 = 0.2477153
    low, high = wilson_interval(3, 10)
    assert low == pytest.approx(0.1077913, abs=1e-6)
    assert high == pytest.approx(0.6032219, abs=1e-6)
    # k = 0, n = 4: centre = half = (z^2/8) / (1 + z^2/4) = 0.4801824 / 1.9603647 = 0.2449454
    low, high = wilson_interval(0, 4)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(2 * 0.2449454, abs=1e-6)
    # symmetric: k = n mirrors k = 0
    low, high = wilson_interval(4, 4)
    assert high == pytest.approx(1.0) and low == pytest.approx(1 - 2 * 0.2449454, abs=1e-6)
    # 90%: z = 1.644854, k = 5, n = 10: centre 0.5, half = z/(1+z^2/n) * sqrt(0.025 + z^2/400)
    z = 1.6448536
    half = z / (1 + z * z / 10) * math.sqrt(0.025 + z * z / 400)
    assert wilson_interval(5, 10, 0.90) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-6)


@pytest.mark.parametrize("k, n, confidence", [(-1, 4, 0.95), (5, 4, 0.95), (0, 0, 0.95), (1, 4, 1.0), (1.5, 4, 0.95)])
def test_wilson_interval_rejects_bad_counts(k, n, confidence):
    with pytest.raises(LangNeuronsError):
        wilson_interval(k, n, confidence)


def test_language_rates_count_target_source_and_other():
    ids = [Identification("fr", 0.9), Identification("fr", 0.7), Identification("en", 0.8),
           Identification(None, 0.0), Identification("es", 0.5)]
    assert [outcome(i, "en", "fr") for i in ids] == ["target", "target", "source", "other", "other"]
    rates = language_rates(ids, "en", "fr")
    assert rates.n == 5
    assert (rates.target_rate.count, rates.source_rate.count, rates.other_rate.count) == (2, 1, 2)
    assert rates.target_rate.rate == pytest.approx(40.0) and rates.source_rate.rate == pytest.approx(20.0)
    low, high = wilson_interval(2, 5)
    assert (rates.target_rate.ci_low, rates.target_rate.ci_high) == pytest.approx((100 * low, 100 * high))
    assert rates.mean_confidence == pytest.approx((0.9 + 0.7 + 0.8 + 0.0 + 0.5) / 5)
    row = rates.flat()
    assert row["target_count"] + row["source_count"] + row["other_count"] == row["n"] == 5
    assert row["target_rate"] + row["source_rate"] + row["other_rate"] == pytest.approx(100.0)


def test_language_rates_bad_input():
    with pytest.raises(LangNeuronsError, match="no generations"):
        language_rates([], "en", "fr")
    with pytest.raises(LangNeuronsError, match="the same"):
        language_rates([Identification("en", 1.0)], "en", "en")


def test_fluent_target_rate_counts_target_language_continuations_that_do_not_loop():
    from langneurons.steer.metric import loop_aware_scores

    texts = ["Le conseil municipal a voté hier soir un nouveau plan.",  # fr, fluent
             "plus plus plus plus plus plus",                           # "fr" by the identifier, a loop
             "La ville ouvrira une nouvelle bibliothèque au printemps.",  # fr, fluent
             "The committee will meet again next week.",               # en, fluent
             "the the the the the the the"]                            # en, a loop
    ids = [Identification(code, 0.9) for code in ("fr", "fr", "fr", "en", "en")]
    scores = loop_aware_scores(ids, texts, "fr")
    assert scores.n == 5 and scores.degenerate_rate.count == 2 and scores.fluent_target_rate.count == 2
    assert scores.fluent_target_rate.rate == pytest.approx(40.0)  # the raw target rate would be 60
    low, high = wilson_interval(2, 5)
    assert (scores.fluent_target_rate.ci_low, scores.fluent_target_rate.ci_high) == pytest.approx((100 * low, 100 * high))
    # combined: harmonic mean of T = 0.6 and F = 3/5 non-degenerate = 0.6 -> 60; no interval at 5 prompts
    assert scores.combined_score == pytest.approx(60.0)
    assert scores.combined_ci_low is None and scores.combined_ci_high is None
    row = scores.flat()
    assert row["fluent_target_count"] == 2 and row["degenerate_rate"] == pytest.approx(40.0)
    with pytest.raises(LangNeuronsError, match="one identification per continuation"):
        loop_aware_scores(ids[:2], texts, "fr")


def test_combined_score_is_the_harmonic_mean_of_target_and_non_degenerate_shares():
    from langneurons.steer.metric import combined_score

    # T = 3/4, F = 3/4 -> 75
    assert combined_score([1, 1, 1, 0], [1, 0, 0, 0])[0] == pytest.approx(75.0)
    # T = 1, F = 1/2 -> 2 x 0.5 / 1.5 = 2/3
    assert combined_score([1, 1, 1, 1], [1, 1, 0, 0])[0] == pytest.approx(200 / 3)
    # forcing by looping scores 0, so does fluent text that never reaches the target
    assert combined_score([1, 1], [1, 1])[0] == 0.0 and combined_score([0, 0], [0, 0])[0] == 0.0
    with pytest.raises(LangNeuronsError, match="same positive number"):
        combined_score([1, 0], [0])


def test_combined_score_interval_resamples_prompts():
    from langneurons.evaluate.metrics import bootstrap_ci
    from langneurons.steer.metric import MIN_BOOTSTRAP_PROMPTS, combined_score

    # fewer than 20 prompts: no interval; at 20 there is one
    assert combined_score([1, 0] * 9 + [1], [0] * 19)[1:] == (None, None)
    assert MIN_BOOTSTRAP_PROMPTS == 20 and combined_score([1, 0] * 10, [0] * 20)[1] is not None
    # a prompt's two flags are resampled together: when every target continuation is the only
    # non-degenerate one, T* = F* in every resample, so the score's interval is the bootstrap interval of
    # the target share itself (same seed, same resamples)
    target = [1, 0, 0, 1, 1, 0, 1, 1, 0, 1] * 3
    score, low, high = combined_score(target, [1 - t for t in target], n_resamples=500, seed=3)
    expected = bootstrap_ci([100.0 * t for t in target], n_resamples=500, seed=3)
    assert score == pytest.approx(60.0) and (low, high) == pytest.approx(expected)
    assert low < score < high
    # no variation: not a zero-width interval but the Wilson-Bonferroni bound (test below)
    score, low, high = combined_score([1] * 25, [0] * 25)
    assert score == 100.0 and high == pytest.approx(100.0) and 80.0 < low < 100.0


def test_pooled_scores_pool_the_test_generations_of_every_pair_per_condition():
    from langneurons.steer.metric import combined_score, pooled_scores

    def record(pair, condition, index, split, in_target, loop):
        source, target = pair.split(">")
        return {"source": source, "target": target, "condition": condition, "prompt_index": index, "split": split,
                "language": target if in_target else source, "degenerate": loop,
                "continuation": "plus plus plus plus" if loop else "Un texte ordinaire."}

    generations = []
    for pair in ("en>fr", "en>hi"):
        for i in range(12):  # test: 8 of 12 in the target, 3 of those loops; dev: everything in the target
            generations.append(record(pair, "lape:add=4", i, "test", i < 8, i < 3))
            generations.append(record(pair, "baseline", i, "test", False, False))
        for i in range(12, 16):
            generations.append(record(pair, "lape:add=4", i, "dev", True, False))
    pooled = {p["condition"]: p for p in pooled_scores(generations, seed=1)}
    steered = pooled["lape:add=4"]
    assert steered["n"] == 24 and steered["pairs"] == ["en>fr", "en>hi"]  # dev records are not pooled
    assert (steered["target_count"], steered["degenerate_count"], steered["fluent_target_count"]) == (16, 6, 10)
    low, high = wilson_interval(10, 24)
    assert (steered["fluent_target_ci_low"], steered["fluent_target_ci_high"]) == pytest.approx((100 * low, 100 * high))
    # harmonic mean of 16/24 and 18/24; 24 units: an interval, the same as combined_score's
    assert steered["combined_score"] == pytest.approx(100 * 2 * (16 / 24) * (18 / 24) / (34 / 24))
    expected = combined_score([i < 8 for i in range(12)] * 2, [i < 3 for i in range(12)] * 2, seed=1)
    assert (steered["combined_ci_low"], steered["combined_ci_high"]) == pytest.approx(expected[1:])
    assert pooled["baseline"]["combined_score"] == 0.0
    assert [p["n"] for p in pooled_scores(generations, split="dev")] == [8]


def test_a_combined_score_whose_resamples_are_all_equal_gets_the_wilson_bonferroni_bound_not_zero_width():
    from langneurons.evaluate.metrics import wilson_interval
    import torch

    from langneurons.steer.metric import combined_score, harmonic_mean

    # no prompt in the target language, 68 of 80 fluent: every resample's harmonic mean is 0
    score, low, high = combined_score([0] * 80, [1] * 12 + [0] * 68)
    target_high = wilson_interval(0, 80, 0.975)[1]
    fluent_high = wilson_interval(68, 80, 0.975)[1]
    expected = 100 * float(harmonic_mean(torch.tensor(target_high), torch.tensor(fluent_high)))
    assert score == 0.0 and low == 0.0 and high == pytest.approx(expected) and 9.0 < high < 12.0
    # every prompt in the target language and fluent: the score is 100, the interval reaches below it
    score, low, high = combined_score([1] * 40, [0] * 40)
    assert score == 100.0 and high == pytest.approx(100.0) and low == pytest.approx(100 * wilson_interval(40, 40, 0.975)[0])
    # a bootstrap with spread keeps its percentile interval
    varied = combined_score([1, 0] * 20, [0] * 40)
    assert varied[2] - varied[1] > 0 and varied[2] < 100
