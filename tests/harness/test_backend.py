"""The harness backend: same numbers as the plain ``hf`` backend without intervention, as a
hand-hooked model with one, no hook left behind, registered under ``langneurons``."""

import sys

import pytest
import torch
from harness_tasks import GEN_TASK, MC_TASK, chosen_neurons

from langneurons.errors import LangNeuronsError

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from langneurons.harness import register, require_lm_eval  # noqa: E402
from langneurons.harness.backend import LangNeuronsLM  # noqa: E402


def _responses(lm, task_dir, tasks=(MC_TASK, GEN_TASK)):
    """task -> [per document (by doc_id): the filtered responses]."""
    out = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=TaskManager(include_path=str(task_dir)),
                                  log_samples=True, bootstrap_iters=0)
    return {task: [s["filtered_resps"] for s in sorted(out["samples"][task], key=lambda s: s["doc_id"])]
            for task in tasks}


def _loglikelihoods(responses):
    return torch.tensor([[ll for ll, _ in doc] for doc in responses[MC_TASK]], dtype=torch.float64)


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _plain(model_dir):
    return HFLM(pretrained=str(model_dir), device="cpu", dtype="float32", batch_size=2)


def _zero_by_hand(model, neurons):
    """Forward hooks on each layer's act_fn that zero ``neurons`` [(layer, neuron)] by hand."""
    handles = []
    for layer, block in enumerate(model.model.layers):
        chosen = neurons[neurons[:, 0] == layer, 1]

        def hook(module, inputs, output, chosen=chosen):
            output = output.clone()
            output[..., chosen] = 0.0
            return output

        handles.append(block.mlp.act_fn.register_forward_hook(hook))
    return handles


def test_without_intervention_the_backend_equals_the_plain_hf_backend(task_dir, model_dir):
    ours = _responses(LangNeuronsLM(model=str(model_dir), device="cpu", batch_size=2), task_dir)
    plain = _responses(_plain(model_dir), task_dir)
    torch.testing.assert_close(_loglikelihoods(ours), _loglikelihoods(plain), rtol=0, atol=1e-6)
    assert ours[GEN_TASK] == plain[GEN_TASK]


def test_with_an_intervention_it_equals_a_hand_hooked_model(task_dir, model_dir, neuron_file):
    lm = LangNeuronsLM(model=str(model_dir), intervention=f"{neuron_file}:en:zero", device="cpu", batch_size=2)
    ours = _responses(lm, task_dir)
    assert _hook_count(lm.model) == 0  # hooks are gone after the run

    plain = _plain(model_dir)
    baseline = _responses(plain, task_dir)
    handles = _zero_by_hand(plain.model, chosen_neurons())
    try:
        by_hand = _responses(plain, task_dir)
    finally:
        for handle in handles:
            handle.remove()
    assert not torch.allclose(_loglikelihoods(baseline), _loglikelihoods(by_hand), atol=1e-4)  # the neurons matter
    torch.testing.assert_close(_loglikelihoods(ours), _loglikelihoods(by_hand), rtol=0, atol=1e-5)
    assert ours[GEN_TASK] == by_hand[GEN_TASK]


def test_hooks_are_attached_during_requests_only(task_dir, model_dir, neuron_file, monkeypatch):
    lm = LangNeuronsLM(model=str(model_dir), intervention=f"{neuron_file}:en:zero", device="cpu", batch_size=2)
    seen = []
    original = HFLM._model_call

    def spy(self, *args, **kwargs):
        seen.append(_hook_count(self.model))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(HFLM, "_model_call", spy)
    _responses(lm, task_dir, tasks=(MC_TASK,))
    assert seen and all(count == 2 for count in seen)  # one hook per layer while scoring
    assert _hook_count(lm.model) == 0


def test_set_intervention_switches_and_clears(task_dir, model_dir, neuron_file):
    lm = LangNeuronsLM(model=str(model_dir), device="cpu", batch_size=2)
    baseline = _loglikelihoods(_responses(lm, task_dir, tasks=(MC_TASK,)))
    lm.set_intervention(f"{neuron_file}:en:zero")
    assert lm.intervention.num_neurons == len(chosen_neurons())
    zeroed = _loglikelihoods(_responses(lm, task_dir, tasks=(MC_TASK,)))
    lm.set_intervention(None)
    again = _loglikelihoods(_responses(lm, task_dir, tasks=(MC_TASK,)))
    assert not torch.allclose(baseline, zeroed, atol=1e-4)
    torch.testing.assert_close(again, baseline, rtol=0, atol=0)


