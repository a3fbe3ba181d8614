"""Choices made on the development split only: the learning rate and where to stop.

* :func:`search_learning_rate`: one short run (``lr_search_steps`` optimizer steps, with its own
  warm-up and linear decay over those steps) per candidate learning rate, each from a fresh copy
  of the base model and the run's seed, scored on the development examples
  (carved from the training data, disjoint from the training sample); the best is chosen. Only
  the training and development examples it is given are read -- never a test set.
* :class:`EarlyStopping`: stop after ``patience`` development evaluations without improvement
  and keep the best evaluated parameters as the final adapter.

The sub-runs live in ``<output>/lr-search/lr-<rate>/`` (finished ones are reused when the main
run is resumed) and are deleted once the main run is saved; their dev scores stay in its metadata.
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from langneurons.errors import LangNeuronsError

LR_SEARCH_DIR = "lr-search"
BEST_PARAMETERS = "best_parameters.safetensors"
LOWER_IS_BETTER = ("perplexity",)


def check_disjoint(train_examples: Sequence, dev_examples: Sequence) -> None:
    """Refuse development examples that are also training examples (by ``id``, else by value)."""
    def key(example):
        return ("id", example.id) if hasattr(example, "id") else ("value", example)

    shared = {key(e) for e in train_examples} & {key(e) for e in dev_examples}
    if shared:
        raise LangNeuronsError(f"{len(shared)} development example(s) are also training examples "
                               f"(e.g. {sorted(map(str, shared))[0][:80]}); the dev split must be held out")


def _rate_name(rate: float) -> str:
    return f"lr-{rate:.3g}"


def search_learning_rate(loaded, train_examples: Sequence, config, output_dir: Path, dev_examples: Sequence,
                         dev_language: str = "en", neuron_set=None, progress: bool = True, *, finetune) -> dict:
    """Short runs per candidate in ``config.learning_rates`` scored on ``dev_examples``; each is a
    call of ``finetune`` (:func:`langneurons.finetune.train.finetune`, passed in by it).

    Returns the record kept in the run's metadata: ``candidates``, ``dev_scores`` (score after
    ``steps`` steps), ``dev_before`` (the base model's score), ``dev_metric``, ``dev_n``,
    ``steps`` and ``chosen`` (:func:`choose_candidate` under ``config.lr_selection``), and where the dev
    scoring has a loss, ``dev_losses`` and ``selection``.
    ``loaded.model`` is not changed (each candidate trains a deep copy).
    """
    from langneurons.models.architectures import adapter_for
    from langneurons.models.loading import LoadedModel

    if not dev_examples:
        raise LangNeuronsError("a learning-rate search needs development examples (a dev split of the training data)")
    check_disjoint(train_examples, dev_examples)
    steps = config.lr_search_steps
    scores, losses, before, metric, n = [], [], None, None, None
    for rate in config.learning_rates:
        model = copy.deepcopy(loaded.model)
        candidate = LoadedModel(model=model, tokenizer=loaded.tokenizer, info=loaded.info, adapter=adapter_for(model))
        short = replace(config, learning_rate=rate, learning_rates=(), lr_search_steps=0, max_steps=steps,
                        eval_every=steps, patience=0, save_every=0)
        result = finetune(candidate, train_examples, short, Path(output_dir) / LR_SEARCH_DIR / _rate_name(rate),
                          neuron_set=neuron_set, progress=progress, dev_examples=dev_examples,
                          dev_language=dev_language)
        curve = result.metadata["curve"]
        before, metric, n = curve[0]["dev_score"], curve[-1]["dev_metric"], curve[-1]["dev_n"]
        scores.append(float(curve[-1]["dev_score"]))
        losses.append(curve[-1].get("dev_loss"))
        del model, candidate, result
        gc.collect()
    best = choose_candidate(scores, losses, metric, config.lr_selection)
    record = {"candidates": [float(r) for r in config.learning_rates], "dev_scores": scores, "dev_before": before,
              "dev_metric": metric, "dev_n": n, "steps": steps, "chosen": float(config.learning_rates[best])}
    if any(loss is not None for loss in losses):
        record.update(dev_losses=[None if loss is None else float(loss) for loss in losses],
                      selection=config.lr_selection)
    return record


def choose_candidate(scores: Sequence[float], losses: Sequence[float | None], metric: str | None,
                     selection: str = "score") -> int:
    """Index of the best candidate. ``score``: highest dev score (lowest for perplexity), ties broken
    by the lower dev loss where every candidate has one, then by order; ``loss``: lowest dev loss,
    ties by order."""
    have_losses = bool(losses) and all(loss is not None for loss in losses)
    if selection == "loss":
        if not have_losses:
            raise LangNeuronsError("lr_selection 'loss' needs a dev loss for every candidate (XNLI or LM dev scoring)")
        return min(range(len(losses)), key=lambda i: (losses[i], i))
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    return min(range(len(scores)), key=lambda i: (-sign * scores[i], losses[i] if have_losses else 0.0, i))


@dataclass
class EarlyStopping:
    """Patience in development evaluations; the best evaluated parameters are kept on the CPU.

    ``update`` after each evaluation returns True when training should stop (``patience``
    evaluations in a row without a strictly better score)."""

    patience: int
    metric: str = "accuracy"
    best_score: float | None = None
    best_step: int | None = None
    bad_evaluations: int = 0
    best_parameters: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def better(self, score: float) -> bool:
        if self.best_score is None:
            return True
        return score < self.best_score if self.metric in LOWER_IS_BETTER else score > self.best_score

    def update(self, step: int, score: float, metric: str, parameters: dict[str, torch.Tensor]) -> bool:
        self.metric = metric
        if self.better(score):
            self.best_score, self.best_step, self.bad_evaluations = float(score), step, 0
            self.best_parameters = {k: v.detach().cpu().clone() for k, v in parameters.items()}
            return False
        self.bad_evaluations += 1
        return self.bad_evaluations >= self.patience

    def restore(self, parameters: dict[str, torch.Tensor]) -> bool:
        """Copy the best parameters back (True when there were any)."""
        if self.best_parameters is None:
            return False
        with torch.no_grad():
            for name, value in self.best_parameters.items():
                parameters[name].copy_(value.to(parameters[name].device))
        return True

    def state(self) -> dict:
        return {"patience": self.patience, "metric": self.metric, "best_score": self.best_score,
                "best_step": self.best_step, "bad_evaluations": self.bad_evaluations}

    def save(self, folder: Path) -> None:
        """The best parameters into a checkpoint folder (tensors only)."""
        from langneurons.artefacts import atomic_save_safetensors

        if self.best_parameters is not None:
            atomic_save_safetensors({k: v.contiguous() for k, v in self.best_parameters.items()},
                                    Path(folder) / BEST_PARAMETERS, {"best_step": str(self.best_step)})

    def load(self, folder: Path, state: dict | None) -> None:
        """Restore from a checkpoint folder and its metadata's ``early_stopping`` record."""
        from safetensors.torch import load_file

        if not state:
            return
        self.metric, self.best_score = state["metric"], state["best_score"]
        self.best_step, self.bad_evaluations = state["best_step"], state["bad_evaluations"]
        path = Path(folder) / BEST_PARAMETERS
        if path.is_file():
            self.best_parameters = load_file(str(path))


EDGE_SIDE = {"largest": "above", "smallest": "below"}


def learning_rate_edge(meta: dict) -> str | None:
    """``"largest"`` / ``"smallest"`` when a run's learning-rate search (``langneurons_finetune.json``
    metadata) chose the largest / smallest of two or more candidates (the search did not bracket
    its optimum), else None."""
    search, rate = meta.get("lr_search"), (meta.get("config") or {}).get("learning_rate")
    if not search or rate is None or len(search["candidates"]) < 2:
        return None
    return "largest" if rate == max(search["candidates"]) else "smallest" if rate == min(search["candidates"]) else None
