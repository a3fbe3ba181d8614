"""Random control sets: same per-layer counts, seeded, no duplicates, optional exclusion."""

import pytest
import torch

from langneurons.errors import LangNeuronsError
from langneurons.identify import NeuronSet, random_control


@pytest.fixture
def real():
    generator = torch.Generator().manual_seed(3)
    masks = {language: torch.rand(4, 50, generator=generator) < rate
             for language, rate in (("en", 0.1), ("fr", 0.3), ("hi", 0.0))}
    return NeuronSet.from_masks(masks, "lape", {"top_rate": 0.01}, {"model_id": "tiny/model"})


def test_control_has_the_same_counts_per_language_and_layer(real):
    control = random_control(real, seed=1)
    assert control.languages == real.languages
    assert torch.equal(control.counts_per_layer(), real.counts_per_layer())
    assert control.method == "random"
    assert control.parameters["seed"] == 1 and control.parameters["matched_method"] == "lape"
    assert control.source == real.source


def test_same_seed_same_set_other_seed_other_set(real):
    first, again, other = random_control(real, seed=5), random_control(real, seed=5), random_control(real, seed=6)
    assert all(torch.equal(first.indices(lang), again.indices(lang)) for lang in real.languages)
    assert not torch.equal(first.indices("fr"), other.indices("fr"))


def test_control_is_not_the_real_set(real):
    control = random_control(real, seed=0)
    assert not torch.equal(control.indices("fr"), real.indices("fr"))


def test_exclusion_avoids_every_neuron_of_the_given_set(real):
    control = random_control(real, seed=0, exclude_selected=True)
    real_union = real.mask("en") | real.mask("fr")
    for language in real.languages:
        assert not (control.mask(language) & real_union).any()
    assert torch.equal(control.counts_per_layer(), real.counts_per_layer())


def test_exclusion_fails_clearly_when_a_layer_has_too_few_other_neurons():
    full = torch.zeros(2, 4, dtype=torch.bool)
    full[0, :3] = True
    crowded = NeuronSet.from_masks({"en": full}, "lape", {}, {})
    with pytest.raises(LangNeuronsError, match="layer 0"):
        random_control(crowded, exclude_selected=True)
