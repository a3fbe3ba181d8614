"""The report of a run directory: Markdown (figures linked) and self-contained HTML (figures
inlined as base64 PNG), built from the files the runner wrote, nothing recomputed.

Sections: run summary, language-specific neurons (per set: counts table and figures),
perplexity change (PPXC heatmaps and specificity), language steering (rates per pair and
condition, heatmap, strength sweep, side-by-side examples), fine-tuning runs, evaluation (scores with 95 %
CIs, intervention deltas with paired tests and their figure, fine-tuned model comparisons),
lm-evaluation-harness tasks (scores and paired tests per condition), stages (cached or computed, timings) and how to reproduce.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path

from langneurons.artefacts import write_text
from langneurons.errors import LangNeuronsError

Block = tuple
NEURON_FIGURES = (("neuron_counts", "neurons per language"), ("neuron_layers", "neurons per layer"),
                  ("neuron_overlap", "overlap between languages"), ("lape_entropy", "LAPE entropy"))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise LangNeuronsError(f"cannot read {path}: {error}") from error


def _read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _number(value, digits: int = 1) -> str:
    if value is None or value == "":
        return "–"
    return f"{float(value):.{digits}f}"


def _signed(value, digits: int = 1) -> str:
    return "–" if value is None or value == "" else f"{float(value):+.{digits}f}"


def _p(value) -> str:
    if value is None or value == "":
        return "–"
    value = float(value)
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _interval(score, low, high, signed: bool = False, units=None) -> str:
    """``score [low, high]``; without an interval (too few resampling units) ``score [n/a (k units < 20)]``."""
    fmt = _signed if signed else _number
    if (low is None or low == "") and units not in (None, ""):
        from langneurons.evaluate.metrics import unavailable

        return f"{fmt(score)} [{unavailable(int(units))}]"
    return f"{fmt(score)} [{fmt(low)}, {fmt(high)}]"


# ---------------------------------------------------------------------------------- sections


def _summary(run_dir: Path, manifest: dict) -> list[Block]:
    config = manifest.get("config", {})
    model = manifest.get("model") or {}
    stages = manifest.get("stages", {})
    compute = sum(record.get("compute_seconds", 0.0) for record in stages.values())
    last = manifest.get("last_run", {})
    lines = [
        f"Model: `{model.get('model_id', config.get('model', {}).get('name', '?'))}` "
        f"({model.get('architecture', '?')}, {model.get('num_layers', '?')} layers x "
        f"{model.get('neurons_per_layer', '?')} neurons, weights {model.get('weights_fingerprint', '?')}).",
        f"Languages: {', '.join(config.get('languages', []))}.",
        f"langneurons {manifest.get('tool_version')}; last run {last.get('finished', '?')} took "
        f"{last.get('seconds', 0.0):.0f} s (all stages' compute time: {compute:.0f} s).",
    ]
    blocks: list[Block] = [("h1", f"langneurons report: {config.get('name', run_dir.name)}"), ("p", " ".join(lines))]
    uses_tasks = bool((config.get("finetune") or {}).get("runs")) or bool(config.get("evaluation"))
    uses_builtin = config.get("statistics", {}).get("corpus") == "builtin" or uses_tasks and any(
        (section or {}).get("source") == "builtin" for section in config.get("tasks", {}).values())
    if uses_builtin:
        blocks.append(("p", "**Built-in sample data.** The corpus and task samples shipped with langneurons are "
                            "tiny and hand-made: the numbers below show that the pipeline runs end to end, they are "
                            "not research results. Results on real data: `docs/results/README.md` in the "
                            "langneurons repository (`make replicate` reruns them)."))
    return blocks


def _stage_folders(run_dir: Path, manifest: dict, prefix: str, marker: str) -> list[Path]:
    """Folders of the run's current ``prefix/<name>`` stages holding ``marker`` (folders of stages no
    longer in the config are left out)."""
    names = manifest.get("stage_order") or list(manifest.get("stages", {}))
    return [run_dir / name for name in names if name.startswith(prefix + "/") and (run_dir / name / marker).exists()]


def _neurons(run_dir: Path, manifest: dict) -> list[Block]:
    from langneurons.identify.neuron_set import NeuronSet, summarize

    folders = _stage_folders(run_dir, manifest, "identify", "neurons.json")
    if not folders:
        return []
    blocks: list[Block] = [("h2", "Language-specific neurons")]
    for folder in folders:
        neuron_set = NeuronSet.load(folder / "neurons.json")
        total = neuron_set.num_layers * neuron_set.neurons_per_layer
        blocks.append(("h3", f"{folder.name} ({neuron_set.method})"))
        blocks.append(("p", f"{len(neuron_set.union())} distinct neurons of {total} "
                            f"({neuron_set.num_layers} layers x {neuron_set.neurons_per_layer}); "
                            f"parameters: `{json.dumps(neuron_set.parameters, sort_keys=True)}`."))
        rows = summarize(neuron_set)
        blocks.append(("table", list(rows[0]), [[str(v) for v in row.values()] for row in rows]))
        figures = folder / "neurons_figures"
        for name, caption in NEURON_FIGURES:
            if (figures / f"{name}.png").exists():
                blocks.append(("image", figures / f"{name}.png", f"{folder.name}: {caption}"))
        for venn in sorted(figures.glob("neuron_venn_*.png")):
            languages = venn.stem.removeprefix("neuron_venn_").replace("_", ", ")
            blocks.append(("image", venn, f"{folder.name}: shared neurons of {languages}"))
    return blocks


def _stability(run_dir: Path, manifest: dict) -> list[Block]:
    folders = _stage_folders(run_dir, manifest, "stability", "stability.json")
    if not folders:
        return []
    blocks: list[Block] = [
        ("h2", "Stability of the neuron sets"),
        ("p", "Each set re-identified with the same method and options on bootstrap resamples of its statistics "
              "(chunks of token blocks drawn with replacement) and on random split-halves. Jaccard: of a "
              "resample's set with the full-data set, or of the two halves' sets; median [central interval]. "
              "Chance: the expected Jaccard of two random sets with the same per-layer counts. Stable: neurons "
              "of the full set selected in at least that fraction of resamples."),
    ]
    for folder in folders:
        data = _read_json(folder / "stability.json")
        rows = data["table"]
        stable_key = next((key for key in rows[0] if key.startswith("stable_size_")), None) if rows else None
        blocks.append(("h3", f"{folder.name} ({data['method']}, {data['options']['resamples']} resamples of "
                             f"{data['replicates']} chunks)"))
        if rows and rows[0].get("size_low", 0) is None:
            blocks.append(("p", f"Intervals unavailable: {data['replicates']} chunks are fewer than the 20 "
                                "resampling units an interval needs; medians only."))

        def interval(row, key):
            if row[f"{key}_median"] is None:
                return "–"
            if row[f"{key}_low"] is None:
                return f"{row[f'{key}_median']:.2f} [{_unavailable_chunks(data)}]"
            return f"{row[f'{key}_median']:.2f} [{row[f'{key}_low']:.2f}, {row[f'{key}_high']:.2f}]"

        def size_interval(row):
            if row["size_low"] is None:
                return _unavailable_chunks(data)
            return f"{row['size_low']:.0f}–{row['size_high']:.0f}"

        blocks.append(("table", ["language", "set size", "size interval", "bootstrap Jaccard", "split-half Jaccard",
                                 "chance", f"stable (>= {stable_key.removeprefix('stable_size_')})" if stable_key
                                 else "stable"],
                       [[r["language"], str(r["set_size"]), size_interval(r),
                         interval(r, "bootstrap_jaccard"), interval(r, "split_half_jaccard"),
                         f"{r['chance_jaccard']:.3f}", str(r.get(stable_key, "–"))] for r in rows]))
        for name, caption in (("stability_jaccard", "Jaccard per language against chance"),
                              ("selection_frequency", "selection frequency of the neurons")):
            if (folder / f"{name}.png").exists():
                blocks.append(("image", folder / f"{name}.png", f"{folder.name}: {caption}"))
    return blocks


def _unavailable_chunks(data: dict) -> str:
    from langneurons.evaluate.metrics import unavailable

    return unavailable(int(data["replicates"]))


def _agreement(run_dir: Path) -> list[Block]:
    """Tables of ``agreement/*.json`` (``langneurons agreement ... --out RUN/agreement``), if any."""
    files = sorted((run_dir / "agreement").glob("*.json"))
    if not files:
        return []
    blocks: list[Block] = [
        ("h2", "Agreement between neuron sets"),
        ("p", "Jaccard per language of two sets (two methods on the same statistics, or one method on two "
              "corpora); chance: the expected Jaccard of two random sets with the same per-layer counts."),
    ]
    for path in files:
        data = _read_json(path)
        blocks += [("h3", f"{path.stem}: {Path(data['first']).as_posix()} vs {Path(data['second']).as_posix()}"),
                   ("table", ["language", "first", "second", "shared", "Jaccard", "chance"],
                    [[r["language"], str(r["size_first"]), str(r["size_second"]), str(r["shared"]),
                      _number(r["jaccard"], 3), f"{r['chance_jaccard']:.3f}"] for r in data["rows"]])]
        if path.with_suffix(".png").exists():
            blocks.append(("image", path.with_suffix(".png"), f"{path.stem}: Jaccard per language against chance"))
    return blocks


def _ppxc(run_dir: Path, manifest: dict) -> list[Block]:
    folders = _stage_folders(run_dir, manifest, "ppxc", "ppxc.json")
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
        data = _read_json(folder / "ppxc.json")
        blocks.append(("h3", f"{folder.name} neurons, {data.get('intervention', '')}"))
        if (folder / "ppxc.png").exists():
            blocks.append(("image", folder / "ppxc.png", f"PPXC of the {folder.name} neurons"))
        rows = _read_csv(folder / "ppxc_specificity.csv") if (folder / "ppxc_specificity.csv").exists() else []
        if rows:
            blocks.append(("table", ["set", "language", "neurons", "difference (nats/token)", "95% CI", "ratio"],
                           [[r["set"], r["language"], r["neurons"], _number(r["difference"], 4),
                             _ppxc_interval(r),
                             _number(r["ratio"], 2) if r["ratio"] not in ("", "nan") else "–"] for r in rows]))
    return blocks


def _direction_ppxc(run_dir: Path, manifest: dict) -> list[Block]:
    """The directional PPXC (issue 19): the neuron PPXC's tables with language i's residual direction
    removed instead of its neurons zeroed, and random directions of the same norm as the control."""
    folders = _stage_folders(run_dir, manifest, "direction_ppxc", "ppxc.json")
    if not folders:
        return []
    blocks: list[Block] = [
        ("h2", "Perplexity change with residual directions removed"),
        ("p", "As the PPXC above, with row language i's DiffMean direction (its mean hidden state minus the mean "
              "of the other languages' means) projected out of the residual stream after the listed blocks "
              "instead of its neurons zeroed; the random rows remove a seeded random direction of the same norm "
              "per language and layer. The neurons column counts the directions removed (one per block)."),
    ]
    for folder in folders:
        data = _read_json(folder / "ppxc.json")
        layers = (data.get("config") or {}).get("layers")
        blocks.append(("h3", f"{folder.name} directions" + (f", blocks {layers}" if layers else "")))
        if (folder / "ppxc.png").exists():
            blocks.append(("image", folder / "ppxc.png", f"PPXC with the {folder.name} directions removed"))
        rows = _read_csv(folder / "ppxc_specificity.csv") if (folder / "ppxc_specificity.csv").exists() else []
        if rows:
            blocks.append(("table", ["set", "language", "directions", "difference (nats/token)", "95% CI", "ratio"],
                           [[r["set"], r["language"], r["neurons"], _number(r["difference"], 4), _ppxc_interval(r),
                             _number(r["ratio"], 2) if r["ratio"] not in ("", "nan") else "–"] for r in rows]))
    return blocks


def _ppxc_interval(row: dict) -> str:
    """``[low, high]`` of a specificity row, or ``n/a (k units < 20)`` when it has no interval."""
    if row.get("difference_ci_low") in (None, "") and row.get("resampling_units") not in (None, ""):
        from langneurons.evaluate.metrics import unavailable

        return unavailable(int(row["resampling_units"]))
    return f"[{_signed(row.get('difference_ci_low'), 3)}, {_signed(row.get('difference_ci_high'), 3)}]"


def _claims(run_dir: Path, manifest: dict) -> list[Block]:
    path = run_dir / "claims" / "claims.json"
    if "claims" not in manifest.get("stages", {}) or not path.exists():
        return []
    claims = _read_json(path)

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
             excluded(c), c["n"], _p(c["p_value"]) if c["p_value"] is not None else "–", c["verdict"]]
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
                       "verdict"], rows)] + _power(run_dir)


def _power(run_dir: Path) -> list[Block]:
    """The power table of the headline comparisons (claims/power.json), decisive rows only."""
    path = run_dir / "claims" / "power.json"
    rows = [r for r in (_read_json(path) if path.exists() else []) if r.get("decisive", True)]
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


def _text(value, limit: int = 90) -> str:
    """One table cell of generated text: newlines shown as ⏎, cut at ``limit`` characters."""
    text = "" if value is None else str(value).replace("\n", " ⏎ ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _prompt_source(prompts: str | None) -> str:
    if prompts == "heldout":
        return "lines of the statistics corpus that the statistics pass held out, never used to identify neurons"
    return str(prompts)


def steering_used_builtin_prompts(folder: Path) -> bool:
    """True when the steering results in ``folder`` (its ``steering.json``) were prompted with the
    project's built-in sentences, so their continuations may be shown and published."""
    try:
        data = json.loads((Path(folder) / "steering.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return data.get("meta", {}).get("options", {}).get("prompts") == "builtin"


def _builtin_examples(run_dir: Path) -> tuple[list[dict], str | None]:
    """Examples of ``<run>/steering-examples`` if that steering run used the built-in prompts."""
    folder = run_dir / "steering-examples"
    if not steering_used_builtin_prompts(folder) or not (folder / "examples.json").exists():
        return [], None
    return _read_json(folder / "examples.json"), _read_json(folder / "steering.json").get("best_condition")


def _combined(row: dict) -> str:
    """The combined steering score with its bootstrap interval, or why it has none."""
    if row.get("combined_score") is None:
        return "–"
    if row.get("combined_ci_low") is None:
        return f"{_number(row['combined_score'])} [n/a ({row['n']} prompts < 20)]"
    return _interval(row["combined_score"], row["combined_ci_low"], row["combined_ci_high"])


def _direction_note(data: dict) -> str:
    """What a steering run with DiffMean directions adds to its description (empty without them)."""
    meta, bests = data.get("meta", {}), data.get("best_conditions") or {}
    if not meta.get("direction_set"):
        return ""
    return (f" Direction conditions `{meta['direction_set']}:add=a@L` add a x (mean of the target - mean of the source "
            "language) to the residual stream after block(s) L (`ablate@L`: the source's direction removed); each "
            "has a `random-dir` twin, a seeded random vector of the same norm per block. Best on the dev prompts: "
            f"neurons {bests.get('neurons')}, directions {bests.get('directions')}.")


def _steering(run_dir: Path, manifest: dict) -> list[Block]:
    folder = run_dir / "steering"
    if "steering" not in manifest.get("stages", {}) or not (folder / "steering.json").exists():
        return []
    data = _read_json(folder / "steering.json")
    meta, all_rows = data.get("meta", {}), data.get("rows", [])
    rows = [r for r in all_rows if r.get("split", "test") == "test"]  # every reported number: test prompts
    options, identifier = meta.get("options", {}), meta.get("identifier", {})
    best = data.get("best_condition")
    dev_n = next((r["n"] for r in all_rows if r.get("split") == "dev"), 0)
    split_note = (f"Each source language's prompts are split (seeded, disjoint) into {dev_n} dev and "
                  f"{rows[0]['n'] if rows else 0} test prompts: the best condition ({best}) is chosen on the dev "
                  "prompts by the fluent target rate; every number and figure here is on the test prompts. "
                  if dev_n else f"The prompts are not split: the best condition ({best}) is chosen on the same "
                                "prompts it is scored on, which favours it. ")
    blocks: list[Block] = [
        ("h2", "Language steering"),
        ("p", f"Prompts: the first {options.get('prompt_words')} words of {options.get('prompt_count')} sentences "
              f"({_prompt_source(options.get('prompts'))}) per source language; greedy continuations of "
              f"{options.get('max_new_tokens')} new tokens with the intervention on {options.get('positions')} "
              f"positions. Each continuation's language is identified by {identifier.get('identifier', '?')} "
              f"{identifier.get('version', '')} among {len(identifier.get('languages', []))} candidate languages. "
              "Rates in percent with 95% Wilson intervals: target = in the target language, source = still in "
              "the source language, other = another language or undetermined. Fluency: perplexity of the "
              "continuations under the unintervened model (higher = less like what the model writes unsteered). "
              "Degenerate: the continuation loops (30% or more of its character 4-grams repeat an earlier one, "
              "`langneurons.steer.degeneration`); fluent target = in the target language and not degenerate "
              "(95% Wilson interval); combined = harmonic mean of the target rate and the non-degenerate share "
              "(95% bootstrap interval over prompts, none below 20 prompts). "
              + split_note +
              f"Conditions on `{meta.get('neuron_set')}` neurons and on layer-matched `random` neurons (control)."
              + _direction_note(data)),
        ("table", ["pair", "condition", "neurons", "n", "target % [95% CI]", "fluent target % [95% CI]",
                   "degenerate %", "combined [95% CI]", "source % [95% CI]", "other %", "fluency ppl"],
         [[f"{r['source']}>{r['target']}", r["condition"], str(r["neurons"]), str(r["n"]),
           _interval(r["target_rate"], r["target_ci_low"], r["target_ci_high"]),
           _interval(r.get("fluent_target_rate"), r.get("fluent_target_ci_low"), r.get("fluent_target_ci_high")),
           _number(r.get("degenerate_rate")), _combined(r),
           _interval(r["source_rate"], r["source_ci_low"], r["source_ci_high"]), _number(r["other_rate"]),
           _number(r["fluency_ppl"])] for r in rows]),
    ]
    if data.get("pooled"):
        blocks += [
            ("p", "Pooled over pairs: per condition, the test continuations of every pair together (n = pairs x "
                  "test prompts; the combined score's interval resamples them)."),
            ("table", ["condition", "pairs", "n", "target % [95% CI]", "fluent target % [95% CI]", "degenerate %",
                       "combined [95% CI]"],
             [[p["condition"], str(len(p.get("pairs", []))), str(p["n"]),
               _interval(p["target_rate"], p["target_ci_low"], p["target_ci_high"]),
               _interval(p["fluent_target_rate"], p["fluent_target_ci_low"], p["fluent_target_ci_high"]),
               _number(p["degenerate_rate"]), _combined(p)] for p in data["pooled"]]),
        ]
    if (folder / "steering_heatmap.png").exists():
        blocks.append(("image", folder / "steering_heatmap.png",
                       f"fluent target rate (raw target rate) of the best condition ({best}) and its random "
                       "control, test prompts"))
    from langneurons.report.steering_figures import no_sweep_reason

    reason = no_sweep_reason(rows)
    if reason is not None:
        blocks.append(("p", reason))
    elif (folder / "steering_sweep.png").exists():
        blocks.append(("image", folder / "steering_sweep.png", "fluent target rate against strength, test prompts"))
    if (folder / "steering_scores.png").exists():
        blocks.append(("image", folder / "steering_scores.png",
                       "target rate, fluent target rate and combined score per condition, test prompts"))
    examples = _read_json(folder / "examples.json") if (folder / "examples.json").exists() else []
    if examples and options.get("prompts") != "builtin":  # a data set's text never enters a report
        examples, best = _builtin_examples(run_dir)
        blocks.append(("p", f"The run's own examples are not shown: its prompts are text of a corpus "
                            f"({options.get('prompts')}); `steering/examples.json` in the run directory has them. "
                            + ("The examples below come from `langneurons steer --prompts builtin ... -o "
                               "<run>/steering-examples` on the same neuron set: the project's own prompts."
                               if examples else "")))
    if examples:
        blocks += [
            ("h3", f"Examples (baseline vs {best})"),
            ("table", ["pair", "prompt", "baseline", "language", "steered", "language"],
             [[f"{e['source']}>{e['target']}", _text(e["prompt"]), _text(e["baseline"]),
               e["baseline_language"] or "undetermined", _text(e["steered"]),
               e["steered_language"] or "undetermined"] for e in examples]),
        ]
    return blocks


def _finetune(run_dir: Path, manifest: dict) -> list[Block]:
    folders = _stage_folders(run_dir, manifest, "finetune", "langneurons_finetune.json")
    if not folders:
        return []
    rows = []
    for folder in folders:
        meta = _read_json(folder / "langneurons_finetune.json")
        neurons = meta.get("neurons", {})
        params = meta.get("parameters", {})
        rows.append([folder.name, meta.get("task", ""),
                     neurons.get("mode", "") + (" (own rows)" if meta.get("adapter") == "rows" else ""),
                     ",".join(neurons.get("languages", [])) or "–", str(neurons.get("count", 0)),
                     f"{params.get('trainable', '?'):,}" if isinstance(params.get("trainable"), int) else "?",
                     f"{meta.get('step')}/{meta.get('total_steps')}",
                     _number((meta.get("smoothed_loss") or [meta.get("final_loss")])[-1], 4),
                     _dev_scores(meta.get("curve", []), meta.get("early_stopping")),
                     _learning_rate(meta),
                     str(meta.get("data", {}).get("examples", "?"))])
    blocks: list[Block] = [
        ("h2", "Fine-tuning"),
        ("p", "Final loss: moving average of the last 20 steps' training loss (nats per target token). "
              "Dev: the held-out development score (%; LM task: perplexity) before training → at the end "
              "(with early stopping: → of the kept adapter, at its step). Learning rate: where a search ran, "
              "chosen on the dev split from the candidates listed (their dev scores after the search's steps)."),
        ("table", ["run", "task", "neurons", "languages", "trained neurons", "trainable parameters", "steps",
                   "final loss", "dev", "learning rate", "examples"], rows)]
    for folder in folders:
        if (folder / "learning_curve.png").exists():
            blocks.append(("image", folder / "learning_curve.png", f"{folder.name}: learning curve"))
    return blocks


def _dev_scores(curve: list, early_stopping: dict | None = None) -> str:
    if not curve:
        return "–"
    text = f"{curve[0]['dev_score']:.1f} → {curve[-1]['dev_score']:.1f} (n={curve[-1]['dev_n']})"
    if early_stopping and early_stopping.get("best_step") is not None:
        text += f"; kept step {early_stopping['best_step']}: {early_stopping['best_score']:.1f}"
    return text


def _learning_rate(meta: dict) -> str:
    rate = (meta.get("config") or {}).get("learning_rate")
    search = meta.get("lr_search")
    if rate is None:
        return "?"
    if not search:
        return f"{rate:g}"
    tried = ", ".join(f"{r:g}: {s:.1f}" for r, s in zip(search["candidates"], search["dev_scores"]))
    return f"{rate:g} (dev, {search['steps']} steps: {tried})"


def _evaluation(run_dir: Path, manifest: dict) -> list[Block]:
    results = run_dir / "results"
    if "results" not in manifest.get("stages", {}) or not (results / "scores.json").exists():
        return []
    rows = _read_json(results / "scores.json")
    blocks: list[Block] = [
        ("h2", "Evaluation"),
        ("p", "Scores in percent with 95% bootstrap confidence intervals. Per-example predictions: "
              "`evaluate/<model>/predictions.jsonl`; all scores: `results/scores.csv`."),
        ("h3", "Scores"),
        ("table", ["model", "task", "language", "condition", "metric", "n", "score [95% CI]"],
         [[r["model"], r["task"], r["language"], r["condition"], r["metric"], str(r["n"]),
           _interval(r["score"], r["ci_low"], r["ci_high"], units=r["n"])] for r in rows]),
    ]
    deltas = [r for r in rows if r.get("delta") is not None]
    if deltas:
        blocks += [
            ("h3", "Interventions vs baseline"),
            ("p", "Δ = intervened minus unintervened score of the same model on the same examples (points); "
                  "accuracy: exact McNemar test, EM/F1: paired bootstrap."),
            ("table", ["model", "task", "language", "condition", "neurons", "metric", "Δ [95% CI]", "p", "test"],
             [[r["model"], r["task"], r["language"], r["condition"], str(r["neurons"]), r["metric"],
               _interval(r["delta"], r["delta_ci_low"], r["delta_ci_high"], signed=True, units=r["n"]),
               _p(r["p_value"]), r["test"]] for r in deltas]),
        ]
        if (results / "intervention_deltas.png").exists():
            blocks.append(("image", results / "intervention_deltas.png", "intervention deltas per language"))
    comparisons_path = results / "model_comparisons.json"
    comparisons = _read_json(comparisons_path) if comparisons_path.exists() else []
    if comparisons:
        blocks += [
            ("h3", "Fine-tuned models compared"),
            ("p", "Δ = model minus reference on the same examples, no intervention."),
            ("table", ["task", "language", "metric", "model", "reference", "score", "reference score",
                       "Δ [95% CI]", "p", "test"],
             [[c["task"], c["language"], c["metric"], c["model"], c["reference"], _number(c["score"]),
               _number(c["reference_score"]), _interval(c["delta"], c["delta_ci_low"], c["delta_ci_high"], True, c.get("n")),
               _p(c["p_value"]), c["test"]] for c in comparisons]),
        ]
    return blocks


def _lm_eval(run_dir: Path, manifest: dict) -> list[Block]:
    scores = run_dir / "lm_eval" / "scores.json"
    if "lm_eval" not in manifest.get("stages", {}) or not scores.exists():
        return []
    rows = _read_json(scores)["rows"]
    blocks: list[Block] = [
        ("h2", "lm-evaluation-harness tasks"),
        ("p", "Harness tasks on the base model under each condition; 0/1 metrics in percent, others in the "
              "harness's unit, with 95% bootstrap CIs. Δ = condition minus baseline on the same documents "
              "(0/1 metrics: exact McNemar test; others: paired bootstrap). Per-example results: "
              "`lm_eval/samples.jsonl`; the harness's own aggregates: `lm_eval/harness.json`."),
        ("table", ["task", "filter", "metric", "condition", "neurons", "n", "score [95% CI]", "Δ [95% CI]", "p"],
         [[r["task"], r["filter"], r["metric"], r["condition"], str(r["neurons"]), str(r["n"]),
           _interval(r["score"], r["ci_low"], r["ci_high"], units=r["n"]),
           "–" if r["delta"] is None else _interval(r["delta"], r["delta_ci_low"], r["delta_ci_high"], signed=True,
                                                    units=r["n"]),
           _p(r["p_value"])] for r in rows]),
    ]
    return blocks


def _stages(manifest: dict) -> list[Block]:
    stages = manifest.get("stages", {})
    order = [name for name in manifest.get("stage_order", []) if name in stages]
    stages = {name: stages[name] for name in order + sorted(set(stages) - set(order))}
    versions = manifest.get("versions", {})
    return [
        ("h2", "Stages"),
        ("table", ["stage", "last run", "seconds (last run)", "compute seconds", "compute CPU seconds"],
         [[name, record["status"], _number(record["seconds"]), _number(record["compute_seconds"]),
           _number(record.get("cpu_seconds"))] for name, record in stages.items()]),
        ("h2", "Reproduce"),
        ("p", f"Config hash `{manifest.get('config_hash')}`; the full config is `config.yaml` and `manifest.json` "
              "records every stage's inputs and output hashes. Rerun with `langneurons run config.yaml --run-dir "
              "<this folder>`: finished stages are reused."),
        ("p", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."),
    ]


# ---------------------------------------------------------------------------------- rendering


def _markdown(blocks: list[Block], report_dir: Path) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + block[1])
        elif kind == "p":
            out.append(block[1])
        elif kind == "table":
            header, rows = block[1], block[2]
            out.append("\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                                 + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                                    for row in rows]))
        elif kind == "image":
            relative = Path("..") / block[1].relative_to(report_dir.parent)
            out.append(f"![{block[2]}]({relative.as_posix()})")
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    """HTML of a paragraph: escaped, with `code` and **bold** spans."""
    parts = html.escape(text).split("`")
    text = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 8px;
text-align:left}th{background:#f2f2f2}img{max-width:100%;margin:0.5em 0}figure{margin:1em 0}
figcaption{font-size:0.85em;color:#555}code{background:#f5f5f5;padding:0 3px}"""


def _html(blocks: list[Block], title: str) -> str:
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_STYLE}</style></head><body>"]
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block[2])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "image":
            data = base64.b64encode(block[1].read_bytes()).decode("ascii")
            out.append(f"<figure><img alt='{html.escape(block[2])}' src='data:image/png;base64,{data}'>"
                       f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def report_blocks(run_dir: str | Path) -> list[Block]:
    """The report's content as blocks (``h1``/``h2``/``h3``, ``p``, ``table``, ``image``)."""
    run_dir = Path(run_dir)
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.exists():
        raise LangNeuronsError(f"{run_dir} is not a langneurons run directory (no manifest.json)")
    manifest = _read_json(manifest_path)
    return (_summary(run_dir, manifest) + _claims(run_dir, manifest) + _neurons(run_dir, manifest)
            + _stability(run_dir, manifest) + _agreement(run_dir) + _ppxc(run_dir, manifest) + _direction_ppxc(run_dir, manifest) + _steering(run_dir, manifest)
            + _finetune(run_dir, manifest) + _evaluation(run_dir, manifest) + _lm_eval(run_dir, manifest)
            + _stages(manifest))


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report/report.md`` and the self-contained ``report/report.html``; return both paths."""
    run_dir = Path(run_dir)
    blocks = report_blocks(run_dir)
    report_dir = run_dir / "report"
    markdown = write_text(report_dir / "report.md", _markdown(blocks, report_dir))
    page = write_text(report_dir / "report.html", _html(blocks, blocks[0][1]))
    return markdown, page
