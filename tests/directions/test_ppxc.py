"""Directional PPXC: language i's direction ablated at the chosen layers, perplexity on language j,
with the neuron PPXC's held-out blocks, baseline and bootstrap, and matched-norm random rows."""

import pytest
import torch

from langneurons.activations.api import CollectOptions, collect
from langneurons.directions.api import (
    DiffMeanOptions,
    DirectionPPXCOptions,
    direction_ppl_matrix,
    identify_directions,
    parse_layers,
)
from langneurons.directions.direction_set import DirectionSet
from langneurons.directions.interventions import ablate_direction
from langneurons.directions.ppxc import direction_ppxc_matrix
from langneurons.errors import LangNeuronsError
from langneurons.intervene.perplexity import perplexity
from langneurons.intervene.ppxc import LANGUAGE_SPECIFIC, RANDOM, within_budget

UNUSED = 5  # the residual dimension the silenced model never writes


def silenced(loaded):
    """The tiny Llama with residual dimension UNUSED never written (embedding column, attention
    output and MLP down rows zero): the stream is exactly 0 along e_UNUSED after every block."""
    model = loaded.adapter.model
    with torch.no_grad():
        model.model.embed_tokens.weight[:, UNUSED] = 0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[UNUSED] = 0
            layer.mlp.down_proj.weight[UNUSED] = 0
    from langneurons.models.loading import describe

    again = describe(model, model_id="tiny-llama-silenced")
    again.tokenizer = loaded.tokenizer
    return again


def unit_set(loaded, languages=("en", "fr", "hi")) -> DirectionSet:
    directions = torch.zeros(len(languages), loaded.adapter.num_layers, loaded.adapter.hidden_size)
    directions[..., UNUSED] = 3.0
    return DirectionSet(directions, list(languages), "test", source={"weights_fingerprint": loaded.info.weights_fingerprint})


def test_ablating_a_direction_the_model_never_writes_leaves_every_perplexity_unchanged(make_loaded, blocks_by_language):
    loaded = silenced(make_loaded("llama"))
    result = direction_ppxc_matrix(loaded, unit_set(loaded), blocks_by_language, progress=False, n_resamples=50)
    assert result.sets == [LANGUAGE_SPECIFIC, RANDOM]
    delta = result.matrix("delta_nll", LANGUAGE_SPECIFIC)
    assert torch.equal(delta, torch.zeros(3, 3))  # h . e_UNUSED = 0 exactly: the ablation subtracts exact zeros
    assert result.matrix("delta_nll", RANDOM).abs().max() > 0  # a random direction of that norm is used
    assert result.neuron_counts[LANGUAGE_SPECIFIC] == {"en": 2, "fr": 2, "hi": 2}  # one direction per layer
    # every paired resample is exactly zero; the few held-out documents give no interval (< 20 units)
    assert torch.equal(result.resampled_delta_nll()[LANGUAGE_SPECIFIC]["en"]["fr"], torch.zeros(50, dtype=torch.float64))
    assert result.units()["fr"] < 20 and result.intervals()["delta_nll"][LANGUAGE_SPECIFIC]["en"]["fr"] is None


def test_every_cell_is_the_perplexity_under_that_ablation_on_the_same_blocks(make_loaded, blocks_by_language):
    loaded = make_loaded("llama")
    generator = torch.Generator().manual_seed(0)
    directions = DirectionSet(torch.randn(3, 2, 32, generator=generator), ["en", "fr", "hi"], "test")
    result = direction_ppxc_matrix(loaded, directions, blocks_by_language, layers=[1], random_control=False,
                                   token_budget=30, progress=False, n_resamples=0)
    blocks = within_budget(blocks_by_language["fr"], 30)
    expected = perplexity(loaded, blocks, intervention=ablate_direction(directions, "hi", layers=[1]), progress=False)
    assert result.intervened[LANGUAGE_SPECIFIC]["hi"]["fr"].nll_sum == expected.nll_sum
    assert result.baseline["fr"].nll_sum == perplexity(loaded, blocks, progress=False).nll_sum
    assert result.config["layers"] == [1] and result.neuron_counts[LANGUAGE_SPECIFIC]["en"] == 1


def test_results_are_cached_under_the_directions_and_layers(make_loaded, blocks_by_language, tmp_path):
    loaded = make_loaded("llama")
    directions = DirectionSet(torch.randn(3, 2, 32), ["en", "fr", "hi"], "test")
    first = direction_ppxc_matrix(loaded, directions, blocks_by_language, layers=[0], random_control=False,
                                  cache_dir=tmp_path, progress=False, n_resamples=0)
    again = direction_ppxc_matrix(loaded, directions, blocks_by_language, layers=[0], random_control=False,
                                  cache_dir=tmp_path, progress=False, n_resamples=0)
    other = direction_ppxc_matrix(loaded, directions, blocks_by_language, layers=[1], random_control=False,
                                  cache_dir=tmp_path, progress=False, n_resamples=0)
    assert first.key == again.key != other.key
    assert len(list(tmp_path.glob("ppxc-*.json"))) == 2


