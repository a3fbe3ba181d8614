"""Harness tasks for a grid of conditions, with langneurons' statistics on the per-example results.

:func:`run_lm_eval` evaluates one :class:`~langneurons.harness.backend.LangNeuronsLM` (one model
load) on harness tasks under every :class:`HarnessCondition`: the baseline (no intervention),
each intervention, and, per intervention, its layer-matched random control
(:func:`langneurons.identify.random_control.random_control` of the intervention's neuron set,
same languages and action). The harness's per-example results (``log_samples``) give, per
task, filter and metric:

* the score with a percentile-bootstrap CI (:func:`langneurons.evaluate.metrics.summarize`);
* for every condition, the paired difference to the baseline on the same documents: 0/1
  metrics (``acc``, ``acc_norm``, ``exact_match`` ...) with the exact McNemar test and Tango's paired
  score CI (:func:`~langneurons.evaluate.metrics.compare_accuracy`), other numeric metrics with
  the paired bootstrap (:func:`~langneurons.evaluate.metrics.paired_bootstrap`). Below
  MIN_RESAMPLING_UNITS (20) documents the CIs and bootstrap p-values are None (one shared guard).

Units: 0/1 metrics are reported in percent (``unit`` = ``percent``, so ``acc`` 0.5 is 50.0);
other metrics in the harness's own unit (``unit`` = ``harness``). Metrics without per-example
numbers (corpus-level BLEU / chrF) keep only the harness's aggregate (``harness_value``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from langneurons.artefacts import write_json, write_text
from langneurons.bounds import MAX_RESAMPLES, check_count, check_seed
from langneurons.errors import LangNeuronsError
from langneurons.tables import rows_to_csv
from langneurons.evaluate.metrics import compare_accuracy, paired_bootstrap, summarize
from langneurons.intervene.spec import InterventionSpec, parse_spec

BASELINE = "baseline"
ROW_FIELDS = ("model", "task", "filter", "metric", "unit", "condition", "kind", "intervention", "neurons", "n",
              "score", "ci_low", "ci_high", "harness_value", "delta", "delta_ci_low", "delta_ci_high", "p_value",
              "test")


@dataclass(frozen=True)
class HarnessCondition:
    """One column of the grid: ``spec`` None is the baseline; ``neuron_set`` (a NeuronSet) replaces
    the spec's file (random controls, or sets already in memory); ``kind`` is ``baseline``,
    ``intervention`` or ``random``."""

    name: str
    kind: str
    spec: InterventionSpec | None = None
    neuron_set: object | None = None


def conditions_for(interventions: Sequence[str | InterventionSpec], random_control: bool = True, seed: int = 0,
                   neuron_sets: dict | None = None) -> list[HarnessCondition]:
    """Baseline, then each intervention followed by its random control.

    ``neuron_sets``: spec ``neurons`` value -> NeuronSet already loaded (else the file is read).
    Condition names: ``<set file stem>:<languages>:<action>[:prompt]`` and ``random(<stem>):...``.
    """
    from langneurons.identify.neuron_set import NeuronSet
    from langneurons.identify.random_control import random_control as draw_control

    neuron_sets = dict(neuron_sets or {})
    conditions = [HarnessCondition(BASELINE, "baseline")]
    for raw in interventions:
        spec = parse_spec(raw)
        if spec.neurons not in neuron_sets:
            neuron_sets[spec.neurons] = NeuronSet.load(spec.neurons)
        real = neuron_sets[spec.neurons]
        stem = Path(spec.neurons).stem
        tail = f"{','.join(spec.languages)}:{spec.action()}" + (":prompt" if spec.positions == "prompt" else "")
        conditions.append(HarnessCondition(f"{stem}:{tail}", "intervention", spec, real))
        if random_control:
            conditions.append(HarnessCondition(f"random({stem}):{tail}", "random", spec, draw_control(real, seed)))
    names = [c.name for c in conditions]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise LangNeuronsError(f"two interventions give the same condition name {duplicated}; use distinct files")
    return conditions


@dataclass(frozen=True)
class LmEvalOptions:
    """Harness tasks and how to run and compare them.

    ``tasks``: harness task (or group) names; ``include_path``: folders of extra task YAML files;
    ``limit``: documents per task (the harness takes the first ones); ``num_fewshot``: None keeps
    each task's default (the batch size belongs to the LM); the bootstrap settings are those of
    :mod:`langneurons.evaluate.metrics`; ``seed`` also seeds the harness.
    """

    tasks: tuple[str, ...]
    include_path: tuple[str, ...] = ()
    limit: int | None = None
    num_fewshot: int | None = None
    bootstrap_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self):
        if not self.tasks:
            raise LangNeuronsError("lm-eval needs at least one harness task")
        if self.limit is not None and self.limit < 1:
            raise LangNeuronsError(f"limit must be positive, got {self.limit}")
        for folder in self.include_path:
            if not Path(folder).is_dir():
                raise LangNeuronsError(f"include_path folder not found: {folder}")
        check_count(self.bootstrap_resamples, "bootstrap resamples", 1, MAX_RESAMPLES)
        check_seed(self.seed)
        if not 0.0 < self.confidence < 1.0:
            raise LangNeuronsError(f"confidence must be strictly between 0 and 1, got {self.confidence}")


@dataclass
class LmEvalResult:
    """Scores (rows with :data:`ROW_FIELDS`), per-example samples (task, filter, condition, doc_id,
    metric values and, for log-likelihood tasks, the response log-likelihoods) and the harness's
    own aggregate results per condition."""

    model: str
    rows: list[dict]
    samples: list[dict]
    harness: dict = field(default_factory=dict)

    def write(self, directory) -> dict[str, Path]:
        """``scores.csv``, ``scores.json``, ``samples.jsonl`` and ``harness.json`` (atomic)."""
        directory = Path(directory)
        lines = "".join(json.dumps(s, sort_keys=True) + "\n" for s in self.samples)
        return {
            "scores_csv": write_text(directory / "scores.csv", rows_to_csv(self.rows, ROW_FIELDS)),
            "scores_json": write_json(directory / "scores.json", {"model": self.model, "rows": self.rows}),
            "samples": write_text(directory / "samples.jsonl", lines),
            "harness": write_json(directory / "harness.json", self.harness),
        }

    @classmethod
    def load(cls, directory) -> "LmEvalResult":
        directory = Path(directory)
        try:
            scores = json.loads((directory / "scores.json").read_text(encoding="utf-8"))
            samples = [json.loads(line) for line in (directory / "samples.jsonl").read_text(encoding="utf-8").splitlines()
                       if line.strip()]
            harness = json.loads((directory / "harness.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise LangNeuronsError(f"cannot read lm-eval results in {directory}: {error}") from error
        return cls(scores["model"], scores["rows"], samples, harness)


# ---------------------------------------------------------------------------------- per-example values


def _number(value) -> float | None:
    """A finite per-example metric value as float; None for anything else (tuples of corpus metrics)."""
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def sample_records(task: str, condition: str, samples: Sequence[dict]) -> list[dict]:
    """The harness's ``log_samples`` entries of one task reduced to numbers (no document text):
    ``task``, ``condition``, ``doc_id``, ``filter``, ``metrics`` {name: value} and, for
    log-likelihood requests, ``loglikelihoods`` [one per response]."""
    records = []
    for sample in samples:
        metrics = {name: _number(sample.get(name)) for name in sample.get("metrics", [])}
        record = {"task": task, "condition": condition, "doc_id": int(sample["doc_id"]),
                  "filter": sample.get("filter", "none"),
                  "metrics": {name: value for name, value in metrics.items() if value is not None}}
        responses = sample.get("filtered_resps") or []
        if responses and all(isinstance(r, (tuple, list)) and len(r) == 2 and _number(r[0]) is not None
                             for r in responses):
            record["loglikelihoods"] = [round(float(r[0]), 6) for r in responses]
        records.append(record)
    return records


def _binary(values: torch.Tensor) -> bool:
    return bool(((values == 0) | (values == 1)).all())


def score_rows(model: str, samples: Sequence[dict], harness: dict, conditions: Sequence[HarnessCondition],
               n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> list[dict]:
    """One row per task x filter x metric x condition (:data:`ROW_FIELDS`), paired with the baseline by doc_id."""
    by_cell: dict[tuple, dict[int, float]] = {}
    for record in samples:
        for metric, value in record["metrics"].items():
            key = (record["task"], record["filter"], metric, record["condition"])
            by_cell.setdefault(key, {})[record["doc_id"]] = value
    kinds = {c.name: c for c in conditions}
    rows = []
    for (task, filter_, metric, condition), values in sorted(by_cell.items(), key=lambda item: (
            item[0][:3], [c.name for c in conditions].index(item[0][3]))):
        docs = sorted(values)
        tensor = torch.tensor([values[d] for d in docs], dtype=torch.float64)
        binary = _binary(tensor)
        scale = 100.0 if binary else 1.0
        summary = summarize(scale * tensor, metric, n_resamples, confidence, seed)
        spec = kinds[condition].spec
        aggregate = (harness.get(condition, {}).get(task) or {}).get(f"{metric},{filter_}")
        row = {"model": model, "task": task, "filter": filter_, "metric": metric,
               "unit": "percent" if binary else "harness", "condition": condition, "kind": kinds[condition].kind,
               "intervention": spec.to_string() if spec is not None else None,
               "neurons": _neuron_count(kinds[condition]), "n": summary.n, "score": summary.score,
               "ci_low": summary.ci_low, "ci_high": summary.ci_high,
               "harness_value": None if _number(aggregate) is None else scale * float(aggregate),
               **dict.fromkeys(ROW_FIELDS[-5:])}
        if condition != BASELINE:
            reference = by_cell.get((task, filter_, metric, BASELINE))
            if reference is None or sorted(reference) != docs:
                raise LangNeuronsError(f"cannot pair {task}/{metric} of {condition} with the baseline: "
                                       "different documents were scored")
            base = torch.tensor([reference[d] for d in docs], dtype=torch.float64)
            if binary and _binary(base):
                comparison = compare_accuracy(base.bool(), tensor.bool(), n_resamples, confidence, seed)
            else:
                comparison = paired_bootstrap(scale * base, scale * tensor, n_resamples, confidence, seed)
            row.update(delta=comparison.delta, delta_ci_low=comparison.ci_low, delta_ci_high=comparison.ci_high,
                       p_value=comparison.p_value, test=comparison.test)
        rows.append(row)
    return rows


def _neuron_count(condition: HarnessCondition) -> int:
    if condition.spec is None:
        return 0
    return int(condition.neuron_set.union(list(condition.spec.languages)).shape[0])


# ---------------------------------------------------------------------------------- the grid


def _plain(value):
    """JSON-ready copy of the harness's results (numpy scalars -> floats)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    number = _number(value)
    return number if number is not None else str(value)


