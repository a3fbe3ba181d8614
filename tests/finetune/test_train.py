"""Training loop, checkpoints, resume, adapter loading and bad input."""

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file

from langneurons.errors import LangNeuronsError
from langneurons.tasks.prompts import collate, encode_examples, nli_label_logits, pad_id
from langneurons.finetune.checkpoints import METADATA, NEURONS_FILE, load_finetuned
from langneurons.finetune.train import FinetuneConfig, finetune
from langneurons.identify.neuron_set import NeuronSet

QUICK = dict(lora_r=4, batch_size=2, learning_rate=5e-3, lora_dropout=0.0)


def _logits(loaded, examples):
    batch = collate(encode_examples(loaded.tokenizer, "xquad", examples, 64).examples, pad_id(loaded.tokenizer))
    with torch.no_grad():
        return loaded.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_save_load_round_trip_gives_identical_logits(tmp_path, make_loaded, make_neuron_set, qa_data):
    loaded = make_loaded("llama")
    config = FinetuneConfig("xquad", neurons="languages", languages=("en", "fr"), max_steps=2, attention_lora=True,
                            **QUICK)
    result = finetune(loaded, qa_data(), config, tmp_path, neuron_set=make_neuron_set(loaded), progress=False)
    result.model.model.eval()
    trained = _logits(result.model, qa_data(2))

    reloaded = load_finetuned(tmp_path, base=make_loaded("llama"))
    assert torch.equal(_logits(reloaded, qa_data(2)), trained)
    assert not torch.equal(_logits(make_loaded("llama"), qa_data(2)), trained)  # the adapter does something
    assert reloaded.info.weights_fingerprint == result.model.info.weights_fingerprint
    assert reloaded.info.weights_fingerprint != loaded.info.weights_fingerprint  # never mistaken for the base
    merged = load_finetuned(tmp_path, base=make_loaded("llama"), merge=True)
    torch.testing.assert_close(_logits(merged, qa_data(2)), trained, atol=1e-5, rtol=1e-5)


def test_metadata_records_base_task_neurons_data_and_hyperparameters(tmp_path, make_loaded, make_neuron_set, qa_data):
    loaded = make_loaded("gpt2")
    config = FinetuneConfig("xquad", neurons="languages", languages=("fr",), max_steps=3, **QUICK)
    result = finetune(loaded, qa_data(), config, tmp_path, neuron_set=make_neuron_set(loaded), progress=False)
    metadata = json.loads((tmp_path / METADATA).read_text())
    assert metadata["base"]["weights_fingerprint"] == loaded.info.weights_fingerprint
    assert metadata["task"] == "xquad" and metadata["step"] == 3 == metadata["total_steps"] and metadata["complete"]
    assert metadata["neurons"]["mode"] == "languages" and metadata["neurons"]["count"] == 2
    assert metadata["neurons"]["per_layer"] == [0, 2] and len(metadata["neurons"]["hash"]) == 16
    assert metadata["data"]["examples"] == 6 and len(metadata["data"]["hash"]) == 16
    assert metadata["config"]["lora_r"] == 4 and metadata["config"]["lora_alpha"] == 8.0
    assert metadata["lora"]["target_modules"] == ["transformer.h.1.mlp.c_fc"]
    assert metadata["final_loss"] == result.final_loss == metadata["losses"][-1]
    assert NeuronSet.load(tmp_path / NEURONS_FILE).union().tolist() == [[1, 3], [1, 9]]
    assert not (tmp_path / "checkpoints").exists()


def test_loading_onto_another_base_model_fails(tmp_path, make_loaded, qa_data):
    finetune(make_loaded("llama"), qa_data(), FinetuneConfig("xquad", max_steps=1, **QUICK), tmp_path, progress=False)
    with pytest.raises(LangNeuronsError, match="was trained on"):
        load_finetuned(tmp_path, base=make_loaded("llama", seed=1))


