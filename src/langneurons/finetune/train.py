"""Fine-tuning loop (plain LoRA or neuron-specific LoRA), checkpoints, resume and loading.

One explicit loop: AdamW + linear warm-up/decay (``transformers.get_linear_schedule_with_warmup``),
gradient accumulation with the loss normalised by the number of target tokens of the whole
optimizer step, gradient clipping, optional bf16 autocast. The data order is a function of
``(seed, epoch)`` only, so a run resumed from a checkpoint (parameters, optimizer, scheduler, RNG
state and step restored) ends with exactly the weights of an uninterrupted run. Under
``accelerate launch`` / ``torchrun`` the same loop runs data-parallel (:mod:`.parallel`): each
process takes its share of every micro-batch and the gradients are summed once per step, so the
result does not depend on the number of processes.

Output directory::

    adapter_config.json, adapter_model.safetensors   PEFT adapter (masked factors baked in)
    langneurons_finetune.json                        metadata (written last: marks a finished run)
    training_neurons.json                            the neurons whose MLP weights could change
    checkpoints/step-0000100/                        adapter + metadata + training_state.safetensors
                                                     (parameters, optimizer moments, RNG states)
                                                     + training_state.json (step, losses, scheduler)

Resume state holds only tensors (safetensors) and JSON, never Python objects: a checkpoint folder
someone else wrote cannot run code here.

Every directory appears under its final name only once complete (staging dir + rename). The
folder's file names, checkpoints, resume state and :func:`load_finetuned` are in
:mod:`.checkpoints`; the progress bar and loss curve in :mod:`.progress`; dev scoring in
:mod:`.dev`; the trained neurons in :mod:`.neurons`.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from langneurons.artefacts import stable_hash
from langneurons.errors import LangNeuronsError
from langneurons.tasks.prompts import (
    EncodedData,
    collate,
    encode_examples,
    nli_loss_sum,
    pad_id,
    qa_loss_sum,
)
from langneurons.finetune.parallel import DataParallel, data_parallel
from langneurons.finetune.neuron_lora import (
    ParameterCounts,
    add_lora,
    count_parameters,
)
from langneurons.finetune.lm_task import LM_TASK, encode_lm
from langneurons.finetune.rows import add_rows
from langneurons.finetune.selection import LR_SEARCH_DIR, EarlyStopping, check_disjoint, search_learning_rate
from langneurons.identify.neuron_set import NeuronSet
from langneurons.models.loading import LoadedModel
from langneurons.finetune.options import DEFAULT_RANK, NEURON_MODES, NEW_DEFAULTS, FinetuneConfig  # noqa: F401
from langneurons.finetune.checkpoints import (
    METADATA, NEURONS_FILE, checkpoint_folders, finetuned_loaded, load_finetuned, read_metadata, resume_from,
    rng_state, run_metadata, save_adapter_dir, save_checkpoint, saved_adapter,
)
from langneurons.finetune.dev import dev_scorer
from langneurons.finetune.neurons import training_neurons
from langneurons.finetune.progress import LossProgress, smoothed


@dataclass
class FinetuneResult:
    output_dir: Path
    step: int
    total_steps: int
    final_loss: float
    parameters: ParameterCounts
    examples: int
    skipped: int
    truncated: int
    trained_neurons: int
    model: LoadedModel = field(repr=False)
    metadata: dict = field(repr=False, default_factory=dict)


# ---------------------------------------------------------------------------------- neurons


# ---------------------------------------------------------------------------------- loop


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


class _Batches:
    """Micro-batch ``m`` = slice ``m % per_epoch`` of the permutation of epoch ``m // per_epoch``."""

    def __init__(self, data: EncodedData, batch_size: int, seed: int):
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.per_epoch = math.ceil(len(data.examples) / batch_size)
        self._orders: dict[int, torch.Tensor] = {}

    def __getitem__(self, m: int) -> list:
        epoch, index = divmod(m, self.per_epoch)
        if epoch not in self._orders:
            self._orders = {epoch: _epoch_order(len(self.data.examples), self.seed, epoch)}
        chosen = self._orders[epoch][index * self.batch_size : (index + 1) * self.batch_size]
        return [self.data.examples[i] for i in chosen.tolist()]


