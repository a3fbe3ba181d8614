"""Writing a matplotlib figure as PNG and SVG: the one helper every stage's figure module uses.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot, no global backend state; PNG is
rendered by Agg); each stage keeps its own figure writers next to its code.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from langneurons.artefacts import atomic_path


def save_figure(figure: Figure, out_dir: Path, name: str) -> list[Path]:
    """Write ``name.png`` and ``name.svg`` into ``out_dir`` (atomic) and return their paths."""
    paths = []
    for fmt in ("png", "svg"):
        path = Path(out_dir) / f"{name}.{fmt}"
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format=fmt, dpi=150, bbox_inches="tight")
        paths.append(path)
    return paths
