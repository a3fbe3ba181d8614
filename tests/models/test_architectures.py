"""The architecture table: every family resolves, sizes come from modules, and the hooked
activation is exactly what feeds each neuron's down-projection column."""

import pytest
import torch
from tiny import FAMILIES, LAYERS, NEURONS, VOCAB, tiny_model

from langneurons.hooks import activation_hooks, hooks
from langneurons.models.architectures import (
    ARCHITECTURES,
    UnsupportedArchitectureError,
    adapter_for,
    spec_for_model_type,
)


def test_every_table_entry_has_a_tiny_model_in_the_suite():
    assert set(ARCHITECTURES) == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_reads_sizes_from_the_modules(family):
    model = tiny_model(family)
    adapter = adapter_for(model)
    assert adapter.num_layers == LAYERS
    expected = 4 * 32 if family == "bloom" else NEURONS  # BLOOM's MLP is fixed at 4 x hidden
    assert adapter.neurons_per_layer == expected
    assert adapter.spec.family == family


def _zero_down_columns(model, adapter, layer, neurons):
    weight = adapter.down_neuron_weight(layer)
    with torch.no_grad():
        weight[neurons] = 0.0


@pytest.mark.parametrize("family", FAMILIES)
def test_zeroing_the_hooked_activation_equals_zeroing_the_down_projection_column(family):
    model = tiny_model(family)
    adapter = adapter_for(model)
    ids = torch.randint(3, VOCAB, (2, 7))
    neurons = torch.tensor([0, 5, 11])

    def zero(layer, activation):
        if layer != 1:
            return None
        activation = activation.clone()
        activation[..., neurons] = 0.0
        return activation

    with torch.no_grad():
        baseline = model(input_ids=ids).logits
        with activation_hooks(adapter, zero):
            hooked = model(input_ids=ids).logits
        _zero_down_columns(model, adapter, 1, neurons)
        edited = model(input_ids=ids).logits
    assert not torch.allclose(baseline, hooked)
    torch.testing.assert_close(hooked, edited, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "phi3"])
def test_gated_activation_is_act_fn_of_the_gate_projection(family):
    model = tiny_model(family)
    adapter = adapter_for(model)
    layer = adapter.layers[0]
    seen = {}
    mlp = model.get_decoder().layers[0].mlp
    with hooks([(mlp, lambda m, inputs, out: seen.setdefault("x", inputs[0]))]), activation_hooks(
        adapter, lambda i, a: seen.setdefault(i, a)
    ), torch.no_grad():
        model(input_ids=torch.randint(3, VOCAB, (1, 5)))
        gate = seen["x"] @ adapter.input_neuron_weight(0, "gate").T
        expected = layer.activation(gate)
    torch.testing.assert_close(seen[0], expected)


def test_unsupported_architecture_names_the_supported_ones():
    with pytest.raises(UnsupportedArchitectureError, match="supported: .*llama"):
        spec_for_model_type("mamba")


def test_adapter_sees_through_a_peft_wrapper():
    from peft import LoraConfig, get_peft_model

    model = tiny_model("llama")
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert adapter_for(wrapped).num_layers == LAYERS
