"""Per-language activation statistics of the MLP neurons (the ``collect`` stage)."""

from langneurons.activations.api import CollectOptions, collect, load_heldout, load_statistics_dir
from langneurons.activations.statistics import ActivationStatistics, StatisticsMeta

__all__ = ["ActivationStatistics", "CollectOptions", "StatisticsMeta", "collect", "load_heldout",
           "load_statistics_dir"]