def batch_loss_sum(
    model: nn.Module, batch: dict[str, torch.Tensor], label_token_ids: torch.Tensor | None
) -> torch.Tensor:
    """Summed loss of a collated batch (QA: answer tokens + EOS; NLI: verbaliser 3-way CE)."""
    if "labels" in batch:
        return qa_loss_sum(model, batch)
    return nli_loss_sum(model, batch, label_token_ids)


def train_step(model: nn.Module, micro_batches: Sequence[dict[str, torch.Tensor]], optimizer, scheduler=None,
               label_token_ids: torch.Tensor | None = None, max_grad_norm: float = 1.0, bf16: bool = False,
               targets: int | None = None, parallel: DataParallel | None = None) -> float:
    """One optimizer step over ``micro_batches`` (already on the model's device); returns the
    mean loss per target token of the step.

    targets: target tokens of the whole step (all processes); None counts those of ``micro_batches``.
    parallel: sum the gradients (and the loss) over the processes before clipping and stepping.
    """
    device = next(model.parameters()).device
    if targets is None:
        targets = sum(int((b["labels"] != -100).sum()) if "labels" in b else len(b["input_ids"])
                      for b in micro_batches)
    total = 0.0
    for batch in micro_batches:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = batch_loss_sum(model, batch, label_token_ids) / targets
        loss.backward()
        total += float(loss.detach())
    trainable = [p for p in model.parameters() if p.requires_grad]
    if parallel is not None:
        parallel.sum_gradients(trainable)
        total = parallel.sum(total)
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return total


