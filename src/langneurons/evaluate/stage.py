"""The ``evaluate`` stages (section ``evaluation:``, one per model) and the ``results`` stage that
gathers them: the evaluation grid, model comparisons and the intervention-delta figure; its
config section, cached runs, report section and published files."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from langneurons.artefacts import write_json, write_text
from langneurons.blocks import Block, fmt_interval, fmt_number, fmt_p, read_json
from langneurons.stage import Stage

COMPARISON_FIELDS = ("task", "language", "metric", "model", "reference", "n", "score", "reference_score", "delta",
                     "delta_ci_low", "delta_ci_high", "p_value", "test")


@dataclass(frozen=True)
class EvaluationConfig:
    """The evaluation grid: ``models`` (``base`` = zero-shot base model, or fine-tuning run names)
    x {``neuron_sets`` x ``actions``} x ``languages``; the base model is scored on ``tasks``, a
    fine-tuned model on its own task. ``intervene_models`` (default: all) get the intervention
    conditions, the others the baseline only. Fine-tuned runs are compared with ``reference``
    (default: the first run of the same task)."""

    languages: tuple[str, ...]
    models: tuple[str, ...] = ("base",)
    tasks: tuple[str, ...] = ("xnli", "xquad")
    neuron_sets: tuple[str, ...] = ()
    actions: tuple[str, ...] = ("zero",)
    intervene_models: tuple[str, ...] | None = None
    positions: str = "all"
    reference: str | None = None
    batch_size: int = 8
    bootstrap_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0


def run(context) -> None:
    """Every model of the grid, then the gathered results."""
    for name in context.config.evaluation.models:
        evaluate_model(context, name)
    gather_results(context)


def evaluate_model(context, model_name: str) -> None:
    from langneurons.evaluate.evaluation import evaluate_grid
    from langneurons.finetune import load_finetuned
    from langneurons.finetune.lm_task import LM_TASK

    config = context.config
    statistics = context.records.get("statistics")
    evaluation = config.evaluation
    zero_shot = model_name == "base" or config.run(model_name).task == LM_TASK  # LM-tuned: zero-shot too
    tasks = list(evaluation.tasks) if zero_shot else [config.run(model_name).task]
    intervene = evaluation.intervene_models is None or model_name in evaluation.intervene_models
    sets = list(evaluation.neuron_sets) if intervene else []
    needs_statistics = bool(sets) and any(a.split("=")[0] in ("stat", "add") for a in evaluation.actions)

    def compute(directory: Path) -> None:
        if model_name == "base":
            model = context.loaded
        else:
            model = load_finetuned(context.run_dir / "finetune" / model_name, base=context.fresh_base())
        data = {task: {language: context.prepared_task(task, language)
                       for language in config.evaluation_languages(task)} for task in tasks}
        result = evaluate_grid(
            model, data, neuron_sets={name: context.neuron_set(name) for name in sets},
            actions=evaluation.actions if sets else (),
            statistics=context.statistics_for(config.languages) if needs_statistics else None,
            positions=evaluation.positions, batch_size=evaluation.batch_size,
            n_resamples=evaluation.bootstrap_resamples, confidence=evaluation.confidence, seed=evaluation.seed,
            model_name=model_name, neurons_model_info=context.loaded.info, progress=context.progress,
        )
        result.write(directory)

    model_input = ({"base": asdict(config.model)} if model_name == "base"
                   else {"adapter": context.records[f"finetune/{model_name}"].product})
    inputs = {
        "model": model_input, "tasks": {task: asdict(getattr(config.tasks, task)) for task in tasks},
        "languages": {task: list(config.evaluation_languages(task)) for task in tasks},
        "positions": evaluation.positions,
        "neuron_sets": {name: context.records[f"identify/{name}"].product for name in sets},
        "actions": list(evaluation.actions) if sets else [],
        "statistics": statistics.product if needs_statistics else None,
        "options": {k: getattr(evaluation, k) for k in ("batch_size", "bootstrap_resamples", "confidence", "seed")},
    }
    context.stage(f"evaluate/{model_name}", inputs, compute, product=("scores.json", "predictions.jsonl"))


def gather_results(context) -> None:
    from langneurons.evaluate.figures import write_delta_figure

    evaluation = context.config.evaluation

    def compute(directory: Path) -> None:
        from langneurons.evaluate.evaluation import ROW_FIELDS, GridResult
        from langneurons.tables import rows_to_csv

        grids = {name: GridResult.load(context.run_dir / "evaluate" / name) for name in evaluation.models}
        rows = [row for grid in grids.values() for row in grid.rows]
        write_text(directory / "scores.csv", rows_to_csv(rows, ROW_FIELDS))
        write_json(directory / "scores.json", rows)
        comparisons = model_comparisons(context.config, grids)
        write_text(directory / "model_comparisons.csv", rows_to_csv(comparisons, COMPARISON_FIELDS))
        write_json(directory / "model_comparisons.json", comparisons)
        if any(row["delta"] is not None for row in rows):
            write_delta_figure(rows, directory, name="intervention_deltas")

    inputs = {"evaluations": {name: context.records[f"evaluate/{name}"].product for name in evaluation.models},
              "reference": evaluation.reference, "options": [evaluation.bootstrap_resamples,
                                                             evaluation.confidence, evaluation.seed]}
    context.stage("results", inputs, compute, product=("scores.json", "model_comparisons.json"))


def model_comparisons(config, grids) -> list[dict]:
    """Each fine-tuned model vs its reference run and vs the base model, on the unintervened
    baseline, per task, language and metric (paired on the same examples)."""
    from langneurons.evaluate.evaluation import compare_records, score_rows
    from langneurons.finetune.lm_task import LM_TASK

    evaluation = config.evaluation
    finetuned = [name for name in evaluation.models if name != "base"]
    rows = []
    for name in finetuned:
        task = config.run(name).task
        if task == LM_TASK:  # scored zero-shot like the base model: compared with it on the tasks
            rows += zero_shot_comparisons(config, name, grids)
            continue
        same_task = [other for other in finetuned if config.run(other).task == task]
        reference = evaluation.reference if evaluation.reference in same_task else same_task[0]
        references = [r for r in dict.fromkeys([reference, "base"]) if r != name and r in grids
                      and (r != "base" or task in evaluation.tasks)]
        for ref in references:
            for language in config.evaluation_languages(task):
                mine, theirs = grids[name].records(task, language), grids[ref].records(task, language)
                args = (evaluation.bootstrap_resamples, evaluation.confidence, evaluation.seed)
                scores, ref_scores = score_rows(task, mine, *args), score_rows(task, theirs, *args)
                for metric, comparison in compare_records(task, theirs, mine, *args).items():
                    rows.append({"task": task, "language": language, "metric": metric, "model": name,
                                 "reference": ref, "n": scores[metric]["n"], "score": scores[metric]["score"],
                                 "reference_score": ref_scores[metric]["score"], **comparison})
    return rows


def zero_shot_comparisons(config, name: str, grids) -> list[dict]:
    """An LM-tuned model vs the base model on every evaluation task (paired on the same examples)."""
    from langneurons.evaluate.evaluation import compare_records, score_rows

    evaluation, rows = config.evaluation, []
    if "base" not in grids:
        return rows
    args = (evaluation.bootstrap_resamples, evaluation.confidence, evaluation.seed)
    for task in evaluation.tasks:
        for language in config.evaluation_languages(task):
            mine, theirs = grids[name].records(task, language), grids["base"].records(task, language)
            scores, ref_scores = score_rows(task, mine, *args), score_rows(task, theirs, *args)
            for metric, comparison in compare_records(task, theirs, mine, *args).items():
                rows.append({"task": task, "language": language, "metric": metric, "model": name,
                             "reference": "base", "n": scores[metric]["n"], "score": scores[metric]["score"],
                             "reference_score": ref_scores[metric]["score"], **comparison})
    return rows


def evaluation_section(run_dir: Path, manifest: dict) -> list[Block]:
    results = run_dir / "results"
    if "results" not in manifest.get("stages", {}) or not (results / "scores.json").exists():
        return []
    rows = read_json(results / "scores.json")
    blocks: list[Block] = [
        ("h2", "Evaluation"),
        ("p", "Scores in percent with 95% bootstrap confidence intervals. Per-example predictions: "
              "`evaluate/<model>/predictions.jsonl`; all scores: `results/scores.csv`."),
        ("h3", "Scores"),
        ("table", ["model", "task", "language", "condition", "metric", "n", "score [95% CI]"],
         [[r["model"], r["task"], r["language"], r["condition"], r["metric"], str(r["n"]),
           fmt_interval(r["score"], r["ci_low"], r["ci_high"], units=r["n"])] for r in rows]),
    ]
    deltas = [r for r in rows if r.get("delta") is not None]
    if deltas:
        blocks += [
            ("h3", "Interventions vs baseline"),
            ("p", "Δ = intervened minus unintervened score of the same model on the same examples (points); "
                  "accuracy and EM: exact McNemar test and Tango's paired score CI; F1: paired bootstrap."),
            ("table", ["model", "task", "language", "condition", "neurons", "metric", "Δ [95% CI]", "p", "test"],
             [[r["model"], r["task"], r["language"], r["condition"], str(r["neurons"]), r["metric"],
               fmt_interval(r["delta"], r["delta_ci_low"], r["delta_ci_high"], signed=True, units=r["n"]),
               fmt_p(r["p_value"]), r["test"]] for r in deltas]),
        ]
        if (results / "intervention_deltas.png").exists():
            blocks.append(("image", results / "intervention_deltas.png", "intervention deltas per language"))
    comparisons_path = results / "model_comparisons.json"
    comparisons = read_json(comparisons_path) if comparisons_path.exists() else []
    if comparisons:
        blocks += [
            ("h3", "Fine-tuned models compared"),
            ("p", "Δ = model minus reference on the same examples, no intervention."),
            ("table", ["task", "language", "metric", "model", "reference", "score", "reference score",
                       "Δ [95% CI]", "p", "test"],
             [[c["task"], c["language"], c["metric"], c["model"], c["reference"], fmt_number(c["score"]),
               fmt_number(c["reference_score"]), fmt_interval(c["delta"], c["delta_ci_low"], c["delta_ci_high"], True, c.get("n")),
               fmt_p(c["p_value"]), c["test"]] for c in comparisons]),
        ]
    return blocks


EVALUATION = Stage("evaluation", "evaluation", run, report=evaluation_section, published=(
    "evaluate/*/scores.csv", "evaluate/*/scores.json",
    "results/*.csv", "results/*.json", "results/*.png", "results/*.svg"))
