"""Upper bounds of counts and seeds a user gives, checked where the options are made (one-line
errors before any work, never an allocation failure or an overflow deep inside torch).

* seeds: integers in [0, 2**32 - 1], the range every generator the tools seed accepts (torch,
  numpy's legacy seeding used by lm-evaluation-harness, Python's random);
* resamples (bootstrap, stability): at most 1,000,000; more gives no better interval and its
  result tensors alone would not fit in memory at the sizes that overflow;
* replicates (chunks of the statistics pass): at most 10,000 (each chunk needs its own blocks,
  and the per-chunk counts cost L x N x R x 160 bytes per language).

And the one lower bound every interval obeys: :data:`MIN_RESAMPLING_UNITS` (here, not in
:mod:`langneurons.evaluate.metrics`, which re-exports it, so that identification does not import
the evaluation package).
"""

from __future__ import annotations

from typing import Any

from langneurons.errors import LangNeuronsError, brief

MAX_SEED = 2**32 - 1
MAX_RESAMPLES = 1_000_000
MAX_REPLICATES = 10_000

MIN_RESAMPLING_UNITS = 20
"""Fewest independent resampling units (examples, documents, chunks) for a bootstrap interval or p-value."""


def enough_units(units: int) -> bool:
    """Whether ``units`` independent resampling units suffice for an interval (>= :data:`MIN_RESAMPLING_UNITS`)."""
    return int(units) >= MIN_RESAMPLING_UNITS


def check_seed(value: Any, name: str = "seed") -> int:
    """``value`` if it is an integer seed in [0, :data:`MAX_SEED`], else a one-line error."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise LangNeuronsError(f"{name} must be an integer in [0, {MAX_SEED}], got {brief(value)}")
    return value


def check_count(value: Any, name: str, minimum: int, maximum: int) -> int:
    """``value`` if it is an integer in [minimum, maximum], else a one-line error."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise LangNeuronsError(f"{name} must be an integer in [{minimum}, {maximum:,}], got {brief(value)}")
    return value
