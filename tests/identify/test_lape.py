"""LAPE (Tang et al. 2024): hand-computed answers, a loop-based reference, and input checks."""

import math

import pytest
import torch

from langneurons.errors import LangNeuronsError
from langneurons.identify import lape, lape_entropy, load_entropy

# Hand-made probabilities (token_count 100), neurons (layer, n) of a 2 x 4 model:
#            (0,0) (0,1) (0,2) (0,3) (1,0) (1,1) (1,2) (1,3)
EN_COUNTS = [[90, 0, 80, 10], [0, 60, 5, 70]]
FR_COUNTS = [[0, 90, 80, 10], [0, 20, 5, 0]]
HI_COUNTS = [[0, 0, 0, 0], [0, 0, 0, 0]]  # a language that never activates anything
# 24 probabilities: 13 zeros, .05 .05 .1 .1 .2 ... -> with filter_rate 0.75 the bar is the
# round(0.75 * 24) = 18th smallest value = 0.2. Above the bar: (0,0) en, (0,1) fr, (0,2) en+fr,
# (1,1) en (fr = 0.2 is NOT above), (1,3) en. Entropies: (0,0) = (0,1) = (1,3) = 0,
# (1,1) = H(.75, .25), (0,2) = ln 2.


@pytest.fixture
def hand_made(stats_from_counts):
    return [stats_from_counts(language, counts, 100)
            for language, counts in (("en", EN_COUNTS), ("fr", FR_COUNTS), ("hi", HI_COUNTS))]


def rows(neuron_set, language):
    return [tuple(row) for row in neuron_set.indices(language).tolist()]


def test_entropy_is_over_normalised_probabilities_with_zero_log_zero(hand_made):
    result = lape(hand_made, top_rate=0.25, filter_rate=0.75)
    h_three_to_one = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert result.entropy[1, 1].item() == pytest.approx(h_three_to_one)
    assert result.entropy[0, 2].item() == pytest.approx(math.log(2))
    assert result.entropy[0, 0].item() == 0.0
    assert result.entropy[1, 0].item() == math.inf  # never active in any language: no distribution
    assert not torch.isnan(result.entropy).any()
    assert result.bar == pytest.approx(0.2)


def test_ties_at_the_cut_keep_exactly_the_budget_lowest_flat_index_first(hand_made):
    # budget round(0.25 * 8) = 2, three neurons tie at entropy 0: (0,0), (0,1), (1,3)
    result = lape(hand_made, top_rate=0.25, filter_rate=0.75)
    assert rows(result.neuron_set, "en") == [(0, 0)]
    assert rows(result.neuron_set, "fr") == [(0, 1)]
    assert len(result.neuron_set.union()) == 2  # `entropy <= cutoff` would keep 3


def test_kept_neurons_go_to_every_language_above_the_bar_and_empty_languages_stay(hand_made):
    result = lape(hand_made, top_rate=0.625, filter_rate=0.75)  # budget 5 = all candidates
    neuron_set = result.neuron_set
    assert neuron_set.languages == ["en", "fr", "hi"]
    assert rows(neuron_set, "en") == [(0, 0), (0, 2), (1, 1), (1, 3)]
    assert rows(neuron_set, "fr") == [(0, 1), (0, 2)]  # (1,1) fr is 0.2, not above the bar
    assert neuron_set.indices("hi").shape == (0, 2)  # a trailing language with no neurons is kept
    assert neuron_set.counts_per_layer().tolist() == [[2, 2], [2, 0], [0, 0]]


def test_budget_larger_than_candidates_keeps_only_candidates(hand_made):
    result = lape(hand_made, top_rate=0.75, filter_rate=0.75)  # budget 6, 5 candidates
    assert len(result.neuron_set.union()) == 5
    assert result.neuron_set.parameters["kept"] == 5


def reference_lape(probabilities, top_rate, filter_rate):
    """Obviously-correct loop version: probabilities[k][l][n] (Python floats) -> {k: set of (l, n)}."""
    K, L, N = len(probabilities), len(probabilities[0]), len(probabilities[0][0])
    everything = sorted(probabilities[k][l][n] for k in range(K) for l in range(L) for n in range(N))
    bar = everything[min(max(round(filter_rate * len(everything)), 1), len(everything)) - 1]
    candidates = []
    for l in range(L):
        for n in range(N):
            column = [probabilities[k][l][n] for k in range(K)]
            if max(column) <= bar:
                continue
            total = sum(column)
            entropy = -sum(p / total * math.log(p / total) for p in column if p > 0)
            candidates.append((entropy, l * N + n, l, n))
    candidates.sort()
    kept = candidates[: max(1, round(top_rate * L * N))]
    return {k: {(l, n) for _, _, l, n in kept if probabilities[k][l][n] > bar} for k in range(K)}


