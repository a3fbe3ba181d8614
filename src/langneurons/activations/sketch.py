"""A mergeable percentile sketch: fixed floating-point histogram bins shared by every neuron.

Bins follow the binary representation of float32 (like HdrHistogram): each octave
``[2^e, 2^(e+1))`` with ``min_exponent <= e < max_exponent`` is cut into ``2^m`` equal bins
(``m = mantissa_bits``), mirrored for negative values, plus two bins around zero::

    e_j = 2^(min_exponent + j // 2^m) * (1 + (j mod 2^m) / 2^m),   j = 0 .. P   (P bins per side)

    index  0 .. P-1 :  negative bins ( -e_(j+1), -e_j ]   (j = P-1-index; the first is open to -inf)
    index  P        :  ( -e_0, 0 ]                           (includes +0.0 and -0.0)
    index  P+1      :  ( 0, e_0 )
    index  P+2 ..   :  positive bins [ e_j, e_(j+1) )        (j = index-P-2; the last is open to +inf)

A value's bin is read from its top ``9 + m`` bits (sign, exponent, ``m`` mantissa bits) through
a lookup table: a shift, a mask and a gather per value, no logarithms. Edges are exact float32
numbers, so bin membership is exact. Because the edges are the same for every neuron,
language and shard, histograms merge exactly by adding counts, and a pooled (all-language)
distribution is the sum of the per-language ones.

Error bound: a quantile estimate lies in the same bin as the true order statistic (rank
``ceil(q n)``), and is clipped to the neuron's observed [min, max]. Therefore

    |estimate - true| <= 2^-m * |true|     when 2^min_exponent <= |true| < 2^max_exponent
    |estimate - true| <= 2^min_exponent    when |true| < 2^min_exponent
    (outer bins: bounded by the observed min / max only)

With the defaults (m = 3, exponents -10 .. 8) the relative error is at most 12.5% for
magnitudes in [9.8e-4, 256), with 290 bins per neuron. Within a bin the estimate interpolates
linearly, which is usually far better than the bound. (Float32 subnormals, |x| < 1.5e-39,
fall into the zero bins.)
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import torch

from langneurons.activations.scratch import ScratchBuffers


@dataclass(frozen=True)
class SketchConfig:
    """Bin layout of the percentile sketch (see module docstring for the error bound)."""

    mantissa_bits: int = 3
    min_exponent: int = -10
    max_exponent: int = 8

    def __post_init__(self):
        if not 0 <= self.mantissa_bits <= 7:
            raise ValueError(f"mantissa_bits must be in 0..7, got {self.mantissa_bits}")
        if not -126 <= self.min_exponent < self.max_exponent <= 127:
            raise ValueError(f"need -126 <= min_exponent < max_exponent <= 127, got {self.min_exponent}, {self.max_exponent}")

    @property
    def relative_error(self) -> float:
        return 2.0**-self.mantissa_bits

    @property
    def zero_width(self) -> float:
        return 2.0**self.min_exponent

    @property
    def bins_per_side(self) -> int:
        return (self.max_exponent - self.min_exponent) << self.mantissa_bits

    @property
    def num_bins(self) -> int:
        return 2 * self.bins_per_side + 2

    def positive_edges(self) -> torch.Tensor:
        """e_0 .. e_P (float64 [P + 1]), exact float32 values."""
        j = torch.arange(self.bins_per_side + 1, dtype=torch.float64)
        per_octave = 2**self.mantissa_bits
        octave = torch.div(j, per_octave, rounding_mode="floor")
        return 2.0 ** (self.min_exponent + octave) * (1.0 + (j - octave * per_octave) / per_octave)

    def edges(self) -> torch.Tensor:
        """Bin edges, float64 [num_bins + 1] ascending, with -inf / +inf at the ends."""
        positive = self.positive_edges()[:-1]  # e_0 .. e_(P-1); the outer bins are open
        inf = torch.tensor([math.inf], dtype=torch.float64)
        zero = torch.zeros(1, dtype=torch.float64)
        return torch.cat([-inf, -positive.flip(0), zero, positive, inf])

    def to_dict(self) -> dict:
        return asdict(self)


@functools.lru_cache(maxsize=16)
def _lookup_table(config: SketchConfig) -> torch.Tensor:
    """Bin index (int32) of every value of the top ``9 + m`` bits of a float32."""
    m, P = config.mantissa_bits, config.bins_per_side
    keys = torch.arange(2 ** (9 + m), dtype=torch.int64)
    negative = keys >> (8 + m) == 1
    magnitude = keys & ((1 << (8 + m)) - 1)  # exponent and top mantissa bits
    j = (magnitude - ((127 + config.min_exponent) << m)).clamp(-1, P - 1)
    table = torch.where(negative, P - 1 - j, P + 2 + j)
    table[magnitude == 0] = P  # +0.0 and -0.0 (and the smallest subnormals) are not positive
    return table.to(torch.int32)


def _key_shift_and_mask(config: SketchConfig) -> tuple[int, int]:
    """A float32's top ``9 + m`` bits as ``(bits >> shift) & mask``: the lookup table's key."""
    return 23 - config.mantissa_bits, (1 << (9 + config.mantissa_bits)) - 1


def bin_index(values: torch.Tensor, config: SketchConfig) -> torch.Tensor:
    """Bin of every value (converted to float32): int32 tensor of the same shape."""
    shift, mask = _key_shift_and_mask(config)
    key = (values.float().contiguous().view(torch.int32) >> shift) & mask
    return _lookup_table(config).to(values.device)[key]


def histogram_update(histogram: torch.Tensor, values: torch.Tensor, config: SketchConfig,
                     scratch: ScratchBuffers | None = None, transposed: torch.Tensor | None = None) -> torch.Tensor | None:
    """Add the values [tokens, neurons] to ``histogram`` [neurons, num_bins] (int32, in place).

    Works neuron-major: values are copied transposed to [neurons, tokens] (float32), turned into
    lookup keys in place, mapped to bins, and counted with one ``scatter_add_`` along the bins
    of each neuron's row. ``transposed``: that copy when the caller has made it already (float32
    [neurons, tokens]; it is overwritten). ``scratch`` keeps the work buffers (about 12 bytes per
    value) between calls. Returns the bin of every value, int64 [neurons, tokens] (a view of the
    scratch buffer, valid until the next call; None when there are no tokens).
    """
    tokens, neurons = values.shape
    if tokens == 0:
        return None
    scratch = scratch or ScratchBuffers()
    if transposed is None:
        transposed = scratch.get("histogram.transposed", (neurons, tokens), torch.float32, values.device)
        transposed.copy_(values.T)
    index = scratch.get("histogram.index", (neurons * tokens,), torch.int64, values.device)
    key = transposed.view(torch.int32)
    shift, mask = _key_shift_and_mask(config)
    torch.bitwise_right_shift(key, shift, out=key).bitwise_and_(mask)
    torch.index_select(_lookup_table_int64(config, values.device), 0, key.view(-1), out=index)
    ones = torch.ones((), dtype=histogram.dtype, device=histogram.device).expand(neurons, tokens)
    histogram.scatter_add_(1, index.view(neurons, tokens), ones)
    return index.view(neurons, tokens)


@functools.lru_cache(maxsize=16)
def _lookup_table_int64(config: SketchConfig, device: torch.device) -> torch.Tensor:
    return _lookup_table(config).to(device=device, dtype=torch.int64)


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
