"""The training loss as a run shows and records it: the progress bar over optimizer steps and
the smoothed loss curve of the metadata."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def smoothed(losses: Sequence[float], window: int = 20) -> list[float]:
    """Trailing moving average of per-step losses (nats per target token) over ``window`` steps
    (fewer at the start): a one-batch loss says little about where training stands."""
    values = torch.tensor(list(losses), dtype=torch.float64)
    if not len(values):
        return []
    sums = torch.cat([torch.zeros(1, dtype=torch.float64), values.cumsum(0)])
    ends = torch.arange(1, len(values) + 1)
    starts = (ends - window).clamp(min=0)
    return ((sums[ends] - sums[starts]) / (ends - starts)).tolist()


class LossProgress:
    """Rich progress bar over optimizer steps showing the latest loss (no-op when disabled)."""

    def __init__(self, description: str, total: int, done: int, enabled: bool):
        self.enabled, self.description, self.total, self.done = enabled, description, total, done

    def __enter__(self) -> "LossProgress":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn())
            self.progress.__enter__()
            self.task = self.progress.add_task(self.description, total=self.total, completed=self.done, loss="-")
        return self

    def update(self, step: int, loss: float) -> None:
        if self.enabled:
            self.progress.update(self.task, completed=step, loss=f"{loss:.4f}")

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.progress.__exit__(*exc)
