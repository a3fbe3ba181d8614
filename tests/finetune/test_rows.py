"""``adapter rows``: the chosen neurons' own weights train, every other parameter stays bit-identical."""

import pytest
import torch

from langneurons.errors import LangNeuronsError
from langneurons.finetune.neuron_lora import attention_module_names
from langneurons.finetune.rows import ROWS_FILE, add_rows, equal_parameters, rows_parameter_count
from langneurons.finetune.train import FinetuneConfig, finetune, load_finetuned
from langneurons.models.architectures import unwrap

ROWS = dict(adapter="rows", neurons="languages", languages=("en",), mlp_targets=("gate", "up", "down"),
            batch_size=2, learning_rate=5e-2, weight_decay=0.5, warmup_ratio=0.0)


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}


def _neuron_views(loaded, layer: int) -> list[torch.Tensor]:
    """[neurons, features] views of the gate rows, up rows and down columns of ``layer``."""
    adapter = loaded.adapter
    roles = ("gate", "up") if adapter.spec.gated else ("up",)
    return [adapter.input_neuron_weight(layer, role) for role in roles] + [adapter.down_neuron_weight(layer)]


@pytest.mark.parametrize("family", ["llama", "gpt2", "phi3"])
def test_adamw_with_weight_decay_moves_only_the_chosen_rows_and_columns(
        family, tmp_path, make_loaded, make_neuron_set, chosen, qa_data):
    loaded = make_loaded(family)
    before = _state(loaded.model)
    config = FinetuneConfig("xquad", max_steps=4, **ROWS)
    result = finetune(loaded, qa_data(), config, tmp_path, neuron_set=make_neuron_set(loaded), progress=False)
    optimised = [p for p in result.model.model.parameters() if p.requires_grad]
    assert optimised and all(".delta" in n for n, p in result.model.model.named_parameters() if p.requires_grad)

    merged = load_finetuned(tmp_path, base=make_loaded(family))
    after = _state(merged.model)
    base = make_loaded(family)
    mask = chosen(base)
    neuron_weights = set()
    for layer in range(base.info.num_layers):
        for view_before, view_after in zip(_neuron_views(base, layer), _neuron_views(merged, layer)):
            changed = (view_before != view_after).any(dim=1)
            assert torch.equal(changed, mask[layer])  # chosen rows moved, every other row bit-identical
        for name, module in unwrap(base.model).named_modules():
            if name in result.metadata["lora"]["target_modules"]:
                neuron_weights.add(f"{name}.weight")
    assert set(after) == set(before)
    for name, value in before.items():  # everything else: bit-identical
        if name not in neuron_weights:
            assert torch.equal(after[name], value), name
    # the trained model in memory computes with exactly the weights that were saved
    for name, module in unwrap(result.model.model).named_modules():
        if f"{name}.weight" in neuron_weights:
            assert torch.equal(module.weight, dict(unwrap(merged.model).named_modules())[name].weight)


def test_saved_file_holds_only_the_changed_rows_and_their_indices(tmp_path, make_loaded, make_neuron_set, qa_data):
    from safetensors.torch import load_file

    loaded = make_loaded("llama")
    result = finetune(loaded, qa_data(), FinetuneConfig("xquad", max_steps=1, **ROWS), tmp_path,
                      neuron_set=make_neuron_set(loaded), progress=False)
    tensors = load_file(str(tmp_path / ROWS_FILE))
    indices = {k: v.tolist() for k, v in tensors.items() if k.endswith(".index")}
    layer0 = [v for k, v in indices.items() if ".layers.0." in k]
    assert layer0 == [[1, 5, 7]] * 3  # gate rows, up rows, down columns of neurons 1, 5, 7
    hidden = 32  # tests/tiny.py
    assert sum(v.numel() for k, v in tensors.items() if k.endswith(".delta")) == 5 * 3 * hidden
    assert result.parameters.trainable == result.parameters.unmasked == 5 * 3 * hidden
    assert result.model.info.model_id.endswith(f"+rows:{tmp_path.name}")


def test_rows_are_refused_on_another_model_and_without_neurons(tmp_path, make_loaded, make_neuron_set, qa_data):
    loaded = make_loaded("llama")
    finetune(loaded, qa_data(), FinetuneConfig("xquad", max_steps=1, **ROWS), tmp_path,
             neuron_set=make_neuron_set(loaded), progress=False)
    with pytest.raises(LangNeuronsError, match="was trained on"):
        load_finetuned(tmp_path, base=make_loaded("llama", seed=1))
    for bad in (dict(ROWS, neurons="none"), dict(ROWS, attention_lora=True), dict(ROWS, adapter="ia3")):
        with pytest.raises(LangNeuronsError):
            FinetuneConfig("xquad", **bad).resolved()


