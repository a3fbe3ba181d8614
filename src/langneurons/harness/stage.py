"""The ``lm_eval`` stage (section ``lm_eval:``, extra ``langneurons[lm-eval]``): harness tasks on
the base model under the baseline and the intervention conditions; its config section, checks,
cached run and report section."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from langneurons.blocks import Block, fmt_interval, fmt_p, read_json
from langneurons.errors import LangNeuronsError
from langneurons.harness.api import LmEvalOptions
from langneurons.stage import Stage, WrappedOptions


@dataclass(frozen=True)
class LmEvalConfig(WrappedOptions):
    """lm-evaluation-harness tasks (extra ``langneurons[lm-eval]``) on the base model under the
    baseline and, for every neuron set x language x action, the intervention on that language's
    neurons (plus its layer-matched random control when ``random_control``).

    ``options``: the harness tasks and how they are run and compared
    (:class:`langneurons.harness.api.LmEvalOptions`: ``tasks``, ``include_path`` relative to the
    working directory, ``limit``, ``num_fewshot``, bootstrap settings, ``seed``), written flat in
    the section; ``languages``: whose neurons are intervened (default: the experiment's
    languages). Scores and paired tests as in :mod:`langneurons.harness.api`."""

    options: LmEvalOptions
    neuron_sets: tuple[str, ...] = ()
    languages: tuple[str, ...] | None = None
    actions: tuple[str, ...] = ("zero",)
    positions: str = "all"
    random_control: bool = True
    batch_size: int = 8

    KEYS = ("tasks", "include_path", "neuron_sets", "languages", "actions", "positions", "random_control", "limit",
            "num_fewshot", "batch_size", "bootstrap_resamples", "confidence", "seed")


def check(config) -> None:
    """The extra is installed and the task names exist, before any stage runs."""
    from langneurons.harness import register
    from langneurons.harness.api import task_manager

    register()
    manager = task_manager(config.lm_eval.options)
    if config.lm_eval.positions == "prompt":
        from langneurons.harness.api import non_generation_tasks

        others = non_generation_tasks(config.lm_eval.options, manager)
        if others:
            raise LangNeuronsError(f"lm_eval.positions 'prompt' intervenes on generation only, but task "
                                   f"{next(iter(others))!r} is a {next(iter(others.values()))} task")


def run(context) -> None:
    """Harness tasks on the base model: baseline, each set x language x action, random controls."""
    from langneurons.intervene.spec import InterventionSpec, parse_action
    from langneurons.provenance import folder_sha256

    section = context.config.lm_eval
    statistics = context.records["statistics"]
    languages = list(section.languages or context.config.languages)
    specs = [InterventionSpec(neurons=name, languages=(language,), positions=section.positions,
                              **parse_action(action))
             for name in section.neuron_sets for language in languages for action in section.actions]
    needs_statistics = any(spec.statistics_languages for spec in specs)

    def compute(directory: Path) -> None:
        from langneurons.harness.api import conditions_for, run_lm_eval
        from langneurons.harness.backend import LangNeuronsLM

        conditions = conditions_for(specs, random_control=section.random_control, seed=section.options.seed,
                                    neuron_sets={name: context.neuron_set(name) for name in section.neuron_sets})
        lm = LangNeuronsLM(loaded=context.loaded, batch_size=section.batch_size,
                           statistics=str(context.run_dir / "statistics") if needs_statistics else None)
        result = run_lm_eval(lm, conditions, section.options, model_name=context.config.model.name)
        result.write(directory)

    inputs = {"model": asdict(context.config.model), "options": section.flat(), "languages": languages,
              "task_files": {folder: folder_sha256(Path(folder)) for folder in section.options.include_path},
              "neuron_sets": {name: context.records[f"identify/{name}"].product for name in section.neuron_sets},
              "statistics": statistics.product if needs_statistics else None}
    context.stage("lm_eval", inputs, compute, product=("scores.json", "samples.jsonl"))


def lm_eval_section(run_dir: Path, manifest: dict) -> list[Block]:
    scores = run_dir / "lm_eval" / "scores.json"
    if "lm_eval" not in manifest.get("stages", {}) or not scores.exists():
        return []
    rows = read_json(scores)["rows"]
    blocks: list[Block] = [
        ("h2", "lm-evaluation-harness tasks"),
        ("p", "Harness tasks on the base model under each condition; 0/1 metrics in percent, others in the "
              "harness's unit, with 95% bootstrap CIs. Δ = condition minus baseline on the same documents "
              "(0/1 metrics: exact McNemar test, Tango's paired score CI; others: paired bootstrap). Per-example results: "
              "`lm_eval/samples.jsonl`; the harness's own aggregates: `lm_eval/harness.json`."),
        ("table", ["task", "filter", "metric", "condition", "neurons", "n", "score [95% CI]", "Δ [95% CI]", "p"],
         [[r["task"], r["filter"], r["metric"], r["condition"], str(r["neurons"]), str(r["n"]),
           fmt_interval(r["score"], r["ci_low"], r["ci_high"], units=r["n"]),
           "–" if r["delta"] is None else fmt_interval(r["delta"], r["delta_ci_low"], r["delta_ci_high"], signed=True,
                                                    units=r["n"]),
           fmt_p(r["p_value"])] for r in rows]),
    ]
    return blocks


LM_EVAL = Stage("lm_eval", "lm_eval", run, report=lm_eval_section, check=check)
