"""Neuron-specific LoRA: only the chosen neurons' MLP weights can change, exactly."""

import copy

import pytest
import torch
from tiny import HIDDEN, NEURONS
from torch.nn.utils import parametrize

from langneurons.errors import LangNeuronsError
from langneurons.tasks.prompts import collate, encode_examples, pad_id
from langneurons.finetune.neuron_lora import (
    adapter_state_dict,
    add_lora,
    attention_module_names,
    count_parameters,
    neuron_lora_plan,
)
from langneurons.finetune.train import train_step
from langneurons.models.architectures import adapter_for


def _views(model, role):
    """[neurons, hidden] weight views per layer for ``role`` (gate/up rows, down columns)."""
    adapter = adapter_for(model)
    if role == "down":
        return [adapter.down_neuron_weight(i).detach().clone() for i in range(adapter.num_layers)]
    return [adapter.input_neuron_weight(i, role).detach().clone() for i in range(adapter.num_layers)]


def _train(loaded, lora, examples, steps=5, weight_decay=0.5):
    data = encode_examples(loaded.tokenizer, "xquad", examples, 64)
    batch = collate(data.examples, pad_id(loaded.tokenizer))
    trainable = [p for p in lora.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=0.05, weight_decay=weight_decay)
    lora.model.train()
    for _ in range(steps):
        train_step(lora.model, [batch], optimizer)
    lora.model.eval()


CASES = [
    ("llama", ("gate",)),
    ("llama", ("gate", "up", "down")),
    ("gpt2", ("gate",)),  # Conv1D, non-gated: "gate" is the first projection c_fc
    ("gpt2", ("gate", "down")),
    ("phi3", ("gate",)),  # fused gate_up_proj: gate rows are the first N rows
    ("phi3", ("up", "down")),
    ("opt", ("down",)),
    ("cohere", ("gate", "up", "down")),
    ("cohere2", ("gate", "down")),
    ("olmo2", ("gate", "up", "down")),
    ("xglm", ("gate", "down")),  # OPT-like fc1/fc2 without a gate
]


@pytest.mark.parametrize("family,targets", CASES)
def test_only_chosen_neurons_weights_change_after_adamw_with_weight_decay(
    make_loaded, chosen, qa_data, family, targets
):
    loaded = make_loaded(family)
    original = copy.deepcopy(loaded.model)
    mask = chosen(loaded)
    lora = add_lora(loaded.adapter, r=4, alpha=8, neuron_mask=mask, mlp_targets=targets)
    _train(loaded, lora, qa_data(4))
    merged = lora.model.merge_and_unload()

    gated = adapter_for(original).spec.gated
    roles = ("gate", "up", "down") if gated else ("up", "down")
    expected_roles = {("up" if not gated and t == "gate" else t) for t in targets}
    for role in roles:
        for layer, (before, after) in enumerate(zip(_views(original, role), _views(merged, role))):
            changed = (before != after).any(dim=1)
            expected = mask[layer] if role in expected_roles else torch.zeros_like(mask[layer])
            assert torch.equal(changed, expected), (role, layer)
            assert torch.equal(before[~mask[layer]], after[~mask[layer]])  # exactly, not allclose

    # nothing outside the targeted MLP projections moved either
    layers = adapter_for(merged).layers
    mlp_modules = [m for layer in layers for m in (layer.gate, layer.up, layer.down) if m is not None]
    mlp_weights = {id(m.weight) for m in mlp_modules}
    merged_params = dict(merged.named_parameters())
    for name, before in original.named_parameters():
        if id(merged_params[name]) not in mlp_weights:
            assert torch.equal(before, merged_params[name]), name


