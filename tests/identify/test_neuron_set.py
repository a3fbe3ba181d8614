"""NeuronSet: views, provenance checks, file round trips and the LAPE export format."""

import json

import pytest
import torch

from langneurons.errors import LangNeuronsError
from langneurons.identify import NeuronSet, layer_ranges, pairwise_overlap, summarize
from langneurons.models.loading import ModelInfo

SOURCE = {"model_id": "tiny/model", "weights_fingerprint": "w0", "languages": ["zh", "en", "hi"]}


@pytest.fixture
def neuron_set():
    neurons = {
        "zh": [[2, 5], [0, 1], [0, 1], [2, 0]],  # unsorted with a duplicate
        "en": [[0, 1], [1, 3]],
        "hi": [],  # no neurons: still a language of the set
    }
    return NeuronSet(neurons, num_layers=3, neurons_per_layer=6, method="lape",
                     parameters={"top_rate": 0.01}, source=SOURCE)


def test_rows_are_sorted_unique_int64_pairs(neuron_set):
    assert neuron_set.indices("zh").tolist() == [[0, 1], [2, 0], [2, 5]]
    assert neuron_set.indices("zh").dtype == torch.int64
    assert neuron_set.indices("hi").shape == (0, 2)
    assert neuron_set.languages == ["zh", "en", "hi"]


def test_views_by_layer_mask_union_and_counts(neuron_set):
    assert {layer: idx.tolist() for layer, idx in neuron_set.by_layer("zh").items()} == {0: [1], 2: [0, 5]}
    assert neuron_set.by_layer("hi") == {}
    mask = neuron_set.mask("en")
    assert mask.shape == (3, 6) and mask.dtype == torch.bool
    assert mask.nonzero().tolist() == [[0, 1], [1, 3]]
    assert neuron_set.union().tolist() == [[0, 1], [1, 3], [2, 0], [2, 5]]
    assert neuron_set.union(["en", "hi"]).tolist() == [[0, 1], [1, 3]]
    assert neuron_set.counts_per_layer().tolist() == [[1, 0, 2], [1, 1, 0], [0, 0, 0]]


def test_unknown_language_error_names_the_available_ones(neuron_set):
    with pytest.raises(LangNeuronsError, match=r"\['zh', 'en', 'hi'\]"):
        neuron_set.indices("fr")


def test_out_of_range_or_malformed_neurons_are_rejected():
    with pytest.raises(LangNeuronsError, match="outside"):
        NeuronSet({"en": [[3, 0]]}, 3, 6, "lape")
    with pytest.raises(LangNeuronsError, match="outside"):
        NeuronSet({"en": [[0, -1]]}, 3, 6, "lape")
    with pytest.raises(LangNeuronsError, match="rows"):
        NeuronSet({"en": [1, 2, 3]}, 3, 6, "lape")
    with pytest.raises(LangNeuronsError, match="at least one language"):
        NeuronSet({}, 3, 6, "lape")


def test_from_masks_matches_mask(neuron_set):
    masks = {language: neuron_set.mask(language) for language in neuron_set.languages}
    rebuilt = NeuronSet.from_masks(masks, "lape", neuron_set.parameters, neuron_set.source)
    assert all(torch.equal(rebuilt.indices(lang), neuron_set.indices(lang)) for lang in neuron_set.languages)
    with pytest.raises(LangNeuronsError, match="shape"):
        NeuronSet.from_masks({"en": torch.zeros(3, 6, dtype=torch.bool), "fr": torch.zeros(3, 5, dtype=torch.bool)},
                             "lape", {}, {})


def assert_same(a: NeuronSet, b: NeuronSet):
    assert a.languages == b.languages
    assert all(torch.equal(a.indices(lang), b.indices(lang)) for lang in a.languages)
    assert (a.num_layers, a.neurons_per_layer, a.method, a.parameters, a.source) == (
        b.num_layers, b.neurons_per_layer, b.method, b.parameters, b.source)


@pytest.mark.parametrize("suffix", [".json", ".safetensors"])
def test_save_load_round_trip_keeps_order_empty_languages_and_provenance(neuron_set, tmp_path, suffix):
    path = neuron_set.save(tmp_path / f"neurons{suffix}")
    assert_same(NeuronSet.load(path), neuron_set)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_json_file_is_readable_lists(neuron_set, tmp_path):
    data = json.loads(neuron_set.save(tmp_path / "n.json").read_text())
    assert data["neurons"]["zh"] == [[0, 1], [2, 0], [2, 5]]
    assert data["method"] == "lape" and data["parameters"] == {"top_rate": 0.01}
    assert (data["num_layers"], data["neurons_per_layer"]) == (3, 6)


def test_safetensors_file_holds_one_int64_tensor_per_language(neuron_set, tmp_path):
    from safetensors.torch import load_file

    tensors = load_file(str(neuron_set.save(tmp_path / "n.safetensors")))
    assert set(tensors) == {"zh", "en", "hi"}
    assert tensors["zh"].dtype == torch.int64 and tensors["zh"].tolist() == [[0, 1], [2, 0], [2, 5]]


@pytest.mark.parametrize("suffix", [".json", ".safetensors"])
def test_truncated_or_corrupted_files_raise(neuron_set, tmp_path, suffix):
    path = neuron_set.save(tmp_path / f"n{suffix}")
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(LangNeuronsError, match="corrupted"):
        NeuronSet.load(path)


