"""Average-precision neurons (Kojima et al. 2024) from histograms: hand-computed AP with tied
bins, the per-token AP of a tiny model's activations within the stated bin error, and planted
neurons found."""

import pytest
import torch
from tiny import tiny_model

from langneurons.activations.collect import CollectConfig, collect_statistics
from langneurons.corpus.packing import TokenBlocks, pack_blocks
from langneurons.hooks import activation_hooks
from langneurons.identify.average_precision import (
    average_precision,
    average_precision_scores,
    histogram_average_precision,
)
from langneurons.identify.inputs import select_statistics
from langneurons.models.loading import describe


def token_average_precision(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """AP per column of distinct scores [tokens, neurons]: mean over positives of the precision
    at their rank (highest score first)."""
    order = torch.argsort(scores, dim=0, descending=True, stable=True)
    hits = labels[order].double()  # [tokens, neurons]
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=torch.float64).unsqueeze(1)
    return (precision * hits).sum(0) / hits.sum(0)


def test_histogram_ap_by_hand():
    # bins ascending in value; from the top: bin 2 has 2 positives and 0 negatives, bin 1 has 1
    # positive and 1 negative, bin 0 has 1 negative. P = 3.
    positive, negative = torch.tensor([0, 1, 2]), torch.tensor([1, 1, 0])
    ap, error = histogram_average_precision(positive, negative)
    assert float(ap) == pytest.approx(2 / 3 * 1.0 + 1 / 3 * 3 / 4)
    # bin 2: positives only, no ordering error; bin 1: precision of its positive is 3/3 or 3/4
    assert float(error) == pytest.approx(1 / 3 * (3 / 3 - 3 / 4))
    perfect, no_error = histogram_average_precision(torch.tensor([0, 0, 5]), torch.tensor([4, 0, 0]))
    assert float(perfect) == 1.0 and float(no_error) == 0.0


def test_ap_from_histograms_equals_per_token_ap_within_the_bin_error(tokenizer):
    loaded = describe(tiny_model("llama"), model_id="tiny-llama")
    texts = {"en": ["the cat sat on the mat and slept"] * 10, "fr": ["le chat est sur le tapis et dort"] * 10,
             "es": ["el gato duerme en la alfombra roja"] * 10}
    statistics, activations = {}, {}
    for language, lines in texts.items():
        blocks = pack_blocks(tokenizer, lines, language, block_length=16)
        statistics[language] = collect_statistics(loaded, blocks, CollectConfig(batch_size=4), progress=False)
        seen = {}
        with activation_hooks(loaded.adapter, lambda layer, a: seen.__setitem__(layer, a.detach())), torch.no_grad():
            loaded.adapter.body()(input_ids=blocks.input_ids)
        counted = blocks.counted.reshape(-1)
        activations[language] = [seen[layer].reshape(-1, seen[layer].shape[-1])[counted] for layer in sorted(seen)]
    ap, error = average_precision_scores(select_statistics(statistics))
    languages = list(texts)
    checked = 0
    for k, language in enumerate(languages):
        for layer in range(loaded.adapter.num_layers):
            values = torch.cat([activations[other][layer] for other in languages])
            labels = torch.cat([torch.full((activations[other][layer].shape[0],), other == language)
                                for other in languages])
            exact = token_average_precision(values, labels)
            assert torch.all((exact - ap[k, layer]).abs() <= error[k, layer] + 1e-12)
            checked += values.shape[1]
    assert checked == 3 * loaded.adapter.num_layers * activations["en"][0].shape[1]
    assert float(error.median()) < 0.05  # the bound is informative, not vacuous


def test_planted_neurons_have_the_highest_ap(stats_from_values):
    generator = torch.Generator().manual_seed(0)
    planted = {"en": (0, 3), "fr": (1, 7)}
    statistics = []
    for language in ("en", "fr"):
        values = torch.randn(2000, 2, 30, generator=generator)
        values[:, planted[language][0], planted[language][1]] += 3.0
        statistics.append(stats_from_values(language, values))
    neuron_set = average_precision(statistics, top_rate=1 / 60)
    assert neuron_set.method == "ap" and neuron_set.parameters["per_language"] == 1
    for language, (layer, neuron) in planted.items():
        assert neuron_set.indices(language).tolist() == [[layer, neuron]]
