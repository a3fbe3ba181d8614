"""Resampling stability: planted stable neurons reach selection frequency ~1 and noise neurons
do not; resampling is deterministic for a seed; the chance level matches simulation; stable
sets keep frequencies and resampling parameters through files."""

import math

import pytest
import torch

from langneurons.errors import LangNeuronsError
from langneurons.identify import NeuronSet, act_prob, lape
from langneurons.identify.stability import (
    Resampler,
    StabilityOptions,
    expected_random_jaccard,
    intersection_distribution,
    stability,
    stable_set,
)

LANGUAGES = ["en", "fr", "hi"]
L, N, TOKENS, CHUNKS = 2, 100, 3000, 10
# per language three neurons that fire far more often in it than elsewhere; the rest fire at
# random with probability 0.5 in every language
PLANTED = {"en": [(0, 3), (1, 7), (1, 50)], "fr": [(0, 10), (1, 20), (0, 60)], "hi": [(0, 35), (1, 30), (1, 90)]}


@pytest.fixture(scope="module")
def planted(stats_with_chunks):
    generator = torch.Generator().manual_seed(0)
    statistics, replicates = {}, {}
    for language in LANGUAGES:
        values = torch.randn(TOKENS, L, N, generator=generator)
        for other, neurons in PLANTED.items():
            for layer, neuron in neurons:
                values[:, layer, neuron] += 2.5 if other == language else -1.5
        statistics[language], replicates[language] = stats_with_chunks(language, values, CHUNKS)
    return statistics, replicates


def _planted_mask(language):
    mask = torch.zeros(L, N, dtype=torch.bool)
    for layer, neuron in PLANTED[language]:
        mask[layer, neuron] = True
    return mask


@pytest.mark.parametrize("method,top_rate", [("lape", 15 / 200), ("act-prob", 6 / 200)])
def test_planted_neurons_are_stable_and_noise_neurons_are_not(planted, method, top_rate):
    statistics, replicates = planted
    result = stability(statistics, replicates, method, StabilityOptions(resamples=60, splits=10, seed=1),
                       top_rate=top_rate)
    for language in LANGUAGES:
        planted_mask = _planted_mask(language)
        frequency = result.frequency[language]
        assert frequency[planted_mask].min() >= 0.95
        full = result.neuron_set.mask(language)
        noise = full & ~planted_mask
        assert noise.any()  # the budget forces noise neurons into the full set ...
        assert frequency[noise].max() < 0.8  # ... and they do not come back in most resamples
        stable = stable_set(result, 0.8)
        assert torch.equal(stable.mask(language), planted_mask)
    rows = {row["language"]: row for row in result.table()}
    for language in LANGUAGES:
        row = rows[language]
        # 10 chunks are too few resampling units for an interval: medians only
        assert row["resampling_units"] == CHUNKS == 10
        assert all(row[f"{key}_{end}"] is None for key in ("size", "bootstrap_jaccard", "split_half_jaccard")
                   for end in ("low", "high"))
        assert 0 <= row["chance_jaccard"] < row["bootstrap_jaccard_median"] <= 1
        assert row["stable_size_0.8"] == 3 and row["set_size"] == int(result.neuron_set.mask(language).sum())


def test_every_chunk_once_gives_the_full_lape_set(planted):
    statistics, replicates = planted
    resampler = Resampler(statistics, replicates, "lape", top_rate=15 / 200)
    everything = resampler.identify({language: torch.ones(CHUNKS) for language in LANGUAGES})
    full = lape(statistics, top_rate=15 / 200).neuron_set
    for language in LANGUAGES:
        assert torch.equal(everything.indices(language), full.indices(language))
    assert torch.equal(resampler.full().indices("en"), full.indices("en"))
    act = Resampler(statistics, replicates, "act-prob", top_rate=6 / 200)
    everything = act.identify({language: torch.ones(CHUNKS) for language in LANGUAGES})
    full = act_prob(statistics, top_rate=6 / 200)
    for language in LANGUAGES:
        assert torch.equal(everything.indices(language), full.indices(language))


def test_resampling_is_deterministic_for_a_seed(planted):
    statistics, replicates = planted
    options = StabilityOptions(resamples=8, splits=4, seed=3)
    first = stability(statistics, replicates, "lape", options, top_rate=15 / 200)
    second = stability(statistics, replicates, "lape", options, top_rate=15 / 200)
    other = stability(statistics, replicates, "lape", StabilityOptions(resamples=8, splits=4, seed=4), top_rate=15 / 200)
    assert torch.equal(first.bootstrap_jaccard, second.bootstrap_jaccard)
    assert torch.equal(first.split_jaccard, second.split_jaccard)
    assert all(torch.equal(first.frequency[lang], second.frequency[lang]) for lang in LANGUAGES)
    assert not torch.equal(first.bootstrap_jaccard, other.bootstrap_jaccard)


