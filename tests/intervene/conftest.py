"""Shared fixtures of the intervention tests: a tiny Llama, held-out blocks, neuron sets."""

import pytest
import torch
from tiny import tiny_model

from langneurons.corpus.packing import pack_blocks
from langneurons.models.loading import describe

TEXTS = {
    "en": ["the cat sat on the mat", "the mat is on the cat", "a cat and a mat"] * 6,
    "fr": ["le chat est sur le tapis", "le tapis et le chat", "un chat sur un tapis"] * 6,
    "hi": ["बिल्ली चटाई पर है", "चटाई पर बिल्ली", "बिल्ली है"] * 6,
}


def loaded_model(family: str = "llama", seed: int = 0):
    loaded = describe(tiny_model(family, seed=seed), model_id=f"tiny-{family}")
    return loaded


def neuron_set_for(loaded, neurons: dict, method: str = "test"):
    from langneurons.identify.neuron_set import NeuronSet

    info = loaded.info
    source = {"model_id": info.model_id, "weights_fingerprint": info.weights_fingerprint}
    return NeuronSet({l: torch.as_tensor(rows, dtype=torch.int64).reshape(-1, 2) for l, rows in neurons.items()},
                     info.num_layers, info.neurons_per_layer, method, {}, source)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and spinning threads are 10x slower on a busy
    2-core machine; restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def llama(tokenizer):
    loaded = loaded_model("llama")
    loaded.tokenizer = tokenizer
    return loaded


@pytest.fixture
def heldout(tokenizer):
    return {language: pack_blocks(tokenizer, texts, language, block_length=10) for language, texts in TEXTS.items()}


@pytest.fixture(scope="session")
def make_loaded():
    """``make_loaded(family, seed=0)`` -> LoadedModel of a tiny random model."""
    return loaded_model


@pytest.fixture(scope="session")
def make_neuron_set():
    """``make_neuron_set(loaded, {language: [[layer, neuron], ...]})`` -> NeuronSet of that model."""
    return neuron_set_for
