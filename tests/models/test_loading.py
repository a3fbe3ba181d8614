"""Model loading from local folders (the hub code path without a network), clear errors,
and fingerprints that identify weights whatever path they were loaded from."""

import pytest
import torch
from tiny import tiny_model, tiny_tokenizer

from langneurons.errors import LangNeuronsError
from langneurons.models.loading import describe, load_model


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def test_loads_a_local_folder_with_tokenizer_and_sizes(saved_model):
    loaded = load_model(str(saved_model))
    assert loaded.info.architecture == "llama"
    assert (loaded.info.num_layers, loaded.info.neurons_per_layer) == (2, 48)
    assert loaded.tokenizer.bos_token_id == 1
    assert not loaded.model.training


def test_fingerprint_identifies_weights_not_paths(saved_model):
    a = load_model(str(saved_model))
    b = describe(tiny_model("llama"), model_id="another-name")
    c = describe(tiny_model("llama", seed=1), model_id=str(saved_model))
    assert a.info.weights_fingerprint == b.info.weights_fingerprint
    assert a.info.weights_fingerprint != c.info.weights_fingerprint


def test_dtype_option_is_applied(saved_model):
    assert load_model(str(saved_model), dtype="bfloat16").model.dtype == torch.bfloat16


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(model="./does/not/exist"), "model path not found"),
        (dict(model="/tmp/missing.gguf"), "GGUF file not found"),
        (dict(model="x", dtype="int3"), "unknown dtype"),
        (dict(model="x", load_in_4bit=True), "needs a CUDA GPU"),
    ],
)
def test_bad_model_arguments_are_one_line_errors(kwargs, message):
    if "load_in_4bit" in kwargs and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(LangNeuronsError, match=message):
        load_model(**kwargs)


def test_unsupported_architecture_in_a_local_folder(tmp_path):
    import transformers as tf

    config = tf.MambaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1)
    tf.MambaForCausalLM(config).save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(LangNeuronsError, match="unsupported architecture 'mamba'; supported: bloom"):
        load_model(str(tmp_path))


@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_a_corrupted_weights_file_is_a_clear_error_naming_it(saved_model, tmp_path, damage):
    import os
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(saved_model, folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 2], "random": os.urandom(4096), "empty": b""}[damage])
    with pytest.raises(LangNeuronsError, match=f"corrupted or truncated weights .*{weights}"):
        load_model(str(folder))
