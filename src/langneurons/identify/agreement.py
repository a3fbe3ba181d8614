"""Agreement between two neuron sets of one model (two corpora, two methods, two settings).

Per language in both sets: the sizes, the shared neurons, the Jaccard index and its chance
level, the expected Jaccard of two random sets with the two sets' per-layer counts
(:func:`~.stability.expected_random_jaccard`). Written as CSV + JSON and a figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from langneurons.artefacts import check_plain_name, write_csv, write_json
from langneurons.errors import LangNeuronsError
from langneurons.identify.neuron_set import NeuronSet
from langneurons.identify.stability import expected_random_jaccard, jaccard


def agreement(first: NeuronSet, second: NeuronSet, languages: Sequence[str] | None = None) -> list[dict]:
    """One row per language (default: the languages both sets have, in ``first``'s order)."""
    if (first.num_layers, first.neurons_per_layer) != (second.num_layers, second.neurons_per_layer):
        raise LangNeuronsError(f"the sets are for different models ({first.num_layers}x{first.neurons_per_layer} "
                               f"vs {second.num_layers}x{second.neurons_per_layer} neurons)")
    weights = first.source.get("weights_fingerprint"), second.source.get("weights_fingerprint")
    if all(weights) and weights[0] != weights[1]:
        raise LangNeuronsError(f"the sets were identified on different weights ({weights[0]} vs {weights[1]})")
    shared_languages = [language for language in first.languages if language in second.languages]
    languages = list(languages) if languages is not None else shared_languages
    missing = [language for language in languages if language not in shared_languages]
    if missing or not languages:
        raise LangNeuronsError(f"languages {missing or languages} are not in both sets "
                               f"({first.languages} vs {second.languages})")
    counts_first = dict(zip(first.languages, first.counts_per_layer().tolist()))
    counts_second = dict(zip(second.languages, second.counts_per_layer().tolist()))
    rows = []
    for language in languages:
        a, b = first.mask(language), second.mask(language)
        value = jaccard(a, b)
        rows.append({"language": language, "size_first": int(a.sum()), "size_second": int(b.sum()),
                     "shared": int((a & b).sum()), "jaccard": None if value != value else value,
                     "chance_jaccard": expected_random_jaccard(counts_first[language], counts_second[language],
                                                               first.neurons_per_layer)})
    return rows


def write_agreement(rows: list[dict], out_dir, labels: tuple[str, str], figures: bool = True,
                    name: str = "agreement") -> list[Path]:
    """``<name>.csv``, ``<name>.json`` (with the two sets' labels) and the figure ``<name>.png/.svg``."""
    check_plain_name(name, "the agreement name (--name)")  # the files stay inside out_dir
    out_dir = Path(out_dir)
    files = [write_csv(out_dir / f"{name}.csv", rows),
             write_json(out_dir / f"{name}.json", {"first": labels[0], "second": labels[1], "rows": rows})]
    if figures:
        from langneurons.identify.stability_figures import write_agreement_figure

        files += write_agreement_figure(rows, out_dir, name, f"{labels[0]} vs {labels[1]}")
    return files
