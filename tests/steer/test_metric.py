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
