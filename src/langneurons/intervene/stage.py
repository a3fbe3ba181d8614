"""The ``ppxc`` stages (section ``ppxc:``): a perplexity-change matrix, its tables and heatmap per
neuron set; its config section, cached run, report section and published files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from langneurons.blocks import Block, fmt_number, fmt_signed, read_csv, read_json, stage_folders
from langneurons.intervene.api import PPXCOptions
from langneurons.stage import Stage, WrappedOptions


@dataclass(frozen=True)
class PPXCConfig(WrappedOptions):
    """Perplexity-change matrices of ``neuron_sets`` with :class:`PPXCOptions` (written flat in the
    section; ``languages`` default: all, ``token_budget`` default: every held-out block)."""

    neuron_sets: tuple[str, ...] = ("lape",)
    options: PPXCOptions = field(default_factory=lambda: PPXCOptions(token_budget=None))

    KEYS = ("neuron_sets", "languages", "action", "random_control", "token_budget", "batch_size", "measure", "seed",
            "bootstrap_resamples", "confidence")


def run(context) -> None:
    from langneurons.activations.api import load_heldout
    from langneurons.intervene import ppxc_matrix, write_ppxc
    from langneurons.intervene.figures import write_ppxc_figure

    section = context.config.ppxc
    options = section.options
    statistics = context.records["statistics"]
    languages = list(options.languages or context.config.languages)
    for set_name in section.neuron_sets:

        def compute(directory: Path, set_name=set_name) -> None:
            heldout = {language: load_heldout(context.run_dir / "statistics", language, context.loaded.tokenizer)
                       for language in languages}
            needs_statistics = options.action.split("=")[0] in ("stat", "add")
            result = ppxc_matrix(
                context.loaded, context.neuron_set(set_name), heldout, languages, intervention_kind=options.action,
                random_control=options.random_control, seed=options.seed, token_budget=options.token_budget,
                cache_dir=directory / "cells", progress=context.progress, batch_size=options.batch_size,
                statistics_by_language=context.statistics_for(context.config.languages) if needs_statistics else None,
                n_resamples=options.bootstrap_resamples, confidence=options.confidence,
            )
            write_ppxc(result, directory)
            write_ppxc_figure(result, directory, name="ppxc", measure=options.measure)

        own_options = {k: v for k, v in section.flat().items() if k != "neuron_sets"}  # not the other sets
        inputs = {"options": own_options, "languages": languages, "statistics": statistics.product,
                  "neurons": context.records[f"identify/{set_name}"].product}
        context.stage(f"ppxc/{set_name}", inputs, compute, product=("ppxc.json",))


def _ppxc_interval(row: dict) -> str:
    """``[low, high]`` of a specificity row, or ``n/a (k units < 20)`` when it has no interval."""
    if row.get("difference_ci_low") in (None, "") and row.get("resampling_units") not in (None, ""):
        from langneurons.evaluate.metrics import unavailable

        return unavailable(int(row["resampling_units"]))
    return f"[{fmt_signed(row.get('difference_ci_low'), 3)}, {fmt_signed(row.get('difference_ci_high'), 3)}]"


def ppxc_section(run_dir: Path, manifest: dict) -> list[Block]:
    folders = stage_folders(run_dir, manifest, "ppxc", "ppxc.json")
    if not folders:
        return []
    blocks: list[Block] = [
        ("h2", "Perplexity change (PPXC)"),
        ("p", "Rows: the language whose neurons are intervened; columns: the language whose held-out text is "
              "scored. Colour: Δ NLL (nats/token, the log of the perplexity ratio); each cell shows Δ NLL and the "
              "relative perplexity change; grey italics: the 95% bootstrap interval of Δ NLL (over held-out "
              "documents) contains 0, or is unavailable for want of units (fewer than 20 per language). "
              "Specificity of row language i: Δ NLL on i minus the mean Δ NLL on the other languages "
              "(nats/token; > 0 when the neurons matter more for their own language), with its 95% interval."),
    ]
    for folder in folders:
        data = read_json(folder / "ppxc.json")
        blocks.append(("h3", f"{folder.name} neurons, {data.get('intervention', '')}"))
        if (folder / "ppxc.png").exists():
            blocks.append(("image", folder / "ppxc.png", f"PPXC of the {folder.name} neurons"))
        rows = read_csv(folder / "ppxc_specificity.csv") if (folder / "ppxc_specificity.csv").exists() else []
        if rows:
            blocks.append(("table", ["set", "language", "neurons", "difference (nats/token)", "95% CI", "ratio"],
                           [[r["set"], r["language"], r["neurons"], fmt_number(r["difference"], 4),
                             _ppxc_interval(r),
                             fmt_number(r["ratio"], 2) if r["ratio"] not in ("", "nan") else "–"] for r in rows]))
    return blocks


PPXC = Stage("ppxc", "ppxc", run, report=ppxc_section, published=(
    "ppxc/*/ppxc.json", "ppxc/*/ppxc.csv", "ppxc/*/ppxc_specificity.csv", "ppxc/*/ppxc.png", "ppxc/*/ppxc.svg"))
