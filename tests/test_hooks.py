"""Hooks are removed when the block ends, also when the forward pass raises."""

import pytest
import torch
from tiny import VOCAB, tiny_model

from langneurons.hooks import activation_hooks
from langneurons.models.architectures import adapter_for


def _hook_count(adapter):
    return sum(len(layer.activation._forward_hooks) for layer in adapter.layers)


def test_hooks_are_removed_after_the_block():
    adapter = adapter_for(tiny_model("llama"))
    with activation_hooks(adapter, lambda layer, a: None):
        assert _hook_count(adapter) == adapter.num_layers
    assert _hook_count(adapter) == 0


def test_hooks_are_removed_when_the_forward_raises():
    model = tiny_model("llama")
    adapter = adapter_for(model)

    def explode(layer, activation):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with activation_hooks(adapter, explode):
            model(input_ids=torch.randint(3, VOCAB, (1, 4)))
    assert _hook_count(adapter) == 0


def test_hooks_can_be_limited_to_some_layers():
    model = tiny_model("gpt2")
    adapter = adapter_for(model)
    seen = []
    with activation_hooks(adapter, lambda layer, a: seen.append(layer), layers=[1]), torch.no_grad():
        model(input_ids=torch.randint(3, VOCAB, (1, 4)))
    assert seen == [1]
