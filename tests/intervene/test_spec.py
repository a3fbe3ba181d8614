"""Intervention specs: the string grammar, the dict form, and resolving against a model."""

from dataclasses import replace

import pytest
import torch

from langneurons.activations.collect import CollectConfig, collect_statistics
from langneurons.corpus.packing import pack_blocks
from langneurons.errors import LangNeuronsError
from langneurons.intervene import InterventionSpec, intervention_factory, parse_spec, resolve


@pytest.mark.parametrize("text, fields", [
    ("runs/lape.json:hi:zero", dict(neurons="runs/lape.json", languages=("hi",), kind="zero")),
    ("lape.json:hi,ur:stat=p90@hi", dict(languages=("hi", "ur"), kind="stat", statistic="p90", statistic_language="hi")),
    ("lape.json:hi:stat=mean", dict(kind="stat", statistic="mean", statistic_language=None)),
    ("lape.json:hi:constant=0.5", dict(kind="constant", value=0.5)),
    ("lape.json:hi:scale=2", dict(kind="scale", value=2.0)),
    ("lape.json:hi:add=4@en>hi", dict(kind="add", value=4.0, source_language="en", target_language="hi")),
    ("lape.json:hi:zero:prompt", dict(kind="zero", positions="prompt")),
    ("C:/runs/lape.json:hi:zero", dict(neurons="C:/runs/lape.json")),
])
def test_string_specs_parse_into_their_fields_and_round_trip(text, fields):
    spec = parse_spec(text)
    for name, value in fields.items():
        assert getattr(spec, name) == value, name
    assert parse_spec(spec.to_string()) == spec


def test_the_dict_form_means_the_same_as_the_string_form():
    as_dict = {"neurons": "lape.json", "languages": ["hi", "ur"], "kind": "stat", "statistic": "p90",
               "statistic_language": "hi"}
    assert parse_spec(as_dict) == parse_spec("lape.json:hi,ur:stat=p90@hi")
    assert parse_spec({"neurons": "l.json", "languages": "hi", "kind": "add", "value": 4, "source_language": "en",
                       "target_language": "hi"}) == parse_spec("l.json:hi:add=4@en>hi")
    assert parse_spec(parse_spec(as_dict).to_dict()) == parse_spec(as_dict)


@pytest.mark.parametrize("bad, message", [
    ("lape.json:hi", "NEURONS:LANGS:ACTION"),
    ("lape.json:hi:explode", "unknown intervention kind"),
    ("lape.json:hi:zero=1", "no value"),
    ("lape.json:hi:constant=nan", "finite"),
    ("lape.json:hi:scale=inf", "finite"),
    ("lape.json:hi:add=-1e30@en>hi", r"at most 1e\+06 in magnitude"),  # issue 21: finite but absurd
    ("lape.json:hi:constant=1e7", r"at most 1e\+06 in magnitude"),
    ("lape.json:hi:scale=two", "number"),
    ("lape.json:hi:constant", "needs a value"),
    ("lape.json:hi,ur:stat=p90", "stat=NAME@LANG"),
    ("lape.json:hi:stat=p200", "unknown statistic"),
    ("lape.json:hi:stat=median", "unknown statistic"),
    ("lape.json:hi:add=4@en", "SOURCE>TARGET"),
    ("lape.json:xx:zero", "unknown language"),
    ({"neurons": "l.json", "languages": ["hi"], "kind": "zero", "colour": "red"}, "unknown intervention keys"),
    ({"neurons": "l.json", "kind": "zero"}, "missing"),
])
def test_malformed_specs_are_refused_with_one_line_messages(bad, message):
    with pytest.raises(LangNeuronsError, match=message) as error:
        parse_spec(bad)
    assert "\n" not in str(error.value)


