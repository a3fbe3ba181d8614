"""Real-data check: a harness copy of langneurons' XNLI evaluation gives the same accuracies.

For each language, the same XNLI test examples (seeded, class-balanced ``--limit`` per language,
``langneurons.tasks.load_xnli``) are scored twice under three conditions -- baseline, the
language's own neurons of a neuron set zeroed, and the same for its layer-matched random control
(``random_control(set, seed)``, the same draw in both):

* by langneurons (:func:`langneurons.evaluate.evaluation.evaluate_grid`, verbaliser classifier);
* by lm-evaluation-harness through ``LangNeuronsLM`` on a local multiple-choice task written at
  run time (:func:`langneurons.harness.xnli_task.write_xnli_tasks`: same prompt, choices = the
  verbaliser's first tokens).

Writes ``comparison.csv/json`` (per language x condition: both accuracies, the number of
examples whose predicted class differs, both paired tests vs baseline), the two score tables,
``config.json`` and ``manifest.json`` (versions, model, neuron-set hash, timings) into ``--out``.
The task files (they hold XNLI text) go to ``--work`` (default ``runs/xnli-lm-eval-tasks``).

    python -m benchmarks.xnli_lm_eval_check --data ../shared/data/xnli --neurons runs/lape.json \\
        --languages en,fr,hi --limit 200 --out docs/results/lm-eval
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from langneurons.artefacts import stable_hash, write_json, write_text
from langneurons.tables import rows_to_csv

COMPARISON_FIELDS = ("language", "condition", "n", "langneurons_accuracy", "harness_accuracy", "different_predictions",
                     "langneurons_delta", "harness_delta", "langneurons_p_value", "harness_p_value")


def _harness_predictions(samples, task: str, condition: str) -> dict[int, int]:
    """doc_id -> predicted class (argmax of the choices' log-likelihoods, as the harness's acc)."""
    return {s["doc_id"]: int(torch.tensor(s["loglikelihoods"]).argmax()) for s in samples
            if s["task"] == task and s["condition"] == condition}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--data", required=True, help="XNLI folder with test/<lang>.jsonl")
    parser.add_argument("--neurons", required=True, help="neuron set file (e.g. LAPE) of --model")
    parser.add_argument("--languages", default="en,fr,hi")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("docs/results/lm-eval"))
    parser.add_argument("--work", type=Path, default=Path("runs/xnli-lm-eval-tasks"))
    args = parser.parse_args(argv)

    from langneurons.evaluate.evaluation import evaluate_grid
    from langneurons.harness import register
    from langneurons.harness.api import LmEvalOptions, conditions_for, run_lm_eval, task_manager
    from langneurons.harness.xnli_task import verbaliser_choices, write_xnli_tasks
    from langneurons.identify.neuron_set import NeuronSet
    from langneurons.identify.random_control import random_control
    from langneurons.models.loading import load_model
    from langneurons.provenance import package_versions
    from langneurons.tasks import load_xnli

    register()
    from langneurons.harness.backend import LangNeuronsLM

    start = time.perf_counter()
    languages = [language.strip() for language in args.languages.split(",")]
    loaded = load_model(args.model)
    lape = NeuronSet.load(args.neurons)
    lape.check_model(loaded.info)
    examples = {language: load_xnli(args.data, language, "test", args.limit, args.seed, balanced=True)
                for language in languages}

    own_start = time.perf_counter()
    own = evaluate_grid(loaded, {"xnli": examples}, neuron_sets={"lape": lape, "random": random_control(lape, args.seed)},
                        actions=("zero",), batch_size=args.batch_size, n_resamples=args.bootstrap, seed=args.seed,
                        progress=False)
    own_seconds = time.perf_counter() - own_start

    tasks = write_xnli_tasks(args.work, loaded.tokenizer, examples)
    lm = LangNeuronsLM(loaded=loaded, batch_size=args.batch_size)
    harness_rows, harness_samples, harness_start = [], [], time.perf_counter()
    for language in languages:
        options = LmEvalOptions(tasks=(tasks[language],), include_path=(str(args.work),),
                                bootstrap_resamples=args.bootstrap, seed=args.seed)
        conditions = conditions_for([f"{args.neurons}:{language}:zero"], random_control=True, seed=args.seed,
                                    neuron_sets={args.neurons: lape})
        result = run_lm_eval(lm, conditions, options, manager=task_manager(options))
        harness_rows += result.rows
        harness_samples += result.samples
    harness_seconds = time.perf_counter() - harness_start

    stem = Path(args.neurons).stem
    names = {"baseline": "baseline", "lape:zero": f"{stem}:{{lang}}:zero", "random:zero": f"random({stem}):{{lang}}:zero"}
    comparison = []
    for language in languages:
        for own_name, harness_pattern in names.items():
            harness_name = harness_pattern.format(lang=language)
            mine = next(r for r in own.rows if r["language"] == language and r["condition"] == own_name)
            theirs = next(r for r in harness_rows if r["task"] == tasks[language] and r["condition"] == harness_name)
            records = own.records("xnli", language, own_name)
            predicted = _harness_predictions(harness_samples, tasks[language], harness_name)
            different = sum(record["prediction"] != predicted[i] for i, record in enumerate(records))
            comparison.append({
                "language": language, "condition": own_name, "n": mine["n"],
                "langneurons_accuracy": mine["score"], "harness_accuracy": theirs["score"],
                "different_predictions": different, "langneurons_delta": mine["delta"],
                "harness_delta": theirs["delta"], "langneurons_p_value": mine["p_value"],
                "harness_p_value": theirs["p_value"],
            })

    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "comparison.csv", rows_to_csv(comparison, COMPARISON_FIELDS))
    write_json(args.out / "comparison.json", comparison)
    write_text(args.out / "langneurons_scores.csv", rows_to_csv(own.rows))
    write_text(args.out / "harness_scores.csv", rows_to_csv(harness_rows))
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    write_json(args.out / "config.json", config)
    write_json(args.out / "manifest.json", {
        "command": "python -m benchmarks.xnli_lm_eval_check", "config": config, "versions": package_versions(),
        "model": loaded.info.to_dict(), "neuron_set": {"file": args.neurons, "sha": stable_hash(lape.neurons),
                                                       "method": lape.method,
                                                       "neurons": {l: int(lape.indices(l).shape[0]) for l in languages}},
        "choices": verbaliser_choices(loaded.tokenizer), "tasks": tasks,
        "seconds": {"langneurons": own_seconds, "harness": harness_seconds, "total": time.perf_counter() - start},
        "threads": torch.get_num_threads(),
    })
    for row in comparison:
        print(f"{row['language']} {row['condition']:12s} langneurons {row['langneurons_accuracy']:.1f}  "
              f"harness {row['harness_accuracy']:.1f}  different predictions {row['different_predictions']}")
    return {"comparison": comparison}


if __name__ == "__main__":
    main()
