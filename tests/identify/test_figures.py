"""Neuron-set figures: every figure written as a non-empty PNG and SVG."""

import pytest
import torch

from langneurons.errors import LangNeuronsError
from langneurons.identify import NeuronSet
from langneurons.identify.figures import write_neuron_figures


def make_set(languages):
    generator = torch.Generator().manual_seed(0)
    masks = {language: torch.rand(6, 30, generator=generator) < 0.1 for language in languages}
    masks[languages[-1]][:] = False  # a language without neurons must not break any figure
    return NeuronSet.from_masks(masks, "lape", {"top_rate": 0.01}, {"model_id": "tiny/model"})


def assert_figures(paths, names):
    assert sorted(p.name for p in paths) == sorted(f"{n}.{ext}" for n in names for ext in ("png", "svg"))
    for path in paths:
        data = path.read_bytes()
        assert len(data) > 1000
        assert data.startswith(b"\x89PNG") if path.suffix == ".png" else b"<svg" in data[:2000]


def test_all_figures_with_venn_and_entropy(tmp_path):
    neuron_set = make_set(["en", "fr", "hi"])
    entropy = torch.rand(6, 30, generator=torch.Generator().manual_seed(1))
    entropy[0, 0] = float("inf")  # a never-active neuron
    paths = write_neuron_figures(neuron_set, tmp_path / "figures", "tiny · LAPE", entropy=entropy)
    assert_figures(paths, ["neuron_counts", "neuron_layers", "neuron_overlap", "neuron_venn_en_fr_hi", "lape_entropy"])
    assert not [p for p in (tmp_path / "figures").iterdir() if p.name.startswith(".")]  # no temporary files


def test_venn_for_two_chosen_languages_of_a_larger_set(tmp_path):
    neuron_set = make_set(["en", "fr", "hi", "zh"])
    paths = write_neuron_figures(neuron_set, tmp_path, venn_languages=["fr", "en"])
    assert_figures(paths, ["neuron_counts", "neuron_layers", "neuron_overlap", "neuron_venn_fr_en"])


def test_no_venn_by_default_for_more_than_three_languages(tmp_path):
    paths = write_neuron_figures(make_set(["en", "fr", "hi", "zh"]), tmp_path)
    assert_figures(paths, ["neuron_counts", "neuron_layers", "neuron_overlap"])


@pytest.mark.parametrize("languages", [["en"], ["en", "fr", "hi", "zh"], ["en", "de"]])
def test_venn_needs_two_or_three_languages_of_the_set(tmp_path, languages):
    with pytest.raises(LangNeuronsError):
        write_neuron_figures(make_set(["en", "fr", "hi", "zh"]), tmp_path, venn_languages=languages)


def test_entropy_of_another_shape_is_rejected(tmp_path):
    with pytest.raises(LangNeuronsError, match="entropy shape"):
        write_neuron_figures(make_set(["en", "fr"]), tmp_path, entropy=torch.zeros(5, 30))
