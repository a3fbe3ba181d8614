"""Average-precision neurons (Kojima et al., 2024), from the per-language histograms (no new pass).

Kojima et al. treat a neuron's activation as a score for telling language k's tokens
(positives) from the tokens of the other languages (negatives) and rank neurons by the average
precision (AP) of that score; a language's neurons are its highest-AP neurons.

With histograms instead of tokens, the activations of one bin are tied scores: over the bins
from the highest value down, with t_b positives and f_b negatives in bin b and T_b, F_b the
positives and negatives in bins above it (P positives in all),

    AP_hist = sum_b (t_b / P) * (T_b + t_b) / (T_b + t_b + F_b + f_b)

(the AP of scores rounded to their bins, as ``sklearn.metrics.average_precision_score`` counts
ties). The per-token AP orders the tokens inside a bin; each of the bin's positives then has a
precision between (T_b + 1) / (T_b + F_b + 1 + f_b) (all the bin's negatives ranked first) and
(T_b + t_b) / (T_b + F_b + t_b) (all its positives first), and so does AP_hist's, hence

    |AP_tokens - AP_hist| <= sum_b (t_b / P) * [ (T_b + t_b) / (T_b + F_b + t_b) - (T_b + 1) / (T_b + F_b + 1 + f_b) ]

which :func:`average_precision_scores` returns per neuron as the bin error. It is small where
the bins that hold the positives are narrow relative to where positives and negatives mix.

Each language keeps its ``top_rate`` x L x N highest-AP neurons (default 0.00125, as act-prob;
ties to the lower flat index). Deterministic. Tokens weigh equally, so languages with more
tokens weigh more among the negatives (use equal-sized corpora).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from langneurons.activations.statistics import ActivationStatistics
from langneurons.identify.act_prob import top_per_language
from langneurons.identify.inputs import Statistics, check_rate, select_statistics, statistics_source
from langneurons.identify.neuron_set import NeuronSet


def histogram_average_precision(positive: torch.Tensor, negative: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """AP of telling ``positive`` from ``negative`` counts per bin [..., bins] (bins ascending in
    value) and its bin-error bound (module docstring); both float64 [...]. AP is 0 without positives."""
    t = positive.double().flip(-1)  # from the highest bin down
    f = negative.double().flip(-1)
    T = t.cumsum(-1) - t  # positives strictly above the bin
    F = f.cumsum(-1) - f
    P = t.sum(-1, keepdim=True).clamp_min(1.0)
    weight = t / P
    tied = (T + t) / (T + t + F + f).clamp_min(1.0)
    best = (T + t) / (T + F + t).clamp_min(1.0)
    worst = (T + 1) / (T + F + 1 + f)
    present = t > 0
    ap = torch.where(present, weight * tied, torch.zeros_like(t)).sum(-1)
    error = torch.where(present, weight * (best - worst), torch.zeros_like(t)).sum(-1)
    return ap, error


def average_precision_scores(statistics: Mapping[str, ActivationStatistics]) -> tuple[torch.Tensor, torch.Tensor]:
    """AP per language and neuron and its bin-error bound, each float64 [K, L, N] (K languages in
    dict order; the negatives of language k are the tokens of all the others)."""
    values = list(statistics.values())
    num_layers = values[0].meta.num_layers
    ap = torch.zeros(len(values), *values[0].shape, dtype=torch.float64)
    error = torch.zeros_like(ap)
    for layer in range(num_layers):
        histograms = torch.stack([stats.histogram[layer].long() for stats in values])  # [K, N, B]
        total = histograms.sum(0)
        for k in range(len(values)):
            ap[k, layer], error[k, layer] = histogram_average_precision(histograms[k], total - histograms[k])
    return ap, error


def average_precision(statistics: Statistics, languages: Sequence[str] | None = None,
                      top_rate: float = 0.00125) -> NeuronSet:
    """Per language, the ``top_rate`` fraction of all neurons with the highest AP (needs two languages)."""
    top_rate = check_rate("top_rate", top_rate)
    selected = select_statistics(statistics, languages, minimum_languages=2)
    ap, error = average_precision_scores(selected)
    parameters = {"top_rate": top_rate, "max_bin_error": float(error.max())}
    return top_per_language(ap, list(selected), top_rate, "ap", parameters, statistics_source(selected))
