"""Task metrics with per-example scores, bootstrap confidence intervals and paired tests.

All scores are in percent. Per-example values (0/100 for accuracy and exact match, 0..100 for
F1) are what the bootstrap resamples, so a CI is on the same scale as the score.

* SQuAD v1.1 exact match / F1 come from ``torchmetrics.functional.text.squad`` (a port of the
  official evaluation script): answers are lower-cased, stripped of punctuation and of the
  English articles a/an/the, whitespace-tokenised, and the best score over the gold answers
  is kept. One difference from the v1.1 script: when a prediction and a gold answer both
  normalise to nothing (e.g. "The" vs "the"), torchmetrics gives F1 = 1 (the SQuAD v2 rule)
  where v1.1 gives 0; XQuAD has no gold answer that normalises to nothing.
* :func:`bootstrap_ci`: percentile bootstrap of the mean, resampled in vectorised chunks.
* :func:`paired_bootstrap`: two systems on the same examples; CI of the mean difference and
  a two-sided p-value from the bootstrap distribution shifted to the null.
* :func:`mcnemar`: exact (binomial) McNemar test for two classifiers on the same examples.
* :func:`paired_proportion_interval`: Tango's (1998) score interval of a difference of paired
  proportions. Accuracy differences use it instead of the bootstrap: a percentile bootstrap of
  0/100 differences collapses to [0, 0] when the two systems never disagree, as if 20 agreeing
  examples proved that they always agree; the score interval has width > 0 at any n >= 1.
* :func:`wilson_interval`: Wilson score interval of a binomial proportion (rates of counts).

Minimum number of resampling units. A bootstrap over k units knows nothing about variance when
k is small (one unit: every resample is that unit, a zero-width interval), and percentile
intervals from fewer than about 20 units are too narrow. Every resampling interval and
resampling p-value of the package therefore goes through :func:`resampling_interval` /
:func:`enough_units`: with fewer than :data:`MIN_RESAMPLING_UNITS` (= 20) independent units
(examples, held-out documents, chunks) the interval is *unavailable* (None in JSON, empty in
CSV, "n/a (k units < 20)" in Markdown, see :func:`unavailable`), no resampling p-value is
given, and a verdict built on it is :data:`TOO_FEW_UNITS`. Wilson intervals (exact-ish, not
resampled) need only n >= 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from scipy.optimize import brentq
from scipy.stats import binomtest
from torchmetrics.functional.text import squad as torchmetrics_squad

from langneurons.bounds import MIN_RESAMPLING_UNITS, enough_units  # noqa: F401  (re-exported)
from langneurons.errors import LangNeuronsError
from langneurons.evaluate.power import z_value

TOO_FEW_UNITS = "inconclusive (too few units)"
"""The verdict of any claim whose interval is unavailable for want of resampling units."""

ACCURACY_TEST = "mcnemar exact, Tango score CI"
"""The ``test`` of an accuracy difference (:func:`compare_accuracy`): its p-value and its interval."""

# Resampled means are computed this many values at a time (resamples x examples).
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class ScoreSummary:
    """A score in percent over ``n`` examples with its bootstrap confidence interval."""

    metric: str
    n: int
    score: float
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class PairedComparison:
    """System B minus system A on ``n`` paired examples (percentage points); interval and a
    bootstrap p-value are None with fewer than :data:`MIN_RESAMPLING_UNITS` examples."""

    delta: float
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    test: str
    n: int = 0


# --------------------------------------------------------------------------------------------
# per-example scores


def squad_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> list[tuple[float, float]]:
    """(exact match, F1) per example, each in [0, 100]; ``references[i]`` are the gold answers."""
    _check_same_length(predictions, references, "predictions", "references")
    scores = []
    for prediction, golds in zip(predictions, references):
        if not isinstance(prediction, str):
            raise LangNeuronsError(f"predictions must be strings, got {type(prediction).__name__}")
        if isinstance(golds, str) or not golds:
            raise LangNeuronsError("each reference must be a non-empty list of gold answer strings")
        result = torchmetrics_squad(
            {"prediction_text": prediction, "id": "0"},
            {"answers": {"text": list(golds), "answer_start": [0] * len(golds)}, "id": "0"},
        )
        scores.append((float(result["exact_match"]), float(result["f1"])))
    return scores


def correctness(predictions: Sequence[int] | torch.Tensor, labels: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Boolean tensor [n]: prediction equals label."""
    predictions, labels = torch.as_tensor(predictions), torch.as_tensor(labels)
    _check_same_length(predictions, labels, "predictions", "labels")
    return predictions == labels


