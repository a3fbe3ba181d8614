"""The ``claims`` stage (section ``claims:``): the literature's claims tested on the run's
artefacts (:mod:`langneurons.report.claims`); its cached run, report section and published files."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from langneurons.blocks import Block, fmt_p, read_json
from langneurons.stage import Stage


def run(context) -> None:
    from langneurons.finetune.lm_task import LM_TASK
    from langneurons.report.claims import (claims_options, evaluate_claims, learning_targets, load_grids,
                                           write_claims, write_targets)

    config = context.config
    models = list(config.evaluation.models) if config.evaluation is not None else []
    runs = {run.name: (run.task, run.options.neurons) for run in config.finetune
            if run.task != LM_TASK}  # LM-task runs enter the subnetwork claim (lm_eval_ppl), not neuron LoRA
    reference = config.evaluation.reference if config.evaluation is not None else None

    def compute(directory: Path) -> None:
        grids = load_grids(context.run_dir, models)  # read once, for the claims and the learning targets
        write_claims(evaluate_claims(context.run_dir, config.claims, runs, models, reference_model=reference,
                                     grids=grids), directory)
        if config.claims.learning_targets:
            write_targets(learning_targets(context.run_dir, grids, config.claims), directory)

    upstream = {name: record.product for name, record in context.records.items()
                if name.startswith(("identify/", "ppxc/", "direction_ppxc/", "evaluate/", "lm_eval_ppl/"))
                or name == "steering"}
    inputs = {"options": claims_options(config.claims), "runs": runs, "models": models, "reference": reference,
              "upstream": upstream}
    context.stage("claims", inputs, compute, product=("claims.json",))


def _power(run_dir: Path) -> list[Block]:
    """The power table of the headline comparisons (claims/power.json), decisive rows only."""
    path = run_dir / "claims" / "power.json"
    rows = [r for r in (read_json(path) if path.exists() else []) if r.get("decisive", True)]
    if not rows:
        return []
    margin = rows[0]["margin"]

    def count(value) -> str:
        return "–" if value is None else str(value)

    def verdict(r) -> str:
        if r["required_n"] is None:
            return "not estimable (no discordant pairs)"
        if r["reached"]:
            return "reached"
        return {True: "not reached; the test set has enough", False: "not reached; the test set is too small",
                None: "not reached"}[r["reachable"]]

    table = [[r["claim"], r["comparison"], r["languages"], str(r["n"]), str(r["n_per_language"]),
              "–" if r["p01"] is None else f"{r['p01']:.3f} / {r['p10']:.3f}", f"±{r['achieved_half_width']:.1f}",
              count(r["required_n_per_language"]), count(r["available_per_language"]), verdict(r)] for r in rows]
    return [("h3", "Power of the headline comparisons"),
            ("p", f"From this run's paired outcomes: the examples per language that a pooled 95% interval of "
                  f"half-width ±{margin:g} point needs, n = ceil(z² · var / margin²) with var = p01 + p10 − "
                  "(p01 − p10)² for accuracy (the McNemar discordance rates; the variance of the per-example "
                  "differences for F1), split evenly over the pooled languages; and the half-width the current "
                  "n achieves (claims/power.csv)."),
            ("table", ["claim", "comparison", "languages", "n", "n per language", "p01 / p10", "achieved",
                       f"n per language needed for ±{margin:g} point", "available per language", "budget"], table)]


def _learning_targets_section(run_dir: Path) -> list[Block]:
    """The learning-targets table (claims/targets.json), where the config states targets."""
    path = run_dir / "claims" / "targets.json"
    rows = read_json(path) if path.exists() else []
    if not rows:
        return []

    def score(r) -> str:
        if r["score"] is None:
            return "–"
        return f"{r['score']:.1f}" + ("" if r["ci_low"] is None else f" [{r['ci_low']:.1f}, {r['ci_high']:.1f}]")

    table = [[r["model"], f"{r['task']} {r['language']} {r['metric']}", f"{r['target']:g}", score(r), str(r["n"]),
              r["status"], r["interval"], r["note"] or "–"] for r in rows]
    return [("h3", "Learning targets"),
            ("p", "The score each fine-tuned model was meant to reach on the source language's test set (the "
                  "config's claims.learning_targets), its 95% interval (accuracy: Wilson) and whether the point "
                  "estimate reaches it; where it does not, what the dev learning curve and the learning-rate search "
                  "show (claims/targets.csv)."),
            ("table", ["model", "score", "target", "measured [95% CI]", "n", "status", "interval vs target",
                       "learning curve (where missed)"], table)]


def claims_section(run_dir: Path, manifest: dict) -> list[Block]:
    path = run_dir / "claims" / "claims.json"
    if "claims" not in manifest.get("stages", {}) or not path.exists():
        return []
    claims = read_json(path)

    def value(number) -> str:
        return "–" if number is None else (f"{number:+.3f}" if abs(number) < 10 else f"{number:+.1f}")

    def excluded(c) -> str:
        bound = c.get("largest_gain_excluded", c["ci_high"])
        return "–" if bound is None else f"{value(bound)} {c['unit']}"

    def interval(c) -> str:
        if c["ci_low"] is not None:
            return f" [{value(c['ci_low'])}, {value(c['ci_high'])}]"
        if c.get("units") is not None and c["verdict"].endswith("(too few units)"):
            from langneurons.evaluate.metrics import unavailable

            return f" [{unavailable(c['units'])}]"
        return ""

    rows = [[f"{c['claim']} ({c['source']})", c["measure"], f"{value(c['estimate'])}{interval(c)} {c['unit']}",
             excluded(c), c["n"], fmt_p(c["p_value"]) if c["p_value"] is not None else "–", c["verdict"]]
            for c in claims]
    return [("h2", "Claims of the literature, tested"),
            ("p", "Each verdict follows the rule stated in claims/claims.json from this run's artefacts: "
                  "supported / contradicted when the 95% interval or test settles it, inconclusive otherwise; "
                  "inconclusive (too few units) when a bootstrap interval would rest on fewer than 20 resampling "
                  "units (held-out documents per language, examples, prompts): then no interval and no p-value. "
                  "The two headline claims (no gain larger than the margin) are supported when the interval's upper "
                  "bound is below +margin and contradicted when its lower bound is above it; the largest gain "
                  "excluded is that upper bound."),
            ("table", ["claim (source)", "measured", "estimate [95% CI]", "largest gain excluded", "n", "p",
                       "verdict"], rows)] + _learning_targets_section(run_dir) + _power(run_dir)


CLAIMS = Stage("claims", "claims", run, report=claims_section,
               published=("claims/claims.*", "claims/power.*", "claims/targets.*"), report_first=True)