def task_manager(options: LmEvalOptions):
    """The harness's TaskManager over its tasks and ``options.include_path``; LangNeuronsError
    naming any task of ``options.tasks`` it does not know (checked before a model is loaded)."""
    from langneurons.harness import require_lm_eval

    require_lm_eval()
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=list(options.include_path) or None)
    missing = [task for task in options.tasks if task not in manager.all_tasks]
    if missing:
        raise LangNeuronsError(f"unknown harness tasks {missing}" + (
            "" if options.include_path else " (local task files need include_path)"))
    return manager


def _output_types(tasks) -> dict[str, str]:
    """Task name -> output type of every task in the harness's (possibly nested) task dict."""
    types = {}
    for key, value in tasks.items():
        if isinstance(value, dict):
            types.update(_output_types(value))
        elif value is not None:
            output_type = getattr(value, "OUTPUT_TYPE", None) or getattr(getattr(value, "config", None),
                                                                        "output_type", None)
            types[getattr(value, "task_name", None) or str(getattr(key, "group_name", key))] = str(output_type)
    return types


def non_generation_tasks(options: LmEvalOptions, manager=None) -> dict[str, str]:
    """Name -> output type of the tasks of ``options`` that are not ``generate_until`` (the task
    objects are built: configs and documents, no request runs)."""
    import datasets

    manager = manager or task_manager(options)
    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a check, not a run: no bars
    try:
        tasks = manager.load_task_or_group(list(options.tasks))
    finally:
        if shown:
            datasets.enable_progress_bars()
    return {name: kind for name, kind in _output_types(tasks).items() if kind != "generate_until"}


