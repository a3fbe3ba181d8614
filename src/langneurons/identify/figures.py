"""Figures of a NeuronSet: counts, layer profile, overlaps, a Venn diagram, LAPE entropies.

Every figure is written as PNG and SVG, atomically. Figures are built with
``matplotlib.figure.Figure`` (no pyplot, no global backend state; PNG is rendered by Agg).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

from langneurons.errors import LangNeuronsError
from langneurons.figures import save_figure
from langneurons.identify.neuron_set import NeuronSet, pairwise_overlap
from langneurons.languages import language_name


def _label(language: str) -> str:
    name = language_name(language)
    return f"{name} ({language})" if name != language else language


def counts_figure(neuron_set: NeuronSet, title: str) -> Figure:
    totals = neuron_set.counts_per_layer().sum(1).tolist()
    figure = Figure(figsize=(max(4.0, 0.9 * len(totals) + 2), 4))
    ax = figure.subplots()
    bars = ax.bar([_label(lang) for lang in neuron_set.languages], totals, color="tab:blue")
    ax.bar_label(bars)
    ax.set_ylabel("neurons")
    ax.set_title(f"{title}: neurons per language")
    ax.tick_params(axis="x", rotation=30)
    return figure


def layer_heatmap_figure(neuron_set: NeuronSet, title: str) -> Figure:
    counts = neuron_set.counts_per_layer().T.numpy()  # [layers, languages]
    figure = Figure(figsize=(max(4.0, 0.8 * counts.shape[1] + 3), max(3.0, 0.25 * counts.shape[0] + 1.5)))
    ax = figure.subplots()
    image = ax.imshow(counts, aspect="auto", cmap="viridis", origin="lower")
    figure.colorbar(image, ax=ax, label="neurons")
    ax.set_xticks(range(len(neuron_set.languages)), neuron_set.languages)
    ax.set_xlabel("language")
    ax.set_ylabel("layer")
    ax.set_title(f"{title}: neurons per layer")
    return figure


def overlap_figure(neuron_set: NeuronSet, title: str) -> Figure:
    shared, jaccard = pairwise_overlap(neuron_set)
    languages = neuron_set.languages
    size = max(3.5, 0.7 * len(languages) + 2)
    figure = Figure(figsize=(2 * size + 1, size))
    for ax, values, label, fmt in zip(figure.subplots(1, 2), (shared, jaccard), ("shared neurons", "Jaccard index"),
                                      ("{:.0f}", "{:.2f}")):
        image = ax.imshow(values.double().numpy(), cmap="Blues", vmin=0)
        figure.colorbar(image, ax=ax, label=label)
        ax.set_xticks(range(len(languages)), languages)
        ax.set_yticks(range(len(languages)), languages)
        top = float(values.max()) or 1.0
        for i in range(len(languages)):
            for j in range(len(languages)):
                value = float(values[i, j])
                ax.text(j, i, fmt.format(value), ha="center", va="center",
                        color="white" if value > 0.6 * top else "black", fontsize=8)
        ax.set_title(label)
    figure.suptitle(f"{title}: pairwise overlap")
    return figure


def venn_figure(neuron_set: NeuronSet, languages: Sequence[str], title: str) -> Figure:
    from matplotlib_venn import venn2, venn3

    if len(languages) not in (2, 3):
        raise LangNeuronsError(f"a Venn diagram needs 2 or 3 languages, got {list(languages)}")
    sets = [set((neuron_set.indices(lang)[:, 0] * neuron_set.neurons_per_layer
                 + neuron_set.indices(lang)[:, 1]).tolist()) for lang in languages]
    figure = Figure(figsize=(5, 5))
    ax = figure.subplots()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty sets draw as zero-area circles, which is what they are
        (venn2 if len(sets) == 2 else venn3)(sets, set_labels=[_label(lang) for lang in languages], ax=ax)
    ax.set_title(f"{title}: shared neurons")
    return figure


def entropy_figure(neuron_set: NeuronSet, entropy: torch.Tensor, title: str) -> Figure:
    """Histogram of LAPE entropies of all neurons ever active; the red line marks the largest kept entropy
    (kept neurons lie left of it; neurons left of it that fail the probability bar are not kept)."""
    if tuple(entropy.shape) != (neuron_set.num_layers, neuron_set.neurons_per_layer):
        raise LangNeuronsError(f"entropy shape {tuple(entropy.shape)} does not match the neuron set's sizes")
    finite = entropy[torch.isfinite(entropy)].double()
    kept = neuron_set.union()
    figure = Figure(figsize=(6, 4))
    ax = figure.subplots()
    ax.hist(finite.numpy(), bins=60, color="tab:gray", log=True, label=f"{finite.numel()} active neurons")
    if len(kept):
        cut = float(entropy[kept[:, 0], kept[:, 1]].max())
        ax.axvline(cut, color="tab:red", linestyle="--", label=f"largest kept entropy {cut:.3f} ({len(kept)} kept)")
    ax.axvline(math.log(len(neuron_set.languages)), color="tab:blue", linestyle=":", label="uniform (ln K)")
    ax.set_xlabel("entropy over languages (nats)")
    ax.set_ylabel("neurons (log scale)")
    ax.set_title(f"{title}: entropy of activation probabilities")
    ax.legend(fontsize=8)
    return figure


def write_neuron_figures(
    neuron_set: NeuronSet,
    out_dir: str | Path,
    title_prefix: str | None = None,
    entropy: torch.Tensor | None = None,
    venn_languages: Sequence[str] | None = None,
) -> list[Path]:
    """Write all figures of ``neuron_set`` to ``out_dir``; return the written paths.

    ``title_prefix`` defaults to "<model id> · <method>". ``entropy`` [L, N] (from
    :class:`LapeResult`) adds the entropy histogram. The Venn diagram shows ``venn_languages``
    (2 or 3), by default all languages when the set has 2 or 3."""
    out_dir = Path(out_dir)
    title = title_prefix or f"{neuron_set.source.get('model_id', 'model')} · {neuron_set.method}"
    if venn_languages is None and len(neuron_set.languages) in (2, 3):
        venn_languages = neuron_set.languages
    figures = {
        "neuron_counts": counts_figure(neuron_set, title),
        "neuron_layers": layer_heatmap_figure(neuron_set, title),
        "neuron_overlap": overlap_figure(neuron_set, title),
    }
    if venn_languages:
        figures[f"neuron_venn_{'_'.join(venn_languages)}"] = venn_figure(neuron_set, venn_languages, title)
    if entropy is not None:
        figures["lape_entropy"] = entropy_figure(neuron_set, entropy, title)
    return [path for name, figure in figures.items() for path in save_figure(figure, out_dir, name)]
