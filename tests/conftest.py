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


def hand_residual(language: str, means, tokens: int = 4, weights_fingerprint: str = "w"):
    """Residual statistics whose per-layer mean is ``means`` [L, H] over ``tokens`` tokens (all equal)."""
    means = torch.as_tensor(means, dtype=torch.float64)
    layers, hidden = means.shape
    from langneurons.activations.residual import ResidualStatistics
    from langneurons.activations.statistics import StatisticsMeta

    meta = StatisticsMeta("tiny", "main", "llama", layers, 8, weights_fingerprint, language)
    return ResidualStatistics(meta, hidden, torch.full((layers,), tokens, dtype=torch.int64), means * tokens,
                              means.square() * tokens)


@pytest.fixture(scope="session")
def make_residual():
    """``make_residual(language, means [L, H], tokens=4, weights_fingerprint="w")`` -> ResidualStatistics."""
    return hand_residual