@pytest.mark.parametrize(
    "levels, top_rate, filter_rate", [(50, 0.01, 0.95), (9, 0.05, 0.8), (20, 0.03, 0.9), (9, 0.2, 0.5)]
)
def test_matches_a_loop_based_reference_on_random_statistics(stats_from_counts, levels, top_rate, filter_rate):
    # probabilities on a grid of `levels` steps: few levels -> many entropy ties at the cut
    generator = torch.Generator().manual_seed(7)
    languages = ["en", "fr", "hi", "zh"]
    counts = torch.randint(0, levels + 1, (4, 4, 100), generator=generator)
    counts[counts < levels // 3] = 0  # many zero probabilities
    counts[3] = 0  # the last language is never active
    statistics = [stats_from_counts(language, counts[k], levels) for k, language in enumerate(languages)]
    result = lape(statistics, top_rate=top_rate, filter_rate=filter_rate)
    expected = reference_lape((counts.double() / levels).tolist(), top_rate, filter_rate)
    for k, language in enumerate(languages):
        assert set(rows(result.neuron_set, language)) == expected[k]
    kept = result.neuron_set.union()
    assert len(kept) == max(1, round(top_rate * 400))
    assert result.neuron_set.indices("zh").shape == (0, 2)


def test_statistics_may_be_given_as_a_dict_and_subset_of_languages_in_requested_order(hand_made):
    by_language = {stats.meta.language: stats for stats in hand_made}
    result = lape(by_language, languages=["fr", "en"], top_rate=0.25, filter_rate=0.75)
    assert result.neuron_set.languages == ["fr", "en"]
    assert result.neuron_set.source["languages"] == ["fr", "en"]
    assert result.neuron_set.source["weights_fingerprint"] == "w0"
    assert result.neuron_set.method == "lape"


@pytest.mark.parametrize("option", ["top_rate", "filter_rate"])
@pytest.mark.parametrize("value", [0.0, 1.0, -0.5, 1.5, float("nan")])
def test_rates_outside_the_open_unit_interval_are_rejected(hand_made, option, value):
    with pytest.raises(LangNeuronsError, match=option):
        lape(hand_made, **{option: value})


def test_missing_unknown_and_too_few_languages_are_rejected(hand_made):
    with pytest.raises(LangNeuronsError, match="no statistics for"):
        lape(hand_made, languages=["en", "de"])
    with pytest.raises(LangNeuronsError, match="unknown language"):
        lape(hand_made, languages=["en", "xx"])
    with pytest.raises(LangNeuronsError, match="at least 2"):
        lape(hand_made, languages=["en"])


def test_statistics_of_different_models_are_rejected(stats_from_counts):
    en = stats_from_counts("en", EN_COUNTS, 100, fingerprint="w0")
    fr = stats_from_counts("fr", FR_COUNTS, 100, fingerprint="other")
    with pytest.raises(LangNeuronsError, match="different models"):
        lape([en, fr])


def test_statistics_without_tokens_are_rejected(stats_from_counts):
    with pytest.raises(LangNeuronsError, match="no tokens"):
        lape([stats_from_counts("en", EN_COUNTS, 100), stats_from_counts("fr", HI_COUNTS, 0)])


def test_a_dict_key_must_match_the_statistics_language(hand_made):
    with pytest.raises(LangNeuronsError, match="recorded for"):
        lape({"de": hand_made[0], "fr": hand_made[1]})


def test_entropy_file_round_trip(hand_made, tmp_path):
    result = lape(hand_made, top_rate=0.25, filter_rate=0.75)
    result.save_entropy(tmp_path / "entropy.safetensors")
    assert torch.equal(load_entropy(tmp_path / "entropy.safetensors"), result.entropy)


def test_entropy_of_uniform_and_single_language_distributions():
    probability = torch.tensor([[[0.3, 0.0]], [[0.3, 0.0]], [[0.3, 0.4]]])  # [K=3, L=1, N=2]
    entropy = lape_entropy(probability)
    assert entropy[0, 0].item() == pytest.approx(math.log(3))
    assert entropy[0, 1].item() == 0.0