def test_reloaded_rows_model_gives_the_trained_logits(tmp_path, make_loaded, make_neuron_set, qa_data):
    from langneurons.tasks.prompts import collate, encode_examples, pad_id

    loaded = make_loaded("qwen2")
    result = finetune(loaded, qa_data(), FinetuneConfig("xquad", max_steps=2, **ROWS), tmp_path,
                      neuron_set=make_neuron_set(loaded), progress=False)
    batch = collate(encode_examples(loaded.tokenizer, "xquad", qa_data(2), 64).examples, pad_id(loaded.tokenizer))
    with torch.no_grad():
        trained = result.model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        reloaded = load_finetuned(tmp_path, base=make_loaded("qwen2"))
        again = reloaded.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        base = make_loaded("qwen2").model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(again, trained)
    assert not torch.equal(base, trained)


def test_equal_parameters_picks_the_nearest_lora_rank_and_random_row_count(make_loaded, chosen):
    loaded = make_loaded("llama")  # hidden 32, 48 neurons, 2 layers; q/k/v/o: 32x32, 16x32 (2 kv heads of 8)
    mask = chosen(loaded)  # 5 neurons
    assert rows_parameter_count(loaded.adapter, mask) == 5 * 3 * 32  # 480
    modules = attention_module_names(loaded.adapter)
    # per rank: q (32+32) + k (32+16) + v (32+16) + o (32+32) = 224 per layer, 448 for 2 layers
    sizes = equal_parameters(loaded.adapter, mask, modules)
    assert (sizes.target, sizes.rank, sizes.lora_parameters) == (480, 1, 448)  # |448-480| < |896-480|
    assert (sizes.random_neurons, sizes.per_neuron) == (5, 96)
    gate_only = equal_parameters(loaded.adapter, mask, modules, mlp_targets=("gate",))
    assert (gate_only.target, gate_only.rank, gate_only.random_neurons) == (160, 1, 5)


def test_add_rows_freezes_the_whole_model_but_the_deltas(make_loaded, chosen):
    loaded = make_loaded("llama")
    rows = add_rows(loaded.adapter, chosen(loaded), ("gate",))
    trainable = {n: p.shape for n, p in rows.model.named_parameters() if p.requires_grad}
    assert sorted(trainable.values()) == [torch.Size([2, 32]), torch.Size([3, 32])]


def test_an_interrupted_rows_run_resumes_to_the_uninterrupted_weights(tmp_path, make_loaded, make_neuron_set, qa_data):
    from safetensors.torch import load_file

    class Interrupted(Exception):
        pass

    def stop_at_3(step, loss):
        if step == 3:
            raise Interrupted

    config = FinetuneConfig("xquad", max_steps=4, save_every=2, **ROWS)
    loaded = make_loaded("llama")
    finetune(loaded, qa_data(), config, tmp_path / "straight", neuron_set=make_neuron_set(loaded), progress=False)
    with pytest.raises(Interrupted):
        loaded = make_loaded("llama")
        finetune(loaded, qa_data(), config, tmp_path / "resumed", neuron_set=make_neuron_set(loaded), progress=False,
                 on_step=stop_at_3)
    assert (tmp_path / "resumed" / "checkpoints" / "step-0000002" / ROWS_FILE).is_file()
    loaded = make_loaded("llama")
    finetune(loaded, qa_data(), config, tmp_path / "resumed", neuron_set=make_neuron_set(loaded), progress=False)
    a, b = (load_file(str(tmp_path / name / ROWS_FILE)) for name in ("straight", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bfloat16_weights_train_float32_deltas_and_only_the_chosen_rows_change(make_loaded, chosen):
    loaded = make_loaded("llama")
    loaded.model.to(torch.bfloat16)
    before = _state(loaded.model)
    rows = add_rows(loaded.adapter, chosen(loaded), ("gate",))
    deltas = rows.deltas()
    assert all(d.delta.dtype == torch.float32 for d in deltas.values())
    with torch.no_grad():
        for d in deltas.values():
            d.delta.fill_(0.5)
    for name, module in unwrap(rows.model).named_modules():
        if name in deltas:
            weight, original = module.weight, before[f"{name}.weight"]
            changed = (weight != original).any(dim=1)
            assert weight.dtype == torch.bfloat16 and changed.nonzero()[:, 0].tolist() == deltas[name].index.tolist()


def test_rows_train_the_neurons_own_weights_by_default_and_lora_the_gate_rows():
    assert FinetuneConfig("xnli", adapter="rows", neurons="all").resolved().mlp_targets == ("gate", "up", "down")
    assert FinetuneConfig("xnli", neurons="all").resolved().mlp_targets == ("gate",)
    assert FinetuneConfig("xnli", adapter="rows", neurons="all", mlp_targets=("up",)).resolved().mlp_targets == ("up",)