def test_masks_hold_by_construction_even_if_masked_lora_entries_are_nonzero(make_loaded, chosen):
    loaded = make_loaded("llama")
    original = copy.deepcopy(loaded.model)
    mask = chosen(loaded)
    lora = add_lora(loaded.adapter, r=4, alpha=8, neuron_mask=mask, mlp_targets=("gate", "down"))
    with torch.no_grad():  # what a careless optimiser could do: fill every raw entry, masked ones too
        for module in lora.model.modules():
            if parametrize.is_parametrized(module, "weight"):
                module.parametrizations.weight.original.normal_()
        for name, param in lora.model.named_parameters():
            if "lora_B" in name and "parametrizations" not in name:
                param.normal_()  # unmasked B of the down projection
    merged = lora.model.merge_and_unload()
    for role in ("gate", "down"):
        for layer, (before, after) in enumerate(zip(_views(original, role), _views(merged, role))):
            assert torch.equal(before[~mask[layer]], after[~mask[layer]])
            assert (before[mask[layer]] != after[mask[layer]]).any(dim=1).all()
    for layer, (before, after) in enumerate(zip(_views(original, "up"), _views(merged, "up"))):
        assert torch.equal(before, after)


def test_trainable_and_unmasked_parameter_counts(make_loaded, chosen):
    r, k = 4, 5  # chosen_mask has 5 neurons over the 2 layers
    loaded = make_loaded("llama")
    counts = count_parameters(add_lora(loaded.adapter, r=r, alpha=8, neuron_mask=chosen(loaded)).model)
    # per layer: gate A [r, hidden] + gate B [neurons, r]; only chosen B rows are free
    assert counts.trainable == 2 * (r * HIDDEN + NEURONS * r)
    assert counts.unmasked == 2 * r * HIDDEN + k * r

    loaded = make_loaded("llama")
    lora = add_lora(loaded.adapter, r=r, alpha=8, neuron_mask=chosen(loaded), mlp_targets=("gate", "up", "down"))
    counts = count_parameters(lora.model)
    per_module = r * HIDDEN + NEURONS * r  # gate, up: A [r, H], B [N, r]; down: A [r, N], B [H, r]
    assert counts.trainable == 2 * 3 * per_module
    assert counts.unmasked == 2 * 3 * r * HIDDEN + 3 * k * r


def test_attention_only_lora_changes_no_mlp_weight(make_loaded, qa_data):
    loaded = make_loaded("gpt2")
    original = copy.deepcopy(loaded.model)
    lora = add_lora(loaded.adapter, r=4, alpha=8, attention_lora=True)
    assert lora.plan == []
    _train(loaded, lora, qa_data(4), steps=2)
    merged = lora.model.merge_and_unload()
    for role in ("up", "down"):
        assert all(torch.equal(a, b) for a, b in zip(_views(original, role), _views(merged, role)))
    assert not torch.equal(original.transformer.h[0].attn.c_attn.weight, merged.transformer.h[0].attn.c_attn.weight)
    assert torch.equal(original.transformer.h[0].mlp.c_proj.weight, merged.transformer.h[0].mlp.c_proj.weight)


def test_attention_targets_come_from_the_table_by_full_path(make_loaded):
    gpt2 = make_loaded("gpt2")
    assert attention_module_names(gpt2.adapter) == [
        "transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj",
        "transformer.h.1.attn.c_attn", "transformer.h.1.attn.c_proj",
    ]  # never the MLP's c_proj
    gemma3 = attention_module_names(make_loaded("gemma3").adapter)
    assert len(gemma3) == 2 * 4 and all(".language_model.layers." in name for name in gemma3)  # no vision tower
    assert attention_module_names(make_loaded("llama").adapter, ["self_attn.v_proj"]) == [
        "model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.v_proj"]
    with pytest.raises(LangNeuronsError, match="not among"):
        attention_module_names(gpt2.adapter, ["q_proj"])


