"""Sample size for a paired interval of a given half-width: the formula by hand, and by simulation."""

import math

import pytest
import torch

from langneurons.errors import LangNeuronsError
from langneurons.evaluate.metrics import compare_accuracy
from langneurons.evaluate.power import (
    accuracy_half_width,
    accuracy_required_n,
    half_width,
    paired_power,
    required_n,
    z_value,
)


def test_required_pairs_for_a_one_point_accuracy_interval_by_hand():
    # p01 = 0.10 (only B right), p10 = 0.05 (only A right):
    # variance = 0.10 + 0.05 - (0.10 - 0.05)^2 = 0.1475; z = 1.959964, z^2 = 3.841459;
    # n = ceil(3.841459 * 0.1475 / 0.01^2) = ceil(5666.15) = 5667
    assert z_value(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert accuracy_required_n(0.10, 0.05, margin=1.0) == 5667
    # a 2-point margin needs a quarter: ceil(5666.15 / 4) = ceil(1416.54) = 1417
    assert accuracy_required_n(0.10, 0.05, margin=2.0) == 1417
    # at n = 5667 the half-width is just under 1 point; at 5666 just over
    assert accuracy_half_width(0.10, 0.05, 5667) <= 1.0 < accuracy_half_width(0.10, 0.05, 5666)
    # 400 pairs: 1.959964 * sqrt(0.1475 / 400) = 0.037637 -> 3.7637 points
    assert accuracy_half_width(0.10, 0.05, 400) == pytest.approx(3.7637, abs=1e-4)


def test_the_general_formula_on_f1_differences_by_hand():
    # differences of variance 400 points^2 (sd 20): n = ceil(3.841459 * 400 / 1) = ceil(1536.58) = 1537
    assert required_n(400.0, margin=1.0) == 1537
    assert half_width(400.0, 100) == pytest.approx(1.959964 * 2.0, abs=1e-5)
    assert required_n(0.0) is None  # nothing discordant: not estimable
    with pytest.raises(LangNeuronsError):
        required_n(1.0, margin=0.0)
    with pytest.raises(LangNeuronsError):
        accuracy_required_n(0.7, 0.5)


def test_the_simulated_interval_at_the_required_n_is_about_the_margin():
    """Draw 2,000 experiments of n = 5667 pairs from the McNemar table (0.10, 0.05, 0.85): the
    central 95% of the estimated differences spans about +-1 point around the truth (+5 points);
    one experiment's paired-bootstrap interval (what the claims report) too."""
    n, p01, p10 = accuracy_required_n(0.10, 0.05), 0.10, 0.05
    generator = torch.Generator().manual_seed(0)
    cells = torch.multinomial(torch.tensor([p01, p10, 1 - p01 - p10], dtype=torch.float64), 2000 * n,
                              replacement=True, generator=generator).reshape(2000, n)
    estimates = 100.0 * ((cells == 0).double().mean(1) - (cells == 1).double().mean(1))
    low, high = torch.quantile(estimates, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    assert (high - low) / 2 == pytest.approx(1.0, abs=0.06)
    assert estimates.mean().item() == pytest.approx(5.0, abs=0.05)
    a = cells[0] == 1  # A right only on its discordant pairs (concordant pairs: both wrong, as good as both right)
    b = cells[0] == 0
    comparison = compare_accuracy(a, b, n_resamples=2000, seed=1)
    assert (comparison.ci_high - comparison.ci_low) / 2 == pytest.approx(1.0, abs=0.08)


def test_pooled_power_splits_the_total_over_languages_and_reports_the_discordance_rates():
    # fr: 10 pairs, 2 gains, 1 loss; hi: 10 pairs, 1 gain, 0 losses. Pooled: p01 = 3/20, p10 = 1/20,
    # variance = 0.15 + 0.05 - 0.01 = 0.19 -> n = ceil(3.841459 * 0.19 / 1e-4) = ceil(7298.77) = 7299,
    # per language ceil(7299 / 2) = 3650. fr alone: 0.2 + 0.1 - 0.01 = 0.29 -> ceil(11140.23) = 11141;
    # hi alone: 0.1 - 0.01 = 0.09 -> ceil(3457.31) = 3458; the most either needs alone: 11141.
    fr = [100, 100, -100] + [0] * 7
    hi = [100] + [0] * 9
    estimate = paired_power(fr + hi, ["fr"] * 10 + ["hi"] * 10, accuracy=True, available_per_language=5010)
    assert (estimate.p01, estimate.p10) == pytest.approx((0.15, 0.05))
    assert estimate.required_n == 7299 and estimate.required_n_per_language == 3650
    assert estimate.required_n_alone == 11141
    assert estimate.n == 20 and estimate.n_per_language == 10 and estimate.languages == "fr,hi"
    assert estimate.achieved_half_width == pytest.approx(1.959964 * math.sqrt(1900 / 20), abs=1e-4)
    assert not estimate.reached and estimate.reachable  # 10 < 3650 <= 5010
    # F1-like differences use their own variance: 2 examples of -10 / +10 -> variance 100
    f1 = paired_power([-10.0, 10.0], ["es", "es"])
    assert f1.p01 is None and f1.sd == pytest.approx(10.0) and f1.required_n == 385  # ceil(384.15)
    assert f1.reachable is None
    with pytest.raises(LangNeuronsError):
        paired_power([50.0], ["fr"], accuracy=True)
