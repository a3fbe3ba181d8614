"""Activation-probability neurons: pooled thresholds are language-contrastive, own thresholds are not."""

import pytest
import torch

from langneurons.errors import LangNeuronsError
from langneurons.identify import act_prob, activation_probability_scores, select_statistics

LANGUAGES = ["en", "fr", "hi"]
# each language fires two planted neurons much more often than the other languages do
PLANTED = {"en": [(0, 3), (1, 7)], "fr": [(0, 10), (1, 20)], "hi": [(0, 35), (1, 30)]}


@pytest.fixture(scope="module")
def planted(stats_from_values):
    generator = torch.Generator().manual_seed(0)
    statistics = []
    for language in LANGUAGES:
        values = torch.randn(3000, 2, 40, generator=generator)
        for layer, neuron in PLANTED[language]:
            values[:, layer, neuron] += 3.0
        statistics.append(stats_from_values(language, values))
    return statistics


def rows(neuron_set, language):
    return sorted(tuple(row) for row in neuron_set.indices(language).tolist())


def test_pooled_threshold_finds_the_planted_neurons(planted):
    neuron_set = act_prob(planted, top_rate=2 / 80)  # 2 neurons per language
    for language in LANGUAGES:
        assert rows(neuron_set, language) == sorted(PLANTED[language])
    assert neuron_set.method == "act-prob"
    assert neuron_set.parameters == {"percentile": 90.0, "top_rate": 0.025, "threshold": "pooled", "per_language": 2}


def test_pooled_scores_are_high_only_where_the_language_fires_more_than_the_mixture(planted):
    scores = activation_probability_scores(select_statistics(planted), percentile=90, threshold="pooled")
    # equal token counts: the mean score over languages is 0.1 for every neuron (pooled p90);
    # at a planted neuron almost all of it goes to the planted language, 0.3 = 3 x 0.1
    assert (scores.mean(0) - 0.1).abs().max() < 0.01
    for k, language in enumerate(LANGUAGES):
        others = [j for j in range(len(LANGUAGES)) if j != k]
        for layer, neuron in PLANTED[language]:
            assert scores[k, layer, neuron] > 0.28
            assert (scores[others, layer, neuron] < 0.01).all()


def test_own_threshold_scores_are_about_one_minus_p_for_every_neuron(planted):
    # P(act > own p90) = 0.1 by definition of the percentile: the ranking carries no language signal
    own = activation_probability_scores(select_statistics(planted), percentile=90, threshold="own")
    pooled = activation_probability_scores(select_statistics(planted), percentile=90, threshold="pooled")
    assert (own - 0.1).abs().max() < 0.005  # planted neurons included: their own p90 moved with them
    assert own.max() - own.min() < 0.01 < 0.25 < pooled.max() - pooled.min()
    assert act_prob(planted, top_rate=2 / 80, threshold="own").parameters["threshold"] == "own"


def test_budget_is_a_fraction_of_all_neurons_rounded_and_at_least_one(planted):
    assert act_prob(planted, top_rate=0.05).counts_per_layer().sum(1).tolist() == [4, 4, 4]  # 0.05 * 80
    assert act_prob(planted, top_rate=1e-6).counts_per_layer().sum(1).tolist() == [1, 1, 1]
    default = act_prob(planted)  # 0.125% of 80 rounds to 0 -> 1
    assert default.counts_per_layer().sum(1).tolist() == [1, 1, 1]


def test_equal_scores_go_to_the_lowest_flat_index(stats_from_values):
    one_neuron = torch.randn(500, 1, 1, generator=torch.Generator().manual_seed(1))
    values = one_neuron.expand(500, 2, 6).contiguous()  # every neuron sees the same activations
    statistics = [stats_from_values("en", values), stats_from_values("fr", values)]
    neuron_set = act_prob(statistics, top_rate=3 / 12)
    assert rows(neuron_set, "en") == [(0, 0), (0, 1), (0, 2)]
    assert rows(neuron_set, "fr") == [(0, 0), (0, 1), (0, 2)]


def test_bad_options_are_rejected(planted):
    with pytest.raises(LangNeuronsError, match="top_rate"):
        act_prob(planted, top_rate=1.0)
    with pytest.raises(LangNeuronsError, match="top_rate"):
        act_prob(planted, top_rate=0)
    with pytest.raises(LangNeuronsError, match="percentile"):
        act_prob(planted, percentile=100)
    with pytest.raises(LangNeuronsError, match="threshold"):
        act_prob(planted, threshold="global")
    with pytest.raises(LangNeuronsError, match="no statistics for"):
        act_prob(planted, languages=["en", "de"])
    with pytest.raises(LangNeuronsError, match="unknown language"):
        act_prob(planted, languages=["english"])


def test_one_language_is_enough_and_languages_keep_requested_order(planted):
    assert act_prob(planted, languages=["hi"], top_rate=2 / 80).languages == ["hi"]
    assert act_prob(planted, languages=["hi", "en"], top_rate=2 / 80).languages == ["hi", "en"]
    assert act_prob(planted, languages="hi,en", top_rate=2 / 80).languages == ["hi", "en"]
