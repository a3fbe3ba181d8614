"""LAPE: language activation probability entropy (Tang et al., 2024), exactly as published.

For K languages and a model with L x N neurons:

1. p[k, l, n] = P(activation > 0) on language k.
2. Normalise over languages, q = p / sum_k p, and take the entropy H = -sum_k q ln q (0 ln 0 = 0).
   A neuron that no language ever activates has no distribution; its entropy is +inf.
3. The bar is the ``filter_rate`` quantile of all K x L x N probabilities (the k-th smallest
   value with k = round(filter_rate * K * L * N), as in the authors' ``kthvalue`` code; no
   ``torch.quantile``, which refuses large inputs). Neurons whose largest probability is not
   above the bar are discarded.
4. Of the rest, exactly round(top_rate * L * N) neurons (at least 1; fewer only if fewer
   remain) with the lowest entropy are kept; ties go to the lower flat index (layer * N + n).
5. Each kept neuron belongs to every language whose probability is above the bar.

The method is deterministic: the same statistics always give the same set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from langneurons.artefacts import atomic_save_safetensors
from langneurons.errors import LangNeuronsError
from langneurons.identify.inputs import Statistics, check_rate, neuron_budget, select_statistics, statistics_source
from langneurons.identify.neuron_set import NeuronSet


@dataclass
class LapeResult:
    neuron_set: NeuronSet
    entropy: torch.Tensor
    """float64 [L, N], entropy of each neuron's normalised activation probabilities (nats; +inf if never active)."""
    bar: float
    """The activation-probability bar (the filter_rate quantile of all probabilities)."""

    def save_entropy(self, path) -> Path:
        """Write the entropy tensor (safetensors, key ``entropy``) for later figures."""
        metadata = {"bar": repr(self.bar), "method": "lape", "model_id": str(self.neuron_set.source.get("model_id"))}
        return atomic_save_safetensors({"entropy": self.entropy.contiguous()}, path, metadata)


def load_entropy(path) -> torch.Tensor:
    """Read an entropy tensor written by :meth:`LapeResult.save_entropy`."""
    try:
        return load_file(str(path))["entropy"]
    except Exception as error:
        raise LangNeuronsError(f"cannot read LAPE entropy file {path}: {error}") from error


def lape_entropy(probability: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) over languages of p [K, L, N] normalised per neuron -> float64 [L, N]."""
    probability = probability.double()
    total = probability.sum(0)
    normalised = probability / total.clamp_min(torch.finfo(torch.float64).tiny)
    plogp = torch.where(normalised > 0, normalised * normalised.log(), torch.zeros_like(normalised))
    entropy = -plogp.sum(0)
    return torch.where(total > 0, entropy, torch.full_like(entropy, math.inf))


def kth_quantile(values: torch.Tensor, q: float) -> float:
    """The k-th smallest value with k = round(q * len) (1 <= k <= len), as LAPE's ``kthvalue``."""
    values = values.flatten()
    k = min(max(round(q * values.numel()), 1), values.numel())
    return float(values.kthvalue(k).values)


def lape(
    statistics: Statistics,
    languages: Sequence[str] | None = None,
    top_rate: float = 0.01,
    filter_rate: float = 0.95,
) -> LapeResult:
    """Language-specific neurons by LAPE (see module docstring); needs at least two languages."""
    top_rate, filter_rate = check_rate("top_rate", top_rate), check_rate("filter_rate", filter_rate)
    selected = select_statistics(statistics, languages, minimum_languages=2)
    probability = torch.stack([stats.activation_probability for stats in selected.values()])  # [K, L, N]
    return lape_from_probability(probability, list(selected), top_rate, filter_rate, statistics_source(selected))


def lape_from_probability(probability: torch.Tensor, languages: Sequence[str], top_rate: float = 0.01,
                          filter_rate: float = 0.95, source: dict | None = None) -> LapeResult:
    """Steps 2-5 of the module docstring on activation probabilities p [K, L, N] of ``languages``
    (K of them, in order); :func:`lape` and resampling (:mod:`.stability`) share it."""
    num_languages, num_layers, neurons_per_layer = probability.shape

    entropy = lape_entropy(probability)
    bar = kth_quantile(probability, filter_rate)
    above_bar = probability > bar  # [K, L, N]
    candidate = above_bar.any(0).flatten()

    ranking = torch.where(candidate, entropy.flatten(), torch.full_like(entropy.flatten(), math.inf))
    order = torch.sort(ranking, stable=True).indices[: neuron_budget(top_rate, num_layers, neurons_per_layer)]
    order = order[candidate[order]]  # fewer candidates than the budget: keep only candidates
    kept = torch.zeros_like(candidate)
    kept[order] = True

    masks = {language: above_bar[k] & kept.view(num_layers, neurons_per_layer) for k, language in enumerate(languages)}
    parameters = {"top_rate": top_rate, "filter_rate": filter_rate, "probability_bar": bar, "kept": int(kept.sum())}
    neuron_set = NeuronSet.from_masks(masks, "lape", parameters, dict(source or {}))
    return LapeResult(neuron_set=neuron_set, entropy=entropy, bar=bar)