def test_plan_maps_roles_to_projections_rows_and_columns(make_loaded):
    phi3 = make_loaded("phi3")
    mask = torch.zeros(2, NEURONS, dtype=torch.bool)
    mask[0, 2] = True
    plan = neuron_lora_plan(phi3.adapter, mask, ("gate", "up", "down"))
    assert [(p.name, p.kind) for p in plan] == [("model.layers.0.mlp.gate_up_proj", "rows"),
                                                 ("model.layers.0.mlp.down_proj", "columns")]  # layer 1: no neurons
    assert plan[0].mask.nonzero().flatten().tolist() == [2, NEURONS + 2]
    assert plan[1].mask.nonzero().flatten().tolist() == [2]

    gpt2 = make_loaded("gpt2")
    plan = neuron_lora_plan(gpt2.adapter, mask, ("gate", "up"))
    assert [(p.name, p.kind) for p in plan] == [("transformer.h.0.mlp.c_fc", "rows")]

    every = torch.ones(2, NEURONS, dtype=torch.bool)
    assert all(p.mask is None for p in neuron_lora_plan(make_loaded("llama").adapter, every))  # plain LoRA
    (fused,) = neuron_lora_plan(phi3.adapter, every[:1].expand(2, -1).clone() & torch.tensor([[True], [False]]))
    assert fused.mask.tolist() == [True] * NEURONS + [False] * NEURONS  # gate rows only, up rows frozen


def test_layers_without_chosen_neurons_get_no_adapter(make_loaded):
    loaded = make_loaded("llama")
    mask = torch.zeros(2, NEURONS, dtype=torch.bool)
    mask[1, 4] = True
    lora = add_lora(loaded.adapter, r=4, alpha=8, neuron_mask=mask)
    assert lora.target_modules == ["model.layers.1.mlp.gate_proj"]
    assert not hasattr(lora.model.base_model.model.model.layers[0].mlp.gate_proj, "lora_A")


def test_saved_state_uses_plain_peft_names_with_masked_values(make_loaded, chosen):
    loaded = make_loaded("llama")
    mask = chosen(loaded)
    lora = add_lora(loaded.adapter, r=4, alpha=8, neuron_mask=mask)
    with torch.no_grad():
        for module in lora.model.modules():
            if parametrize.is_parametrized(module, "weight"):
                module.parametrizations.weight.original.fill_(1.0)
    state = adapter_state_dict(lora.model)
    assert not any("parametrizations" in key for key in state)
    b = state["base_model.model.model.layers.0.mlp.gate_proj.lora_B.default.weight"]
    assert torch.equal(b[mask[0]], torch.ones(3, 4)) and torch.equal(b[~mask[0]], torch.zeros(NEURONS - 3, 4))


def test_empty_selection_and_nothing_to_train_are_errors(make_loaded, chosen):
    loaded = make_loaded("llama")
    with pytest.raises(LangNeuronsError, match="empty"):
        add_lora(loaded.adapter, r=4, alpha=8, neuron_mask=torch.zeros(2, NEURONS, dtype=torch.bool))
    with pytest.raises(LangNeuronsError, match="nothing to fine-tune"):
        add_lora(loaded.adapter, r=4, alpha=8)
    with pytest.raises(LangNeuronsError, match="mlp targets"):
        neuron_lora_plan(loaded.adapter, chosen(loaded), ("gate", "fc1"))
    with pytest.raises(LangNeuronsError, match="neuron mask"):
        neuron_lora_plan(loaded.adapter, torch.ones(3, NEURONS, dtype=torch.bool))


def test_adapter_config_lists_target_modules_sorted_whatever_the_string_hashing(tmp_path, make_loaded, chosen):
    """PEFT stores target_modules as a set; written in set order, adapter_config.json would change
    with PYTHONHASHSEED and a rerun would not be byte-identical."""
    import json

    loaded = make_loaded("llama")
    lora = add_lora(loaded.adapter, r=2, alpha=4, neuron_mask=chosen(loaded), mlp_targets=("gate", "up", "down"),
                    attention_lora=True)
    lora.model.save_pretrained(str(tmp_path), state_dict=adapter_state_dict(lora.model))
    written = json.loads((tmp_path / "adapter_config.json").read_text())["target_modules"]
    assert len(written) == len(set(lora.target_modules)) > 8
    assert written == sorted(written)
