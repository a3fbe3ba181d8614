"""CLI commands of the experiment layer: ``run``, ``report``, ``demo`` and ``evaluate``.

Defined on :data:`experiment_app`; the main CLI registers them (thin wrappers, errors are
LangNeuronsError and become one-line messages there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from langneurons.cli.options import ModelChoice, model_options

experiment_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
console = Console()


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _print_stages(result) -> None:
    table = Table("stage", "status", "seconds", title=f"run {result.run_dir}")
    for name, record in result.stages.items():
        table.add_row(name, record.status, f"{record.seconds:.1f}")
    console.print(table)


@experiment_app.command("run")
def run_command(
    config: Annotated[Path, typer.Argument(help="Experiment config (YAML); see 'langneurons demo' for an example.")],
    run_dir: Annotated[Optional[Path], typer.Option("--run-dir", "-o", help="Run directory (default runs/<config name>).")] = None,
    force: Annotated[bool, typer.Option(help="Accept a run directory of another tool version (recomputes everything).")] = False,
    report: Annotated[bool, typer.Option(help="Write the report at the end.")] = True,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    data: Annotated[Optional[str], typer.Option(help="Folder of local data copies: the value of ${data} in the config "
                                                     "(same as --var data=PATH).")] = None,
    var: Annotated[Optional[list[str]], typer.Option("--var", help="NAME=VALUE for ${NAME} in the config "
                                                                   "(repeatable; overrides its vars: section).")] = None,
    statistics_from: Annotated[Optional[Path], typer.Option(
        "--statistics-from", help="Statistics folder of a finished run (e.g. runs/replication/statistics), copied "
                                  "into this run first when it has none: the same statistics section is then "
                                  "not computed again.")] = None,
) -> None:
    """Run every stage of an experiment; finished stages with unchanged inputs are reused."""
    from langneurons.errors import LangNeuronsError
    from langneurons.runner import run_experiment

    variables = {}
    for item in var or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise LangNeuronsError(f"--var takes NAME=VALUE, got {item!r}")
        variables[name.strip()] = value
    if data is not None:
        variables["data"] = data
    result = run_experiment(config, run_dir or Path("runs") / config.stem, force=force, progress=progress,
                            report=report, variables=variables, statistics_from=statistics_from)
    _print_stages(result)
    if result.report:
        console.print(f"report: {result.report[1]}")


@experiment_app.command("report")
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by 'langneurons run'.")],
) -> None:
    """Write report/report.md and the self-contained report/report.html of a run directory."""
    from langneurons.report.report import write_report

    markdown, page = write_report(run_dir)
    console.print(f"report: {page} (Markdown: {markdown})")


@experiment_app.command("publish")
def publish_command(
    run_dir: Annotated[Path, typer.Argument(help="Finished run directory (with a claims: stage).")],
    results: Annotated[Path, typer.Option(help="Results folder; the run lands in RESULTS/NAME.")] = Path("docs/results"),
    name: Annotated[Optional[str], typer.Option(help="Folder name (default: the config's name).")] = None,
    readme: Annotated[Optional[Path], typer.Option(help="Also update the claims block of this README "
                                                        "(between langneurons:claims markers).")] = None,
) -> None:
    """Copy a run's report, tables, figures, config and manifest (no predictions, no data text) into
    a results folder and write its README with the claims table."""
    from langneurons.report.publish import publish_run

    publication = publish_run(run_dir, results, name=name, readme=readme)
    console.print(f"published {len(publication.files)} files to {publication.directory}; index {publication.index}")


@experiment_app.command("demo")
def demo_command(
    run_dir: Annotated[Path, typer.Option("--run-dir", "-o", help="Run directory.")] = Path("demo-run"),
    budget: Annotated[str, typer.Option(help="'full' (under 10 min on 2 CPU cores) or 'ci' (smaller).")] = "full",
    force: Annotated[bool, typer.Option(help="Accept a run directory of another tool version.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """The whole study, small, on the embedded default model and the built-in data; prints the report path."""
    from langneurons.runner import run_demo

    run_demo(run_dir, budget=budget, force=force, progress=progress)


@experiment_app.command("evaluate")
@model_options
def evaluate_command(
    languages: Annotated[str, typer.Option("--languages", "-l", help="Comma-separated languages to evaluate.")] = "en,fr,hi",
    tasks: Annotated[str, typer.Option("--tasks", help="xnli, xquad or both (comma-separated).")] = "xnli,xquad",
    model: ModelChoice = ModelChoice(),
    adapter: Annotated[Optional[Path], typer.Option(help="Fine-tuned adapter folder ('langneurons finetune' output).")] = None,
    xnli_source: Annotated[str, typer.Option(help="'builtin', 'hub' or a folder/file (e.g. ../shared/data/xnli).")] = "builtin",
    xquad_source: Annotated[str, typer.Option(help="'builtin', 'hub' or a folder/file (e.g. ../shared/data/xquad).")] = "builtin",
    limit: Annotated[Optional[int], typer.Option(help="Examples per task and language (seeded; XNLI class-balanced).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the subsample and of the bootstrap.")] = 0,
    neurons: Annotated[Optional[list[Path]], typer.Option("--neurons", help="Neuron set file; repeat for several (grid rows).")] = None,
    action: Annotated[Optional[list[str]], typer.Option("--action", help="zero, scale=F, constant=V, stat=p90, stat=mean@en ...; repeatable.")] = None,
    statistics: Annotated[Optional[Path], typer.Option(help="Statistics folder (for stat/add actions).")] = None,
    positions: Annotated[str, typer.Option(help="'all' tokens or 'prompt' only (generated tokens untouched).")] = "all",
    max_length: Annotated[Optional[int], typer.Option(help="Prompt budget in tokens (default 256 XNLI, 512 XQuAD).")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="XQuAD answer budget in tokens.")] = 32,
    batch_size: Annotated[int, typer.Option(help="Examples per forward pass / generation batch.")] = 8,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for CIs and paired tests.")] = 1000,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (scores.csv/json, predictions.jsonl).")] = Path("runs/evaluation"),
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Evaluate a base model or a fine-tuned adapter on XNLI/XQuAD, under every --neurons x --action.

    Each intervention acts on the evaluated language's own neurons of the set; every score has a
    95% bootstrap CI and every intervention a paired test against the unintervened baseline.
    """
    from langneurons.activations.api import load_statistics_dir
    from langneurons.evaluate.evaluation import evaluate_grid
    from langneurons.identify.neuron_set import NeuronSet
    from langneurons.languages import check_languages
    from langneurons.evaluate.figures import write_delta_figure
    from langneurons.tasks import load_xnli, load_xquad

    chosen_languages = check_languages(_split(languages))
    base = model.load()
    loaded = base
    if adapter is not None:
        from langneurons.finetune import load_finetuned

        loaded = load_finetuned(adapter, base=base)
    data: dict = {}
    for task in _split(tasks):
        if task == "xnli":
            data[task] = {l: load_xnli(xnli_source, l, "test", limit, seed, balanced=limit is not None)
                          for l in chosen_languages}
        elif task == "xquad":
            data[task] = {l: load_xquad(xquad_source, l, limit, seed) for l in chosen_languages}
        else:
            from langneurons.errors import LangNeuronsError

            raise LangNeuronsError(f"unknown task {task!r}; use xnli and/or xquad")
    # a set is named by its file, or by its folder for runner outputs (identify/<name>/neurons.json)
    sets = {(p.parent.name if p.stem == "neurons" else p.stem): NeuronSet.load(p) for p in map(Path, neurons or [])}
    result = evaluate_grid(
        loaded, data, neuron_sets=sets, actions=tuple(action or ["zero"]),
        statistics=load_statistics_dir(statistics, chosen_languages) if statistics else None, positions=positions,
        batch_size=batch_size, max_length=max_length, max_new_tokens=max_new_tokens, n_resamples=bootstrap,
        seed=seed, model_name=adapter.name if adapter else loaded.info.model_id, neurons_model_info=base.info,
        progress=progress,
    )
    files = result.write(out)
    if any(row["delta"] is not None for row in result.rows):
        write_delta_figure(result.rows, out)
    table = Table("task", "language", "condition", "metric", "n", "score [95% CI]", "Δ [95% CI]", "p",
                  title=f"{result.model} ({out})")
    from langneurons.evaluate.metrics import interval_text

    for row in result.rows:
        delta = "" if row["delta"] is None else interval_text(row["delta"], row["delta_ci_low"], row["delta_ci_high"],
                                                              row["n"], "+.1f")
        table.add_row(row["task"], row["language"], row["condition"], row["metric"], str(row["n"]),
                      interval_text(row["score"], row["ci_low"], row["ci_high"], row["n"]), delta,
                      "" if row["p_value"] is None else f"{row['p_value']:.3g}")
    console.print(table)
    console.print(f"scores: {files['scores_csv']}; predictions: {files['predictions']}")


