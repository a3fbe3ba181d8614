"""Inputs of every identification method: per-language statistics, checked once.

:func:`select_statistics` returns the statistics of the requested languages, in order, after
checking that they are known language codes, all present, non-empty, and recorded on one
model with one sketch layout. :func:`statistics_source` is the provenance a NeuronSet keeps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from langneurons.activations.statistics import ActivationStatistics
from langneurons.errors import LangNeuronsError
from langneurons.languages import check_language, check_languages

Statistics = Mapping[str, ActivationStatistics] | Sequence[ActivationStatistics]
"""Statistics keyed by language, or a sequence of them (keyed by ``meta.language``)."""


def load_statistics(paths: Sequence[str | Path]) -> dict[str, ActivationStatistics]:
    """Read statistics files into a language -> statistics dict (file order; one file per language)."""
    return _by_language([ActivationStatistics.load(path) for path in paths])


def _by_language(statistics: Statistics) -> dict[str, ActivationStatistics]:
    if isinstance(statistics, Mapping):
        for language, stats in statistics.items():
            if stats.meta.language != language:
                raise LangNeuronsError(f"statistics given as {language!r} were recorded for {stats.meta.language!r}")
        return dict(statistics)
    by_language: dict[str, ActivationStatistics] = {}
    for stats in statistics:
        if stats.meta.language in by_language:
            raise LangNeuronsError(f"two statistics for language {stats.meta.language!r}; merge them first")
        by_language[stats.meta.language] = stats
    return by_language


def select_statistics(
    statistics: Statistics, languages: Sequence[str] | None = None, minimum_languages: int = 1
) -> dict[str, ActivationStatistics]:
    """The statistics of ``languages`` (codes, or one comma-separated string; default: all given),
    in that order, checked to be usable together."""
    available = _by_language(statistics)
    if isinstance(languages, str):
        languages = languages.split(",")
    languages = check_languages(languages) if languages is not None else [check_language(code) for code in available]
    missing = [language for language in languages if language not in available]
    if missing:
        raise LangNeuronsError(f"no statistics for {missing}; statistics are available for {sorted(available)}")
    if len(languages) < minimum_languages:
        raise LangNeuronsError(f"this method needs at least {minimum_languages} languages, got {languages}")
    selected = {language: available[language] for language in languages}
    first = next(iter(selected.values()))
    for language, stats in selected.items():
        first.check_compatible(stats, same_language=False)
        if stats.token_count <= 0:
            raise LangNeuronsError(f"statistics for {language!r} contain no tokens")
    return selected


def statistics_source(statistics: Mapping[str, ActivationStatistics]) -> dict:
    """Provenance of a neuron set: the model, and per language the corpus and token count."""
    meta = next(iter(statistics.values())).meta
    return {
        "model_id": meta.model_id,
        "revision": meta.revision,
        "architecture": meta.architecture,
        "weights_fingerprint": meta.weights_fingerprint,
        "languages": list(statistics),
        "statistics": {
            language: {"corpus_fingerprint": stats.meta.corpus_fingerprint, "token_count": stats.token_count,
                       "tool_version": stats.meta.tool_version}
            for language, stats in statistics.items()
        },
    }


def check_rate(name: str, value: float) -> float:
    """``value`` if it is a fraction strictly between 0 and 1, else a LangNeuronsError."""
    if not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise LangNeuronsError(f"{name} must be a fraction in (0, 1), got {value!r}")
    return float(value)


def neuron_budget(rate: float, num_layers: int, neurons_per_layer: int) -> int:
    """How many neurons a fraction ``rate`` of all num_layers x neurons_per_layer neurons is (>= 1)."""
    return max(1, round(rate * num_layers * neurons_per_layer))
