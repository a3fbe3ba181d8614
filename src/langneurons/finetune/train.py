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

Every directory appears under its final name only once complete (staging dir + rename).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from langneurons import __version__
from langneurons.artefacts import atomic_save_safetensors, stable_hash, staging_dir, write_json
from langneurons.errors import LangNeuronsError, warn
from langneurons.finetune.formatting import (
    DEFAULT_MAX_LENGTH,
    EncodedData,
    check_task,
    collate,
    encode_examples,
    nli_loss_sum,
    pad_id,
    qa_loss_sum,
)
from langneurons.finetune.parallel import DataParallel, data_parallel
from langneurons.finetune.neuron_lora import (
    ADAPTER_NAME,
    LoraModel,
    ParameterCounts,
    adapter_state_dict,
    add_lora,
    check_mlp_targets,
    count_parameters,
)
from langneurons.finetune.lm_task import DEFAULT_BLOCK_LENGTH, LM_TASK, encode_lm
from langneurons.finetune.rows import ADAPTERS, ROWS_FILE, RowsModel, add_rows, apply_saved_rows
from langneurons.finetune.selection import LR_SEARCH_DIR, EarlyStopping, check_disjoint, search_learning_rate
from langneurons.identify.neuron_set import NeuronSet
from langneurons.languages import check_languages
from langneurons.models.architectures import adapter_for
from langneurons.models.loading import DEFAULT_MODEL, DEFAULT_MODEL_ID, LoadedModel, ModelInfo, load_model

