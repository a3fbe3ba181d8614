"""The output-language metric: per condition, how many generations are in the target language,
still in the source language, or in another language / undetermined, each with a 95% Wilson
interval (:func:`langneurons.evaluate.metrics.wilson_interval`). Rates are in percent.

Scores that do not reward loops (:func:`loop_aware_scores`), from the same generations and the
degeneration test of :mod:`langneurons.steer.degeneration`:

* degenerate rate: share of continuations that loop (Wilson interval);
* fluent target rate: share of continuations in the target language *and* not degenerate
  (Wilson interval) -- what the target rate claims to measure, without counting a loop in the
  target script as success;
* combined score (CLaS-Bench spirit, Gurgurov et al. 2026): the harmonic mean of forcing success
  T (the target rate) and fluency F (the non-degenerate share), ``2TF / (T + F)`` (0 when both are
  0), with a percentile bootstrap interval over prompts (None below
  :data:`MIN_BOOTSTRAP_PROMPTS` prompts; where every resample is equal, e.g. no prompt reached the
  target, the Wilson-Bonferroni bound of :func:`monotone_bound` instead of a zero-width interval). The harmonic mean is high only when both are: a
  condition that forces the language by looping, or stays fluent by not steering, scores low.
  F is the non-degenerate share rather than a transform of the fluency perplexity because that
  perplexity is under the *unintervened* model, which finds any target-language text unlikely
  after a source-language prompt, so it would penalise the very success T measures; the
  non-degenerate share is bounded, per prompt (so it can be resampled) and the same in every
  language.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from langneurons.errors import LangNeuronsError
from langneurons.evaluate.metrics import MIN_RESAMPLING_UNITS, resampling_interval, wilson_interval
from langneurons.steer.degeneration import is_degenerate
from langneurons.steer.langid import Identification

OUTCOMES = ("target", "source", "other")
"""The three outcomes of a generation; ``other`` includes undetermined."""


@dataclass(frozen=True)
class Rate:
    """``count`` of ``n`` generations: ``rate`` and its Wilson interval, in percent."""

    count: int
    n: int
    rate: float
    ci_low: float
    ci_high: float

    @classmethod
    def of(cls, count: int, n: int, confidence: float = 0.95) -> "Rate":
        low, high = wilson_interval(count, n, confidence)
        return cls(count, n, 100.0 * count / n, 100.0 * low, 100.0 * high)


@dataclass(frozen=True)
class LanguageRates:
    """Outcome rates of one condition's generations (``source`` -> ``target`` steering)."""

    source: str
    target: str
    n: int
    target_rate: Rate
    source_rate: Rate
    other_rate: Rate
    mean_confidence: float

    def flat(self) -> dict:
        """One table row's worth of fields: ``n``, ``<outcome>_rate``/``_ci_low``/``_ci_high``/``_count``."""
        row: dict = {"n": self.n}
        for outcome in OUTCOMES:
            rate: Rate = getattr(self, f"{outcome}_rate")
            row.update({f"{outcome}_count": rate.count, f"{outcome}_rate": rate.rate,
                        f"{outcome}_ci_low": rate.ci_low, f"{outcome}_ci_high": rate.ci_high})
        row["mean_confidence"] = self.mean_confidence
        return row


def outcome(identification: Identification, source: str, target: str) -> str:
    """``target``, ``source`` or ``other`` (another language or undetermined)."""
    if identification.language == target:
        return "target"
    if identification.language == source:
        return "source"
    return "other"


def language_rates(identifications: Sequence[Identification], source: str, target: str,
                   confidence: float = 0.95) -> LanguageRates:
    """Rates of the three outcomes over ``identifications`` (at least one)."""
    if source == target:
        raise LangNeuronsError(f"source and target language are the same ({source!r})")
    n = len(identifications)
    if n == 0:
        raise LangNeuronsError(f"no generations to identify for {source}>{target}")
    counts = dict.fromkeys(OUTCOMES, 0)
    for identification in identifications:
        counts[outcome(identification, source, target)] += 1
    mean_confidence = sum(i.confidence for i in identifications) / n
    return LanguageRates(source, target, n, *(Rate.of(counts[o], n, confidence) for o in OUTCOMES),
                         mean_confidence=mean_confidence)


MIN_BOOTSTRAP_PROMPTS = MIN_RESAMPLING_UNITS
"""Fewest prompts for a bootstrap interval of the combined score (below it the interval is None):
the package's one resampling guard (:func:`langneurons.evaluate.metrics.resampling_interval`)."""

LOOP_AWARE_FIELDS = ("degenerate_count", "degenerate_rate", "degenerate_ci_low", "degenerate_ci_high",
                     "fluent_target_count", "fluent_target_rate", "fluent_target_ci_low", "fluent_target_ci_high",
                     "combined_score", "combined_ci_low", "combined_ci_high")
"""Table fields of :meth:`LoopAwareScores.flat`."""


@dataclass(frozen=True)
class LoopAwareScores:
    """Scores of one condition's generations that do not reward loops (module docstring); percent.
    ``combined_ci_low`` / ``_high`` are None with fewer than :data:`MIN_BOOTSTRAP_PROMPTS` prompts."""

    n: int
    degenerate_rate: Rate
    fluent_target_rate: Rate
    combined_score: float
    combined_ci_low: float | None
    combined_ci_high: float | None

    def flat(self) -> dict:
        """The :data:`LOOP_AWARE_FIELDS` of one table row."""
        row: dict = {}
        for name in ("degenerate", "fluent_target"):
            rate: Rate = getattr(self, f"{name}_rate")
            row.update({f"{name}_count": rate.count, f"{name}_rate": rate.rate, f"{name}_ci_low": rate.ci_low,
                        f"{name}_ci_high": rate.ci_high})
        row.update({"combined_score": self.combined_score, "combined_ci_low": self.combined_ci_low,
                    "combined_ci_high": self.combined_ci_high})
        return row


