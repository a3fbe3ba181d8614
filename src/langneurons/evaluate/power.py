"""Sample sizes for a paired comparison's interval to reach a margin (power stated before a run).

A paired comparison of two systems on the same examples estimates the mean of the per-example
differences ``d_i = score_B(i) - score_A(i)`` (points). Its normal-approximation interval has
half-width ``z * sd(d) / sqrt(n)`` (``z``: the two-sided normal quantile of the confidence,
1.96 for 95 %; ``sd``: the population standard deviation of the differences, a plug-in estimate
from the current run). The n that makes the half-width at most ``margin`` is therefore

    n = ceil(z² · var(d) / margin²).

For accuracy, ``d_i`` is +100 (only B right, rate ``p01``), -100 (only A right, rate ``p10``) or
0 (the concordant pairs of the McNemar table), so ``var(d) = 100² · (p01 + p10 - (p01 - p10)²)``
and, in proportions,

    half-width = z · sqrt((p01 + p10 - (p01 - p10)²) / n),
    n = ceil(z² · (p01 + p10 - (p01 - p10)²) / (margin / 100)²).

For F1 / exact match the same formula is used with the variance of the per-example differences.
Pooled over languages (the claims pool the examples of every target language, resampled jointly),
the variance is that of all differences together (between-language shifts included) and the
pooled total is split evenly over the languages: ``n per language = ceil(n_total / languages)``.
The bootstrap percentile interval the claims report is close to this normal interval at these n.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from scipy.stats import norm

from langneurons.errors import LangNeuronsError


def z_value(confidence: float = 0.95) -> float:
    """Two-sided standard normal quantile of ``confidence`` (1.95996... for 0.95)."""
    if not 0.0 < confidence < 1.0:
        raise LangNeuronsError(f"confidence must be strictly between 0 and 1, got {confidence}")
    return float(norm.ppf(0.5 + confidence / 2.0))


def _check_rates(p01: float, p10: float) -> None:
    if p01 < 0 or p10 < 0 or p01 + p10 > 1 + 1e-12:
        raise LangNeuronsError(f"discordance rates need p01, p10 >= 0 and p01 + p10 <= 1, got {p01}, {p10}")


def accuracy_difference_variance(p01: float, p10: float) -> float:
    """Variance of one paired accuracy difference in proportions: p01 + p10 - (p01 - p10)²."""
    _check_rates(p01, p10)
    return p01 + p10 - (p01 - p10) ** 2


def accuracy_half_width(p01: float, p10: float, n: int, confidence: float = 0.95) -> float:
    """Half-width (points) of the interval of an accuracy difference over ``n`` pairs with
    discordance rates ``p01`` (only B right) and ``p10`` (only A right)."""
    return half_width(1e4 * accuracy_difference_variance(p01, p10), n, confidence)


def accuracy_required_n(p01: float, p10: float, margin: float = 1.0, confidence: float = 0.95) -> int | None:
    """Pairs needed for an accuracy-difference interval of half-width <= ``margin`` points
    (None when p01 = p10 = 0: the plug-in variance is 0 and the n cannot be estimated)."""
    return required_n(1e4 * accuracy_difference_variance(p01, p10), margin, confidence)


def half_width(variance: float, n: int, confidence: float = 0.95) -> float:
    """z · sqrt(variance / n): half-width of the mean of ``n`` paired differences of ``variance``
    (points²), in points."""
    if n < 1:
        raise LangNeuronsError(f"a half-width needs n >= 1, got {n}")
    return z_value(confidence) * math.sqrt(max(variance, 0.0) / n)


def required_n(variance: float, margin: float = 1.0, confidence: float = 0.95) -> int | None:
    """ceil(z² · variance / margin²) (variance in points², margin in points); None when the
    variance is 0 (nothing discordant: the current data cannot say how many are needed)."""
    if margin <= 0:
        raise LangNeuronsError(f"the margin must be positive, got {margin}")
    if variance <= 0:
        return None
    # round away float noise in the product before the ceiling (5666.0000000001 is 5666)
    return max(1, math.ceil(round(z_value(confidence) ** 2 * variance / margin**2, 9)))


@dataclass(frozen=True)
class PowerEstimate:
    """How far a paired comparison is from an interval of half-width ``margin`` (points).

    n / n_per_language: pairs now (in all / in the smallest language); p01 / p10: discordance
    rates (accuracy only, else None); sd: standard deviation of a difference (points);
    achieved_half_width: z · sd / sqrt(n) now; required_n: pairs in all (languages pooled) for
    the margin, required_n_per_language = ceil(required_n / languages); required_n_alone: the
    most any one language would need on its own; available_per_language: the test pool per
    language (None when unknown); reached: n_per_language >= required_n_per_language; reachable:
    available_per_language >= required_n_per_language (None when unknown).
    """

    languages: str
    n: int
    n_per_language: int
    p01: float | None
    p10: float | None
    sd: float
    margin: float
    achieved_half_width: float
    required_n: int | None
    required_n_per_language: int | None
    required_n_alone: int | None
    available_per_language: int | None
    reached: bool
    reachable: bool | None

    def to_dict(self) -> dict:
        return asdict(self)


def paired_power(differences: Sequence[float] | torch.Tensor, groups: Sequence[str], margin: float = 1.0,
                 confidence: float = 0.95, accuracy: bool = False,
                 available_per_language: int | None = None) -> PowerEstimate:
    """Power of the pooled comparison whose per-example differences (points) are ``differences``
    [n], ``groups[i]`` the language of example i. ``accuracy``: the differences are -100/0/+100
    (then p01 / p10 are reported and the variance is exactly p01 + p10 - (p01 - p10)², scaled)."""
    d = torch.as_tensor(differences, dtype=torch.float64).flatten()
    if d.numel() == 0 or len(groups) != d.numel():
        raise LangNeuronsError(f"power needs one language per difference, got {len(groups)} for {d.numel()}")
    names = sorted(set(groups))
    index = torch.tensor([names.index(g) for g in groups])
    counts = torch.bincount(index, minlength=len(names))
    variance = float(d.var(unbiased=False))
    p01 = p10 = None
    if accuracy:
        if not bool(((d == 0) | (d.abs() == 100)).all()):
            raise LangNeuronsError("accuracy differences must be -100, 0 or +100 points")
        p01, p10 = float((d > 0).double().mean()), float((d < 0).double().mean())
        variance = 1e4 * accuracy_difference_variance(p01, p10)
    total = required_n(variance, margin, confidence)
    alone = [required_n(float(d[index == i].var(unbiased=False)), margin, confidence) for i in range(len(names))]
    alone = [a for a in alone if a is not None]
    per_language = None if total is None else math.ceil(total / len(names))
    smallest = int(counts.min())
    return PowerEstimate(
        languages=",".join(names), n=int(d.numel()), n_per_language=smallest, p01=p01, p10=p10,
        sd=math.sqrt(variance), margin=margin, achieved_half_width=half_width(variance, int(d.numel()), confidence),
        required_n=total, required_n_per_language=per_language, required_n_alone=max(alone) if alone else None,
        available_per_language=available_per_language,
        reached=per_language is not None and smallest >= per_language,
        reachable=None if available_per_language is None or per_language is None
        else available_per_language >= per_language,
    )

