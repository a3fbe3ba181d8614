"""Heatmaps of a PPXC matrix: rows intervened language, columns evaluated language.

One panel per neuron set (language-specific, and the random control when present), sharing one
symmetric colour scale so the control reads directly against the real set. PNG + SVG, atomic.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from langneurons.errors import LangNeuronsError
from langneurons.intervene.ppxc import MEASURES, PPXCResult
from langneurons.report.neuron_figures import save_figure

_LABELS = {
    "delta_nll": "change in NLL (nats/token)",
    "delta_ppl": "change in perplexity",
    "relative_delta_nll": "relative change in NLL (%)",
    "relative_delta_ppl": "relative change in perplexity (%)",
}


def ppxc_figure(result: PPXCResult, measure: str = "relative_delta_ppl", title: str | None = None) -> Figure:
    """The heatmap figure of ``measure`` (one of :data:`MEASURES`); relative measures in %."""
    if measure not in MEASURES:
        raise LangNeuronsError(f"unknown PPXC measure {measure!r}; use one of {', '.join(MEASURES)}")
    scale = 100.0 if measure.startswith("relative") else 1.0
    matrices = {name: result.matrix(measure, name) * scale for name in result.sets}
    bound = max(float(m.abs().nan_to_num(0.0).max()) for m in matrices.values()) or 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-bound, vmax=bound)
    languages = result.languages
    size = max(3.5, 0.6 * len(languages) + 2)
    figure = Figure(figsize=(size * len(matrices) + 1.5, size + 0.6), layout="constrained")
    axes = figure.subplots(1, len(matrices), squeeze=False)[0]
    image = None
    for ax, (name, values) in zip(axes, matrices.items()):
        image = ax.imshow(values.numpy(), cmap="RdBu_r", norm=norm)
        ax.set_xticks(range(len(languages)), languages)
        ax.set_yticks(range(len(languages)), languages)
        ax.set_xlabel("evaluated language")
        ax.set_ylabel("intervened language")
        ax.set_title(f"{name} neurons")
        for i in range(len(languages)):
            for j in range(len(languages)):
                value = float(values[i, j])
                text = f"{value:+.1f}" if scale != 1.0 or abs(value) >= 10 else f"{value:+.3g}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if abs(value) > 0.6 * bound else "black")
    figure.colorbar(image, ax=list(axes), label=_LABELS[measure], shrink=0.8)
    model = result.model.get("model_id", "model")
    figure.suptitle(title or f"PPXC: {model}, {result.method} neurons, {result.intervention}")
    return figure


def write_ppxc_figure(result: PPXCResult, out_dir: str | Path, name: str = "ppxc",
                      measure: str = "relative_delta_ppl", title: str | None = None) -> list[Path]:
    """Write ``name.png`` and ``name.svg`` into ``out_dir``; returns the paths."""
    return save_figure(ppxc_figure(result, measure, title), Path(out_dir), name)
