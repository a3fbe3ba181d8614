"""The options of a fine-tuning run (:class:`FinetuneConfig`): task, neurons, adapter, optimisation,
learning-rate choice and early stopping; checked and resolved (defaults per task) here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from langneurons.errors import LangNeuronsError
from langneurons.finetune.lm_task import DEFAULT_BLOCK_LENGTH, LM_TASK
from langneurons.finetune.neuron_lora import (
    check_mlp_targets,
)
from langneurons.finetune.rows import ADAPTERS
from langneurons.languages import check_languages
from langneurons.tasks.prompts import (
    DEFAULT_MAX_LENGTH,
    check_task,
)

NEURON_MODES = ("languages", "random", "all", "none")


LR_SELECTIONS = ("score", "loss")


DEFAULT_RANK = {"xnli": 8, "xquad": 64, LM_TASK: 8}


NEW_DEFAULTS = {"adapter": "lora", "learning_rates": (), "lr_search_steps": 0, "patience": 0, "lr_selection": "score"}
"""Fields added after runs were published: left out of the run key at these values (same hashes)."""

STAGE_KEY_DEFAULTS = {"lr_selection": "score"}
"""Fields added after runs were cached by the runner: left out of the finetune stage's cache key at
these values, so a run cached before them resumes instead of training again."""


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
    lr_selection: how the search ranks candidates: ``score`` (dev accuracy / F1 / perplexity, ties
        broken by the lower dev loss) or ``loss`` (the dev loss itself: the gold label's
        cross-entropy over the three verbaliser logits for XNLI, nats per token for LM; not XQuAD).
        A short run rarely moves dev accuracy off chance, and 200 examples tie often; the loss
        separates candidates that the accuracy cannot.
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
    lr_selection: str = "score"

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
        if self.lr_selection not in LR_SELECTIONS:
            raise LangNeuronsError(f"unknown lr_selection {self.lr_selection!r}; choose one of {', '.join(LR_SELECTIONS)}")
        if self.lr_selection == "loss" and task == "xquad":
            raise LangNeuronsError("lr_selection 'loss' needs a dev loss: XNLI or LM, not XQuAD (use 'score')")
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
