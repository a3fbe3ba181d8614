"""Shared fixtures of the direction tests: tiny models of several families, token blocks in three
languages, and hand-made residual statistics."""

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


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def loaded_model(family: str = "llama", tokenizer=None, seed: int = 0):
    loaded = describe(tiny_model(family, seed=seed), model_id=f"tiny-{family}")
    if tokenizer is not None:
        loaded.tokenizer = tokenizer
    return loaded


@pytest.fixture
def make_loaded(tokenizer):
    """``make_loaded(family)`` -> LoadedModel of a tiny random model with the tiny tokenizer."""
    return lambda family="llama", seed=0: loaded_model(family, tokenizer, seed)


@pytest.fixture
def blocks_by_language(tokenizer):
    return {language: pack_blocks(tokenizer, texts, language, block_length=10) for language, texts in TEXTS.items()}
