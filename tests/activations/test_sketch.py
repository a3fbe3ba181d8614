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
    return torch.clamp(config.relative_error * true.abs(), min=config.zero_width) + 1e-6


def _activation_like(tokens: int, neurons: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    pre = torch.randn(tokens, neurons, generator=generator) * torch.linspace(0.2, 6.0, neurons)
    shift = torch.linspace(-2, 2, neurons)
    return torch.nn.functional.gelu(pre + shift, approximate="tanh")


def test_bin_index_follows_the_documented_edges_exactly():
    edges = CONFIG.edges()
    P = CONFIG.bins_per_side
    generator = torch.Generator().manual_seed(0)
    values = torch.cat([
        torch.randn(2000, generator=generator) * 10.0 ** torch.randint(-5, 4, (2000,), generator=generator),
        edges[1:-1].float(), -edges[1:-1].float(), torch.tensor([0.0, -0.0, 1e9, -1e9, 1e-30, -1e-30]),
    ])
    for value, i in zip(values.double().tolist(), bin_index(values, CONFIG).tolist()):
        low, high = edges[i].item(), edges[i + 1].item()
        if i < P:
            assert low < value <= high, (value, i)
        elif i == P:
            assert low < value <= 0.0, (value, i)
        elif i == P + 1:
            assert 0.0 < value < high, (value, i)
        else:
            assert low <= value < high, (value, i)


def test_positive_values_and_non_positive_values_never_share_a_bin():
    values = torch.tensor([0.0, -0.0, -1e-30, 1e-30, 5e-4, -5e-4])
    index = bin_index(values, CONFIG)
    P = CONFIG.bins_per_side
    assert index.tolist()[:3] == [P, P, P]
    assert index[3] == P + 1 and index[4] == P + 1 and index[5] == P


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
        SketchConfig(mantissa_bits=9)
    with pytest.raises(ValueError):
        SketchConfig(min_exponent=3, max_exponent=3)


def test_default_layout_is_the_documented_one():
    assert CONFIG.num_bins == 290 and CONFIG.relative_error == 0.125
    assert math.isclose(CONFIG.zero_width, 2**-10)
    edges = CONFIG.positive_edges()
    assert edges[0] == 2**-10 and edges[-1] == 2**8 and torch.all(edges[1:] / edges[:-1] <= 1.125 + 1e-12)


def test_finer_mantissa_bits_tighten_the_estimate():
    values = _activation_like(4000, 32, seed=5)
    true = torch.quantile(values, 0.9, dim=0, interpolation="higher")
    errors = []
    for bits in (1, 3, 5):
        config = SketchConfig(mantissa_bits=bits)
        estimate = histogram_quantile(_sketch(values, config), 0.9, config, values.amin(0), values.amax(0))
        errors.append((estimate - true).abs().max().item())
    assert errors[0] > errors[2]


def test_per_batch_quantiles_averaged_are_biased_but_the_streaming_sketch_is_not():
    """The paper code's estimator: torch.quantile per batch, then the mean over batches."""
    generator = torch.Generator().manual_seed(7)
    quiet = torch.randn(2000, 4, generator=generator).abs() * 0.1  # the neuron is nearly silent in one document
    loud = 2.0 + torch.randn(2000, 4, generator=generator).abs()  # and strongly active in another
    values = torch.cat([quiet, loud])
    true = torch.quantile(values, 0.9, dim=0)
    averaged = torch.stack([torch.quantile(batch, 0.9, dim=0) for batch in (quiet, loud)]).mean(0)
    sketched = histogram_quantile(_sketch(values), 0.9, CONFIG, values.amin(0), values.amax(0))
    assert torch.all((averaged - true).abs() > 0.5)
    assert torch.all((sketched - true).abs() <= _bound(true, CONFIG))
