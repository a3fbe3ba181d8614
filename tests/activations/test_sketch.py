"""The percentile sketch: estimates within the documented bound, exact merging."""

import math

import pytest
import torch

from langneurons.activations.sketch import (
    SketchConfig,
    bin_index,
    histogram_probability_above,
    histogram_quantile,
    histogram_update,
)

CONFIG = SketchConfig()


def _sketch(values: torch.Tensor, config: SketchConfig = CONFIG) -> torch.Tensor:
    histogram = torch.zeros(values.shape[1], config.num_bins, dtype=torch.int64)
    histogram_update(histogram, values, config)
    return histogram


def _bound(true: torch.Tensor, config: SketchConfig) -> torch.Tensor:
    return torch.clamp(config.relative_error * true.abs(), min=2 * config.zero_width) + 1e-6


def _activation_like(tokens: int, neurons: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    pre = torch.randn(tokens, neurons, generator=generator) * torch.linspace(0.2, 6.0, neurons)
    shift = torch.linspace(-2, 2, neurons)
    return torch.nn.functional.gelu(pre + shift, approximate="tanh")


def test_bin_index_follows_the_documented_edges():
    edges = CONFIG.edges()
    values = torch.tensor([0.0, 5e-4, -5e-4, 1e-3, 1.5e-3, -1.5e-3, 1.0, -1.0, 1e6, -1e6])
    index = bin_index(values, CONFIG)
    for value, i in zip(values.double(), index):
        assert edges[i] <= value < edges[i + 1] or (value == edges[i + 1] and value < 0) or abs(value) < 1e-3


@pytest.mark.parametrize("q", [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95])
def test_quantile_estimate_is_within_the_stated_bound_of_torch_quantile(q):
    values = _activation_like(4000, 64)
    histogram = _sketch(values)
    estimate = histogram_quantile(histogram, q, CONFIG, values.amin(0), values.amax(0))
    lower = torch.quantile(values, q, dim=0, interpolation="lower")
    higher = torch.quantile(values, q, dim=0, interpolation="higher")
    slack = _bound(torch.maximum(lower.abs(), higher.abs()), CONFIG)
    assert torch.all(estimate >= lower - slack)
    assert torch.all(estimate <= higher + slack)


def test_quantile_of_a_constant_is_exact_thanks_to_min_max_clipping():
    values = torch.full((100, 3), 0.7)
    estimate = histogram_quantile(_sketch(values), 0.5, CONFIG, values.amin(0), values.amax(0))
    torch.testing.assert_close(estimate, torch.full((3,), 0.7))


def test_empty_rows_give_nan_not_a_number():
    histogram = torch.zeros(2, CONFIG.num_bins, dtype=torch.int64)
    assert torch.isnan(histogram_quantile(histogram, 0.5, CONFIG)).all()


def test_merging_histograms_of_shards_equals_one_pass():
    values = _activation_like(3000, 16, seed=3)
    whole = _sketch(values)
    merged = _sketch(values[:1000]) + _sketch(values[1000:2500]) + _sketch(values[2500:])
    assert torch.equal(whole, merged)


def test_probability_above_matches_the_empirical_fraction_at_bin_edges():
    values = _activation_like(5000, 8, seed=1)
    histogram = _sketch(values)
    edges = CONFIG.edges()
    threshold = edges[CONFIG.bins_per_side + 20].float().expand(8)  # a positive bin edge
    estimate = histogram_probability_above(histogram, threshold, CONFIG)
    empirical = (values >= threshold).double().mean(0)
    torch.testing.assert_close(estimate, empirical, atol=1e-6, rtol=0)


def test_probability_above_the_median_is_about_one_half():
    values = _activation_like(5000, 8, seed=2)
    histogram = _sketch(values)
    median = histogram_quantile(histogram, 0.5, CONFIG, values.amin(0), values.amax(0))
    p = histogram_probability_above(histogram, median, CONFIG)
    assert torch.all((p - 0.5).abs() < 0.02)


def test_invalid_sketch_configs_are_rejected():
    with pytest.raises(ValueError):
        SketchConfig(relative_error=0.0)
    with pytest.raises(ValueError):
        SketchConfig(bins_per_side=0)


def test_default_range_is_documented():
    assert CONFIG.num_bins == 243
    assert math.isclose(CONFIG.max_exact_magnitude, 1e-3 * 1.1**120)
