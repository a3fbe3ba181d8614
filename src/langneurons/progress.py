"""Progress bars (rich) for long loops; silent when disabled or not attached to a terminal log."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")


def progress_bar(
    items: Iterable[T],
    description: str,
    enabled: bool = True,
    total: int | None = None,
    total_done: int = 0,
) -> Iterator[T]:
    """Iterate ``items`` with a rich progress bar (``total_done`` items already done before)."""
    if not enabled:
        yield from items
        return
    items = list(items)
    total = total if total is not None else len(items) + total_done
    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(description, total=total, completed=total_done)
        for item in items:
            yield item
            progress.advance(task)
