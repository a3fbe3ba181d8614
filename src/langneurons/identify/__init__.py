"""Identify language-specific neurons from per-language activation statistics.

Methods (each returns a :class:`NeuronSet`): :func:`lape` (Tang et al. 2024; returns a
:class:`LapeResult` with the set and the entropies), :func:`act_prob` (Mondal et al. 2025),
and :func:`random_control` (a layer-matched random set for controls).
"""

from langneurons.identify.act_prob import act_prob, activation_probability_scores
from langneurons.identify.inputs import load_statistics, select_statistics
from langneurons.identify.lape import LapeResult, lape, lape_entropy, load_entropy
from langneurons.identify.neuron_set import NeuronSet, layer_ranges, pairwise_overlap, summarize
from langneurons.identify.random_control import random_control
from langneurons.identify.api import IdentifyOptions, IdentifyResult, identify

__all__ = [
    "IdentifyOptions",
    "IdentifyResult",
    "LapeResult",
    "NeuronSet",
    "act_prob",
    "activation_probability_scores",
    "identify",
    "lape",
    "lape_entropy",
    "layer_ranges",
    "load_entropy",
    "load_statistics",
    "pairwise_overlap",
    "random_control",
    "select_statistics",
    "summarize",
]
