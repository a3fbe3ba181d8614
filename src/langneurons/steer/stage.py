"""The ``steering`` stage (section ``steering:``): steering rates per pair and condition,
examples and figures; its config section, cached run, report section and published files."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from langneurons.blocks import Block, fmt_interval, fmt_number, read_json
from langneurons.stage import Stage
from langneurons.steer.experiment import SteeringOptions


@dataclass(frozen=True)
class SteeringConfig:
    """The steering experiment on ``neuron_set`` (a set of ``identification``; None with
    ``directions`` only) and ``directions`` (a ``method: diffmean`` entry, or None), with the
    options of :class:`langneurons.steer.experiment.SteeringOptions` (written flat in the section)."""

    neuron_set: str | None = "lape"
    options: SteeringOptions = field(default_factory=SteeringOptions)
    directions: str | None = None


DIRECTION_STEERING_KEYS = ("direction_layers", "direction_strengths", "direction_ablate", "direction_weighting")
"""SteeringOptions fields that only matter with ``steering.directions``."""
ADDED_STEERING_KEYS = ("neuron_modes",)
"""SteeringOptions fields added with issue 19, left out of a config's dict and the stage key at
their defaults (so runs without them keep their cache keys)."""


def steering_keys(options: dict, directions: bool) -> dict:
    """``asdict(SteeringOptions)`` without the direction keys (no ``steering.directions``) and the
    added keys at their defaults: what a config without them wrote and hashed."""
    defaults = SteeringOptions()
    return {k: v for k, v in options.items()
            if (directions or k not in DIRECTION_STEERING_KEYS)
            and not (k in ADDED_STEERING_KEYS and tuple(v) == getattr(defaults, k))}


def run(context) -> None:
    from importlib.metadata import version

    from langneurons.steer.api import write_steering
    from langneurons.steer.experiment import run_steering, steering_prompts
    from langneurons.steer.langid import LinguaIdentifier

    from langneurons.directions.stage import DIRECTIONS_FILE

    steering = context.config.steering
    statistics = context.records["statistics"]
    options = steering.options
    neurons = steering.neuron_set is not None

    def directions():
        from langneurons.directions.direction_set import DirectionSet

        if steering.directions is None:
            return None
        return DirectionSet.load(context.run_dir / "identify" / steering.directions / DIRECTIONS_FILE)

    def compute(directory: Path) -> None:
        if options.prompts == "heldout":  # the lines re-read from the corpus must be the ones held out
            from langneurons.activations.api import check_corpus_unchanged

            check_corpus_unchanged(context.run_dir / "statistics", options.source_languages)
        identifier = LinguaIdentifier(options.identifier_languages, options.min_confidence)
        result = run_steering(
            context.loaded, context.neuron_set(steering.neuron_set) if neurons else None, options, identifier,
            context.statistics_for(options.languages) if neurons and options.needs_statistics else None,
            set_name=steering.neuron_set, prompts=steering_prompts(options, asdict(context.config.statistics)),
            progress=context.progress, directions=directions(), direction_name=steering.directions)
        write_steering(result, directory, options.examples)

    direction_inputs = ({"directions": steering.directions,
                         "direction_set": context.records[f"identify/{steering.directions}"].product}
                        if steering.directions is not None else {})
    inputs = {"model": asdict(context.config.model), "options": steering_keys(asdict(options), bool(direction_inputs)),
              "neuron_set": steering.neuron_set,
              "neurons": context.records[f"identify/{steering.neuron_set}"].product if neurons else None,
              "statistics": statistics.product if options.needs_statistics_folder else None,
              "identifier": version("lingua-language-detector"), **direction_inputs}
    context.stage("steering", inputs, compute, product=("steering.json",))


# ---------------------------------------------------------------------------------- report

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
    return read_json(folder / "examples.json"), read_json(folder / "steering.json").get("best_condition")


def _combined(row: dict) -> str:
    """The combined steering score with its bootstrap interval, or why it has none."""
    if row.get("combined_score") is None:
        return "–"
    if row.get("combined_ci_low") is None:
        return f"{fmt_number(row['combined_score'])} [n/a ({row['n']} prompts < 20)]"
    return fmt_interval(row["combined_score"], row["combined_ci_low"], row["combined_ci_high"])


def _direction_note(data: dict) -> str:
    """What a steering run with DiffMean directions adds to its description (empty without them)."""
    meta, bests = data.get("meta", {}), data.get("best_conditions") or {}
    if not meta.get("direction_set"):
        return ""
    return (f" Direction conditions `{meta['direction_set']}:add=a@L` add a x (mean of the target - mean of the source "
            "language) to the residual stream after block(s) L (`ablate@L`: the source's direction removed); each "
            "has a `random-dir` twin, a seeded random vector of the same norm per block. Best on the dev prompts: "
            f"neurons {bests.get('neurons')}, directions {bests.get('directions')}.")


def steering_section(run_dir: Path, manifest: dict) -> list[Block]:
    folder = run_dir / "steering"
    if "steering" not in manifest.get("stages", {}) or not (folder / "steering.json").exists():
        return []
    data = read_json(folder / "steering.json")
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
           fmt_interval(r["target_rate"], r["target_ci_low"], r["target_ci_high"]),
           fmt_interval(r.get("fluent_target_rate"), r.get("fluent_target_ci_low"), r.get("fluent_target_ci_high")),
           fmt_number(r.get("degenerate_rate")), _combined(r),
           fmt_interval(r["source_rate"], r["source_ci_low"], r["source_ci_high"]), fmt_number(r["other_rate"]),
           fmt_number(r["fluency_ppl"])] for r in rows]),
    ]
    if data.get("pooled"):
        blocks += [
            ("p", "Pooled over pairs: per condition, the test continuations of every pair together (n = pairs x "
                  "test prompts; the combined score's interval resamples them)."),
            ("table", ["condition", "pairs", "n", "target % [95% CI]", "fluent target % [95% CI]", "degenerate %",
                       "combined [95% CI]"],
             [[p["condition"], str(len(p.get("pairs", []))), str(p["n"]),
               fmt_interval(p["target_rate"], p["target_ci_low"], p["target_ci_high"]),
               fmt_interval(p["fluent_target_rate"], p["fluent_target_ci_low"], p["fluent_target_ci_high"]),
               fmt_number(p["degenerate_rate"]), _combined(p)] for p in data["pooled"]]),
        ]
    if (folder / "steering_heatmap.png").exists():
        blocks.append(("image", folder / "steering_heatmap.png",
                       f"fluent target rate (raw target rate) of the best condition ({best}) and its random "
                       "control, test prompts"))
    from langneurons.steer.figures import no_sweep_reason

    reason = no_sweep_reason(rows)
    if reason is not None:
        blocks.append(("p", reason))
    elif (folder / "steering_sweep.png").exists():
        blocks.append(("image", folder / "steering_sweep.png", "fluent target rate against strength, test prompts"))
    if (folder / "steering_scores.png").exists():
        blocks.append(("image", folder / "steering_scores.png",
                       "target rate, fluent target rate and combined score per condition, test prompts"))
    examples = read_json(folder / "examples.json") if (folder / "examples.json").exists() else []
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


STEERING = Stage("steering", "steering", run, report=steering_section, published=(
    "steering/steering.csv", "steering/steering.json", "steering/*.png", "steering/*.svg",
    "steering-examples/steering.json", "steering-examples/steering.csv", "steering-examples/examples.json"))