def test_missing_adapter_weights_fail_loudly(tmp_path, make_loaded, qa_data):
    finetune(make_loaded("llama"), qa_data(), FinetuneConfig("xquad", max_steps=1, **QUICK), tmp_path, progress=False)
    weights = load_file(str(tmp_path / "adapter_model.safetensors"))
    dropped = sorted(weights)[0]
    save_file({k: v for k, v in weights.items() if k != dropped}, str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(LangNeuronsError, match="missing"):
        load_finetuned(tmp_path, base=make_loaded("llama"))


class Interrupted(Exception):
    pass


def test_resume_continues_the_step_count_and_ends_with_the_uninterrupted_weights(
    tmp_path, make_loaded, make_neuron_set, qa_data
):
    config = FinetuneConfig("xquad", neurons="languages", languages=("en",), max_steps=4, save_every=2,
                            attention_lora=True, warmup_ratio=0.25, weight_decay=0.1, **dict(QUICK, lora_dropout=0.1))
    loaded = make_loaded("llama")
    finetune(loaded, qa_data(), config, tmp_path / "straight", make_neuron_set(loaded), progress=False)

    def stop_at_3(step, loss):
        if step == 3:
            raise Interrupted

    loaded = make_loaded("llama")
    with pytest.raises(Interrupted):
        finetune(loaded, qa_data(), config, tmp_path / "resumed", make_neuron_set(loaded), progress=False,
                 on_step=stop_at_3)
    assert [p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()] == ["step-0000002"]
    assert not (tmp_path / "resumed" / METADATA).exists()
    with pytest.raises(LangNeuronsError, match="checkpoint .* different fine-tuning run"):
        other = FinetuneConfig(**{**config.__dict__, "learning_rate": 1e-3})
        finetune(make_loaded("llama"), qa_data(), other, tmp_path / "resumed", make_neuron_set(loaded), progress=False)

    steps = []
    loaded = make_loaded("llama")
    result = finetune(loaded, qa_data(), config, tmp_path / "resumed", make_neuron_set(loaded), progress=False,
                      on_step=lambda step, loss: steps.append(step))
    assert steps == [3, 4] and result.step == 4
    straight = load_file(str(tmp_path / "straight" / "adapter_model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "adapter_model.safetensors"))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_finished_run_is_reused_and_a_different_run_is_refused(tmp_path, make_loaded, qa_data):
    config = FinetuneConfig("xquad", max_steps=1, **QUICK)
    first = finetune(make_loaded("llama"), qa_data(), config, tmp_path, progress=False)
    steps = []
    again = finetune(make_loaded("llama"), qa_data(), config, tmp_path, progress=False,
                     on_step=lambda step, loss: steps.append(step))
    assert steps == [] and again.final_loss == first.final_loss and again.step == 1
    with pytest.raises(LangNeuronsError, match="different fine-tuning run"):
        finetune(make_loaded("llama"), qa_data(), FinetuneConfig("xquad", max_steps=2, **QUICK), tmp_path,
                 progress=False)


def test_random_mode_trains_a_layer_matched_random_set_of_equal_size(tmp_path, make_loaded, make_neuron_set, qa_data):
    loaded = make_loaded("llama")
    neuron_set = make_neuron_set(loaded)
    config = FinetuneConfig("xquad", neurons="random", languages=("en", "fr"), max_steps=1, **QUICK)
    finetune(loaded, qa_data(), config, tmp_path, neuron_set=neuron_set, progress=False)
    control = NeuronSet.load(tmp_path / NEURONS_FILE)
    real = neuron_set.union(["en", "fr"])
    assert control.method == "random"
    assert torch.equal(control.counts_per_layer()[0], torch.bincount(real[:, 0], minlength=2))
    assert not torch.equal(control.union(), real)


def test_nli_training_lowers_the_verbaliser_loss(tmp_path, make_loaded, nli_data):
    loaded = make_loaded("llama")
    data = encode_examples(loaded.tokenizer, "xnli", nli_data(3), 256)
    batch = collate(data.examples, pad_id(loaded.tokenizer))

    def loss():
        with torch.no_grad():
            scores = nli_label_logits(loaded.model, batch["input_ids"], batch["attention_mask"], data.label_token_ids)
        return torch.nn.functional.cross_entropy(scores, batch["class_labels"]).item()

    before = loss()
    config = FinetuneConfig("xnli", neurons="all", max_steps=8, batch_size=3, learning_rate=2e-2, lora_dropout=0.0,
                            warmup_ratio=0.0)
    result = finetune(loaded, nli_data(3), config, tmp_path, progress=False)
    losses = result.metadata["losses"]
    assert losses[0] == pytest.approx(before, rel=1e-4)  # step 1 saw the untrained model, scored the same way
    assert all(later < earlier for earlier, later in zip(losses, losses[1:]))  # one full batch: steady descent
    assert loss() < losses[-1]


def test_bad_input_is_a_clear_error(tmp_path, make_loaded, make_neuron_set, qa_data):
    loaded = make_loaded("llama")
    other = make_neuron_set(make_loaded("llama", seed=1))
    with pytest.raises(LangNeuronsError, match="identified on"):
        finetune(loaded, qa_data(), FinetuneConfig("xquad", neurons="languages", languages=("en",)), tmp_path,
                 neuron_set=other, progress=False)
    with pytest.raises(LangNeuronsError, match="not in this neuron set"):
        finetune(loaded, qa_data(), FinetuneConfig("xquad", neurons="languages", languages=("hi",)), tmp_path,
                 neuron_set=make_neuron_set(loaded), progress=False)
    with pytest.raises(LangNeuronsError, match="unknown language"):
        FinetuneConfig("xquad", neurons="languages", languages=("english",)).resolved()
    with pytest.raises(LangNeuronsError, match="unknown task"):
        FinetuneConfig("squad").resolved()
    with pytest.raises(LangNeuronsError, match="unknown neuron mode"):
        FinetuneConfig("xnli", neurons="some").resolved()
    with pytest.raises(LangNeuronsError, match="needs a neuron set"):
        finetune(loaded, qa_data(), FinetuneConfig("xquad", neurons="random", languages=("en",)), tmp_path,
                 progress=False)
    with pytest.raises(LangNeuronsError, match="nothing to train"):
        FinetuneConfig("xquad", neurons="none", attention_lora=False).resolved()
    with pytest.raises(LangNeuronsError, match="not a finished"):
        load_finetuned(tmp_path / "nowhere", base=loaded)


def test_saved_run_changes_only_the_chosen_neurons_weights(tmp_path, make_loaded, make_neuron_set, qa_data):
    loaded = make_loaded("llama")
    chosen = make_neuron_set(loaded).mask("fr")
    config = FinetuneConfig("xquad", neurons="languages", languages=("fr",), mlp_targets=("gate", "up", "down"),
                            max_steps=3, weight_decay=0.5, **QUICK)
    finetune(loaded, qa_data(), config, tmp_path, neuron_set=make_neuron_set(loaded), progress=False)
    base = make_loaded("llama")
    merged = load_finetuned(tmp_path, base=make_loaded("llama"), merge=True)
    for layer in range(2):
        views = [(base.adapter.input_neuron_weight(layer, role), merged.adapter.input_neuron_weight(layer, role))
                 for role in ("gate", "up")]
        views.append((base.adapter.down_neuron_weight(layer), merged.adapter.down_neuron_weight(layer)))
        for before, after in views:
            assert torch.equal((before != after).any(dim=1), chosen[layer])


def test_activation_checkpointing_recomputes_layers_and_trains_the_same_weights(
    tmp_path, make_loaded, make_neuron_set, qa_data
):
    from safetensors.torch import load_file as load_adapter

    from langneurons.hooks import hooks

    config = FinetuneConfig("xquad", neurons="languages", languages=("en",), max_steps=2, attention_lora=True,
                            **dict(QUICK, lora_dropout=0.1))
    adapters, mlp_calls = {}, {}
    for checkpointing in (False, True):
        loaded = make_loaded("llama")
        calls = []
        with hooks([(loaded.adapter.layers[0].activation, lambda module, inputs, output: calls.append(1))]):
            finetune(loaded, qa_data(), replace(config, activation_checkpointing=checkpointing),
                     tmp_path / str(checkpointing), neuron_set=make_neuron_set(loaded), progress=False)
        adapters[checkpointing] = load_adapter(str(tmp_path / str(checkpointing) / "adapter_model.safetensors"))
        mlp_calls[checkpointing] = len(calls)
        assert not loaded.model.is_activation_checkpointing  # switched off again after training
    assert mlp_calls[True] == 2 * mlp_calls[False]  # every layer's forward is run again in the backward
    for name, weight in adapters[False].items():  # dropout included: the RNG state is replayed
        torch.testing.assert_close(adapters[True][name], weight, rtol=1e-6, atol=1e-7)


def test_smoothed_loss_is_a_trailing_moving_average():
    from langneurons.finetune.train import smoothed

    assert smoothed([4.0, 2.0, 0.0, 6.0], window=2) == [4.0, 3.0, 1.0, 3.0]
    assert smoothed([1.0, 2.0, 3.0], window=10) == [1.0, 1.5, 2.0]
    assert smoothed([]) == []


def test_learning_curve_scores_the_dev_set_at_step_zero_every_k_steps_and_the_end(tmp_path, make_loaded, nli_data):
    from langneurons.evaluate.evaluation import predict, prepare_task

    dev = nli_data(6)
    loaded = make_loaded("llama")
    prepared = prepare_task(loaded.tokenizer, "xnli", "en", dev, 256)
    untrained = [r["correct"] for r in predict(loaded, prepared)]
    config = FinetuneConfig("xnli", neurons="all", max_steps=5, batch_size=3, learning_rate=2e-2, lora_dropout=0.0,
                            warmup_ratio=0.0, eval_every=2)
    result = finetune(loaded, nli_data(3), config, tmp_path, progress=False, dev_examples=dev)
    curve = result.metadata["curve"]
    assert [point["step"] for point in curve] == [0, 2, 4, 5]
    assert {point["dev_n"] for point in curve} == {6} and curve[0]["dev_metric"] == "accuracy"
    assert curve[0]["dev_score"] == pytest.approx(100.0 * sum(untrained) / 6)
    result.model.model.eval()
    trained = [r["correct"] for r in predict(result.model, prepared)]
    assert curve[-1]["dev_score"] == pytest.approx(100.0 * sum(trained) / 6)
    assert len(result.metadata["smoothed_loss"]) == 5
    # bookkeeping only: the same weights as a run without a learning curve
    plain = finetune(make_loaded("llama"), nli_data(3), replace(config, eval_every=0), tmp_path / "plain",
                     progress=False)
    assert plain.metadata["curve"] == []
    trained_weights = load_file(str(tmp_path / "adapter_model.safetensors"))
    plain_weights = load_file(str(tmp_path / "plain" / "adapter_model.safetensors"))
    assert all(torch.equal(trained_weights[k], plain_weights[k]) for k in trained_weights)


class _Planted:
    """What a hostile checkpoint would hold: unpickling it creates ``marker`` (any code could run)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _interrupted_run(tmp_path, make_loaded, qa_data):
    """A run stopped after step 2 with a checkpoint at step 2; returns (config, output, checkpoint)."""
    config = FinetuneConfig("xquad", max_steps=4, save_every=2, attention_lora=True, **QUICK)

    def stop_at_3(step, loss):
        if step == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        finetune(make_loaded("llama"), qa_data(), config, tmp_path / "run", progress=False, on_step=stop_at_3)
    checkpoint = tmp_path / "run" / "checkpoints" / "step-0000002"
    assert {p.name for p in checkpoint.iterdir()} >= {"training_state.safetensors", "training_state.json"}
    return config, tmp_path / "run", checkpoint


def test_resume_state_is_tensors_and_json_and_a_planted_pickle_never_runs(tmp_path, make_loaded, qa_data):
    config, output, checkpoint = _interrupted_run(tmp_path, make_loaded, qa_data)
    state = load_file(str(checkpoint / "training_state.safetensors"))
    assert state["rng.0.cpu"].dtype == torch.uint8 and any(k.startswith("optimizer.") for k in state)
    assert json.loads((checkpoint / "training_state.json").read_text())["step"] == 2
    marker = tmp_path / "code-ran"
    for name in ("training_state.pt", "training_state.safetensors"):  # the old name, and the new one
        torch.save(_Planted(marker), checkpoint / name)
    with pytest.raises(LangNeuronsError, match=f"checkpoint {checkpoint} is unreadable .*delete "
                                               f"{checkpoint.parent} to start training over"):
        finetune(make_loaded("llama"), qa_data(), config, output, progress=False)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "random", "json"])
def test_a_corrupt_checkpoint_is_one_clear_error_saying_how_to_start_over(damage, tmp_path, make_loaded, qa_data):
    import os

    config, output, checkpoint = _interrupted_run(tmp_path, make_loaded, qa_data)
    tensors = checkpoint / "training_state.safetensors"
    if damage == "truncate":
        tensors.write_bytes(tensors.read_bytes()[:200])
    elif damage == "random":
        tensors.write_bytes(os.urandom(3000))
    else:
        (checkpoint / "training_state.json").write_text('{"format": "langneurons.training-state/1", "step": 2}')
    with pytest.raises(LangNeuronsError, match=f"checkpoint {checkpoint} is unreadable") as error:
        finetune(make_loaded("llama"), qa_data(), config, output, progress=False)
    assert "start training over" in str(error.value) and "\n" not in str(error.value)
    import shutil

    shutil.rmtree(output / "checkpoints")  # what the message says: then the run starts over and finishes
    assert finetune(make_loaded("llama"), qa_data(), config, output, progress=False).step == 4
