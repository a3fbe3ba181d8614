import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("MPLBACKEND", "Agg")
# Tiny models are dominated by per-op overhead: one thread per test process is fastest, and
# `make test` runs two processes (pytest-xdist). End-to-end tests on the real model raise it.
torch.set_num_threads(1)


@pytest.fixture
def tokenizer():
    from tiny import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture
def loaded_llama(tokenizer):
    """A tiny Llama wrapped as a LoadedModel with the tiny tokenizer."""
    from tiny import tiny_model

    from langneurons.models.loading import describe

    loaded = describe(tiny_model("llama"), model_id="tiny-llama")
    loaded.tokenizer = tokenizer
    return loaded