def harmonic_mean(forcing: torch.Tensor, fluency: torch.Tensor) -> torch.Tensor:
    """``2 T F / (T + F)`` elementwise, 0 where T + F = 0 (same units as the inputs)."""
    total = forcing + fluency
    return torch.where(total > 0, 2 * forcing * fluency / total.clamp_min(1e-300), torch.zeros_like(total))


def combined_score(in_target: Sequence[bool], degenerate: Sequence[bool], confidence: float = 0.95,
                   n_resamples: int = 2000, seed: int = 0) -> tuple[float, float | None, float | None]:
    """(score, ci_low, ci_high) in percent: the harmonic mean of the target share and the
    non-degenerate share of one condition's prompts; the interval resamples prompts (the two flags
    of a prompt together), None below :data:`MIN_BOOTSTRAP_PROMPTS` prompts."""
    target = torch.as_tensor(list(in_target), dtype=torch.float64)
    fluent = 1.0 - torch.as_tensor(list(degenerate), dtype=torch.float64)
    n = len(target)
    if n == 0 or len(fluent) != n:
        raise LangNeuronsError(f"a combined score needs the same positive number of target and degeneration "
                               f"flags, got {n} and {len(fluent)}")
    score = 100.0 * harmonic_mean(target.mean(), fluent.mean()).item()
    if n < MIN_BOOTSTRAP_PROMPTS:
        return score, None, None
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randint(n, (n_resamples, n), generator=generator)
    samples = 100.0 * harmonic_mean(target[indices].mean(dim=1), fluent[indices].mean(dim=1))
    low, high = resampling_interval(samples, n, confidence)
    if high - low <= 0.0:  # every resample equal (e.g. no prompt reached the target): no zero-width interval
        low, high = monotone_bound(int(target.sum()), int(fluent.sum()), n, confidence)
    return score, low, high


def monotone_bound(target_count: int, fluent_count: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """A conservative interval (percent) of the harmonic mean 2TF/(T+F) from Wilson intervals of T and
    F, each at ``1 - (1 - confidence) / 2`` (Bonferroni: both hold together with ``confidence``); the
    mean is increasing in T and in F, so it lies between its values at the lower and at the upper
    bounds. Used where the bootstrap has zero width: 0 of 80 prompts in the target language gives
    [0, 10.5], not [0, 0]."""
    each = 1.0 - (1.0 - confidence) / 2.0
    target_low, target_high = wilson_interval(target_count, n, each)
    fluent_low, fluent_high = wilson_interval(fluent_count, n, each)
    bounds = harmonic_mean(torch.tensor([target_low, target_high], dtype=torch.float64),
                           torch.tensor([fluent_low, fluent_high], dtype=torch.float64))
    return 100.0 * float(bounds[0]), 100.0 * float(bounds[1])


def loop_aware_scores(identifications: Sequence[Identification], texts: Sequence[str], target: str,
                      confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> LoopAwareScores:
    """:class:`LoopAwareScores` of one condition: ``identifications[i]`` is the language of
    continuation ``texts[i]``; degeneration by :func:`langneurons.steer.degeneration.is_degenerate`."""
    if len(identifications) != len(texts) or not texts:
        raise LangNeuronsError(f"loop-aware scores need one identification per continuation, got "
                               f"{len(identifications)} and {len(texts)}")
    degenerate = [is_degenerate(text) for text in texts]
    in_target = [i.language == target for i in identifications]
    fluent = sum(t and not d for t, d in zip(in_target, degenerate))
    n = len(texts)
    score, low, high = combined_score(in_target, degenerate, confidence, n_resamples, seed)
    return LoopAwareScores(n, Rate.of(sum(degenerate), n, confidence), Rate.of(fluent, n, confidence),
                           score, low, high)


def pooled_scores(generations: Sequence[dict], split: str = "test", confidence: float = 0.95,
                  n_resamples: int = 2000, seed: int = 0) -> list[dict]:
    """Per condition, its ``split`` generations of every pair pooled (records with ``condition``,
    ``target``, ``language``, ``degenerate`` and ``split``; records without ``split`` count as test):
    ``n`` (pairs x prompts), target / fluent target / degenerate counts and rates with Wilson
    intervals, and the combined score with its bootstrap interval over the (pair, prompt) units.
    One dict per condition, in first-seen order."""
    flags: dict[str, list[tuple[bool, bool]]] = {}
    pairs: dict[str, set] = {}
    for g in generations:
        if g.get("split", "test") != split:
            continue
        degenerate = g["degenerate"] if "degenerate" in g else is_degenerate(g.get("continuation", ""))
        flags.setdefault(g["condition"], []).append((g["language"] == g["target"], bool(degenerate)))
        pairs.setdefault(g["condition"], set()).add(f"{g['source']}>{g['target']}")
    out = []
    for condition, values in flags.items():
        in_target, degenerate = [t for t, _ in values], [d for _, d in values]
        n = len(values)
        score, low, high = combined_score(in_target, degenerate, confidence, n_resamples, seed)
        row: dict = {"condition": condition, "split": split, "pairs": sorted(pairs[condition]), "n": n}
        for name, count in (("target", sum(in_target)), ("degenerate", sum(degenerate)),
                            ("fluent_target", sum(t and not d for t, d in values))):
            rate = Rate.of(count, n, confidence)
            row.update({f"{name}_count": count, f"{name}_rate": rate.rate, f"{name}_ci_low": rate.ci_low,
                        f"{name}_ci_high": rate.ci_high})
        row.update({"combined_score": score, "combined_ci_low": low, "combined_ci_high": high})
        out.append(row)
    return out
