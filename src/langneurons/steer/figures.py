"""Figures of a steering result (PNG + SVG, atomic), drawn from the *test* rows
(:func:`write_steering_figures` drops the dev rows, which only choose the best condition).

* :func:`steering_heatmap`: fluent target rate (%) per source (rows) x target (columns) for one
  condition, the raw target rate in brackets, one panel for the language-specific set and one
  for the same condition on the random control; empty cells are pairs not run.
* :func:`sweep_figure`: fluent target rate against the action strength, one panel per pair,
  one line per (kind, mode) and neuron set (random control dashed), Wilson 95% intervals as
  error bars, the raw target rate as a thin dotted line of the same colour, the baseline grey.
  Drawn only when a sweep has at least :data:`MIN_SWEEP_STRENGTHS` strengths
  (:func:`sweep_strengths`): a single strength is one point on an axis that means nothing.
* :func:`score_figure`: per pair and condition, the target rate, the fluent target rate and the
  combined score with its bootstrap 95% interval (where there are enough prompts).

Rows without the loop-aware fields (results written before them) are drawn by the target rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from langneurons.figures import save_figure


MIN_SWEEP_STRENGTHS = 2
"""Fewest distinct strengths of one action kind for a strength-sweep figure."""


def sweep_strengths(rows: Sequence[dict]) -> int:
    """Most distinct strengths of any one sweep (pair, neuron set, mode, kind) in steering ``rows``;
    0 when no row has a strength."""
    strengths: dict[tuple, set] = {}
    for r in rows:
        if r.get("mode") in ("activate", "both") and r.get("strength") not in (None, ""):
            key = (r["source"], r["target"], r["neuron_set"], r["mode"], r["kind"], r.get("layers"))
            strengths.setdefault(key, set()).add(float(r["strength"]))
    return max((len(values) for values in strengths.values()), default=0)


def no_sweep_reason(rows: Sequence[dict]) -> str | None:
    """One line saying why there is no strength-sweep figure, or None when there is one."""
    count = sweep_strengths(rows)
    if count >= MIN_SWEEP_STRENGTHS:
        return None
    if count == 0:
        return "No strength-sweep figure: no condition has a strength."
    return (f"No strength-sweep figure: each action was run at a single strength (it is drawn for "
            f"{MIN_SWEEP_STRENGTHS} or more).")


def _pairs(rows: Sequence[dict]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r["source"], r["target"]) for r in rows))


def _fluent(row: dict, suffix: str = "rate") -> float:
    """``fluent_target_<suffix>`` of a row, or ``target_<suffix>`` for rows without it."""
    value = row.get(f"fluent_target_{suffix}")
    return float(row[f"target_{suffix}"] if value is None else value)


def steering_heatmap(rows: Sequence[dict], condition: str, title: str | None = None) -> Figure:
    """Heatmap of ``condition`` (a name like ``lape:both:add=4``) and its random-set twin."""
    sources = list(dict.fromkeys(r["source"] for r in rows))
    targets = list(dict.fromkeys(r["target"] for r in rows))
    set_name = condition.split(":", 1)[0]
    named = next((r["random_twin"] for r in rows if r["condition"] == condition and r.get("random_twin")), None)
    twin = named or "random" + condition[len(set_name):]  # rows written before random_twin existed
    panels = [(condition, f"{condition}")]
    if set_name not in ("random", "random-dir") and any(r["condition"] == twin for r in rows):
        panels.append((twin, f"{twin} (control)"))
    figure = Figure(figsize=(1.2 * len(targets) * len(panels) + 2.5, 1.0 * len(sources) + 2.2), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    image = None
    for ax, (name, label) in zip(axes, panels):
        values = np.full((len(sources), len(targets)), np.nan)
        raw = np.full((len(sources), len(targets)), np.nan)
        for r in rows:
            if r["condition"] == name:
                values[sources.index(r["source"]), targets.index(r["target"])] = _fluent(r)
                raw[sources.index(r["source"]), targets.index(r["target"])] = float(r["target_rate"])
        image = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=100.0)
        ax.set_xticks(range(len(targets)), targets)
        ax.set_yticks(range(len(sources)), sources)
        ax.set_xlabel("target language")
        ax.set_ylabel("source language (prompts)")
        ax.set_title(label, fontsize=9)
        for i in range(len(sources)):
            for j in range(len(targets)):
                if not math.isnan(values[i, j]):
                    ax.text(j, i, f"{values[i, j]:.0f} ({raw[i, j]:.0f})", ha="center", va="center", fontsize=8,
                            color="black" if values[i, j] > 60 else "white")
    figure.colorbar(image, ax=list(axes), label="fluent target-language generations (%)", shrink=0.8)
    figure.suptitle(title or "steering success: fluent target rate (raw target rate), test prompts")
    return figure


def sweep_figure(rows: Sequence[dict], title: str | None = None) -> Figure:
    """Target rate vs strength per pair (see the module docstring)."""
    pairs = _pairs(rows)
    columns = min(3, len(pairs))
    lines_count = (len(pairs) + columns - 1) // columns
    figure = Figure(figsize=(4.2 * columns + 1.8, 3.2 * lines_count), layout="constrained")
    axes = figure.subplots(lines_count, columns, squeeze=False).ravel()
    colours = {}
    for ax, (source, target) in zip(axes, pairs):
        mine = [r for r in rows if (r["source"], r["target"]) == (source, target)]
        baseline = next((r for r in mine if r["mode"] == "baseline"), None)
        if baseline is not None:
            ax.axhline(_fluent(baseline), color="grey", linewidth=1, label="baseline")
        groups = dict.fromkeys((r["neuron_set"], r["mode"], r["kind"], r.get("layers")) for r in mine
                               if r["mode"] in ("activate", "both") and r["strength"] not in (None, ""))
        for set_name, mode, kind, layers in groups:  # direction sweeps: one line per layer choice
            points = sorted((float(r["strength"]), _fluent(r), _fluent(r, "ci_low"), _fluent(r, "ci_high"),
                             float(r["target_rate"])) for r in mine
                            if (r["neuron_set"], r["mode"], r["kind"], r.get("layers")) == (set_name, mode, kind, layers)
                            and r["strength"] not in (None, ""))
            x, y, low, high, raw = (np.array(v) for v in zip(*points))
            key = (mode, kind, layers)
            colours.setdefault(key, f"C{len(colours) % 10}")
            where = f" @{layers}" if layers else ""
            ax.errorbar(x, y, yerr=[y - low, high - y], color=colours[key], capsize=2, marker="o", markersize=3,
                        linestyle="--" if set_name in ("random", "random-dir") else "-",
                        label=f"{set_name} {mode} {kind}{where}")
            ax.plot(x, raw, color=colours[key], linestyle=":", linewidth=0.8)
        ax.set_title(f"{source} -> {target}")
        ax.set_xlabel("strength (add S, scale F, constant V, stat percentile)")
        ax.set_ylabel("fluent target (%); dotted: raw target")
        ax.set_ylim(-3, 103)
        ax.legend(fontsize=6)
    for ax in axes[len(pairs):]:
        ax.set_visible(False)
    figure.suptitle(title or "steering strength sweep, test prompts (dashed: layer-matched random neurons)")
    return figure


def score_figure(rows: Sequence[dict], title: str | None = None) -> Figure:
    """Per pair (one panel each) and condition (one line each): target rate, fluent target rate and
    the combined score with its bootstrap interval."""
    pairs = _pairs(rows)
    names = list(dict.fromkeys(r["condition"] for r in rows))
    figure = Figure(figsize=(4.0 * len(pairs) + 2.5, 0.22 * len(names) + 1.6), layout="constrained")
    axes = figure.subplots(1, len(pairs), squeeze=False, sharey=True)[0]
    for ax, (source, target) in zip(axes, pairs):
        mine = {r["condition"]: r for r in rows if (r["source"], r["target"]) == (source, target)}
        for y, name in enumerate(names):
            r = mine.get(name)
            if r is None:
                continue
            ax.plot(float(r["target_rate"]), y, marker="x", color="grey", linestyle="none",
                    label="target rate" if y == 0 else None)
            ax.plot(_fluent(r), y, marker="o", color="C0", markersize=4, linestyle="none",
                    label="fluent target rate" if y == 0 else None)
            if r.get("combined_score") is not None:
                score, low, high = (r.get(k) for k in ("combined_score", "combined_ci_low", "combined_ci_high"))
                error = None if low is None else [[score - low], [high - score]]
                ax.errorbar(float(score), y, xerr=error, marker="D", color="C3", markersize=4, capsize=2,
                            linestyle="none", label="combined score (95% bootstrap CI)" if y == 0 else None)
        ax.set_yticks(range(len(names)), names, fontsize=6)
        ax.invert_yaxis()
        ax.set_xlim(-3, 103)
        ax.set_xlabel("percent")
        ax.set_title(f"{source} -> {target}")
    axes[0].legend(fontsize=6, loc="lower right")
    figure.suptitle(title or "steering scores per condition, test prompts")
    return figure


def write_steering_figures(rows: Sequence[dict], out_dir: str | Path, condition: str | None) -> list[Path]:
    """``steering_heatmap.png/svg`` (when ``condition``), ``steering_sweep.png/svg`` (when a sweep
    has >= MIN_SWEEP_STRENGTHS strengths; otherwise a sweep figure of an earlier run in ``out_dir``
    is removed, so the folder never shows one the rows do not support) and
    ``steering_scores.png/svg``, all of the test rows."""
    rows = [r for r in rows if r.get("split", "test") == "test"]
    paths = []
    if condition is not None:
        paths += save_figure(steering_heatmap(rows, condition), Path(out_dir), "steering_heatmap")
    if no_sweep_reason(rows) is None:
        paths += save_figure(sweep_figure(rows), Path(out_dir), "steering_sweep")
    else:
        for suffix in (".png", ".svg"):
            (Path(out_dir) / f"steering_sweep{suffix}").unlink(missing_ok=True)
    if rows:
        paths += save_figure(score_figure(rows), Path(out_dir), "steering_scores")
    return paths
