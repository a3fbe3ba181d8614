"""Cross-lingual task evaluation (XNLI accuracy, XQuAD exact match / F1) under interventions.

The model is prompted with the prompt formats of :mod:`langneurons.tasks.prompts`, so the
zero-shot base model and every fine-tuned adapter are scored the same way:

* XNLI: the verbaliser class is ``argmax`` of the three label-word logits at the last prompt token;
* XQuAD: batched greedy decoding with a KV cache (:mod:`.generation`), the answer is the text up
  to the first newline or EOS, scored with the official SQuAD normalisation.

:func:`evaluate_grid` runs the grid {neuron set} x {intervention action} x {language} (plus the
unintervened baseline) in one call on one loaded model: prompts are tokenised once per task and
language and reused by every cell. In cell (set, action, language) the neurons of the evaluated
language in that set get the action (``zero``, ``stat=p90`` = that language's own P90, ...).
Every score carries a 95 % CI (accuracy, exact match: Wilson; F1: bootstrap); every cell is compared
to the baseline on the same examples (accuracy, exact match: McNemar exact test and Tango's paired
score CI; F1: paired bootstrap). All scores are in percent.
With fewer than MIN_RESAMPLING_UNITS (20) examples a cell's CIs and bootstrap p-values are None
(:mod:`langneurons.evaluate.metrics`); McNemar's exact p-value stays.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from langneurons.artefacts import write_json, write_text
from langneurons.errors import LangNeuronsError
from langneurons.evaluate.generation import StopRule, answer_text, greedy_generate, stop_token_ids
from langneurons.evaluate.metrics import compare_accuracy, paired_bootstrap, squad_scores, summarize, zero_or_hundred
from langneurons.identify.neuron_set import as_neuron_set
from langneurons.tables import rows_to_csv
from langneurons.tasks.prompts import (
    DEFAULT_MAX_LENGTH,
    EncodedExample,
    check_task,
    collate,
    fit_nli_prompt,
    fit_qa_prompt,
    nli_label_logits,
    nli_label_token_ids,
    pad_id,
)
from langneurons.intervene import Intervention, intervene, intervention_factory
from langneurons.progress import progress_bar

METRICS = {"xnli": ("accuracy",), "xquad": ("exact_match", "f1")}
BASELINE = "baseline"


# ---------------------------------------------------------------------------------- prepared data


@dataclass
class PreparedTask:
    """The examples of one task and language with their prompts tokenised (done once).

    ``prompts[i]`` are the token ids of ``examples[i]``'s prompt; examples whose prompt cannot fit
    in ``max_length`` tokens are listed in ``skipped`` (ids) and never scored. XNLI also keeps the
    verbaliser token ids ``label_token_ids`` [3]; XQuAD the answer budget ``max_new_tokens``.
    """

    task: str
    language: str
    examples: list
    prompts: list[list[int]]
    skipped: list[str] = field(default_factory=list)
    truncated: int = 0
    max_new_tokens: int = 0
    label_token_ids: torch.Tensor | None = None

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.examples]


def prepare_task(tokenizer, task: str, language: str, examples: Sequence, max_length: int | None = None,
                 max_new_tokens: int = 32) -> PreparedTask:
    """Tokenise the prompts of ``examples`` (NLIExample for xnli, QAExample for xquad).

    XQuAD prompts keep ``max_new_tokens`` of the ``max_length`` budget free for the answer; a
    context that does not fit is cut at its end (never the question), as in fine-tuning.
    """
    check_task(task)
    if not examples:
        raise LangNeuronsError(f"no {task} examples for {language!r}")
    max_length = max_length or DEFAULT_MAX_LENGTH[task]
    kept, prompts, skipped, truncated = [], [], [], 0
    for example in examples:
        if task == "xnli":
            fitted = fit_nli_prompt(tokenizer, example, max_length)
        else:
            fitted = fit_qa_prompt(tokenizer, example, max_length, reserve=max_new_tokens)
        if fitted is None:
            skipped.append(example.id)
            continue
        prompt, cut = fitted
        kept.append(example)
        prompts.append(list(tokenizer(prompt)["input_ids"]))
        truncated += cut
    if not kept:
        raise LangNeuronsError(f"no {task} prompt for {language!r} fits in max_length={max_length} tokens")
    if task == "xnli":
        return PreparedTask(task, language, kept, prompts, skipped, truncated,
                            label_token_ids=nli_label_token_ids(tokenizer))
    return PreparedTask(task, language, kept, prompts, skipped, truncated, max_new_tokens=max_new_tokens)


# ---------------------------------------------------------------------------------- one task


def _scope(loaded, intervention: Intervention | None, positions: str):
    """A fresh intervention context (one per forward batch: ``positions='prompt'`` tracks the
    prompt length from the first forward pass inside the block)."""
    return intervene(loaded, intervention, positions=positions) if intervention is not None else nullcontext()


def _batches(prepared: PreparedTask, batch_size: int) -> list[list[int]]:
    """Example indices grouped into batches of similar prompt length."""
    if batch_size < 1:
        raise LangNeuronsError(f"batch size must be >= 1, got {batch_size}")
    order = sorted(range(len(prepared.prompts)), key=lambda i: len(prepared.prompts[i]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


@torch.inference_mode()
def predict_xnli(loaded, prepared: PreparedTask, intervention: Intervention | None = None, positions: str = "all",
                 batch_size: int = 8) -> list[dict]:
    """Per example: ``id``, ``gold``, ``prediction`` (label index), ``correct``, ``label_logits`` [3]."""
    tokenizer, model = loaded.tokenizer, loaded.model
    label_ids = prepared.label_token_ids
    pad = pad_id(tokenizer)
    device = loaded.device
    records: list[dict | None] = [None] * len(prepared.examples)
    for chosen in _batches(prepared, batch_size):
        batch = collate([EncodedExample(tuple(prepared.prompts[i]), class_label=0) for i in chosen], pad, "left")
        with _scope(loaded, intervention, positions):
            scores = nli_label_logits(model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                      label_ids).cpu()
        for row, index in enumerate(chosen):
            example = prepared.examples[index]
            prediction = int(scores[row].argmax())
            records[index] = {"id": example.id, "gold": example.label, "prediction": prediction,
                              "correct": prediction == example.label,
                              "label_logits": [round(float(v), 5) for v in scores[row]]}
    return records


def predict_xquad(loaded, prepared: PreparedTask, intervention: Intervention | None = None, positions: str = "all",
                  batch_size: int = 8) -> list[dict]:
    """Per example: ``id``, ``prediction`` (answer text), ``answers`` (gold), ``exact_match``, ``f1``
    (percent) and ``generated`` (the raw continuation, stop token included)."""
    tokenizer, model = loaded.tokenizer, loaded.model
    eos = stop_token_ids(model, tokenizer)
    stop = StopRule(tokenizer, eos)
    pad = pad_id(tokenizer)
    outputs: list[list[int]] = [[] for _ in prepared.prompts]
    for chosen in _batches(prepared, batch_size):
        with _scope(loaded, intervention, positions):
            generated = greedy_generate(model, [prepared.prompts[i] for i in chosen], pad, stop,
                                        max_new_tokens=prepared.max_new_tokens, batch_size=len(chosen))
        for index, tokens in zip(chosen, generated):
            outputs[index] = tokens
    answers = [answer_text(tokenizer, tokens, eos) for tokens in outputs]
    scores = squad_scores(answers, [list(e.answers) for e in prepared.examples])
    return [
        {"id": e.id, "prediction": answer, "answers": list(e.answers), "exact_match": em, "f1": f1,
         "generated": tokenizer.decode(tokens)}
        for e, answer, tokens, (em, f1) in zip(prepared.examples, answers, outputs, scores)
    ]


def predict(loaded, prepared: PreparedTask, intervention: Intervention | None = None, positions: str = "all",
            batch_size: int = 8) -> list[dict]:
    """Per-example records of one task (see :func:`predict_xnli` / :func:`predict_xquad`)."""
    fn = predict_xnli if prepared.task == "xnli" else predict_xquad
    return fn(loaded, prepared, intervention, positions, batch_size)


def metric_values(task: str, records: Sequence[dict], metric: str) -> torch.Tensor:
    """Per-example values in percent (accuracy: 0/100) of ``metric`` over ``records``."""
    if metric == "accuracy":
        return torch.tensor([100.0 * r["correct"] for r in records], dtype=torch.float64)
    if metric not in METRICS[task]:
        raise LangNeuronsError(f"{task} has no metric {metric!r}; it has {', '.join(METRICS[task])}")
    return torch.tensor([float(r[metric]) for r in records], dtype=torch.float64)


def compare_records(task: str, reference: Sequence[dict], other: Sequence[dict], n_resamples: int = 1000,
                    confidence: float = 0.95, seed: int = 0) -> dict[str, dict]:
    """``other`` minus ``reference`` per metric, paired by example id (the ids must be the same):
    0/100 metrics (accuracy; exact match) with the exact McNemar test and Tango's score CI, F1 with the
    paired bootstrap."""
    ref_by_id = {r["id"]: r for r in reference}
    if set(ref_by_id) != {r["id"] for r in other} or len(ref_by_id) != len(other):
        raise LangNeuronsError(f"cannot pair {task} results: the two runs scored different examples")
    paired = [ref_by_id[r["id"]] for r in other]
    result = {}
    for metric in METRICS[task]:
        reference_values, other_values = metric_values(task, paired, metric), metric_values(task, other, metric)
        if zero_or_hundred(reference_values) and zero_or_hundred(other_values):  # accuracy, exact match
            comparison = compare_accuracy(reference_values == 100.0, other_values == 100.0, n_resamples, confidence,
                                          seed)
        else:  # F1: scores in [0, 100], so one example moves the mean by at most 100 / n
            comparison = paired_bootstrap(reference_values, other_values, n_resamples, confidence, seed,
                                          largest_difference=100.0)
        result[metric] = {"delta": comparison.delta, "delta_ci_low": comparison.ci_low,
                          "delta_ci_high": comparison.ci_high, "p_value": comparison.p_value,
                          "test": comparison.test}
    return result


def score_rows(task: str, records: Sequence[dict], n_resamples: int = 1000, confidence: float = 0.95,
               seed: int = 0) -> dict[str, dict]:
    """Metric -> {n, score, ci_low, ci_high} (percent, bootstrap CI)."""
    result = {}
    for metric in METRICS[task]:
        summary = summarize(metric_values(task, records, metric), metric, n_resamples, confidence, seed)
        result[metric] = {"n": summary.n, "score": summary.score, "ci_low": summary.ci_low, "ci_high": summary.ci_high}
    return result


# ---------------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class Condition:
    """One grid column: ``method`` names a neuron set, ``action`` what is done to its neurons of
    the evaluated language; the baseline is ``Condition("none", "baseline")``."""

    method: str
    action: str

    @property
    def name(self) -> str:
        return BASELINE if self.is_baseline else f"{self.method}:{self.action}"

    @property
    def is_baseline(self) -> bool:
        return self.action == BASELINE


BASELINE_CONDITION = Condition("none", BASELINE)
ROW_FIELDS = ("model", "task", "language", "condition", "method", "action", "neurons", "metric", "n", "skipped",
              "score", "ci_low", "ci_high", "delta", "delta_ci_low", "delta_ci_high", "p_value", "test")


@dataclass
class GridResult:
    """Scores (one row per model x task x language x condition x metric, fields :data:`ROW_FIELDS`)
    and per-example predictions (one record per cell and example, with ``condition`` and ``id``)."""

    model: str
    rows: list[dict]
    predictions: list[dict]

    def records(self, task: str, language: str, condition: str = BASELINE) -> list[dict]:
        return [p for p in self.predictions
                if (p["task"], p["language"], p["condition"]) == (task, language, condition)]

    def write(self, directory) -> dict[str, Path]:
        """``scores.csv``, ``scores.json`` and ``predictions.jsonl`` in ``directory`` (atomic)."""
        directory = Path(directory)
        lines = "".join(json.dumps(p, ensure_ascii=False, sort_keys=True) + "\n" for p in self.predictions)
        return {
            "scores_csv": write_text(directory / "scores.csv", rows_to_csv(self.rows, ROW_FIELDS)),
            "scores_json": write_json(directory / "scores.json", {"model": self.model, "rows": self.rows}),
            "predictions": write_text(directory / "predictions.jsonl", lines),
        }

    @classmethod
    def load(cls, directory) -> "GridResult":
        directory = Path(directory)
        try:
            scores = json.loads((directory / "scores.json").read_text(encoding="utf-8"))
            lines = (directory / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
            predictions = [json.loads(line) for line in lines if line.strip()]
        except (OSError, ValueError) as error:
            raise LangNeuronsError(f"cannot read evaluation results in {directory}: {error}") from error
        return cls(scores["model"], scores["rows"], predictions)


def _conditions(neuron_sets: Mapping, actions: Sequence[str]) -> list[Condition]:
    return [BASELINE_CONDITION] + [Condition(method, action) for method in neuron_sets for action in actions]


def evaluate_grid(
    loaded,
    tasks: Mapping[str, Mapping[str, Sequence | PreparedTask]],
    neuron_sets: Mapping | None = None,
    actions: Sequence[str] = ("zero",),
    statistics: Mapping | None = None,
    positions: str = "all",
    batch_size: int = 8,
    max_length: int | None = None,
    max_new_tokens: int = 32,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    model_name: str | None = None,
    neurons_model_info=None,
    progress: bool = True,
) -> GridResult:
    """Evaluate ``loaded`` on every task and language, without and with every intervention.

    Args:
        tasks: task (``xnli``/``xquad``) -> language -> examples, or a :class:`PreparedTask`
            (raw examples are tokenised here, once, with ``max_length``/``max_new_tokens``).
        neuron_sets: name -> NeuronSet (or its file path); each with each of ``actions`` is one
            grid condition.
        actions: intervention actions of :mod:`langneurons.intervene.spec` (``zero``,
            ``scale=0``, ``stat=p90`` (evaluated language's statistic), ``stat=mean@en`` ...).
        statistics: language -> ActivationStatistics, for ``stat`` / ``add`` actions.
        positions: ``all`` tokens, or ``prompt`` (generated tokens are not intervened).
        neurons_model_info: ModelInfo of the model the neuron sets and statistics were made on
            (default ``loaded.info``; pass the base model's when ``loaded`` is a fine-tuned adapter).
    """
    neuron_sets = {name: as_neuron_set(value) for name, value in (neuron_sets or {}).items()}
    info = neurons_model_info or loaded.info
    for neuron_set in neuron_sets.values():
        neuron_set.check_model(info)
    prepared = {
        (task, language): data if isinstance(data, PreparedTask)
        else prepare_task(loaded.tokenizer, task, language, data, max_length, max_new_tokens)
        for task, by_language in tasks.items() for language, data in by_language.items()
    }
    for (task, language), data in prepared.items():
        check_task(task)
        if (data.task, data.language) != (task, language):
            raise LangNeuronsError(f"prepared data of {data.task}/{data.language} given as {task}/{language}")
        for name, neuron_set in neuron_sets.items():
            if language not in neuron_set.languages:
                raise LangNeuronsError(f"neuron set {name!r} has no neurons for evaluation language {language!r} "
                                       f"(it has {neuron_set.languages})")
    holder = _InfoHolder(info)
    factories = {action: intervention_factory(action, holder, statistics) for action in actions} if neuron_sets else {}
    model_name = model_name or loaded.info.model_id
    cells = [(key, condition) for key in prepared for condition in _conditions(neuron_sets, actions)]
    by_cell: dict[tuple, tuple[list[dict], int]] = {}
    for (task, language), condition in progress_bar(cells, f"evaluate {model_name}", enabled=progress):
        data = prepared[(task, language)]
        intervention, neurons = None, 0
        if not condition.is_baseline:
            intervention = factories[condition.action](language, neuron_sets[condition.method].indices(language))
            neurons = intervention.num_neurons
        if condition.is_baseline or neurons == 0:  # nothing intervened: exactly the baseline
            records = by_cell.get((task, language, BASELINE), (None,))[0]
            if records is None:
                records = predict(loaded, data, None, positions, batch_size)
        else:
            records = predict(loaded, data, intervention, positions, batch_size)
        by_cell[(task, language, condition.name)] = (records, neurons)

    rows, predictions = [], []
    for (task, language), condition in cells:
        data = prepared[(task, language)]
        records, neurons = by_cell[(task, language, condition.name)]
        scores = score_rows(task, records, n_resamples, confidence, seed)
        deltas = {} if condition.is_baseline else compare_records(
            task, by_cell[(task, language, BASELINE)][0], records, n_resamples, confidence, seed)
        for metric, score in scores.items():
            rows.append({"model": model_name, "task": task, "language": language, "condition": condition.name,
                         "method": condition.method, "action": condition.action, "neurons": neurons,
                         "metric": metric, "skipped": len(data.skipped), **score,
                         **deltas.get(metric, dict.fromkeys(ROW_FIELDS[-5:]))})
        predictions += [{"model": model_name, "task": task, "language": language, "condition": condition.name,
                         **record} for record in records]
    return GridResult(model_name, rows, predictions)


@dataclass(frozen=True)
class _InfoHolder:
    """What :func:`intervention_factory` reads of a LoadedModel (its ``info``): lets neuron sets and
    statistics of the base model be applied to a fine-tuned adapter of it."""

    info: object
