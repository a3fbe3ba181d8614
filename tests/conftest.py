import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(min(2, torch.get_num_threads()))


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