def accuracy(predictions: Sequence[int] | torch.Tensor, labels: Sequence[int] | torch.Tensor) -> float:
    """Accuracy in percent."""
    correct = correctness(predictions, labels)
    if correct.numel() == 0:
        raise LangNeuronsError("accuracy of zero examples is undefined")
    return 100.0 * correct.double().mean().item()


# --------------------------------------------------------------------------------------------
# confidence intervals and paired tests


def unavailable(units: int) -> str:
    """Markdown text of an interval that is unavailable: ``n/a (k units < 20)``."""
    return f"n/a ({int(units)} units < {MIN_RESAMPLING_UNITS})"


def interval_text(value: float, low: float | None, high: float | None, units: int, spec: str = ".1f") -> str:
    """``value [low, high]`` formatted with ``spec``, or ``value [n/a (k units < 20)]`` without an interval."""
    if low is None or high is None or (isinstance(low, float) and math.isnan(low)):
        return f"{value:{spec}} [{unavailable(units)}]"
    return f"{value:{spec}} [{low:{spec}}, {high:{spec}}]"


def resampling_interval(samples: torch.Tensor, units: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Percentile interval of bootstrap ``samples`` [n_resamples] drawn over ``units`` independent
    units, or None when ``units`` < :data:`MIN_RESAMPLING_UNITS` (the one guard every resampling
    interval of the package goes through)."""
    if not enough_units(units):
        return None
    return percentile_interval(samples, confidence)


def bootstrap_ci(
    values: Sequence[float] | torch.Tensor, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float] | tuple[None, None]:
    """Percentile bootstrap CI of the mean of ``values`` (same units as the values); (None, None)
    with fewer than :data:`MIN_RESAMPLING_UNITS` values."""
    values = _as_values(values)
    if not enough_units(len(values)):
        return None, None
    means = _bootstrap_means(values, n_resamples, seed)
    return percentile_interval(means, confidence)


def summarize(
    values: Sequence[float] | torch.Tensor,
    metric: str,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> ScoreSummary:
    """Mean of per-example percent scores with its CI (None with fewer than
    :data:`MIN_RESAMPLING_UNITS` examples).

    0/100 scores (accuracy, exact match) get the Wilson interval of the proportion: a bootstrap of
    20 all-correct examples is [100, 100], the Wilson interval [83.9, 100]. Other scores get the
    percentile bootstrap."""
    tensor = _as_values(values)
    if not enough_units(len(tensor)):
        low, high = None, None
    elif zero_or_hundred(tensor):
        low, high = (100.0 * bound for bound in wilson_interval(int((tensor == 100.0).sum()), len(tensor), confidence))
    else:
        low, high = bootstrap_ci(tensor, n_resamples, confidence, seed)
    return ScoreSummary(metric=metric, n=len(tensor), score=tensor.mean().item(), ci_low=low, ci_high=high)


def zero_or_hundred(values: torch.Tensor) -> bool:
    """Whether every per-example percent score is 0 or 100 (a 0/1 metric: accuracy, exact match)."""
    return bool(((values == 0.0) | (values == 100.0)).all())


def paired_bootstrap(
    a: Sequence[float] | torch.Tensor,
    b: Sequence[float] | torch.Tensor,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    largest_difference: float | None = None,
) -> PairedComparison:
    """Compare per-example scores of systems A and B on the same examples.

    ``delta`` is mean(b - a); the CI is the percentile bootstrap of that mean (examples are
    resampled jointly, keeping the pairing). The two-sided p-value is
    ``(1 + #{|d* - delta| >= |delta|}) / (1 + n_resamples)`` over the resampled means ``d*``,
    i.e. the bootstrap distribution shifted to the null of no difference. With fewer than
    :data:`MIN_RESAMPLING_UNITS` examples the interval and the p-value are None.

    When every difference is the same value c (two systems that agree on every example: c = 0) the
    bootstrap is [c, c], which claims certainty that n examples cannot give. With
    ``largest_difference`` (the most one example's |b - a| can be: 100 for F1 in percent) the
    interval is then ``[c - (c + D) u, c + (D - c) u]`` with u = z²/(n + z²), the Wilson upper bound
    of the share of examples that could differ from c when none of n did (for 0/1 scores this is
    Tango's interval at zero discordance).
    """
    a, b = _as_values(a), _as_values(b)
    _check_same_length(a, b, "a", "b")
    differences = b - a
    delta = differences.mean().item()
    if not enough_units(len(differences)):
        return PairedComparison(delta=delta, ci_low=None, ci_high=None, p_value=None, test="paired bootstrap",
                                n=len(differences))
    if largest_difference is not None and bool((differences == differences[0]).all()):
        share = wilson_interval(0, len(differences), confidence)[1]
        return PairedComparison(delta=delta, ci_low=delta - (delta + largest_difference) * share,
                                ci_high=delta + (largest_difference - delta) * share, p_value=1.0 if delta == 0 else None,
                                test="paired bootstrap (constant differences: Wilson bound)", n=len(differences))
    means = _bootstrap_means(differences, n_resamples, seed)
    low, high = percentile_interval(means, confidence)
    extreme = int(((means - delta).abs() >= abs(delta) - 1e-12).sum())
    p_value = min(1.0, (1 + extreme) / (1 + n_resamples))
    return PairedComparison(delta=delta, ci_low=low, ci_high=high, p_value=p_value, test="paired bootstrap",
                            n=len(differences))


def mcnemar(correct_a: Sequence[bool] | torch.Tensor, correct_b: Sequence[bool] | torch.Tensor) -> float:
    """Two-sided exact McNemar p-value: binomial test of the discordant pairs against 1/2."""
    correct_a, correct_b = torch.as_tensor(correct_a, dtype=torch.bool), torch.as_tensor(correct_b, dtype=torch.bool)
    _check_same_length(correct_a, correct_b, "correct_a", "correct_b")
    only_b = int((correct_b & ~correct_a).sum())
    only_a = int((correct_a & ~correct_b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_b, only_a + only_b, 0.5, alternative="two-sided").pvalue)


def compare_accuracy(
    correct_a: Sequence[bool] | torch.Tensor,
    correct_b: Sequence[bool] | torch.Tensor,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """Accuracy of B minus A (points) with Tango's paired score interval
    (:func:`paired_proportion_interval`) and the exact McNemar p-value.

    Both are exact or score-based, not resampled, so ``n_resamples`` and ``seed`` are unused (kept
    so that every paired comparison has one signature). Like every paired comparison of the
    package, the interval is None below :data:`MIN_RESAMPLING_UNITS` pairs; the exact test
    stands at any n."""
    correct_a, correct_b = torch.as_tensor(correct_a, dtype=torch.bool), torch.as_tensor(correct_b, dtype=torch.bool)
    _check_same_length(correct_a, correct_b, "correct_a", "correct_b")
    n = len(correct_a)
    if n == 0:
        raise LangNeuronsError("no values to summarise")
    only_a = int((correct_a & ~correct_b).sum())
    only_b = int((correct_b & ~correct_a).sum())
    delta = 100.0 * (only_b - only_a) / n
    low = high = None
    if enough_units(n):
        low, high = (100.0 * bound for bound in paired_proportion_interval(only_a, only_b, n, confidence))
    return PairedComparison(delta=delta, ci_low=low, ci_high=high, p_value=mcnemar(correct_a, correct_b),
                            test=ACCURACY_TEST, n=n)


def paired_proportion_interval(only_a: int, only_b: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Tango's (1998) score interval of the paired difference Δ = P(B right, A wrong) − P(A right,
    B wrong), i.e. accuracy of B minus accuracy of A, as fractions in [-1, 1].

    ``only_a`` / ``only_b``: pairs that only A / only B got right; ``n``: all pairs. The interval is
    every Δ whose score statistic ``Z(Δ) = (only_b − only_a − nΔ) / sqrt(n (2 q(Δ) + Δ(1 − Δ)))``
    has |Z| <= z, where q(Δ) is the maximum-likelihood P(A right, B wrong) under the constraint
    (:func:`_constrained_only_a`). It is never empty and, unlike a bootstrap of 0/1 differences,
    never zero-width: with no discordant pair it is ±z²/(n + z²).
    """
    _check_counts("a paired interval", only_a=only_a, only_b=only_b, n=n)
    if n < 1 or only_a + only_b > n:
        raise LangNeuronsError(f"a paired interval needs n >= 1 and only_a + only_b <= n, got {only_a} + {only_b} of {n}")
    z = z_value(confidence)
    estimate = (only_b - only_a) / n

    def statistic(delta: float) -> float:  # decreasing in delta, 0 at the estimate
        return tango_statistic(only_a, only_b, n, delta)

    inside = 1.0 - 1e-12  # Z is unbounded at |Δ| = 1 unless every pair is discordant the same way
    low = -1.0 if statistic(-inside) <= z else brentq(lambda d: statistic(d) - z, -inside, estimate, xtol=1e-12)
    high = 1.0 if statistic(inside) >= -z else brentq(lambda d: statistic(d) + z, estimate, inside, xtol=1e-12)
    return low, high


def tango_statistic(only_a: int, only_b: int, n: int, delta: float) -> float:
    """Tango's score statistic Z(Δ) for paired counts at a hypothesised difference Δ in (-1, 1)."""
    q = _constrained_only_a(only_a, only_b, n, delta)
    variance = n * max(2.0 * q + delta * (1.0 - delta), 0.0)
    numerator = only_b - only_a - n * delta
    if variance <= 0.0:
        return math.copysign(math.inf, numerator) if numerator else 0.0
    return numerator / math.sqrt(variance)


def _constrained_only_a(only_a: int, only_b: int, n: int, delta: float) -> float:
    """Maximum-likelihood P(A right, B wrong) = q given P(B right, A wrong) − q = Δ: the positive root
    of ``2n q² + W q − only_a Δ(1 − Δ) = 0`` with ``W = −(only_a + only_b) + (2n − only_b + only_a) Δ``
    (set the derivative of the multinomial log-likelihood in q to zero)."""
    w = -(only_a + only_b) + (2 * n - only_b + only_a) * delta
    discriminant = max(w * w + 8.0 * n * only_a * delta * (1.0 - delta), 0.0)
    return max((-w + math.sqrt(discriminant)) / (4.0 * n), max(0.0, -delta))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``successes / n`` (both bounds in [0, 1]).

    With p = k/n and z the two-sided normal quantile of ``confidence``::

        centre = (p + z²/(2n)) / (1 + z²/n),  half = z / (1 + z²/n) * sqrt(p(1-p)/n + z²/(4n²))

    Unlike the normal (Wald) interval it stays inside [0, 1] and is not empty at k = 0 or k = n,
    which matters for the small counts of a generation experiment.
    """
    _check_counts("a binomial interval", successes=successes, n=n)
    if n < 1 or successes > n:
        raise LangNeuronsError(f"a binomial interval needs 0 <= successes <= n and n >= 1, got {successes} of {n}")
    z = z_value(confidence)
    p, z2 = successes / n, z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


# --------------------------------------------------------------------------------------------
# helpers


def _check_counts(what: str, **counts) -> None:
    """Every count a non-negative integer (bools refused: True is not a count)."""
    for name, value in counts.items():
        if isinstance(value, bool) or int(value) != value or value < 0:
            raise LangNeuronsError(f"{what} needs non-negative integer counts, got {name}={value!r}")


def _as_values(values: Sequence[float] | torch.Tensor) -> torch.Tensor:
    tensor = torch.as_tensor(values, dtype=torch.float64).flatten()
    if tensor.numel() == 0:
        raise LangNeuronsError("no values to summarise")
    if not torch.isfinite(tensor).all():
        raise LangNeuronsError("per-example scores contain NaN or infinity")
    return tensor


def _bootstrap_means(values: torch.Tensor, n_resamples: int, seed: int) -> torch.Tensor:
    """[n_resamples] means of samples of ``len(values)`` drawn with replacement."""
    if n_resamples < 1:
        raise LangNeuronsError(f"n_resamples must be positive, got {n_resamples}")
    n = len(values)
    generator = torch.Generator().manual_seed(seed)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    means = []
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        indices = torch.randint(n, (size, n), generator=generator)
        means.append(values[indices].mean(dim=1))
    return torch.cat(means)


def percentile_interval(samples: torch.Tensor, confidence: float = 0.95) -> tuple[float, float]:
    """Equal-tailed percentile interval of bootstrap ``samples`` [n_resamples]."""
    if not 0.0 < confidence < 1.0:
        raise LangNeuronsError(f"confidence must be strictly between 0 and 1, got {confidence}")
    tail = (1.0 - confidence) / 2.0
    low, high = torch.quantile(samples, torch.tensor([tail, 1.0 - tail], dtype=samples.dtype)).tolist()
    return low, high


def _check_same_length(first, second, first_name: str, second_name: str) -> None:
    if len(first) != len(second):
        raise LangNeuronsError(f"{first_name} and {second_name} differ in length ({len(first)} vs {len(second)})")
