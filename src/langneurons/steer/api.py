"""Stage API of ``langneurons steer``: neuron set (+ statistics) -> steering tables, figures, examples.

Files written to the output folder (atomic):

* ``steering.csv`` / ``steering.json``: one row per pair x condition x prompt split (``dev`` /
  ``test``; :data:`ROW_FIELDS`): rates in the target / source / other language (percent, 95%
  Wilson interval), fluency perplexity, degenerate and fluent target rates (Wilson) and the
  combined score (bootstrap interval); the JSON adds provenance (model, neuron set, identifier and
  its version, options, the prompt indices of each split), the best condition, chosen on the
  dev rows (``best_condition``: the neuron set's, or the direction set's in a run without neurons;
  ``best_conditions``: ``{"neurons": ..., "directions": ...}``), and ``pooled``: per condition the
  test generations of all pairs pooled (:func:`langneurons.steer.metric.pooled_scores`);
* ``generations.jsonl``: every prompt's continuation per condition with its split, identified
  language and degeneration flag;
* ``examples.json``: per pair a few *test* prompts with the baseline and the best condition's
  continuation side by side;
* ``steering_heatmap.png/svg``, ``steering_sweep.png/svg`` and ``steering_scores.png/svg`` of the test
  rows (:mod:`langneurons.steer.figures`); with neurons and directions,
  ``steering_heatmap_directions.png/svg`` of the best direction condition and its random twin;
* with :func:`steer`: ``manifest.json`` (package versions, SHA-256 of the neuron set and statistics
  files read, wall and CPU seconds, the files written and their SHA-256).
"""

from __future__ import annotations

import json
from pathlib import Path

from langneurons.artefacts import write_json, write_text
from langneurons.errors import LangNeuronsError
from langneurons.identify.neuron_set import NeuronSet, as_neuron_set, content_sha256
from langneurons.steer.experiment import (ROW_FIELDS, SteeringOptions, SteeringResult, check_inputs,
                                          check_statistics_model, run_steering, steering_prompts)
from langneurons.steer.langid import LinguaIdentifier, check_covered
from langneurons.steer.metric import pooled_scores
from langneurons.steer.prompts import HELDOUT


def examples(result: SteeringResult, count: int) -> list[dict]:
    """Per pair, the first ``count`` test prompts: baseline and best-condition continuations with their
    languages and degeneration flags (with directions too: the best direction condition's)."""
    bests = result.best_conditions()
    best = bests["neurons"] or bests["directions"]
    direction = bests["directions"] if bests["neurons"] else None
    by_key = {(g["source"], g["target"], g["condition"], g["prompt_index"]): g for g in result.generations}
    out = []
    pairs = dict.fromkeys((r["source"], r["target"]) for r in result.rows)
    for source, target in pairs:
        indices = sorted(g["prompt_index"] for g in result.generations if g["condition"] == "baseline"
                         and (g["source"], g["target"]) == (source, target) and g.get("split", "test") == "test")
        for index in indices[:count]:
            baseline = by_key[(source, target, "baseline", index)]
            steered = by_key.get((source, target, best, index)) if best else None
            out.append({"source": source, "target": target, "prompt": baseline["prompt"], "condition": best,
                        "baseline": baseline["continuation"], "baseline_language": baseline["language"],
                        "steered": steered["continuation"] if steered else None,
                        "steered_language": steered["language"] if steered else None,
                        "steered_degenerate": steered.get("degenerate") if steered else None})
            if direction:
                other = by_key.get((source, target, direction, index))
                out[-1].update({"direction_condition": direction,
                                "direction_steered": other["continuation"] if other else None,
                                "direction_steered_language": other["language"] if other else None,
                                "direction_steered_degenerate": other.get("degenerate") if other else None})
    return out


def write_steering(result: SteeringResult, out_dir, example_count: int = 3) -> list[Path]:
    """Write every file of the module docstring into ``out_dir``; returns their paths."""
    from langneurons.tables import rows_to_csv
    from langneurons.steer.figures import write_steering_figures

    out_dir = Path(out_dir)
    bests = result.best_conditions()
    best = bests["neurons"] or bests["directions"]
    lines = "".join(json.dumps(g, ensure_ascii=False, sort_keys=True) + "\n" for g in result.generations)
    pooled = pooled_scores(result.generations, seed=result.meta.get("options", {}).get("seed", 0))
    files = [
        write_text(out_dir / "steering.csv", rows_to_csv(result.rows, ROW_FIELDS)),
        write_json(out_dir / "steering.json", {"meta": result.meta, "best_condition": best,
                                               "best_conditions": bests, "rows": result.rows,
                                               "pooled": pooled}),
        write_text(out_dir / "generations.jsonl", lines),
        write_json(out_dir / "examples.json", examples(result, example_count)),
    ]
    files += write_steering_figures(result.rows, out_dir, best)
    if bests["neurons"] and bests["directions"]:  # the direction unit's best beside the neurons' heatmap
        from langneurons.figures import save_figure
        from langneurons.steer.figures import steering_heatmap

        test_rows = [r for r in result.rows if r.get("split", "test") == "test"]
        files += save_figure(steering_heatmap(test_rows, bests["directions"]), out_dir, "steering_heatmap_directions")
    return files


