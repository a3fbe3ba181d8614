"""The ``claims`` stage (section ``claims:``): the literature's claims tested on the run's
artefacts (:mod:`langneurons.report.claims`); its cached run, report section and published files."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from langneurons.blocks import Block, fmt_p, read_json
from langneurons.stage import Stage


def run(context) -> None:
    from langneurons.report.claims import evaluate_claims, write_claims

    config = context.config
    models = list(config.evaluation.models) if config.evaluation is not None else []
    runs = {run.name: (run.task, run.options.neurons) for run in config.finetune}

    def compute(directory: Path) -> None:
        write_claims(evaluate_claims(context.run_dir, config.claims, runs, models), directory)

    upstream = {name: record.product for name, record in context.records.items()
                if name.startswith(("identify/", "ppxc/", "evaluate/")) or name == "steering"}
    inputs = {"options": asdict(config.claims), "runs": runs, "models": models, "upstream": upstream}
    context.stage("claims", inputs, compute, product=("claims.json",))


def claims_section(run_dir: Path, manifest: dict) -> list[Block]:
    path = run_dir / "claims" / "claims.json"
    if "claims" not in manifest.get("stages", {}) or not path.exists():
        return []
    claims = read_json(path)

    def value(number) -> str:
        return "–" if number is None else (f"{number:+.3f}" if abs(number) < 10 else f"{number:+.1f}")

    rows = [[f"{c['claim']} ({c['source']})", c["measure"],
             f"{value(c['estimate'])}" + (f" [{value(c['ci_low'])}, {value(c['ci_high'])}]" if c["ci_low"] is not None
                                          else "") + f" {c['unit']}",
             c["n"], fmt_p(c["p_value"]) if c["p_value"] is not None else "–", c["verdict"]] for c in claims]
    return [("h2", "Claims of the literature, tested"),
            ("p", "Each verdict follows the rule stated in claims/claims.json from this run's artefacts: "
                  "supported / contradicted when the 95% interval or test settles it, inconclusive otherwise."),
            ("table", ["claim (source)", "measured", "estimate [95% CI]", "n", "p", "verdict"], rows)]


CLAIMS = Stage("claims", "claims", run, report=claims_section, published=("claims/claims.*",), report_first=True)
