"""A mergeable percentile sketch: fixed log-spaced histogram bins shared by every neuron.

Bins (``K = bins_per_side``, ``x0 = zero_width``, ``g = 1 + relative_error``)::

    index K + k  (k = 1..K):  [ x0 g^(k-1),  x0 g^k )       positive values
    index K               :  ( -x0, x0 )                    the zero bin
    index K - k  (k = 1..K):  ( -x0 g^k,  -x0 g^(k-1) ]      negative values

The outermost bins are open-ended (values beyond ``x0 g^(K-1)`` in magnitude fall into them).
Because the edges are the same for every neuron, language and shard, histograms merge exactly
by adding counts, and a pooled (all-language) distribution is the sum of the per-language ones.

Error bound: a quantile estimate always lies in the same bin as the true order statistic
(rank ``ceil(q n)``), and is clipped to the neuron's observed [min, max]. Therefore

    |estimate - true| <= relative_error * |true|   when x0 <= |true| < x0 g^(K-1)
    |estimate - true| <= 2 * x0                     when |true| < x0
    (outer bins: bounded by the observed min / max only).

With the defaults (relative_error 0.1, x0 1e-3, K 121) the exact range is 1e-3 .. ~9e1 in
magnitude with 243 bins per neuron. Within a bin the estimate interpolates linearly, which is
usually far better than the bound.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class SketchConfig:
    """Bin layout of the percentile sketch (see module docstring for the error bound)."""

    relative_error: float = 0.1
    zero_width: float = 1e-3
    bins_per_side: int = 121

    def __post_init__(self):
        if not 0 < self.relative_error < 1:
            raise ValueError(f"relative_error must be in (0, 1), got {self.relative_error}")
        if self.zero_width <= 0 or self.bins_per_side < 1:
            raise ValueError("zero_width must be > 0 and bins_per_side >= 1")

    @property
    def growth(self) -> float:
        return 1.0 + self.relative_error

    @property
    def num_bins(self) -> int:
        return 2 * self.bins_per_side + 1

    @property
    def max_exact_magnitude(self) -> float:
        return self.zero_width * self.growth ** (self.bins_per_side - 1)

    def edges(self) -> torch.Tensor:
        """Bin edges, float64 [num_bins + 1], with -inf / +inf at the ends."""
        k = torch.arange(self.bins_per_side, dtype=torch.float64)
        positive = self.zero_width * self.growth**k  # x0 g^0 .. x0 g^(K-1)
        inf = torch.tensor([math.inf], dtype=torch.float64)
        return torch.cat([-inf, -positive.flip(0), positive, inf])

    def to_dict(self) -> dict:
        return asdict(self)


def bin_index(values: torch.Tensor, config: SketchConfig) -> torch.Tensor:
    """Bin of every value: long tensor of the same shape, in [0, num_bins)."""
    values = values.float()
    scale = 1.0 / math.log(config.growth)
    k = torch.log(values.abs() * (1.0 / config.zero_width))
    k.mul_(scale).floor_().add_(1.0).clamp_(0.0, float(config.bins_per_side))
    k.mul_(torch.sign(values)).add_(float(config.bins_per_side))
    return k.long()


def histogram_update(histogram: torch.Tensor, values: torch.Tensor, config: SketchConfig) -> None:
    """Add the values [tokens, neurons] to ``histogram`` [neurons, num_bins] (in place)."""
    neurons = values.shape[-1]
    bins = config.num_bins
    index = bin_index(values, config)
    index += torch.arange(neurons, device=index.device) * bins
    counts = torch.bincount(index.reshape(-1), minlength=neurons * bins)
    histogram.add_(counts.view(neurons, bins).to(histogram.dtype))


def histogram_quantile(
    histogram: torch.Tensor,
    q: float,
    config: SketchConfig,
    minimum: torch.Tensor | None = None,
    maximum: torch.Tensor | None = None,
) -> torch.Tensor:
    """Estimate the q-quantile of each row of ``histogram`` [..., num_bins] -> float32 [...].

    Rows with no observations give NaN. ``minimum``/``maximum`` [...] clip the open outer bins.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    counts = histogram.to(torch.float64)
    cumulative = counts.cumsum(-1)
    total = cumulative[..., -1:]
    target = (q * total).clamp_min(1e-9).clamp_max(total.clamp_min(1e-9))  # rank in (0, n]
    bin_of = torch.searchsorted(cumulative.contiguous(), target.contiguous()).clamp_max(counts.shape[-1] - 1)
    below = torch.where(bin_of > 0, cumulative.gather(-1, (bin_of - 1).clamp_min(0)), torch.zeros_like(target))
    in_bin = counts.gather(-1, bin_of).clamp_min(1e-12)
    fraction = ((target - below) / in_bin).clamp(0.0, 1.0)
    edges = config.edges().to(counts.device)
    low = edges[bin_of]
    high = edges[bin_of + 1]
    if minimum is not None:
        low = torch.maximum(low, minimum.to(torch.float64).unsqueeze(-1))
        high = torch.maximum(high, low)
    if maximum is not None:
        high = torch.minimum(high, maximum.to(torch.float64).unsqueeze(-1))
        low = torch.minimum(low, high)
    estimate = (low + fraction * (high - low)).squeeze(-1)
    estimate = torch.where(total.squeeze(-1) > 0, estimate, torch.full_like(estimate, math.nan))
    return estimate.float()


def histogram_probability_above(histogram: torch.Tensor, threshold: torch.Tensor, config: SketchConfig) -> torch.Tensor:
    """Estimated P(value > threshold) per row of ``histogram`` [..., num_bins]; threshold [...].

    Counts every bin entirely above the threshold's bin, plus the part of the threshold's
    own bin above it (linear within the bin; outer bins count whole). Float64 [...].
    """
    counts = histogram.to(torch.float64)
    total = counts.sum(-1).clamp_min(1.0)
    edges = config.edges().to(counts.device)
    t = threshold.to(torch.float64).unsqueeze(-1)
    bin_of = (torch.searchsorted(edges, t.contiguous(), right=True) - 1).clamp(0, counts.shape[-1] - 1)
    cumulative = counts.cumsum(-1)
    up_to_bin = cumulative.gather(-1, bin_of)
    in_bin = counts.gather(-1, bin_of)
    low, high = edges[bin_of], edges[bin_of + 1]
    finite = torch.isfinite(low) & torch.isfinite(high)
    width = torch.where(finite, high - low, torch.ones_like(low))
    above_in_bin = torch.where(finite, ((high - t) / width).clamp(0.0, 1.0), torch.zeros_like(t))
    above = (cumulative[..., -1:] - up_to_bin) + in_bin * above_in_bin
    return (above.squeeze(-1) / total).clamp(0.0, 1.0)