def test_prompt_scope_generates_and_refuses_loglikelihood_requests(task_dir, model_dir, neuron_file):
    lm = LangNeuronsLM(model=str(model_dir), intervention=f"{neuron_file}:en:zero:prompt", device="cpu", batch_size=2)
    assert len(_responses(lm, task_dir, tasks=(GEN_TASK,))[GEN_TASK]) == 9
    with pytest.raises(LangNeuronsError, match="generation only"):
        _responses(lm, task_dir, tasks=(MC_TASK,))
    assert _hook_count(lm.model) == 0


def test_a_neuron_set_of_another_model_is_refused(tmp_path, model_dir):
    from tiny import tiny_model, tiny_tokenizer

    from langneurons.identify.neuron_set import NeuronSet

    other = tmp_path / "other"
    tiny_model("llama", seed=1).save_pretrained(other)
    tiny_tokenizer().save_pretrained(other)
    foreign = NeuronSet({"en": chosen_neurons()}, 2, 48, "lape", {}, {"model_id": "x", "weights_fingerprint": "0" * 16})
    path = foreign.save(tmp_path / "foreign.json")
    with pytest.raises(LangNeuronsError, match="weights"):
        LangNeuronsLM(model=str(model_dir), intervention=f"{path}:en:zero", device="cpu")


def test_registered_as_langneurons_and_built_from_model_args(task_dir, model_dir, neuron_file):
    from lm_eval.api.registry import get_model

    assert register() is LangNeuronsLM
    assert get_model("langneurons") is LangNeuronsLM
    out = lm_eval.simple_evaluate(model="langneurons", model_args={"model": str(model_dir),
                                                                   "intervention": f"{neuron_file}:en,fr:zero"},
                                  tasks=[MC_TASK], task_manager=TaskManager(include_path=str(task_dir)),
                                  device="cpu", batch_size=2, log_samples=False, bootstrap_iters=0)
    assert out["results"][MC_TASK]["sample_len"] == 9
    assert "lape.json:en,fr:zero" in out["config"]["model_args"]["intervention"]


def test_missing_extra_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(LangNeuronsError, match=r"pip install 'langneurons\[lm-eval\]'"):
        require_lm_eval()


def test_an_adapter_is_loaded_onto_the_model_and_takes_base_model_interventions(task_dir, model_dir, neuron_file,
                                                                               tmp_path):
    from langneurons.finetune.checkpoints import load_finetuned
    from langneurons.finetune.train import FinetuneConfig, finetune
    from langneurons.models.loading import load_model
    from langneurons.tasks.xnli import NLIExample

    examples = [NLIExample(f"n{i}", "the cat sat on the mat", "the cat sat", i % 3) for i in range(4)]
    config = FinetuneConfig("xnli", neurons="none", max_steps=2, lora_r=4, batch_size=2, learning_rate=0.05,
                            lora_dropout=0.0)
    finetune(load_model(str(model_dir)), examples, config, tmp_path / "adapter", progress=False)

    ours = LangNeuronsLM(model=str(model_dir), adapter=str(tmp_path / "adapter"), device="cpu", batch_size=2)
    reference = load_finetuned(tmp_path / "adapter", base=load_model(str(model_dir)))
    by_hand = HFLM(pretrained=reference.model, tokenizer=reference.tokenizer, backend="causal", batch_size=2)
    with_adapter = _loglikelihoods(_responses(ours, task_dir, tasks=(MC_TASK,)))
    torch.testing.assert_close(with_adapter, _loglikelihoods(_responses(by_hand, task_dir, tasks=(MC_TASK,))),
                               rtol=0, atol=1e-6)
    base = _loglikelihoods(_responses(_plain(model_dir), task_dir, tasks=(MC_TASK,)))
    assert not torch.allclose(with_adapter, base, atol=1e-4)  # the adapter does something

    ours.set_intervention(f"{neuron_file}:en:zero")  # the set was made on the base model: accepted
    assert not torch.allclose(_loglikelihoods(_responses(ours, task_dir, tasks=(MC_TASK,))), with_adapter, atol=1e-4)
