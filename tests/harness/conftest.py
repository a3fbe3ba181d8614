"""Offline harness fixtures: a local task folder (:mod:`harness_tasks`), a tiny Llama saved as a local
model folder, and a neuron set for it."""

import pytest
import torch
from harness_tasks import chosen_neurons, write_task_folder
from tiny import tiny_model, tiny_tokenizer

from langneurons.identify.neuron_set import NeuronSet

pytest.importorskip("lm_eval")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def task_dir(tmp_path):
    return write_task_folder(tmp_path / "tasks")


@pytest.fixture
def model_dir(tmp_path):
    """A tiny random Llama and the tiny tokenizer saved as a local model folder."""
    folder = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def neuron_file(tmp_path, model_dir):
    """A LAPE-style neuron set of the saved model (en: :func:`chosen_neurons`, fr: layer 1 {3, 9})."""
    from langneurons.models.loading import load_model

    loaded = load_model(str(model_dir))
    source = {"model_id": loaded.info.model_id, "weights_fingerprint": loaded.info.weights_fingerprint}
    neuron_set = NeuronSet({"en": chosen_neurons(), "fr": torch.tensor([[1, 3], [1, 9]])}, loaded.info.num_layers,
                           loaded.info.neurons_per_layer, "lape", {}, source)
    return neuron_set.save(tmp_path / "lape.json")

