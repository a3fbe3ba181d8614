"""Intervention deltas per language with their 95 % CIs (one panel per task metric).

Each point is intervened score minus baseline score of the same model on the same examples
(percentage points); the error bar is the paired CI of that difference (accuracy: Tango's score
interval; EM/F1: paired bootstrap). PNG + SVG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from langneurons.errors import LangNeuronsError
from langneurons.figures import save_figure

PANELS = (("xnli", "accuracy", "XNLI accuracy"), ("xquad", "f1", "XQuAD F1"), ("xquad", "exact_match", "XQuAD EM"))


def delta_figure(rows: Sequence[dict], metrics: Sequence[tuple[str, str, str]] | None = None,
                 title: str = "intervention minus baseline") -> Figure:
    """The figure of the score rows (fields of :data:`langneurons.evaluate.evaluation.ROW_FIELDS`)
    that carry a delta; ``metrics`` are (task, metric, label) panels (default: those present of
    XNLI accuracy and XQuAD F1)."""
    rows = [row for row in rows if row.get("delta") is not None]
    if not rows:
        raise LangNeuronsError("no intervention deltas to plot (only baseline scores)")
    present = {(row["task"], row["metric"]) for row in rows}
    panels = [p for p in (metrics or PANELS[:2]) if (p[0], p[1]) in present]
    if not panels:
        raise LangNeuronsError(f"none of the requested metrics are in the rows (have {sorted(present)})")
    several_models = len({row["model"] for row in rows}) > 1
    figure = Figure(figsize=(1.0 * len(panels) * max(3, len(_languages(rows))) + 2.5, 3.4), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (task, metric, label) in zip(axes, panels):
        chosen = [row for row in rows if (row["task"], row["metric"]) == (task, metric)]
        languages = list(dict.fromkeys(row["language"] for row in chosen))
        series = list(dict.fromkeys((row["model"], row["condition"]) for row in chosen))
        width = 0.8 / max(len(series), 1)
        for s, (model, condition) in enumerate(series):
            points = {row["language"]: row for row in chosen if (row["model"], row["condition"]) == (model, condition)}
            xs = [i - 0.4 + width * (s + 0.5) for i, language in enumerate(languages) if language in points]
            ys = [points[language]["delta"] for language in languages if language in points]
            # no bar where the interval is unavailable (too few examples for a bootstrap)
            low = [0.0 if points[l]["delta_ci_low"] is None else points[l]["delta"] - points[l]["delta_ci_low"]
                   for l in languages if l in points]
            high = [0.0 if points[l]["delta_ci_high"] is None else points[l]["delta_ci_high"] - points[l]["delta"]
                    for l in languages if l in points]
            name = f"{model} · {condition}" if several_models else condition
            ax.errorbar(xs, ys, yerr=[low, high], fmt="o", capsize=3, markersize=4, label=name)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(languages)), languages)
        ax.set_xlim(-0.5, len(languages) - 0.5)
        ax.set_xlabel("evaluated language")
        ax.set_ylabel(f"Δ {label} (points)")
        ax.set_title(label)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right center", fontsize=8)
    figure.suptitle(f"{title} (95% paired CI)")
    return figure


def _languages(rows: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(row["language"] for row in rows))


def write_delta_figure(rows: Sequence[dict], out_dir: str | Path, name: str = "intervention_deltas",
                       metrics: Sequence[tuple[str, str, str]] | None = None) -> list[Path]:
    """Write ``name.png`` and ``name.svg`` into ``out_dir``; returns the paths."""
    return save_figure(delta_figure(rows, metrics), Path(out_dir), name)