def _enable_activation_checkpointing(model: nn.Module) -> None:
    """transformers' activation checkpointing (non-reentrant, so LoRA layers need no input grads)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise LangNeuronsError(f"{type(model).__name__} does not support activation checkpointing")
    model.activation_checkpointing_enable({"use_reentrant": False})


def finetune(
    loaded: LoadedModel,
    train_examples: Sequence,
    config: FinetuneConfig,
    output_dir: str | os.PathLike,
    neuron_set: NeuronSet | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    dev_examples: Sequence | None = None,
    dev_language: str = "en",
    lr_search: dict | None = None,
) -> FinetuneResult:
    """Fine-tune ``loaded`` with LoRA on ``train_examples`` (NLIExample or QAExample; texts for
    task ``lm``).

    ``loaded.model`` is wrapped in place (LoRA layers injected); the returned ``result.model`` is
    the trained PEFT model. A run already finished in ``output_dir`` with the same base model,
    data, neurons and hyper-parameters is not repeated; a matching checkpoint is resumed; a
    different run in ``output_dir`` is an error. ``on_step(step, loss)`` is called after every
    optimizer step (1-based step). With ``dev_examples`` (held out from training) and
    ``config.eval_every``, the metadata's ``curve`` holds the dev score (XNLI accuracy, XQuAD F1,
    percent) at step 0 and every ``eval_every`` steps and at the last step. ``lr_search``: the
    record of a learning-rate search already made for this configuration (e.g. by another seed of
    the run, ``metadata["lr_search"]``): its choice is used instead of searching again.
    """
    from transformers import get_linear_schedule_with_warmup

    config = config.resolved()
    output_dir = Path(output_dir)
    if config.bf16 and loaded.device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise LangNeuronsError("bf16 training needs a GPU with bfloat16 support")
    neuron_mask, chosen_set = training_neurons(config, loaded.info, neuron_set)
    if config.task == LM_TASK:
        data = encode_lm(loaded.tokenizer, train_examples, config.max_length, dev_language)
    else:
        data = encode_examples(loaded.tokenizer, config.task, train_examples, config.max_length)
    data_hash = stable_hash([[e.input_ids, e.labels, e.class_label] for e in data.examples])
    neuron_hash = stable_hash(neuron_mask) if neuron_mask is not None else ""
    run_hash = stable_hash(loaded.info.weights_fingerprint, config.run_key(), data_hash, neuron_hash)
    if config.learning_rates or config.patience:  # choices made on the dev examples: they decide the weights too
        if not dev_examples:
            raise LangNeuronsError("learning_rates and patience choose on development examples; give a dev split "
                                   "of the training data (dev_limit)")
        check_disjoint(train_examples, dev_examples)
        run_hash = stable_hash(run_hash, [getattr(e, "id", e) for e in dev_examples or ()])
    if config.learning_rates and lr_search is not None:
        if [float(r) for r in lr_search["candidates"]] != list(config.learning_rates):
            raise LangNeuronsError("the reused learning-rate search tried other candidates than learning_rates")
        run_hash = stable_hash(run_hash, "reused search", lr_search["chosen"])

    if (output_dir / METADATA).is_file():
        finished = read_metadata(output_dir)
        if finished.get("run_hash") != run_hash:
            raise LangNeuronsError(f"{output_dir} holds a different fine-tuning run; choose another output directory")
        return _finished_result(output_dir, finished, loaded)
    checkpoints = checkpoint_folders(output_dir)
    if checkpoints and read_metadata(checkpoints[-1]).get("run_hash") != run_hash:
        raise LangNeuronsError(
            f"checkpoint {checkpoints[-1]} belongs to a different fine-tuning run; choose another output directory"
        )

    from langneurons.launch import world_size_from_env

    if (config.learning_rates or config.patience) and world_size_from_env() > 1:
        raise LangNeuronsError("the learning-rate search and early stopping run in one process: choose them with a "
                               "single-process run, then launch data-parallel with learning_rate and max_steps")
    if not config.learning_rates:
        lr_search = None
    elif lr_search is not None:  # another run's search (e.g. the first seed): its choice, not searched again
        lr_search = dict(lr_search, reused=True)
        config = replace(config, learning_rate=float(lr_search["chosen"]))
    else:  # short runs on copies of the base model, scored on the dev examples only
        lr_search = search_learning_rate(loaded, train_examples, config, output_dir, dev_examples, dev_language,
                                         neuron_set, progress)
        config = replace(config, learning_rate=lr_search["chosen"])
    parallel = data_parallel(loaded.model)
    main = parallel is None or parallel.is_main
    if config.activation_checkpointing:
        _enable_activation_checkpointing(loaded.model)
    torch.manual_seed(config.seed)  # the same LoRA initialisation in every process
    if config.adapter == "rows":
        lora = add_rows(loaded.adapter, neuron_mask, config.mlp_targets)
    else:
        lora = add_lora(
            loaded.adapter, r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout,
            neuron_mask=neuron_mask, mlp_targets=config.mlp_targets, attention_lora=config.attention_lora,
            attention_targets=config.attention_targets,
        )
    if parallel is not None:  # but each process its own dropout masks
        torch.manual_seed(config.seed * 1_000_003 + 7919 * (parallel.rank + 1))
    model = lora.model
    counts = count_parameters(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    batches = _Batches(data, config.batch_size, config.seed)
    micro_total = config.epochs * batches.per_epoch
    total_steps = config.max_steps or math.ceil(micro_total / config.grad_accumulation)
    if config.max_steps:
        micro_total = config.max_steps * config.grad_accumulation
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)

    metadata = run_metadata(run_hash, loaded.info, config, neuron_mask, chosen_set, data, data_hash, neuron_hash,
                             lora, counts, total_steps)
    metadata.update(adapter=config.adapter, lr_search=lr_search)
    if config.neurons == "random":
        metadata["neurons"]["random_seed"] = config.seed  # a fresh layer-matched set per run seed
    step, losses = resume_from(checkpoints[-1], model, optimizer, scheduler, parallel) if checkpoints else (0, [])
    curve = list(read_metadata(checkpoints[-1]).get("curve", [])) if checkpoints else []
    dev_score = dev_scorer(loaded, model, config, dev_examples, dev_language) if main else None
    stopper = EarlyStopping(config.patience) if config.patience and dev_score is not None else None
    if stopper is not None and checkpoints:
        stopper.load(checkpoints[-1], read_metadata(checkpoints[-1]).get("early_stopping"))
    stopped = False

    def write_neurons(folder: Path) -> None:
        if chosen_set is not None:
            chosen_set.save(folder / NEURONS_FILE)

    def write_checkpoint_extra(folder: Path) -> None:
        write_neurons(folder)
        if stopper is not None:
            stopper.save(folder)

    def evaluate(at: int) -> None:
        nonlocal stopped
        curve.append({"step": at, **dev_score()})
        if stopper is not None:
            trainable_now = {n: p for n, p in model.named_parameters() if p.requires_grad}
            stopped = stopper.update(at, curve[-1]["dev_score"], curve[-1]["dev_metric"], trainable_now)

    device = next(model.parameters()).device
    label_ids = data.label_token_ids.to(device) if data.label_token_ids is not None else None
    pad = pad_id(loaded.tokenizer)
    if dev_score is not None and step == 0:
        evaluate(0)
    model.train()
    with LossProgress(f"fine-tune {config.task}", total_steps, step, enabled=progress and main) as bar:
        while step < total_steps:
            micro = range(step * config.grad_accumulation, min((step + 1) * config.grad_accumulation, micro_total))
            step_examples = [batches[m] for m in micro]
            targets = sum(e.target_count for examples in step_examples for e in examples)
            if parallel is not None:
                step_examples = [share for share in map(parallel.share, step_examples) if share]
            micro_batches = [{k: v.to(device) for k, v in collate(examples, pad).items()} for examples in step_examples]
            loss = train_step(model, micro_batches, optimizer, scheduler, label_ids, config.max_grad_norm, config.bf16,
                              targets=targets, parallel=parallel)
            step += 1
            losses.append(loss)
            bar.update(step, loss)
            if dev_score is not None and (step % config.eval_every == 0 or step == total_steps):
                evaluate(step)
            if config.save_every and step % config.save_every == 0 and step < total_steps and not stopped:
                rng = parallel.gather(rng_state()) if parallel is not None else rng_state()
                if main:
                    save_checkpoint(output_dir, step, lora,
                                     dict(metadata, step=step, final_loss=loss, complete=False, curve=curve,
                                          early_stopping=stopper.state() if stopper else None),
                                     optimizer, scheduler, losses, rng, config.keep_checkpoints, write_checkpoint_extra)
                if parallel is not None:
                    parallel.wait()
            if on_step is not None:
                on_step(step, loss)
            if stopped:
                break
    model.eval()
    early_stopping = None
    if stopper is not None:  # the best evaluated parameters become the final adapter
        stopper.restore({n: p for n, p in model.named_parameters() if p.requires_grad})
        early_stopping = dict(stopper.state(), stopped_step=step, stopped_early=stopped)
    if config.activation_checkpointing:
        loaded.model.activation_checkpointing_disable()
        loaded.model.disable_input_require_grads()

    final = dict(metadata, step=step, final_loss=losses[-1] if losses else float("nan"), losses=losses, complete=True,
                 curve=curve, smoothed_loss=smoothed(losses), early_stopping=early_stopping)
    if main:
        staging = output_dir / ".final"
        save_adapter_dir(staging, lora, final, write_neurons)
        for path in sorted(staging.iterdir(), key=lambda p: p.name == METADATA):  # metadata last
            os.replace(path, output_dir / path.name)
        staging.rmdir()
        shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
        shutil.rmtree(output_dir / LR_SEARCH_DIR, ignore_errors=True)
    if parallel is not None:
        parallel.wait()  # the adapter is on disk for every process
    return FinetuneResult(
        output_dir=output_dir, step=step, total_steps=total_steps, final_loss=final["final_loss"], parameters=counts,
        examples=len(data.examples), skipped=data.skipped, truncated=data.truncated,
        trained_neurons=metadata["neurons"]["count"],
        model=finetuned_loaded(loaded, model, saved_adapter(output_dir), output_dir), metadata=final,
    )


def _finished_result(output_dir: Path, metadata: dict, loaded: LoadedModel) -> FinetuneResult:
    finetuned = load_finetuned(output_dir, base=loaded)
    return FinetuneResult(
        output_dir=output_dir, step=metadata["step"], total_steps=metadata["total_steps"],
        final_loss=metadata["final_loss"], parameters=ParameterCounts(**metadata["parameters"]),
        examples=metadata["data"]["examples"], skipped=metadata["data"]["skipped"],
        truncated=metadata["data"]["truncated"], trained_neurons=metadata["neurons"]["count"],
        model=finetuned, metadata=metadata,
    )


