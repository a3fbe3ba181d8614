"""Activation-probability neurons (Mondal et al., 2025): neurons that fire unusually often in a language.

score[k, l, n] = P(activation > t[l, n]) on language k, with t the neuron's ``percentile``-th
percentile; each language keeps its ``top_rate`` x L x N highest-scoring neurons (rounded, at
least 1; ties to the lower flat index layer * N + n). The threshold comes from

* ``pooled`` (default): the distribution of all selected languages together (their histograms
  summed, so each language weighs by its token count: use equal-sized corpora). A language's
  score exceeds 1 - percentile/100 exactly where its activations pass the pooled threshold
  more often than the mixture's do, so the ranking is language-contrastive.
* ``own``: each language's own distribution, as in the paper's released code. By definition of
  a percentile, P(act > own p-th percentile) is about 1 - p/100 for EVERY neuron, so the scores
  are nearly constant and the top-k ranks estimator noise rather than language specificity.
  Kept for reproducing the paper.

Deterministic: the same statistics always give the same set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from langneurons.activations.statistics import ActivationStatistics
from langneurons.errors import LangNeuronsError
from langneurons.identify.inputs import Statistics, check_rate, neuron_budget, select_statistics, statistics_source
from langneurons.identify.neuron_set import NeuronSet

THRESHOLDS = ("pooled", "own")


def activation_thresholds(
    statistics: Mapping[str, ActivationStatistics], percentile: float = 90.0, threshold: str = "pooled"
) -> torch.Tensor:
    """The threshold t per language and neuron, float32 [K, L, N]: the pooled or each language's
    own ``percentile``-th percentile."""
    if threshold not in THRESHOLDS:
        raise LangNeuronsError(f"unknown threshold source {threshold!r}; use one of {', '.join(THRESHOLDS)}")
    if not 0.0 < percentile < 100.0:
        raise LangNeuronsError(f"percentile must be in (0, 100), got {percentile!r}")
    if threshold == "pooled":
        pooled = ActivationStatistics.pooled(list(statistics.values())).percentile(percentile)
        return pooled.unsqueeze(0).expand(len(statistics), *pooled.shape)
    return torch.stack([stats.percentile(percentile) for stats in statistics.values()])


def activation_probability_scores(
    statistics: Mapping[str, ActivationStatistics], percentile: float = 90.0, threshold: str = "pooled"
) -> torch.Tensor:
    """P(activation > t) per language and neuron, float64 [K, L, N] (K languages in dict order)."""
    if threshold not in THRESHOLDS:
        raise LangNeuronsError(f"unknown threshold source {threshold!r}; use one of {', '.join(THRESHOLDS)}")
    if not 0.0 < percentile < 100.0:
        raise LangNeuronsError(f"percentile must be in (0, 100), got {percentile!r}")
    if threshold == "pooled":
        pooled_threshold = ActivationStatistics.pooled(list(statistics.values())).percentile(percentile)
        return torch.stack([stats.probability_above(pooled_threshold) for stats in statistics.values()])
    return torch.stack([stats.probability_above(stats.percentile(percentile)) for stats in statistics.values()])


def act_prob(
    statistics: Statistics,
    languages: Sequence[str] | None = None,
    percentile: float = 90.0,
    top_rate: float = 0.00125,
    threshold: str = "pooled",
) -> NeuronSet:
    """Per language, the ``top_rate`` fraction of all neurons with the highest P(act > t)."""
    top_rate = check_rate("top_rate", top_rate)
    selected = select_statistics(statistics, languages)
    scores = activation_probability_scores(selected, percentile, threshold)
    parameters = {"percentile": float(percentile), "top_rate": top_rate, "threshold": threshold}
    return top_per_language(scores, list(selected), top_rate, "act-prob", parameters, statistics_source(selected))


def top_per_language(scores: torch.Tensor, languages: Sequence[str], top_rate: float, method: str,
                     parameters: dict, source: dict) -> NeuronSet:
    """Per language, the ``top_rate`` x L x N highest of ``scores`` [K, L, N] (ties to the lower
    flat index); ``parameters`` get ``per_language``, the number kept."""
    _, num_layers, neurons_per_layer = scores.shape
    budget = neuron_budget(top_rate, num_layers, neurons_per_layer)
    masks = {}
    for k, language in enumerate(languages):
        top = torch.sort(scores[k].flatten(), descending=True, stable=True).indices[:budget]
        mask = torch.zeros(num_layers * neurons_per_layer, dtype=torch.bool)
        mask[top] = True
        masks[language] = mask.view(num_layers, neurons_per_layer)
    return NeuronSet.from_masks(masks, method, {**parameters, "per_language": budget}, source)
