"""Heatmaps of a PPXC matrix: rows intervened language, columns evaluated language.

One panel per neuron set (language-specific, and the random control when present), sharing one
symmetric colour scale so the control reads directly against the real set. PNG + SVG, atomic.

The default colour is the change in NLL (nats/token, the log of the perplexity ratio), so one
huge cell (a +20,000 % perplexity change) does not paint every other cell white; each cell is
annotated with both the NLL change and the relative perplexity change, and a cell whose 95 %
block-bootstrap interval of the NLL change contains 0 is printed in grey italics.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from langneurons.errors import LangNeuronsError
from langneurons.intervene.ppxc import MEASURES, PPXCResult
from langneurons.figures import save_figure

_LABELS = {
    "delta_nll": "change in NLL (nats/token)",
    "delta_ppl": "change in perplexity",
    "relative_delta_nll": "relative change in NLL (%)",
    "relative_delta_ppl": "relative change in perplexity (%)",
}


def _cell_text(result: PPXCResult, measure: str, set_name: str, i: int, j: int, value: float) -> str:
    if measure == "delta_nll":
        relative = 100.0 * float(result.matrix("relative_delta_ppl", set_name)[i, j])
        return f"{value:+.2f}\n{relative:+,.0f}%"
    return f"{value:+.1f}" if measure.startswith("relative") or abs(value) >= 10 else f"{value:+.3g}"


def ppxc_figure(result: PPXCResult, measure: str = "delta_nll", title: str | None = None) -> Figure:
    """The heatmap figure of ``measure`` (one of :data:`MEASURES`); relative measures in %."""
    if measure not in MEASURES:
        raise LangNeuronsError(f"unknown PPXC measure {measure!r}; use one of {', '.join(MEASURES)}")
    scale = 100.0 if measure.startswith("relative") else 1.0
    matrices = {name: result.matrix(measure, name) * scale for name in result.sets}
    bound = max(float(m.abs().nan_to_num(0.0).max()) for m in matrices.values()) or 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-bound, vmax=bound)
    languages = result.languages
    size = max(3.5, 0.6 * len(languages) + 2)
    intervals = result.intervals() if measure == "delta_nll" else None
    figure = Figure(figsize=(size * len(matrices) + 1.5, size + 0.6), layout="constrained")
    axes = figure.subplots(1, len(matrices), squeeze=False)[0]
    image = None
    unit = "directions" if result.config.get("unit") == "residual directions" else "neurons"  # directions/ppxc.py
    for ax, (name, values) in zip(axes, matrices.items()):
        image = ax.imshow(values.numpy(), cmap="RdBu_r", norm=norm)
        ax.set_xticks(range(len(languages)), languages)
        ax.set_yticks(range(len(languages)), languages)
        ax.set_xlabel("evaluated language")
        ax.set_ylabel("intervened language")
        ax.set_title(f"{name} {unit}")
        for i in range(len(languages)):
            for j in range(len(languages)):
                value = float(values[i, j])
                cell = intervals["delta_nll"][name][languages[i]][languages[j]] if intervals else (1.0, 1.0)
                uncertain = cell is None or cell[0] <= 0.0 <= cell[1]  # None: too few units for an interval
                ax.text(j, i, _cell_text(result, measure, name, i, j, value), ha="center", va="center", fontsize=7,
                        color="dimgray" if uncertain else ("white" if abs(value) > 0.6 * bound else "black"),
                        style="italic" if uncertain else "normal")
    figure.colorbar(image, ax=list(axes), label=_LABELS[measure], shrink=0.8)
    model = result.model.get("model_id", "model")
    figure.suptitle(title or f"PPXC: {model}, {result.method} {unit}, {result.intervention}")
    return figure


def write_ppxc_figure(result: PPXCResult, out_dir: str | Path, name: str = "ppxc",
                      measure: str = "delta_nll", title: str | None = None) -> list[Path]:
    """Write ``name.png`` and ``name.svg`` into ``out_dir``; returns the paths."""
    return save_figure(ppxc_figure(result, measure, title), Path(out_dir), name)
