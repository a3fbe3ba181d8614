"""CSV text of row dictionaries: the one table writer of every stage (scores, PPXC, steering,
claims, learning curves)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence


def rows_to_csv(rows: Sequence[dict], fields: Sequence[str] | None = None) -> str:
    """CSV text of ``rows`` (columns ``fields``, default the first row's keys; None -> empty)."""
    fields = list(fields or (rows[0].keys() if rows else []))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