METADATA = "langneurons_finetune.json"
TRAINING_STATE = "training_state.safetensors"
"""Tensors of the resume state: trainable parameters, optimizer state tensors, RNG states (uint8)."""
TRAINING_STATE_JSON = "training_state.json"
"""Everything else of the resume state: step, losses, scheduler, optimizer hyper-parameters."""
LEGACY_TRAINING_STATE = "training_state.pt"  # torch.save of older versions; never loaded
STATE_FORMAT = "langneurons.training-state/1"
NEURONS_FILE = "training_neurons.json"
FORMAT = "langneurons.finetune/1"
NEURON_MODES = ("languages", "random", "all", "none")
DEFAULT_RANK = {"xnli": 8, "xquad": 64, LM_TASK: 8}
NEW_DEFAULTS = {"adapter": "lora", "learning_rates": (), "lr_search_steps": 0, "patience": 0}
"""Fields added after runs were published: left out of the run key at these values (same hashes)."""


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
    mlp_targets: which neuron weights may change: gate rows, up rows, down columns (None: gate rows
        for LoRA; all three, the neuron's own weights, for ``adapter rows``).
    max_steps: optimizer steps (overrides ``epochs``); warmup_ratio: fraction of the steps.
    save_every: checkpoint every this many optimizer steps (0: none; the final adapter is always saved).
    activation_checkpointing: recompute each decoder layer's activations in the backward pass
        instead of keeping them (transformers' activation checkpointing): less memory for long
        XQuAD contexts and big models, about one more forward pass of time, the same weights.
    eval_every: score the held-out ``dev_examples`` of :func:`finetune` before the first step and
        every this many optimizer steps (0: never); the learning curve lands in the metadata.
    task: ``xnli``, ``xquad`` or ``lm`` (causal-LM loss on texts; :mod:`.lm_task`).
    adapter: ``lora`` (LoRA / neuron-masked LoRA) or ``rows`` (the chosen neurons' own weight rows
        and columns, :mod:`.rows`; needs neurons languages/random/all, no attention LoRA).
    learning_rates / lr_search_steps: candidates tried for ``lr_search_steps`` steps each on the
        dev examples before training; the best replaces ``learning_rate`` (:mod:`.selection`).
    patience: stop after this many dev evaluations without improvement and keep the best
        evaluated adapter, the untrained start (step 0) included (0: train all steps, keep the last).
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
    mlp_targets: tuple[str, ...] | None = None
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
    adapter: str = "lora"
    learning_rates: tuple[float, ...] = ()
    lr_search_steps: int = 0
    patience: int = 0

    def resolved(self) -> "FinetuneConfig":
        """A validated copy with the task defaults filled in."""
        task = self.task if self.task == LM_TASK else check_task(self.task)
        if self.adapter not in ADAPTERS:
            raise LangNeuronsError(f"unknown adapter {self.adapter!r}; choose one of {', '.join(ADAPTERS)}")
        if self.adapter == "rows" and (self.neurons == "none" or self.attention_lora):
            raise LangNeuronsError("adapter 'rows' trains neuron weights: choose neurons languages, random or all, "
                                   "without attention LoRA")
        if self.learning_rates and (self.lr_search_steps < 1 or any(r <= 0 for r in self.learning_rates)):
            raise LangNeuronsError("learning_rates need lr_search_steps >= 1 and every rate > 0")
        if self.patience < 0 or (self.patience and not self.eval_every):
            raise LangNeuronsError("patience must be >= 0 and needs eval_every > 0 (dev evaluations to count)")
        if self.neurons not in NEURON_MODES:
            raise LangNeuronsError(f"unknown neuron mode {self.neurons!r}; choose one of {', '.join(NEURON_MODES)}")
        languages = tuple(check_languages(self.languages)) if self.neurons in ("languages", "random") else ()
        attention = (self.neurons == "none" if self.attention_lora is None else self.attention_lora) \
            and self.adapter == "lora"
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
            lora_alpha=self.lora_alpha or 2.0 * r, mlp_targets=check_mlp_targets(
                self.mlp_targets or (("gate", "up", "down") if self.adapter == "rows" else ("gate",))),
            attention_targets=None if self.attention_targets is None else tuple(self.attention_targets),
            max_length=self.max_length or DEFAULT_MAX_LENGTH.get(task, DEFAULT_BLOCK_LENGTH),
            learning_rates=tuple(float(r) for r in self.learning_rates),
        )

    def run_key(self) -> dict:
        """The fields that decide the trained weights (not bookkeeping such as save_every)."""
        key = asdict(self)
        for bookkeeping in ("save_every", "keep_checkpoints", "neuron_set_path", "activation_checkpointing",
                            "eval_every"):
            key.pop(bookkeeping)
        for name, default in NEW_DEFAULTS.items():
            if key[name] == default:
                key.pop(name)
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


def _rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_adapter_dir(
    target: Path, lora: LoraModel, metadata: dict, extra: Callable[[Path], None] | None = None
) -> None:
    """Write adapter + metadata (+ extra files) into a staging dir and rename it to ``target``."""
    staging = staging_dir(target.parent, prefix=f".{target.name}-")
    try:
        if isinstance(lora, RowsModel):
            lora.save(staging)
        else:
            lora.model.save_pretrained(str(staging), state_dict=adapter_state_dict(lora.model))
        if extra is not None:
            extra(staging)
        write_json(staging / METADATA, metadata)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _checkpoints(output_dir: Path) -> list[Path]:
    folder = output_dir / "checkpoints"
    found = [p for p in folder.glob("step-*") if (p / METADATA).is_file() and (p / TRAINING_STATE).is_file()
             and p.name.removeprefix("step-").isdigit()]
    legacy = [p for p in folder.glob("step-*") if (p / LEGACY_TRAINING_STATE).is_file() and p not in found]
    if legacy:
        warn(f"ignoring {len(legacy)} checkpoint(s) in {folder} with {LEGACY_TRAINING_STATE} (older format, never "
             "loaded: loading it could run code); training resumes from a newer checkpoint or starts over")
    return sorted(found, key=lambda p: int(p.name.removeprefix("step-")))


def _read_metadata(folder: Path) -> dict:
    path = folder / METADATA
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise LangNeuronsError(f"cannot read fine-tuning metadata {path}: {error}") from error
    if metadata.get("format") != FORMAT:
        raise LangNeuronsError(f"{path} is not langneurons fine-tuning metadata")
    return metadata


def _versions() -> dict:
    import peft
    import transformers

    return {"langneurons": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__}


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
        finished = _read_metadata(output_dir)
        if finished.get("run_hash") != run_hash:
            raise LangNeuronsError(f"{output_dir} holds a different fine-tuning run; choose another output directory")
        return _finished_result(output_dir, finished, loaded)
    checkpoints = _checkpoints(output_dir)
    if checkpoints and _read_metadata(checkpoints[-1]).get("run_hash") != run_hash:
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

    metadata = _run_metadata(run_hash, loaded.info, config, neuron_mask, chosen_set, data, data_hash, neuron_hash,
                             lora, counts, total_steps)
    metadata.update(adapter=config.adapter, lr_search=lr_search)
    if config.neurons == "random":
        metadata["neurons"]["random_seed"] = config.seed  # a fresh layer-matched set per run seed
    step, losses = _resume(checkpoints[-1], model, optimizer, scheduler, parallel) if checkpoints else (0, [])
    curve = list(_read_metadata(checkpoints[-1]).get("curve", [])) if checkpoints else []
    dev_score = _dev_scorer(loaded, model, config, dev_examples, dev_language) if main else None
    stopper = EarlyStopping(config.patience) if config.patience and dev_score is not None else None
    if stopper is not None and checkpoints:
        stopper.load(checkpoints[-1], _read_metadata(checkpoints[-1]).get("early_stopping"))
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
    with _LossProgress(f"fine-tune {config.task}", total_steps, step, enabled=progress and main) as bar:
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
                rng = parallel.gather(_rng_state()) if parallel is not None else _rng_state()
                if main:
                    _save_checkpoint(output_dir, step, lora,
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
        _save_adapter_dir(staging, lora, final, write_neurons)
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
        model=_finetuned_loaded(loaded, model, _saved_adapter(output_dir), output_dir), metadata=final,
    )


def smoothed(losses: Sequence[float], window: int = 20) -> list[float]:
    """Trailing moving average of per-step losses (nats per target token) over ``window`` steps
    (fewer at the start): a one-batch loss says little about where training stands."""
    values = torch.tensor(list(losses), dtype=torch.float64)
    if not len(values):
        return []
    sums = torch.cat([torch.zeros(1, dtype=torch.float64), values.cumsum(0)])
    ends = torch.arange(1, len(values) + 1)
    starts = (ends - window).clamp(min=0)
    return ((sums[ends] - sums[starts]) / (ends - starts)).tolist()


def _dev_scorer(loaded: LoadedModel, model: nn.Module, config: FinetuneConfig,
                dev_examples: Sequence | None, language: str) -> Callable[[], dict] | None:
    """A function scoring the model being trained on ``dev_examples`` (eval mode, then back to
    train): ``{"dev_metric": ..., "dev_score": percent, "dev_n": n}``; None when not asked for."""
    if not dev_examples or not config.eval_every:
        return None
    if config.task == LM_TASK:
        return _lm_dev_scorer(loaded, model, config, dev_examples, language)
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


def _lm_dev_scorer(loaded: LoadedModel, model: nn.Module, config: FinetuneConfig, texts: Sequence[str],
                   language: str) -> Callable[[], dict]:
    """Dev perplexity of the LM task on ``texts`` packed like the training text (lower is better)."""
    from langneurons.finetune.lm_task import lm_blocks
    from langneurons.intervene.perplexity import perplexity

    blocks = lm_blocks(loaded.tokenizer, texts, language, config.max_length)
    current = LoadedModel(model=model, tokenizer=loaded.tokenizer, info=loaded.info, adapter=loaded.adapter)

    def score() -> dict:
        model.eval()
        result = perplexity(current, blocks, batch_size=config.batch_size, progress=False)
        model.train()
        return {"dev_metric": "perplexity", "dev_score": result.perplexity, "dev_n": result.token_count}

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
        "versions": _versions(),
    }