@pytest.fixture
def recorded(llama, tokenizer, heldout):
    """Real statistics of the tiny Llama for en and hi (a short collection pass)."""
    texts = {"en": ["the cat sat on the mat"] * 8, "hi": ["बिल्ली चटाई पर है"] * 8}
    config = CollectConfig(batch_size=4)
    return {language: collect_statistics(llama, pack_blocks(tokenizer, t, language, block_length=8), config,
                                         progress=False) for language, t in texts.items()}


@pytest.fixture
def neurons(llama, make_neuron_set):
    return make_neuron_set(llama, {"hi": [[0, 3], [1, 7], [1, 9]], "ur": [[0, 3], [0, 4]], "en": []})


def _values(intervention):
    return {layer: (intervention.neurons[layer].tolist(), intervention.values[layer]) for layer in intervention.layers}


def test_resolve_takes_the_union_of_the_languages_neurons(llama, neurons):
    zero = resolve("x.json:hi,ur:zero", neurons, None, llama)
    assert {layer: idx for layer, (idx, _) in _values(zero).items()} == {0: [3, 4], 1: [7, 9]}
    assert zero.num_neurons == 4 and zero.kind == "zero"


def test_resolve_stat_reads_the_chosen_languages_statistic(llama, neurons, recorded):
    p90 = recorded["hi"].statistic("p90")
    stat = resolve("x.json:hi,ur:stat=p90@hi", neurons, recorded, llama)
    for layer, (idx, values) in _values(stat).items():
        assert torch.equal(values, p90[layer, idx])


def test_resolve_add_is_strength_times_target_mean_minus_source_mean(llama, neurons, recorded):
    steer = resolve("x.json:hi:add=4@en>hi", neurons, recorded, llama)
    offset = 4 * (recorded["hi"].mean - recorded["en"].mean)
    for layer, (idx, values) in _values(steer).items():
        torch.testing.assert_close(values, offset[layer, idx].float())


def test_resolve_refuses_inputs_of_another_model_or_language(llama, neurons, recorded, make_loaded, make_neuron_set):
    other = make_loaded("llama", seed=1)
    with pytest.raises(LangNeuronsError, match="weights"):
        resolve("x.json:hi:zero", neurons, None, other)
    with pytest.raises(LangNeuronsError, match="not in the neuron set"):
        resolve("x.json:fr:zero", neurons, None, llama)
    with pytest.raises(LangNeuronsError, match="no activation statistics for 'hi'"):
        resolve("x.json:hi:stat=p90", neurons, {"en": recorded["en"]}, llama)
    foreign = {"hi": replace(recorded["hi"], meta=replace(recorded["hi"].meta, weights_fingerprint="other"))}
    with pytest.raises(LangNeuronsError, match="recorded on"):
        resolve("x.json:hi:stat=p90", neurons, foreign, llama)
    broken = {"hi": replace(recorded["hi"], activation_sum=torch.full_like(recorded["hi"].activation_sum, float("nan")))}
    with pytest.raises(LangNeuronsError, match="not finite"):
        resolve("x.json:hi:stat=mean", neurons, broken, llama)


def test_resolve_loads_the_neuron_set_file_named_in_the_spec(llama, neurons, tmp_path):
    path = neurons.save(tmp_path / "lape.json")
    from_file = resolve(f"{path}:hi:scale=2", None, None, llama)
    assert from_file.num_neurons == 3 and from_file.key() == resolve("x:hi:scale=2", neurons, None, llama).key()


def test_a_factory_without_stat_language_uses_each_rows_own_statistics(llama, neurons, recorded):
    factory = intervention_factory("stat=mean", llama, recorded)
    rows = torch.tensor([[0, 1], [1, 2]])
    for language in ("en", "hi"):
        values = _values(factory(language, rows))
        assert torch.equal(values[0][1], recorded[language].mean.float()[0, [1]])


def test_spec_statistics_languages_name_what_resolve_needs():
    assert parse_spec("x:hi,ur:stat=p10@ur").statistics_languages == ["ur"]
    assert parse_spec("x:hi:add=2@en>hi").statistics_languages == ["en", "hi"]
    assert InterventionSpec("x", ("hi",), "zero").statistics_languages == []
