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
:mod:`.checkpoints`; the progress bar and loss curve in :mod:`.progress`.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from langneurons.artefacts import stable_hash
from langneurons.errors import LangNeuronsError
from langneurons.tasks.prompts import (
    DEFAULT_MAX_LENGTH,
    EncodedData,
    check_task,
    collate,
    encode_examples,
    nli_loss_sum,
    pad_id,
    qa_loss_sum,
)
from langneurons.finetune.checkpoints import (
    METADATA, NEURONS_FILE, FORMAT, checkpoint_folders, finetuned_loaded, load_finetuned, read_metadata, resume_from,
    rng_state, run_versions, save_adapter_dir, save_checkpoint, saved_adapter,
)
from langneurons.finetune.parallel import DataParallel, data_parallel
from langneurons.finetune.progress import LossProgress, smoothed
from langneurons.finetune.neuron_lora import (
    LoraModel,
    ParameterCounts,
    add_lora,
    check_mlp_targets,
    count_parameters,
)
from langneurons.identify.neuron_set import NeuronSet, as_neuron_set
from langneurons.languages import check_languages
from langneurons.models.loading import LoadedModel, ModelInfo

NEURON_MODES = ("languages", "random", "all", "none")
DEFAULT_RANK = {"xnli": 8, "xquad": 64}


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyper-parameters of one fine-tuning run.

    neurons: ``languages`` (union of the given languages' neurons from a NeuronSet), ``random``
        (layer-matched random neurons, as many per layer as that union), ``all`` MLP neurons, or
        ``none`` (no MLP adapter: attention-only LoRA).
    lora_r / lora_alpha / max_length: None picks the task default (r 8 for XNLI, 64 for XQuAD;
        alpha = 2 r; 256 / 512 tokens).
    attention_lora: plain LoRA on the attention projections; None = on only for ``none``.
    attention_targets: subset of the architecture's attention paths (None: all of them).
    mlp_targets: which neuron weights may change: gate rows, up rows, down columns.
    max_steps: optimizer steps (overrides ``epochs``); warmup_ratio: fraction of the steps.
    save_every: checkpoint every this many optimizer steps (0: none; the final adapter is always saved).
    activation_checkpointing: recompute each decoder layer's activations in the backward pass
        instead of keeping them (transformers' activation checkpointing): less memory for long
        XQuAD contexts and big models, about one more forward pass of time, the same weights.
    eval_every: score the held-out ``dev_examples`` of :func:`finetune` before the first step and
        every this many optimizer steps (0: never); the learning curve lands in the metadata.
    """

    task: str
    neurons: str = "none"
    languages: tuple[str, ...] = ()
    neuron_set_path: str | None = None
    lora_r: int | None = None
    lora_alpha: float | None = None
    lora_dropout: float = 0.05
    attention_lora: bool | None = None
    attention_targets: tuple[str, ...] | None = None
    mlp_targets: tuple[str, ...] = ("gate",)
    learning_rate: float = 2e-4
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 8
    grad_accumulation: int = 1
    warmup_ratio: float = 0.03
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 0
    bf16: bool = False
    max_length: int | None = None
    save_every: int = 100
    keep_checkpoints: int = 1
    activation_checkpointing: bool = False
    eval_every: int = 0

    def resolved(self) -> "FinetuneConfig":
        """A validated copy with the task defaults filled in."""
        task = check_task(self.task)
        if self.neurons not in NEURON_MODES:
            raise LangNeuronsError(f"unknown neuron mode {self.neurons!r}; choose one of {', '.join(NEURON_MODES)}")
        languages = tuple(check_languages(self.languages)) if self.neurons in ("languages", "random") else ()
        attention = self.neurons == "none" if self.attention_lora is None else self.attention_lora
        if self.neurons == "none" and not attention:
            raise LangNeuronsError("neuron mode 'none' without attention LoRA leaves nothing to train")
        if self.attention_targets is not None and not attention:
            raise LangNeuronsError("attention targets given but attention LoRA is off")
        r = self.lora_r or DEFAULT_RANK[task]
        for name, value in (("batch_size", self.batch_size), ("grad_accumulation", self.grad_accumulation),
                            ("epochs", self.epochs), ("keep_checkpoints", self.keep_checkpoints)):
            if value < 1:
                raise LangNeuronsError(f"{name} must be at least 1, got {value}")
        if self.eval_every < 0:
            raise LangNeuronsError(f"eval_every must be >= 0, got {self.eval_every}")
        if self.max_steps is not None and self.max_steps < 1:
            raise LangNeuronsError(f"max_steps must be at least 1, got {self.max_steps}")
        if not 0.0 <= self.warmup_ratio < 1.0 or self.weight_decay < 0 or self.learning_rate <= 0:
            raise LangNeuronsError("need 0 <= warmup_ratio < 1, weight_decay >= 0 and learning_rate > 0")
        return replace(
            self, languages=languages, attention_lora=attention, lora_r=r,
            lora_alpha=self.lora_alpha or 2.0 * r, mlp_targets=check_mlp_targets(self.mlp_targets),
            attention_targets=None if self.attention_targets is None else tuple(self.attention_targets),
            max_length=self.max_length or DEFAULT_MAX_LENGTH[task],
        )

    def run_key(self) -> dict:
        """The fields that decide the trained weights (not bookkeeping such as save_every)."""
        key = asdict(self)
        for bookkeeping in ("save_every", "keep_checkpoints", "neuron_set_path", "activation_checkpointing",
                            "eval_every"):
            key.pop(bookkeeping)
        return key


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


def training_neurons(
    config: FinetuneConfig, info: ModelInfo, neuron_set: NeuronSet | None
) -> tuple[torch.Tensor | None, NeuronSet | None]:
    """(bool [layers, neurons] mask of the neurons whose MLP weights may change, or None for
    attention-only; the NeuronSet it came from (languages/random modes))."""
    if config.neurons == "none":
        return None, None
    if config.neurons == "all":
        return torch.ones(info.num_layers, info.neurons_per_layer, dtype=torch.bool), None
    if neuron_set is None:
        if not config.neuron_set_path:
            raise LangNeuronsError(f"neuron mode {config.neurons!r} needs a neuron set (--neurons-file)")
        neuron_set = NeuronSet.load(config.neuron_set_path)
    neuron_set = as_neuron_set(neuron_set)
    neuron_set.check_model(info)
    union = torch.zeros(neuron_set.num_layers, neuron_set.neurons_per_layer, dtype=torch.bool)
    for language in config.languages:
        union |= neuron_set.mask(language)
    if not union.any():
        raise LangNeuronsError(f"the neuron set has no neurons for {', '.join(config.languages)}")
    chosen = NeuronSet.from_masks({"+".join(config.languages): union}, neuron_set.method,
                                  neuron_set.parameters, neuron_set.source)
    if config.neurons == "random":
        from langneurons.identify.random_control import random_control

        chosen = random_control(chosen, seed=config.seed)
    return chosen.mask(chosen.languages[0]), chosen


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
    neuron_set: NeuronSet | str | os.PathLike | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    dev_examples: Sequence | None = None,
    dev_language: str = "en",
) -> FinetuneResult:
    """Fine-tune ``loaded`` with LoRA on ``train_examples`` (NLIExample or QAExample).

    ``loaded.model`` is wrapped in place (LoRA layers injected); the returned ``result.model`` is
    the trained PEFT model. A run already finished in ``output_dir`` with the same base model,
    data, neurons and hyper-parameters is not repeated; a matching checkpoint is resumed; a
    different run in ``output_dir`` is an error. ``on_step(step, loss)`` is called after every
    optimizer step (1-based step). With ``dev_examples`` (held out from training) and
    ``config.eval_every``, the metadata's ``curve`` holds the dev score (XNLI accuracy, XQuAD F1,
    percent) at step 0 and every ``eval_every`` steps and at the last step.
    """
    from transformers import get_linear_schedule_with_warmup

    config = config.resolved()
    output_dir = Path(output_dir)
    if config.bf16 and loaded.device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise LangNeuronsError("bf16 training needs a GPU with bfloat16 support")
    neuron_mask, chosen_set = training_neurons(config, loaded.info, neuron_set)
    data = encode_examples(loaded.tokenizer, config.task, train_examples, config.max_length)
    data_hash = stable_hash([[e.input_ids, e.labels, e.class_label] for e in data.examples])
    neuron_hash = stable_hash(neuron_mask) if neuron_mask is not None else ""
    run_hash = stable_hash(loaded.info.weights_fingerprint, config.run_key(), data_hash, neuron_hash)

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

    parallel = data_parallel(loaded.model)
    main = parallel is None or parallel.is_main
    if config.activation_checkpointing:
        _enable_activation_checkpointing(loaded.model)
    torch.manual_seed(config.seed)  # the same LoRA initialisation in every process
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

    metadata = _run_metadata(run_hash, loaded.info, config, neuron_mask, chosen_set, data, data_hash, neuron_hash,
                             lora, counts, total_steps)
    step, losses = resume_from(checkpoints[-1], model, optimizer, scheduler, parallel) if checkpoints else (0, [])
    curve = list(read_metadata(checkpoints[-1]).get("curve", [])) if checkpoints else []
    dev_score = _dev_scorer(loaded, model, config, dev_examples, dev_language) if main else None

    def write_neurons(folder: Path) -> None:
        if chosen_set is not None:
            chosen_set.save(folder / NEURONS_FILE)

    device = next(model.parameters()).device
    label_ids = data.label_token_ids.to(device) if data.label_token_ids is not None else None
    pad = pad_id(loaded.tokenizer)
    if dev_score is not None and step == 0:
        curve.append({"step": 0, **dev_score()})
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
                curve.append({"step": step, **dev_score()})
            if config.save_every and step % config.save_every == 0 and step < total_steps:
                rng = parallel.gather(rng_state()) if parallel is not None else rng_state()
                if main:
                    save_checkpoint(output_dir, step, lora,
                                     dict(metadata, step=step, final_loss=loss, complete=False, curve=curve),
                                     optimizer, scheduler, losses, rng, config.keep_checkpoints, write_neurons)
                if parallel is not None:
                    parallel.wait()
            if on_step is not None:
                on_step(step, loss)
    model.eval()
    if config.activation_checkpointing:
        loaded.model.activation_checkpointing_disable()
        loaded.model.disable_input_require_grads()

    final = dict(metadata, step=step, final_loss=losses[-1] if losses else float("nan"), losses=losses, complete=True,
                 curve=curve, smoothed_loss=smoothed(losses))
    if main:
        staging = output_dir / ".final"
        save_adapter_dir(staging, lora, final, write_neurons)
        for path in sorted(staging.iterdir(), key=lambda p: p.name == METADATA):  # metadata last
            os.replace(path, output_dir / path.name)
        staging.rmdir()
        shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
    if parallel is not None:
        parallel.wait()  # the adapter is on disk for every process
    return FinetuneResult(
        output_dir=output_dir, step=step, total_steps=total_steps, final_loss=final["final_loss"], parameters=counts,
        examples=len(data.examples), skipped=data.skipped, truncated=data.truncated,
        trained_neurons=metadata["neurons"]["count"],
        model=finetuned_loaded(loaded, model, saved_adapter(output_dir), output_dir), metadata=final,
    )


def _dev_scorer(loaded: LoadedModel, model: nn.Module, config: FinetuneConfig,
                dev_examples: Sequence | None, language: str) -> Callable[[], dict] | None:
    """A function scoring the model being trained on ``dev_examples`` (eval mode, then back to
    train): ``{"dev_metric": ..., "dev_score": percent, "dev_n": n}``; None when not asked for."""
    if not dev_examples or not config.eval_every:
        return None
    from langneurons.evaluate.evaluation import predict, prepare_task

    prepared = prepare_task(loaded.tokenizer, config.task, language, dev_examples, config.max_length,
                            32 if config.task == "xquad" else 0)
    current = LoadedModel(model=model, tokenizer=loaded.tokenizer, info=loaded.info, adapter=loaded.adapter)
    metric = "correct" if config.task == "xnli" else "f1"

    def score() -> dict:
        model.eval()
        with torch.no_grad():
            records = predict(current, prepared, batch_size=config.batch_size)
        model.train()
        values = [float(r[metric]) * (100.0 if metric == "correct" else 1.0) for r in records]
        return {"dev_metric": "accuracy" if metric == "correct" else "f1", "dev_score": sum(values) / len(values),
                "dev_n": len(values)}

    return score


def _run_metadata(run_hash: str, info: ModelInfo, config: FinetuneConfig, neuron_mask: torch.Tensor | None,
                  chosen_set: NeuronSet | None, data: EncodedData, data_hash: str, neuron_hash: str, lora: LoraModel,
                  counts: ParameterCounts, total_steps: int) -> dict:
    return {
        "format": FORMAT,
        "run_hash": run_hash,
        "base": info.to_dict(),
        "task": config.task,
        "neurons": {
            "mode": config.neurons, "languages": list(config.languages), "neuron_set_path": config.neuron_set_path,
            "hash": neuron_hash, "count": int(neuron_mask.sum()) if neuron_mask is not None else 0,
            "per_layer": neuron_mask.sum(1).tolist() if neuron_mask is not None else [],
            "method": chosen_set.method if chosen_set else None,
            "source": chosen_set.source if chosen_set else None,
        },
        "data": {"hash": data_hash, "examples": len(data.examples), "skipped": data.skipped,
                 "truncated": data.truncated},
        "config": asdict(config),
        "lora": {"target_modules": lora.target_modules, "masked_modules": sum(m.mask is not None for m in lora.plan)},
        "parameters": asdict(counts),
        "total_steps": total_steps,
        "versions": run_versions(),
    }


def _finished_result(output_dir: Path, metadata: dict, loaded: LoadedModel) -> FinetuneResult:
    finetuned = load_finetuned(output_dir, base=loaded)
    return FinetuneResult(
        output_dir=output_dir, step=metadata["step"], total_steps=metadata["total_steps"],
        final_loss=metadata["final_loss"], parameters=ParameterCounts(**metadata["parameters"]),
        examples=metadata["data"]["examples"], skipped=metadata["data"]["skipped"],
        truncated=metadata["data"]["truncated"], trained_neurons=metadata["neurons"]["count"],
        model=finetuned, metadata=metadata,
    )