def _save_checkpoint(output_dir: Path, step: int, lora: LoraModel, metadata: dict, optimizer, scheduler,
                     losses: list[float], rng: dict | list[dict], keep: int,
                     write_neurons: Callable[[Path], None]) -> None:
    """rng: this process's RNG state, or (data-parallel) one per process in rank order."""
    parameters = {n: p for n, p in lora.model.named_parameters() if p.requires_grad}

    def extra(folder: Path) -> None:
        write_training_state(folder, step, parameters, optimizer.state_dict(), scheduler.state_dict(), rng, losses)
        write_neurons(folder)

    _save_adapter_dir(output_dir / "checkpoints" / f"step-{step:07d}", lora, metadata, extra)
    for old in _checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def write_training_state(folder: Path, step: int, parameters: dict[str, torch.Tensor], optimizer_state: dict,
                         scheduler_state: dict, rng: dict | list[dict], losses: list[float]) -> None:
    """Resume state as tensors and JSON only: tensors in ``training_state.safetensors`` (``parameters.<name>``,
    ``optimizer.<param index>.<key>``, ``rng.<process>.cpu`` / ``rng.<process>.cuda.<device>`` as
    uint8), the rest as JSON in ``training_state.json``."""
    tensors = {f"parameters.{name}": value.detach().cpu().clone().contiguous() for name, value in parameters.items()}
    moments: dict[str, dict] = {}
    for index, entry in optimizer_state["state"].items():
        moments[str(index)] = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().clone().contiguous()
            else:
                moments[str(index)][key] = value
    per_process = isinstance(rng, list)
    states = rng if per_process else [rng]
    cuda_devices = []
    for process, state in enumerate(states):
        tensors[f"rng.{process}.cpu"] = state["cpu"].contiguous()
        cuda = state.get("cuda") or []
        cuda_devices.append(len(cuda))
        for device, value in enumerate(cuda):
            tensors[f"rng.{process}.cuda.{device}"] = value.contiguous()
    scalars = {
        "format": STATE_FORMAT, "step": step, "losses": list(losses), "scheduler": scheduler_state,
        "optimizer": {"param_groups": optimizer_state["param_groups"], "scalars": moments,
                      "tensor_state": {str(i): sorted(k for k, v in e.items() if isinstance(v, torch.Tensor))
                                       for i, e in optimizer_state["state"].items()}},
        "parameters": sorted(parameters), "rng": {"per_process": per_process, "cuda_devices": cuda_devices},
    }
    try:
        text = json.dumps(scalars, indent=1, sort_keys=True, allow_nan=True)
    except TypeError as error:  # a value JSON cannot hold: refuse rather than store Python objects
        raise LangNeuronsError(f"training state cannot be written as JSON: {error}") from error
    atomic_save_safetensors(tensors, folder / TRAINING_STATE, {"format": STATE_FORMAT})
    from langneurons.artefacts import write_text

    write_text(folder / TRAINING_STATE_JSON, text + "\n")


