"""Honest selection: prompts split into a dev part (to choose a condition, layer or strength) and
a disjoint test part (to report), and the choice made on dev rows only.

* :func:`split_labels`: a seeded split of ``count`` prompt indices into ``dev`` / ``test``;
  ``floor(count x dev_fraction)`` prompts go to dev, the rest to test; ``dev_fraction`` 0 puts every
  prompt in test (nothing to choose on: the choice then falls back to the test rows, which
  :func:`selection_split` reports so the report and the claim can say so).
* :func:`best_of` / :func:`best_condition`: the candidate condition with the highest mean of a
  metric (default :data:`SELECTION_METRIC`) over the pairs, on dev rows. Both work on table rows
  (``condition``, ``split`` and the metric), whatever the condition intervenes on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from langneurons.errors import LangNeuronsError

DEV, TEST = "dev", "test"
SPLITS = (DEV, TEST)
SELECTION_METRIC = "fluent_target_rate"
"""The row field a best condition maximises: in the target language and not looping."""
TIE_BREAK = "target_rate"
"""Between conditions equal on the selection metric, the one with more target-language text wins."""


def dev_count(count: int, dev_fraction: float) -> int:
    """Prompts of ``count`` that go to dev: ``floor(count x dev_fraction)`` (so at least one is left
    for test); a one-line error when a non-zero fraction leaves dev empty."""
    if not 0.0 <= dev_fraction < 1.0:
        raise LangNeuronsError(f"dev_fraction must be in [0, 1), got {dev_fraction}")
    if count < 1:
        raise LangNeuronsError(f"the prompt split needs at least one prompt, got {count}")
    dev = int(count * dev_fraction)
    if dev_fraction > 0.0 and dev < 1:
        raise LangNeuronsError(f"dev_fraction {dev_fraction} of {count} prompts leaves no dev prompt; use more "
                               "prompts or dev_fraction 0")
    return dev


def split_labels(count: int, dev_fraction: float, seed: int = 0) -> list[str]:
    """``dev`` or ``test`` per prompt index (``count`` labels): a seeded random choice of
    :func:`dev_count` indices is dev, the others test. Same arguments, same labels."""
    dev = dev_count(count, dev_fraction)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    chosen = set(order[:dev])
    return [DEV if index in chosen else TEST for index in range(count)]


def selection_split(rows: Sequence[dict]) -> str:
    """The split a choice is made on: ``dev`` when the rows have dev rows, else ``test``."""
    return DEV if any(r.get("split") == DEV for r in rows) else TEST


def best_of(rows: Sequence[dict], candidates: Sequence[str], metric: str = SELECTION_METRIC,
            split: str | None = None, tie_break: str | None = TIE_BREAK) -> str | None:
    """The candidate condition with the highest mean ``metric`` over its rows (the pairs) of
    ``split`` (default :func:`selection_split`; rows without a ``split`` field count in any); equal
    means are decided by the mean ``tie_break``, then by candidate order. None when no candidate
    has a row there."""
    split = split or selection_split(rows)
    fields = (metric, tie_break) if tie_break else (metric,)
    values: dict[str, list[tuple[float, ...]]] = {}
    for r in rows:
        if r["condition"] in candidates and r.get("split", split) == split and r.get(metric) is not None:
            values.setdefault(r["condition"], []).append(tuple(float(r.get(f) or 0.0) for f in fields))

    def mean(name: str) -> tuple[float, ...]:
        return tuple(sum(column) / len(column) for column in zip(*values[name]))

    scored = [name for name in dict.fromkeys(candidates) if name in values]
    return max(scored, key=mean) if scored else None


def best_condition(rows: Sequence[dict], neuron_set: str, metric: str = SELECTION_METRIC,
                   split: str | None = None, tie_break: str | None = TIE_BREAK) -> str | None:
    """:func:`best_of` among the conditions of ``neuron_set`` (rows whose ``neuron_set`` field is it),
    in row order."""
    names = list(dict.fromkeys(r["condition"] for r in rows if r.get("neuron_set") == neuron_set))
    return best_of(rows, names, metric, split, tie_break)
