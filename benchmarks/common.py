"""Shared benchmark machinery: interleaved timing of a baseline and a candidate in one process.

Every figure is a *ratio* (candidate time / baseline time) measured on the same model and
inputs in the same process, reported as median, min and max over repeats. Absolute times
are recorded for context only.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field


@dataclass
class BenchResult:
    """One benchmark row: ``candidate`` cost relative to ``baseline`` (ratio > 1 = slower)."""

    name: str
    baseline: str
    candidate: str
    ratio_median: float
    ratio_min: float
    ratio_max: float
    repeats: int
    baseline_seconds: float
    candidate_seconds: float
    target: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def time_call(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(
    name: str,
    baseline_name: str,
    baseline: Callable[[], object],
    candidate_name: str,
    candidate: Callable[[], object],
    repeats: int = 5,
    warmup: int = 1,
    target: str = "",
) -> BenchResult:
    """Time ``baseline`` and ``candidate`` alternately ``repeats`` times (after ``warmup``)."""
    for _ in range(warmup):
        baseline()
        candidate()
    base_times, cand_times, ratios = [], [], []
    for _ in range(repeats):
        b = time_call(baseline)
        c = time_call(candidate)
        base_times.append(b)
        cand_times.append(c)
        ratios.append(c / b)
    return BenchResult(
        name=name,
        baseline=baseline_name,
        candidate=candidate_name,
        ratio_median=statistics.median(ratios),
        ratio_min=min(ratios),
        ratio_max=max(ratios),
        repeats=repeats,
        baseline_seconds=statistics.median(base_times),
        candidate_seconds=statistics.median(cand_times),
        target=target,
        # the fastest repeat of each: timing noise on a shared CPU only ever adds time
        extra={"ratio_of_minimum_times": min(cand_times) / min(base_times)},
    )
