"""Data-parallel fine-tuning (``accelerate launch`` / ``torchrun``) trains the single-process adapter.

Two gloo ranks are forked from the test process with the launcher's environment; the slow test
runs the real ``accelerate launch`` command.

* the adapter of two processes equals the one-process adapter (float tolerance), with uneven
  shares of the micro-batches (a rank with no example in a micro-batch) and gradient accumulation;
* the loss reported is that of the whole step, and masked-out neurons stay exactly untouched;
* only rank 0 writes; a data-parallel run interrupted after a checkpoint resumes to the same weights;
* a model split over several devices is refused with a clear error.
"""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from ranks import free_port, launcher_env, rank_errors, run_ranks
from safetensors.torch import load_file

from langneurons.errors import LangNeuronsError
from langneurons.finetune.checkpoints import METADATA
from langneurons.finetune.train import FinetuneConfig, finetune

# 7 examples in micro-batches of 3: the last micro-batch of the epoch has one example, so rank 1
# has nothing to do in it; 2 micro-batches per optimizer step.
CONFIG = FinetuneConfig("xquad", neurons="languages", languages=("en",), attention_lora=True, lora_r=4,
                        batch_size=3, grad_accumulation=2, epochs=2, learning_rate=5e-3, lora_dropout=0.0,
                        weight_decay=0.1, save_every=0)


def _adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


def _assert_same_adapter(actual: Path, expected: Path) -> None:
    got, want = _adapter(actual), _adapter(expected)
    assert set(got) == set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.fixture
def single_process(tmp_path, make_loaded, make_neuron_set, qa_data):
    loaded = make_loaded("llama")
    result = finetune(loaded, qa_data(7), CONFIG, tmp_path / "single", neuron_set=make_neuron_set(loaded),
                      progress=False)
    return result


def test_two_processes_train_the_single_process_adapter(tmp_path, single_process, make_loaded, make_neuron_set,
                                                         qa_data):
    out = tmp_path / "parallel"

    def rank_job(rank: int) -> None:
        loaded = make_loaded("llama")
        result = finetune(loaded, qa_data(7), CONFIG, out, neuron_set=make_neuron_set(loaded), progress=False)
        (tmp_path / f"loss{rank}.json").write_text(json.dumps(result.final_loss))

    assert run_ranks(rank_job, (), tmp_path) == [0, 0], rank_errors(tmp_path)
    _assert_same_adapter(out, single_process.output_dir)
    metadata = json.loads((out / METADATA).read_text())
    assert metadata["total_steps"] == single_process.total_steps == 3  # ceil(2 epochs x 3 micro-batches / 2)
    losses = [json.loads((tmp_path / f"loss{rank}.json").read_text()) for rank in range(2)]
    assert losses[0] == losses[1] == pytest.approx(single_process.final_loss, rel=1e-5)  # the whole step's loss
    assert metadata["losses"] == pytest.approx(single_process.metadata["losses"], rel=1e-5)
    # neuron-specific LoRA: the gate rows of neurons outside the set stay exactly 0 in every process
    loaded = make_loaded("llama")
    chosen = make_neuron_set(loaded).mask("en")
    for layer in range(loaded.info.num_layers):
        key = next(k for k in _adapter(out) if f"layers.{layer}.mlp.gate_proj.lora_B" in k)
        rows = _adapter(out)[key]
        assert torch.all(rows[~chosen[layer]] == 0)


def test_an_interrupted_parallel_run_resumes_to_the_uninterrupted_weights(tmp_path, single_process, make_loaded,
                                                                         make_neuron_set, qa_data):
    out, config = tmp_path / "resumed", replace(CONFIG, save_every=1)

    class Stop(Exception):
        pass

    def stop_at_2(step, loss):
        if step == 2:
            raise Stop

    def rank_job(rank: int) -> None:
        loaded = make_loaded("llama")
        with pytest.raises(Stop):
            finetune(loaded, qa_data(7), config, out, neuron_set=make_neuron_set(loaded), progress=False,
                     on_step=stop_at_2)
        checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
        (tmp_path / f"checkpoints{rank}.json").write_text(json.dumps(checkpoints))
        loaded = make_loaded("llama")
        steps = []
        finetune(loaded, qa_data(7), config, out, neuron_set=make_neuron_set(loaded), progress=False,
                 on_step=lambda step, loss: steps.append(step))
        (tmp_path / f"steps{rank}.json").write_text(json.dumps(steps))

    assert run_ranks(rank_job, (), tmp_path) == [0, 0], rank_errors(tmp_path)
    for rank in range(2):
        assert json.loads((tmp_path / f"checkpoints{rank}.json").read_text()) == ["step-0000002"]
        assert json.loads((tmp_path / f"steps{rank}.json").read_text()) == [3]  # only the missing step
    _assert_same_adapter(out, single_process.output_dir)
    assert not (out / "checkpoints").exists()


def test_a_model_split_over_devices_is_refused(monkeypatch, make_loaded):
    import accelerate

    from langneurons.finetune.parallel import data_parallel

    class OneOfTwoProcesses:  # what accelerate reports in rank 0 of a 2-process CPU run
        def __init__(self, cpu=False):
            self.process_index, self.num_processes, self.is_main_process = 0, 2, True
            self.device = torch.device("cpu")

    monkeypatch.setattr(accelerate, "Accelerator", OneOfTwoProcesses)
    monkeypatch.setenv("WORLD_SIZE", "2")
    loaded = make_loaded("llama")
    assert data_parallel(loaded.model).world_size == 2
    loaded.model.model.layers[1].to("meta")  # stands in for a second GPU
    with pytest.raises(LangNeuronsError, match="drop --device-map"):
        data_parallel(loaded.model)


@pytest.mark.slow
def test_accelerate_launch_command_trains_the_single_process_adapter(tmp_path):
    """``accelerate launch --cpu --num_processes 2 -m langneurons finetune`` == the same command alone."""
    from tiny import tiny_model, tiny_tokenizer

    model_dir = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    options = ["finetune", "--task", "xnli", "--model", str(model_dir), "--limit", "10", "--batch-size", "4",
               "--max-steps", "3", "--dropout", "0", "--lr", "5e-3", "--no-progress"]
    single = subprocess.run([sys.executable, "-m", "langneurons", *options, "--output", str(tmp_path / "one")],
                            env=launcher_env(), capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
              "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
              "--dynamo_backend", "no", "-m", "langneurons", *options, "--output", str(tmp_path / "two")]
    parallel = subprocess.run(launch, env=launcher_env(), capture_output=True, text=True, timeout=300)
    assert parallel.returncode == 0, parallel.stderr[-3000:]
    assert parallel.stdout.count("final loss") == 1  # rank 0 reports
    _assert_same_adapter(tmp_path / "two", tmp_path / "one")