def test_chance_jaccard_by_hand():
    assert expected_random_jaccard([1], [1], 2) == pytest.approx(0.5)
    # N=4, two of four each: overlap 0, 1, 2 with probability 1/6, 4/6, 1/6 -> J = 0, 1/3, 1
    assert expected_random_jaccard([2], [2], 4) == pytest.approx(4 / 6 / 3 + 1 / 6)
    assert expected_random_jaccard([0, 0], [0, 0], 4) == 0.0
    assert expected_random_jaccard([4], [3], 4) == pytest.approx(3 / 4)  # A is the whole layer
    assert intersection_distribution([2, 1], [2, 1], 4).sum().item() == pytest.approx(1.0)


def test_chance_jaccard_matches_simulation():
    counts_a, counts_b, neurons = [5, 0, 12, 3], [7, 3, 9, 3], 40
    generator = torch.Generator().manual_seed(0)
    trials = 20000

    def random_sets(counts):  # [trials, layers, neurons]: counts[l] uniform draws without replacement per layer
        ranks = torch.rand(trials, len(counts), neurons, generator=generator).argsort(-1).argsort(-1)
        return ranks < torch.tensor(counts).view(1, -1, 1)

    a, b = random_sets(counts_a), random_sets(counts_b)
    shared = (a & b).flatten(1).sum(1).double()
    values = shared / (a | b).flatten(1).sum(1).double()
    assert (a.flatten(1).sum(1) == sum(counts_a)).all()
    standard_error = values.std() / math.sqrt(len(values))
    assert abs(values.mean() - expected_random_jaccard(counts_a, counts_b, neurons)) < 4 * standard_error


def test_stable_set_keeps_frequencies_and_resampling_through_files(planted, tmp_path):
    statistics, replicates = planted
    result = stability(statistics, replicates, "lape", StabilityOptions(resamples=10, splits=2), top_rate=15 / 200)
    stable = stable_set(result, 0.5)
    for suffix in (".json", ".safetensors"):
        loaded = NeuronSet.load(stable.save(tmp_path / f"stable{suffix}"))
        assert loaded.parameters["resampling"]["resamples"] == 10 and loaded.parameters["min_frequency"] == 0.5
        for language in LANGUAGES:
            assert torch.equal(loaded.indices(language), stable.indices(language))
            rows = loaded.indices(language)
            expected = result.frequency[language][rows[:, 0], rows[:, 1]].double()
            assert torch.equal(loaded.frequency[language], expected)
            assert (loaded.frequency[language] >= 0.5).all()
    plain = NeuronSet.load(result.neuron_set.save(tmp_path / "plain.json"))
    assert plain.frequency is None
    files = result.save(tmp_path / "out")
    assert {path.name for path in files} >= {"stability.csv", "stability.json", "frequency.safetensors"}
    with pytest.raises(LangNeuronsError, match="min_frequency"):
        stable_set(result, 0.0)


def test_resampling_refuses_what_it_cannot_do(planted):
    statistics, replicates = planted
    with pytest.raises(LangNeuronsError, match="not 'random'"):
        Resampler(statistics, replicates, "random")
    with pytest.raises(LangNeuronsError, match="no replicate statistics"):
        Resampler(statistics, {"en": replicates["en"]}, "lape")


def test_twenty_chunks_give_intervals(stats_with_chunks):
    generator = torch.Generator().manual_seed(0)
    statistics, replicates = {}, {}
    for language in LANGUAGES:
        values = torch.randn(2000, L, N, generator=generator)
        for other, neurons in PLANTED.items():
            for layer, neuron in neurons:
                values[:, layer, neuron] += 2.5 if other == language else -1.5
        statistics[language], replicates[language] = stats_with_chunks(language, values, 20)
    result = stability(statistics, replicates, "lape", StabilityOptions(resamples=30, splits=6, seed=1),
                       top_rate=15 / 200)
    for row in result.table():
        assert row["resampling_units"] == 20
        assert row["size_low"] <= row["size_median"] <= row["size_high"]
        assert row["bootstrap_jaccard_low"] <= row["bootstrap_jaccard_median"] <= row["bootstrap_jaccard_high"] <= 1
        assert row["split_half_jaccard_low"] <= row["split_half_jaccard_median"] <= row["split_half_jaccard_high"]
