"""Figures of neuron-set stability and agreement: Jaccard per language against chance, and the
selection-frequency histogram. PNG and SVG, atomic (:func:`~.neuron_figures.save_figure`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from langneurons.figures import save_figure


def jaccard_figure(rows: Sequence[dict], series: Sequence[tuple[str, str]], title: str) -> Figure:
    """Per language (``rows[i]["language"]``), one marker per ``(key, label)`` series at
    ``row[key + "_median"]`` (or ``row[key]``) with the interval ``row[key + "_low"/"_high"]``
    when present, and the chance level ``row["chance_jaccard"]`` as a grey bar."""
    languages = [row["language"] for row in rows]
    x = np.arange(len(languages))
    figure = Figure(figsize=(max(5.0, 0.9 * len(languages) + 3), 4))
    ax = figure.subplots()
    ax.bar(x, [row["chance_jaccard"] for row in rows], width=0.7, color="0.85", label="chance (random, layer-matched)")
    width = 0.6 / max(1, len(series))
    for i, (key, label) in enumerate(series):
        centre = [row.get(f"{key}_median", row.get(key)) for row in rows]
        offset = x - 0.3 + width * (i + 0.5)
        values = np.array([np.nan if c is None else c for c in centre], dtype=float)
        if f"{key}_low" in rows[0]:
            low = np.array([np.nan if row[f"{key}_low"] is None else row[f"{key}_low"] for row in rows], dtype=float)
            high = np.array([np.nan if row[f"{key}_high"] is None else row[f"{key}_high"] for row in rows], dtype=float)
            ax.errorbar(offset, values, yerr=[values - low, high - values], fmt="o", capsize=3, label=label)
        else:
            ax.plot(offset, values, "o", label=label)
    ax.set_xticks(x, languages)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("Jaccard index")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    return figure


def frequency_figure(frequency: dict, full_masks: dict, title: str) -> Figure:
    """Histogram of selection frequencies of every neuron selected at least once, per language;
    full-data-set neurons and the others stacked."""
    figure = Figure(figsize=(6, 4))
    ax = figure.subplots()
    bins = np.linspace(0, 1, 21)
    in_set = np.concatenate([frequency[lang][full_masks[lang]].numpy() for lang in frequency])
    outside = np.concatenate([frequency[lang][(~full_masks[lang]) & (frequency[lang] > 0)].numpy() for lang in frequency])
    ax.hist([in_set, outside], bins=bins, stacked=True, color=["tab:blue", "tab:orange"],
            label=["in the full-data set", "selected only in resamples"])
    ax.set_xlabel("selection frequency over bootstrap resamples")
    ax.set_ylabel("neurons (all languages)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return figure


def write_stability_figures(result, out_dir: str | Path, title: str | None = None) -> list[Path]:
    """``stability_jaccard`` and ``selection_frequency`` figures of a :class:`~langneurons.identify.stability.StabilityResult`."""
    title = title or f"{result.neuron_set.source.get('model_id', 'model')} · {result.neuron_set.method}"
    rows = result.table()
    masks = {language: result.neuron_set.mask(language) for language in result.languages}
    series = [("bootstrap_jaccard", "bootstrap resample vs full set"), ("split_half_jaccard", "half vs other half")]
    files = save_figure(jaccard_figure(rows, series, f"{title}: stability ({result.options.resamples} resamples)"),
                        Path(out_dir), "stability_jaccard")
    files += save_figure(frequency_figure(result.frequency, masks, f"{title}: selection frequency"),
                         Path(out_dir), "selection_frequency")
    return files


def write_agreement_figure(rows: Sequence[dict], out_dir: str | Path, name: str = "agreement",
                           title: str = "agreement between neuron sets") -> list[Path]:
    """Jaccard per language (key ``jaccard``) against chance (``chance_jaccard``)."""
    return save_figure(jaccard_figure(rows, [("jaccard", "Jaccard of the two sets")], title), Path(out_dir), name)