@experiment_app.command("lm-eval")
@model_options
def lm_eval_command(
    tasks: Annotated[str, typer.Option("--tasks", "-t", help="Harness tasks or groups, comma-separated (e.g. xcopa_sw,belebele_hin_Deva).")],
    intervention: Annotated[Optional[list[str]], typer.Option("--intervention", "-i", help="NEURONS:LANGS:ACTION[:all|prompt]; repeat for several conditions.")] = None,
    random_control: Annotated[bool, typer.Option(help="Add each intervention's layer-matched random-neuron control.")] = True,
    include_path: Annotated[Optional[list[Path]], typer.Option("--include-path", help="Folder of extra harness task YAML files; repeatable.")] = None,
    adapter: Annotated[Optional[Path], typer.Option(help="Fine-tuned adapter folder ('langneurons finetune' output).")] = None,
    statistics: Annotated[Optional[Path], typer.Option(help="Statistics folder (for stat/add actions).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Documents per task (the harness's first ones).")] = None,
    num_fewshot: Annotated[Optional[int], typer.Option(help="Few-shot examples (default: each task's own).")] = None,
    batch_size: Annotated[int, typer.Option(help="Requests per forward pass.")] = 8,
    device: Annotated[Optional[str], typer.Option(help="Device for the model without --device-map (cpu, cuda, cuda:1).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random control, the harness and the bootstrap.")] = 0,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for CIs and paired tests.")] = 1000,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (scores.csv/json, samples.jsonl, harness.json).")] = Path("runs/lm-eval"),
    model: ModelChoice = ModelChoice(),
) -> None:
    """Run lm-evaluation-harness tasks under the baseline, each --intervention and its random control.

    Every score has a 95% bootstrap CI; every condition is compared with the baseline on the same
    documents (0/1 metrics: exact McNemar test, Tango's paired score CI; others: paired bootstrap). Needs the extra
    langneurons[lm-eval].
    """
    from langneurons.harness import register
    from langneurons.harness.api import LmEvalOptions, check_prompt_scope, conditions_for, run_lm_eval, task_manager

    register()
    options = LmEvalOptions(tasks=tuple(_split(tasks)), include_path=tuple(str(p) for p in include_path or []),
                            limit=limit, num_fewshot=num_fewshot, bootstrap_resamples=bootstrap, seed=seed)
    manager = task_manager(options)
    conditions = conditions_for(intervention or [], random_control=random_control, seed=seed)
    check_prompt_scope(conditions, options, manager)  # before the model loads
    if batch_size < 1:
        from langneurons.errors import LangNeuronsError

        raise LangNeuronsError(f"--batch-size must be at least 1, got {batch_size}")
    from langneurons.harness.backend import LangNeuronsLM

    lm = LangNeuronsLM(loaded=model.load(), adapter=str(adapter) if adapter else None,
                       statistics=str(statistics) if statistics else None, device=device, batch_size=batch_size)
    result = run_lm_eval(lm, conditions, options, model_name=adapter.name if adapter else None, manager=manager)
    files = result.write(out)
    table = Table("task", "metric", "condition", "n", "score [95% CI]", "Δ [95% CI]", "p", title=f"{result.model} ({out})")
    from langneurons.evaluate.metrics import interval_text

    for row in result.rows:
        delta = "" if row["delta"] is None else interval_text(row["delta"], row["delta_ci_low"], row["delta_ci_high"],
                                                              row["n"], "+.1f")
        table.add_row(row["task"], row["metric"], row["condition"], str(row["n"]),
                      interval_text(row["score"], row["ci_low"], row["ci_high"], row["n"]), delta,
                      "" if row["p_value"] is None else f"{row['p_value']:.3g}")
    console.print(table)
    console.print(f"scores: {files['scores_csv']}; per-example results: {files['samples']}")
