"""Hand-built ActivationStatistics for identification tests (no model needed)."""

import pytest
import torch

from langneurons.activations.sketch import SketchConfig, histogram_update
from langneurons.activations.statistics import ActivationStatistics, StatisticsMeta


def meta_for(language: str, num_layers: int, neurons_per_layer: int, fingerprint: str = "w0") -> StatisticsMeta:
    return StatisticsMeta(model_id="tiny/model", revision="main", architecture="LlamaForCausalLM",
                          num_layers=num_layers, neurons_per_layer=neurons_per_layer,
                          weights_fingerprint=fingerprint, language=language, corpus_fingerprint=f"corpus-{language}")


def from_counts(language: str, positive_count, token_count: int, fingerprint: str = "w0") -> ActivationStatistics:
    """Statistics with only token and positive counts filled in (enough for LAPE)."""
    positive_count = torch.as_tensor(positive_count, dtype=torch.int64)
    stats = ActivationStatistics.empty(meta_for(language, *positive_count.shape, fingerprint=fingerprint))
    stats.positive_count = positive_count
    stats.token_count = token_count
    return stats


def from_values(language: str, values: torch.Tensor, sketch: SketchConfig = SketchConfig()) -> ActivationStatistics:
    """Statistics of synthetic activations ``values`` [tokens, L, N], every field filled."""
    tokens, num_layers, neurons_per_layer = values.shape
    stats = ActivationStatistics.empty(meta_for(language, num_layers, neurons_per_layer), sketch)
    stats.token_count = tokens
    stats.positive_count = (values > 0).sum(0)
    stats.activation_sum = values.double().sum(0)
    stats.activation_sum_sq = (values.double() ** 2).sum(0)
    stats.minimum = values.amin(0).float()
    stats.maximum = values.amax(0).float()
    for layer in range(num_layers):
        histogram_update(stats.histogram[layer], values[:, layer], sketch)
    return stats


@pytest.fixture(scope="session")
def stats_from_counts():
    return from_counts


@pytest.fixture(scope="session")
def stats_from_values():
    return from_values


def with_chunks(language: str, values: torch.Tensor, chunks: int, sketch: SketchConfig = SketchConfig()):
    """(statistics, replicate statistics) of synthetic activations [tokens, L, N]; token t is in
    chunk t mod ``chunks`` (as blocks are in a real pass)."""
    from langneurons.activations.replicates import ReplicateStatistics, coarse_sketch

    stats = from_values(language, values, sketch)
    replicates = ReplicateStatistics.empty(stats.meta, sketch, chunks)
    coarse = coarse_sketch(sketch)
    for chunk in range(chunks):
        part = values[chunk::chunks]
        replicates.token_count[chunk] = part.shape[0]
        replicates.positive_count[chunk] = (part > 0).sum(0)
        for layer in range(values.shape[1]):
            histogram = torch.zeros(values.shape[2], coarse.num_bins, dtype=torch.int32)
            histogram_update(histogram, part[:, layer].contiguous(), coarse)
            replicates.histogram[layer, :, chunk] = histogram
    return stats, replicates


@pytest.fixture(scope="session")
def stats_with_chunks():
    return with_chunks