def read_training_state(folder: Path) -> dict:
    """The resume state written by :func:`write_training_state`: ``step``, ``losses``,
    ``parameters`` (name -> tensor), ``optimizer`` and ``scheduler`` (state dicts), ``rng`` (one
    state dict, or a list of them for a data-parallel run). A damaged or foreign checkpoint is a
    LangNeuronsError naming the folder and how to start over."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    def broken(reason: str) -> LangNeuronsError:
        return LangNeuronsError(f"checkpoint {folder} is unreadable ({reason}); delete {folder.parent} to start "
                                "training over")

    try:
        scalars = json.loads((folder / TRAINING_STATE_JSON).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / TRAINING_STATE))
    except (OSError, ValueError, SafetensorError) as error:
        raise broken((str(error).splitlines() or [type(error).__name__])[0][:160]) from None
    try:
        if scalars.get("format") != STATE_FORMAT:
            raise ValueError(f"format {str(scalars.get('format'))[:40]!r}")
        optimizer = scalars["optimizer"]
        state = {}
        for index, keys in optimizer["tensor_state"].items():
            entry = dict(optimizer["scalars"].get(index, {}))
            entry.update({key: tensors[f"optimizer.{index}.{key}"] for key in keys})
            state[int(index)] = entry
        processes = [{"cpu": tensors[f"rng.{p}.cpu"],
                      **({"cuda": [tensors[f"rng.{p}.cuda.{d}"] for d in range(count)]} if count else {})}
                     for p, count in enumerate(scalars["rng"]["cuda_devices"])]
        if any(s["cpu"].dtype != torch.uint8 for s in processes):
            raise ValueError("RNG states must be uint8")
        return {
            "step": int(scalars["step"]), "losses": [float(x) for x in scalars["losses"]],
            "parameters": {name: tensors[f"parameters.{name}"] for name in scalars["parameters"]},
            "optimizer": {"state": state, "param_groups": optimizer["param_groups"]},
            "scheduler": dict(scalars["scheduler"]),
            "rng": processes if scalars["rng"]["per_process"] else processes[0],
        }
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise broken(f"missing or malformed {str(error)[:120]}") from None


def _resume(checkpoint: Path, model: nn.Module, optimizer, scheduler,
            parallel: DataParallel | None = None) -> tuple[int, list[float]]:
    """Restore trainable parameters, optimizer, scheduler and RNG; returns (step, losses so far).

    A checkpoint of a data-parallel run holds one RNG state per process: each process restores
    its own; with another number of processes, RNG states are restored where ranks match (only
    the dropout masks depend on them)."""
    state = read_training_state(checkpoint)
    parameters = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(parameters) != set(state["parameters"]) or any(
            parameters[n].shape != v.shape for n, v in state["parameters"].items()):
        raise LangNeuronsError(f"checkpoint {checkpoint} does not match the model's trainable parameters; "
                               f"delete {checkpoint.parent} to start training over")
    try:
        with torch.no_grad():
            for name, value in state["parameters"].items():
                parameters[name].copy_(value)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"]
        if isinstance(rng, list):
            rank = parallel.rank if parallel is not None else 0
            rng = rng[rank] if rank < len(rng) else None
        if rng is not None:
            _set_rng_state(rng)
    except (ValueError, RuntimeError, KeyError, TypeError) as error:
        raise LangNeuronsError(f"checkpoint {checkpoint} does not fit this run ({str(error)[:160]}); delete "
                               f"{checkpoint.parent} to start training over") from None
    return state["step"], state["losses"]


class _LossProgress:
    """Rich progress bar over optimizer steps showing the latest loss (no-op when disabled)."""

    def __init__(self, description: str, total: int, done: int, enabled: bool):
        self.enabled, self.description, self.total, self.done = enabled, description, total, done

    def __enter__(self) -> "_LossProgress":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn())
            self.progress.__enter__()
            self.task = self.progress.add_task(self.description, total=self.total, completed=self.done, loss="-")
        return self

    def update(self, step: int, loss: float) -> None:
        if self.enabled:
            self.progress.update(self.task, completed=step, loss=f"{loss:.4f}")

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.progress.__exit__(*exc)


# ---------------------------------------------------------------------------------- loading


def _finetuned_loaded(base: LoadedModel, model: nn.Module, adapter_state: dict, path: Path) -> LoadedModel:
    """LoadedModel of base + adapter: its own model id and weights fingerprint (base + adapter
    tensors), so artefacts of the fine-tuned model are never mistaken for the base model's."""
    tensors = [adapter_state[k].float() for k in sorted(adapter_state)]
    fingerprint = stable_hash(base.info.weights_fingerprint, *tensors)
    kind = "rows" if (path / ROWS_FILE).is_file() else "lora"
    info = replace(base.info, model_id=f"{base.info.model_id}+{kind}:{path.name}", weights_fingerprint=fingerprint)
    return LoadedModel(model=model, tokenizer=base.tokenizer, info=info, adapter=adapter_for(model))