def test_foreign_or_missing_files_and_bad_suffix_raise(neuron_set, tmp_path):
    (tmp_path / "other.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(LangNeuronsError, match="not a langneurons neuron set"):
        NeuronSet.load(tmp_path / "other.json")
    with pytest.raises(LangNeuronsError, match="not found"):
        NeuronSet.load(tmp_path / "missing.json")
    with pytest.raises(LangNeuronsError, match=".json or .safetensors"):
        neuron_set.save(tmp_path / "n.pt")


def test_loading_rejects_out_of_range_neurons(neuron_set, tmp_path):
    path = neuron_set.save(tmp_path / "n.json")
    data = json.loads(path.read_text())
    data["neurons"]["en"].append([7, 0])
    path.write_text(json.dumps(data))
    with pytest.raises(LangNeuronsError, match="outside"):
        NeuronSet.load(path)


def test_export_lape_is_a_list_per_language_of_a_long_tensor_per_layer(neuron_set, tmp_path):
    path = neuron_set.export_lape(tmp_path / "mask.pt")
    exported = torch.load(path)
    assert isinstance(exported, list) and len(exported) == 3  # zh, en, hi in set order
    assert all(isinstance(per_layer, list) and len(per_layer) == 3 for per_layer in exported)
    assert all(t.dtype == torch.int64 for per_layer in exported for t in per_layer)
    assert [t.tolist() for t in exported[0]] == [[1], [], [0, 5]]
    assert [t.tolist() for t in exported[1]] == [[1], [3], []]
    assert [t.tolist() for t in exported[2]] == [[], [], []]


def test_check_model_compares_sizes_and_weights(neuron_set):
    info = ModelInfo("tiny/model", "main", "LlamaForCausalLM", 3, 6, "w0")
    neuron_set.check_model(info)
    with pytest.raises(LangNeuronsError, match="3x6"):
        neuron_set.check_model(ModelInfo("tiny/model", "main", "LlamaForCausalLM", 3, 7, "w0"))
    with pytest.raises(LangNeuronsError, match="weights"):
        neuron_set.check_model(ModelInfo("tiny/model", "main", "LlamaForCausalLM", 3, 6, "w1"))


def test_summary_counts_per_named_layer_third(neuron_set):
    assert layer_ranges(3) == {"early": range(0, 1), "middle": range(1, 2), "late": range(2, 3)}
    assert layer_ranges(10) == {"early": range(0, 4), "middle": range(4, 7), "late": range(7, 10)}
    assert summarize(neuron_set) == [
        {"language": "zh", "total": 3, "early (layers 0-0)": 1, "middle (layers 1-1)": 0, "late (layers 2-2)": 2},
        {"language": "en", "total": 2, "early (layers 0-0)": 1, "middle (layers 1-1)": 1, "late (layers 2-2)": 0},
        {"language": "hi", "total": 0, "early (layers 0-0)": 0, "middle (layers 1-1)": 0, "late (layers 2-2)": 0},
    ]


def test_pairwise_overlap_counts_and_jaccard(neuron_set):
    shared, jaccard = pairwise_overlap(neuron_set)
    assert shared.tolist() == [[3, 1, 0], [1, 2, 0], [0, 0, 0]]
    assert jaccard[0, 1].item() == pytest.approx(1 / 4)
    assert jaccard[0, 0].item() == 1.0
    assert jaccard[2, 2].item() == 0.0  # no neurons in either: defined as 0, not NaN


@pytest.mark.parametrize("rows, entry", [([[0, 1], [0, 3.7]], 1), ([[True, 3]], 0), ([[0, "2"]], 0),
                                         ([[0, 1, 2]], 0), ([[1.0, 2]], 0), ([[None, 2]], 0)])
def test_json_neuron_indices_must_be_integers_never_truncated(neuron_set, tmp_path, rows, entry):
    path = neuron_set.save(tmp_path / "set.json")
    data = json.loads(path.read_text())
    data["neurons"]["en"] = rows
    path.write_text(json.dumps(data))
    with pytest.raises(LangNeuronsError, match=f"{path}: neurons of 'en', entry {entry}: .*two integers"):
        NeuronSet.load(path)


def test_safetensors_neuron_indices_must_be_an_integer_tensor(neuron_set, tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    path = neuron_set.save(tmp_path / "set.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
    tensors = load_file(str(path))
    for bad in (tensors["en"].float() + 0.7, tensors["en"].bool()):
        save_file({**tensors, "en": bad}, str(path), metadata=header)
        with pytest.raises(LangNeuronsError, match=f"{path}: neurons of 'en' must be integers"):
            NeuronSet.load(path)


def test_a_set_without_weights_fingerprint_is_checked_for_size_with_a_warning(neuron_set):
    from langneurons.errors import LangNeuronsWarning

    info = ModelInfo("m", "main", "LlamaForCausalLM", neuron_set.num_layers, neuron_set.neurons_per_layer, "w1")
    anonymous = NeuronSet(neuron_set.neurons, neuron_set.num_layers, neuron_set.neurons_per_layer, "lape", {}, {})
    with pytest.warns(LangNeuronsWarning, match="records no source.weights_fingerprint"):
        anonymous.check_model(info)
