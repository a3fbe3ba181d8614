"""The ``lm_eval`` stage (section ``lm_eval:``, extra ``langneurons[lm-eval]``): harness tasks on
the base model under the baseline and the intervention conditions; its config section, checks,
cached run and report section."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from langneurons.blocks import Block, fmt_interval, fmt_p, read_json
from langneurons.stage import Stage


@dataclass(frozen=True)
class LmEvalConfig:
    """lm-evaluation-harness tasks (extra ``langneurons[lm-eval]``) on the base model under the
    baseline and, for every neuron set x language x action, the intervention on that language's
    neurons (plus its layer-matched random control when ``random_control``).

    ``tasks``: harness task or group names; ``include_path``: folders of extra task YAML files
    (relative to the working directory); ``languages``: whose neurons are intervened (default:
    the experiment's languages); ``limit``: documents per task; ``num_fewshot``: None keeps each
    task's default. Scores and paired tests as in :mod:`langneurons.harness.api`."""

    tasks: tuple[str, ...]
    include_path: tuple[str, ...] = ()
    neuron_sets: tuple[str, ...] = ()
    languages: tuple[str, ...] | None = None
    actions: tuple[str, ...] = ("zero",)
    positions: str = "all"
    random_control: bool = True
    limit: int | None = None
    num_fewshot: int | None = None
    batch_size: int = 8
    bootstrap_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0


def lm_eval_options(section: LmEvalConfig):
    """The :class:`langneurons.harness.api.LmEvalOptions` of the section."""
    from langneurons.harness.api import LmEvalOptions

    return LmEvalOptions(tasks=section.tasks, include_path=section.include_path, limit=section.limit,
                         num_fewshot=section.num_fewshot, bootstrap_resamples=section.bootstrap_resamples,
                         confidence=section.confidence, seed=section.seed)


def check(config) -> None:
    """The extra is installed and the task names exist, before any stage runs."""
    from langneurons.harness import register
    from langneurons.harness.api import task_manager

    register()
    task_manager(lm_eval_options(config.lm_eval))


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

        conditions = conditions_for(specs, random_control=section.random_control, seed=section.seed,
                                    neuron_sets={name: context.neuron_set(name) for name in section.neuron_sets})
        lm = LangNeuronsLM(loaded=context.loaded, batch_size=section.batch_size,
                           statistics=str(context.run_dir / "statistics") if needs_statistics else None)
        result = run_lm_eval(lm, conditions, lm_eval_options(section), model_name=context.config.model.name)
        result.write(directory)

    inputs = {"model": asdict(context.config.model), "options": asdict(section), "languages": languages,
              "task_files": {folder: folder_sha256(Path(folder)) for folder in section.include_path},
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
              "(0/1 metrics: exact McNemar test; others: paired bootstrap). Per-example results: "
              "`lm_eval/samples.jsonl`; the harness's own aggregates: `lm_eval/harness.json`."),
        ("table", ["task", "filter", "metric", "condition", "neurons", "n", "score [95% CI]", "Δ [95% CI]", "p"],
         [[r["task"], r["filter"], r["metric"], r["condition"], str(r["neurons"]), str(r["n"]),
           fmt_interval(r["score"], r["ci_low"], r["ci_high"]),
           "–" if r["delta"] is None else fmt_interval(r["delta"], r["delta_ci_low"], r["delta_ci_high"], signed=True),
           fmt_p(r["p_value"])] for r in rows]),
    ]
    return blocks


LM_EVAL = Stage("lm_eval", "lm_eval", run, report=lm_eval_section, check=check)