def _saved_adapter(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if (path / ROWS_FILE).is_file():
        return load_file(str(path / ROWS_FILE))
    return load_file(str(path / "adapter_model.safetensors"))


def _finished_result(output_dir: Path, metadata: dict, loaded: LoadedModel) -> FinetuneResult:
    finetuned = load_finetuned(output_dir, base=loaded)
    return FinetuneResult(
        output_dir=output_dir, step=metadata["step"], total_steps=metadata["total_steps"],
        final_loss=metadata["final_loss"], parameters=ParameterCounts(**metadata["parameters"]),
        examples=metadata["data"]["examples"], skipped=metadata["data"]["skipped"],
        truncated=metadata["data"]["truncated"], trained_neurons=metadata["neurons"]["count"],
        model=finetuned, metadata=metadata,
    )


def read_finetune_metadata(path: str | os.PathLike) -> dict:
    """The ``langneurons_finetune.json`` of a finished run (LangNeuronsError if absent/foreign)."""
    path = Path(path)
    if not (path / METADATA).is_file():
        raise LangNeuronsError(f"{path} is not a finished langneurons fine-tuning run (no {METADATA})")
    return _read_metadata(path)


def load_finetuned(path: str | os.PathLike, base: LoadedModel | None = None, merge: bool = False) -> LoadedModel:
    """Load a fine-tuned adapter onto its base model.

    ``base`` None loads the base model named in the metadata; a given ``base`` must have the
    weights fingerprint recorded at training time, and is wrapped in place. Every adapter weight
    the config expects must be in the file and no other (never a silent partial load). The masked
    factors were saved masked, so no masks are needed at inference. ``merge`` folds the adapter
    into the base weights (a plain transformers model, same outputs up to rounding).
    """
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    path = Path(path)
    metadata = read_finetune_metadata(path)
    recorded = metadata["base"]
    if base is None:
        model_id = DEFAULT_MODEL if recorded["model_id"] == DEFAULT_MODEL_ID else recorded["model_id"]
        base = load_model(model_id, revision=recorded.get("revision") or None)
    if base.info.weights_fingerprint != recorded["weights_fingerprint"]:
        raise LangNeuronsError(
            f"adapter {path} was trained on {recorded['model_id']} (weights {recorded['weights_fingerprint']}), "
            f"not on {base.info.model_id} (weights {base.info.weights_fingerprint})"
        )
    if metadata["config"].get("adapter", "lora") == "rows":  # the deltas are added to the weights (merged)
        state = apply_saved_rows(base.model, path)
        base.model.eval()
        return _finetuned_loaded(base, base.model, state, path)
    weights_file = path / "adapter_model.safetensors"
    if not weights_file.is_file() or not (path / "adapter_config.json").is_file():
        raise LangNeuronsError(f"{path} lacks adapter_config.json or adapter_model.safetensors")
    config = LoraConfig.from_pretrained(str(path))
    state = _saved_adapter(path)
    model = get_peft_model(base.model, config, adapter_name=ADAPTER_NAME)
    result = set_peft_model_state_dict(model, state, adapter_name=ADAPTER_NAME)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        problem = f"missing {missing[:3]}" if missing else f"unexpected {list(result.unexpected_keys)[:3]}"
        raise LangNeuronsError(f"adapter {path} does not match its config: {problem} weights")
    model.eval()
    if merge:
        model = model.merge_and_unload()
    return _finetuned_loaded(base, model, state, path)
