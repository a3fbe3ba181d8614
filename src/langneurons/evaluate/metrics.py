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
from scipy.stats import binomtest, norm
from torchmetrics.functional.text import squad as torchmetrics_squad

from langneurons.errors import LangNeuronsError

MIN_RESAMPLING_UNITS = 20
"""Fewest independent resampling units (examples, documents, chunks) for a bootstrap interval or p-value."""

TOO_FEW_UNITS = "inconclusive (too few units)"
"""The verdict of any claim whose interval is unavailable for want of resampling units."""

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


def enough_units(units: int) -> bool:
    """Whether ``units`` independent resampling units suffice for an interval (>= :data:`MIN_RESAMPLING_UNITS`)."""
    return int(units) >= MIN_RESAMPLING_UNITS


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
    """Mean of per-example percent scores with its bootstrap CI (None with fewer than
    :data:`MIN_RESAMPLING_UNITS` examples)."""
    tensor = _as_values(values)
    low, high = bootstrap_ci(tensor, n_resamples, confidence, seed)
    return ScoreSummary(metric=metric, n=len(tensor), score=tensor.mean().item(), ci_low=low, ci_high=high)


def paired_bootstrap(
    a: Sequence[float] | torch.Tensor,
    b: Sequence[float] | torch.Tensor,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """Compare per-example scores of systems A and B on the same examples.

    ``delta`` is mean(b - a); the CI is the percentile bootstrap of that mean (examples are
    resampled jointly, keeping the pairing). The two-sided p-value is
    ``(1 + #{|d* - delta| >= |delta|}) / (1 + n_resamples)`` over the resampled means ``d*``,
    i.e. the bootstrap distribution shifted to the null of no difference. With fewer than
    :data:`MIN_RESAMPLING_UNITS` examples the interval and the p-value are None.
    """
    a, b = _as_values(a), _as_values(b)
    _check_same_length(a, b, "a", "b")
    differences = b - a
    delta = differences.mean().item()
    if not enough_units(len(differences)):
        return PairedComparison(delta=delta, ci_low=None, ci_high=None, p_value=None, test="paired bootstrap",
                                n=len(differences))
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
    """Accuracy of B minus A (points) with a paired bootstrap CI and the exact McNemar p-value
    (an exact test, kept at any n; the bootstrap CI is None below :data:`MIN_RESAMPLING_UNITS`)."""
    a = 100.0 * torch.as_tensor(correct_a, dtype=torch.float64)
    b = 100.0 * torch.as_tensor(correct_b, dtype=torch.float64)
    bootstrap = paired_bootstrap(a, b, n_resamples, confidence, seed)
    return PairedComparison(
        delta=bootstrap.delta,
        ci_low=bootstrap.ci_low,
        ci_high=bootstrap.ci_high,
        p_value=mcnemar(correct_a, correct_b),
        test="mcnemar exact",
        n=bootstrap.n,
    )


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``successes / n`` (both bounds in [0, 1]).

    With p = k/n and z the two-sided normal quantile of ``confidence``::

        centre = (p + z²/(2n)) / (1 + z²/n),  half = z / (1 + z²/n) * sqrt(p(1-p)/n + z²/(4n²))

    Unlike the normal (Wald) interval it stays inside [0, 1] and is not empty at k = 0 or k = n,
    which matters for the small counts of a generation experiment.
    """
    if isinstance(successes, bool) or isinstance(n, bool) or int(successes) != successes or int(n) != n:
        raise LangNeuronsError(f"a binomial interval needs integer counts, got {successes!r} of {n!r}")
    if n < 1 or not 0 <= successes <= n:
        raise LangNeuronsError(f"a binomial interval needs 0 <= successes <= n and n >= 1, got {successes} of {n}")
    if not 0.0 < confidence < 1.0:
        raise LangNeuronsError(f"confidence must be strictly between 0 and 1, got {confidence}")
    z = float(norm.ppf(0.5 + confidence / 2.0))
    p, z2 = successes / n, z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


# --------------------------------------------------------------------------------------------
# helpers


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