def test_bad_requests_are_refused_before_any_scoring(make_loaded, blocks_by_language):
    loaded = make_loaded("llama")
    directions = DirectionSet(torch.randn(2, 2, 32), ["en", "fr"], "test")
    with pytest.raises(LangNeuronsError, match="not in this direction set"):
        direction_ppxc_matrix(loaded, directions, blocks_by_language, languages=["en", "hi"], progress=False)
    with pytest.raises(LangNeuronsError, match="outside"):
        direction_ppxc_matrix(loaded, directions, blocks_by_language, layers=[7], progress=False)
    with pytest.raises(LangNeuronsError, match="width"):
        direction_ppxc_matrix(make_loaded("gpt2"), DirectionSet(torch.randn(2, 2, 16), ["en", "fr"], "test"),
                              blocks_by_language, progress=False)


def test_parse_layers():
    assert parse_layers("all") is None and parse_layers(None) is None
    assert parse_layers("3") == (3,)
    assert parse_layers("4-6,1") == (1, 4, 5, 6)
    for bad in ("x", "5-2", "-1"):
        with pytest.raises(LangNeuronsError):
            parse_layers(bad)


def test_collect_identify_and_ppl_matrix_through_the_stage_api(make_loaded, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for language, text in {"en": "the cat sat on the mat", "fr": "le chat est sur le tapis",
                           "hi": "बिल्ली चटाई पर है"}.items():
        (corpus / f"{language}.txt").write_text("\n".join(f"{text} {i}" for i in range(40)), encoding="utf-8")
    loaded = make_loaded("gemma")
    statistics = tmp_path / "statistics"
    collect(loaded, CollectOptions(languages=("en", "fr", "hi"), corpus=str(corpus), token_budget=150,
                                   heldout_budget=40, block_length=12, batch_size=4, residual=True),
            statistics, progress=False)
    directions = identify_directions(statistics, DiffMeanOptions(rank=2), output=tmp_path / "diffmean.safetensors")
    assert directions.languages == ["en", "fr", "hi"] and directions.rank == 2
    directions.check_model(loaded)
    result, files = direction_ppl_matrix(loaded, tmp_path / "diffmean.safetensors", statistics,
                                         DirectionPPXCOptions(layers=(0,), token_budget=40, batch_size=4),
                                         out_dir=tmp_path / "ppxc", cache_dir=tmp_path / "cache", progress=False)
    assert result.method == "diffmean" and result.sets == [LANGUAGE_SPECIFIC, RANDOM]
    assert {p.name for p in files} >= {"ppxc.csv", "ppxc.json", "ppxc_specificity.csv"}
    from langneurons.intervene.figures import ppxc_figure

    figure = ppxc_figure(result)
    assert figure._suptitle.get_text().startswith("PPXC: tiny-gemma, diffmean directions")
    assert [ax.get_title() for ax in figure.axes[:2]] == ["language-specific directions", "random directions"]
    with pytest.raises(LangNeuronsError, match=".safetensors"):
        identify_directions(statistics, DiffMeanOptions(), output=tmp_path / "diffmean.json")
    with pytest.raises(LangNeuronsError, match="rank"):
        DiffMeanOptions(rank=-1)


def test_leace_rows_erase_with_the_sets_stream_statistics_and_so_do_the_random_rows(make_loaded, blocks_by_language):
    from langneurons.directions.interventions import erase_direction

    loaded = make_loaded("llama")
    generator = torch.Generator().manual_seed(0)
    shape = (3, 2, 32)
    directions = DirectionSet(torch.randn(shape, generator=generator), ["en", "fr", "hi"], "test",
                              means=torch.randn(shape, generator=generator), spread=torch.rand(2, 32, generator=generator) + 0.5)
    result = direction_ppxc_matrix(loaded, directions, blocks_by_language, layers=[1], token_budget=30, progress=False,
                                   n_resamples=0, ablation="leace")
    blocks = within_budget(blocks_by_language["fr"], 30)
    expected = perplexity(loaded, blocks, intervention=erase_direction(directions, "hi", layers=[1]), progress=False)
    assert result.intervened[LANGUAGE_SPECIFIC]["hi"]["fr"].nll_sum == expected.nll_sum
    control = directions.random_control(seed=0)
    random_expected = perplexity(loaded, blocks, progress=False,
                                 intervention=erase_direction(control, "hi", layers=[1], stream=directions))
    assert result.intervened[RANDOM]["hi"]["fr"].nll_sum == random_expected.nll_sum
    assert result.config["action"] == "erase (leace)"
    with pytest.raises(LangNeuronsError, match="ablation"):
        direction_ppxc_matrix(loaded, directions, blocks_by_language, progress=False, ablation="oblique")
    with pytest.raises(LangNeuronsError, match="ablation"):
        DirectionPPXCOptions(ablation="oblique")