def check_prompt_scope(conditions: Sequence[HarnessCondition], options: LmEvalOptions, manager=None) -> None:
    """A condition with scope ``prompt`` intervenes on generation only: every task must be a
    ``generate_until`` task. The task objects are built (cheap: configs and documents, no request
    runs) only when such a condition exists; called before a model is loaded."""
    scoped = [c.name for c in conditions if c.spec is not None and c.spec.positions == "prompt"]
    if not scoped:
        return
    others = non_generation_tasks(options, manager)
    if others:
        name, kind = next(iter(others.items()))
        raise LangNeuronsError(f"intervention {scoped[0]!r} has scope 'prompt' (generation only), but task "
                               f"{name!r} is a {kind} task; use scope 'all' for it")


def run_lm_eval(lm, conditions: Sequence[HarnessCondition], options: LmEvalOptions,
                model_name: str | None = None, manager=None) -> LmEvalResult:
    """Evaluate ``lm`` (a LangNeuronsLM) on ``options.tasks`` under every condition (see the module docstring).

    The intervention is switched with ``lm.set_intervention`` between conditions and cleared at
    the end. ``manager``: a TaskManager from :func:`task_manager` (built here when None).
    """
    from langneurons.harness import require_lm_eval

    lm_eval = require_lm_eval()
    if not conditions or conditions[0].name != BASELINE:
        raise LangNeuronsError("the first condition must be the baseline")
    manager = manager or task_manager(options)
    check_prompt_scope(conditions, options, manager)  # before any request runs
    model_name = model_name or lm.loaded.info.model_id
    samples, harness = [], {}
    try:
        for condition in conditions:  # every spec resolves on this model before any evaluation
            lm.set_intervention(condition.spec, neuron_set=condition.neuron_set)
        for condition in conditions:
            lm.set_intervention(condition.spec, neuron_set=condition.neuron_set)
            out = lm_eval.simple_evaluate(model=lm, tasks=list(options.tasks), task_manager=manager,
                                          num_fewshot=options.num_fewshot, limit=options.limit, log_samples=True,
                                          bootstrap_iters=0, random_seed=options.seed, numpy_random_seed=options.seed,
                                          torch_random_seed=options.seed, fewshot_random_seed=options.seed)
            if out is None:
                raise LangNeuronsError("the harness returned no results")
            harness[condition.name] = _plain(out["results"])
            for task, task_samples in out["samples"].items():
                samples += sample_records(task, condition.name, task_samples)
    finally:
        lm.set_intervention(None)
    rows = score_rows(model_name, samples, harness, conditions, options.bootstrap_resamples, options.confidence,
                      options.seed)
    return LmEvalResult(model_name, rows, samples, harness)