def load_steering(directory) -> dict:
    """``steering.json`` of a folder written by :func:`write_steering`."""
    path = Path(directory) / "steering.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise LangNeuronsError(f"cannot read steering results {path}: {error}") from error


def statistics_options(statistics_dir) -> dict:
    """The options a statistics folder was collected with (its ``manifest.json``)."""
    from langneurons.provenance import MANIFEST

    path = Path(statistics_dir) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))["options"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise LangNeuronsError(f"cannot read the collect options of {statistics_dir} ({path}): {error}") from error


def prepare(options: SteeringOptions, neuron_set_path, statistics_dir=None, identifier=None, directions_path=None):
    """Load and check the inputs before any model work: (neuron set or None, statistics or None,
    identifier, prompts: source language -> texts, direction set or None). ``neuron_set_path``: a
    path or a :class:`NeuronSet`; it and ``directions_path`` may each be None, not both."""
    from langneurons.activations.api import load_statistics_dir
    from langneurons.directions.direction_set import DirectionSet

    if neuron_set_path is None and directions_path is None:
        raise LangNeuronsError("steering needs a neuron set (--neurons) or a direction set (--directions)")
    identifier = identifier or LinguaIdentifier(options.identifier_languages, options.min_confidence)
    for language in options.languages:  # identifier coverage first: it needs no file
        if not identifier.covers(language):
            check_covered(language)
            raise LangNeuronsError(f"language {language!r} is not among the identifier's candidate languages")
    needs_statistics = neuron_set_path is not None and options.needs_statistics
    if (needs_statistics or options.prompts == HELDOUT) and statistics_dir is None:
        raise LangNeuronsError("add/stat steering actions and 'heldout' prompts need --statistics "
                               "(the folder written by 'collect')")
    neuron_set = as_neuron_set(neuron_set_path) if neuron_set_path is not None else None
    directions = DirectionSet.load(directions_path) if directions_path is not None else None
    statistics = None
    if needs_statistics:
        statistics = load_statistics_dir(statistics_dir, options.languages)
    if neuron_set is not None:
        source = neuron_set.source
        check_statistics_model(statistics, source.get("weights_fingerprint"),  # the set's model, before any model loads
                               f"the neuron set's model {source.get('model_id', '?')}",
                               (neuron_set.num_layers, neuron_set.neurons_per_layer))
    check_inputs(options, neuron_set, identifier, statistics, directions)
    if options.prompts == HELDOUT:  # the lines re-read from the corpus must be the ones held out
        from langneurons.activations.api import check_corpus_unchanged

        check_corpus_unchanged(statistics_dir, options.source_languages)
    prompts = steering_prompts(options, statistics_options(statistics_dir) if statistics_dir is not None else None)
    return neuron_set, statistics, identifier, prompts, directions


def steer(loaded, neuron_set_path, options: SteeringOptions, out_dir, statistics_dir=None, identifier=None,
          set_name: str | None = None, prepared=None, progress: bool = True, directions_path=None,
          direction_name: str | None = None) -> tuple[SteeringResult, list[Path]]:
    """Run the steering experiment (:func:`langneurons.steer.experiment.run_steering`) and write its
    files and a manifest. ``neuron_set_path`` (may be None with ``directions_path``): the neuron
    set; ``directions_path``: a DiffMean direction set, whose conditions run beside the neurons'.

    ``neuron_set_path``: the neuron set's file, or a :class:`NeuronSet` (the manifest then records
    the SHA-256 of its content instead of a file's).

    ``prepared``: what :func:`prepare` returned for the same arguments (not loaded twice)."""
    import time

    from langneurons.artefacts import check_folder_target
    from langneurons.provenance import MANIFEST, file_sha256, package_versions

    start, cpu_start = time.perf_counter(), time.process_time()
    check_folder_target(out_dir)
    neuron_set, statistics, identifier, prompts, directions = prepared or prepare(
        options, neuron_set_path, statistics_dir, identifier, directions_path)
    result = run_steering(loaded, neuron_set, options, identifier, statistics, set_name=set_name, prompts=prompts,
                          progress=progress, directions=directions, direction_name=direction_name)
    files = write_steering(result, out_dir, options.examples)
    inputs = {}
    if isinstance(neuron_set_path, NeuronSet):
        inputs["neuron_set"] = {"path": None, "content_sha256": content_sha256(neuron_set_path)}
    elif neuron_set_path is not None:
        inputs["neuron_set"] = {"path": str(neuron_set_path), "sha256": file_sha256(Path(neuron_set_path))}
    if directions_path is not None:
        inputs["direction_set"] = {"path": str(directions_path), "sha256": file_sha256(Path(directions_path))}
    if statistics is not None:
        inputs["statistics"] = {language: file_sha256(Path(statistics_dir) / f"{language}.safetensors")
                                for language in statistics}
    manifest = {"command": "steer", "versions": package_versions(), "inputs": inputs,
                "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start,
                "outputs": {path.name: file_sha256(path) for path in files}}
    return result, files + [write_json(Path(out_dir) / MANIFEST, manifest)]
