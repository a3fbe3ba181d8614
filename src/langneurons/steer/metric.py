"""The output-language metric: per condition, how many generations are in the target language,
still in the source language, or in another language / undetermined, each with a 95% Wilson
interval (:func:`langneurons.evaluate.metrics.wilson_interval`). Rates are in percent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from langneurons.errors import LangNeuronsError
from langneurons.evaluate.metrics import wilson_interval
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
