"""Report blocks: what every stage's report section returns, and the number formats they share.

A block is a tuple: ``("h1"|"h2"|"h3", text)``, ``("p", text)``, ``("table", header, rows)``
or ``("image", png_path, caption)``; :mod:`langneurons.report.report` renders a list of them as
Markdown and HTML. Sections read only files of the run directory, nothing is recomputed.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from langneurons.errors import LangNeuronsError

Block = tuple


def read_json(path: Path):
    """The parsed JSON file (LangNeuronsError naming it if unreadable)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise LangNeuronsError(f"cannot read {path}: {error}") from error


def read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def fmt_number(value, digits: int = 1) -> str:
    """``value`` with ``digits`` decimals; ``–`` for None or empty."""
    if value is None or value == "":
        return "–"
    return f"{float(value):.{digits}f}"


def fmt_signed(value, digits: int = 1) -> str:
    return "–" if value is None or value == "" else f"{float(value):+.{digits}f}"


def fmt_p(value) -> str:
    """A p-value: three decimals, ``<0.001`` below that, ``–`` for none."""
    if value is None or value == "":
        return "–"
    value = float(value)
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def fmt_interval(score, low, high, signed: bool = False, units=None) -> str:
    """``score [low, high]``; without an interval (too few resampling units) ``score [n/a (k units < 20)]``."""
    fmt = fmt_signed if signed else fmt_number
    if (low is None or low == "") and units not in (None, ""):
        from langneurons.evaluate.metrics import unavailable

        return f"{fmt(score)} [{unavailable(int(units))}]"
    return f"{fmt(score)} [{fmt(low)}, {fmt(high)}]"


def stage_folders(run_dir: Path, manifest: dict, prefix: str, marker: str) -> list[Path]:
    """Folders of the run's current ``prefix/<name>`` stages holding ``marker`` (folders of stages no
    longer in the config are left out)."""
    names = manifest.get("stage_order") or list(manifest.get("stages", {}))
    return [run_dir / name for name in names if name.startswith(prefix + "/") and (run_dir / name / marker).exists()]
