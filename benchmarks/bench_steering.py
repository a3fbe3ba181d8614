"""Steering throughput: greedy generation under a steering intervention vs plain batched generation.

* baseline: :func:`langneurons.evaluate.generation.greedy_generate`, no intervention;
* candidate: :func:`langneurons.steer.experiment.steered_generate` with the steering experiment's
  heaviest condition, *both*: ``zero`` on one language's neurons and ``add`` on another's (each
  0.5% of all neurons, spread over every layer), applied to every position, prompt and generated.

A second row times direction steering (issue 19): ``add`` of a vector (norm 8) to the residual
stream after the three middle blocks, every position (:class:`~langneurons.directions.DirectionIntervention`,
what a ``diffmean:add=a@L`` condition applies).

Same prompts, same batch, exactly ``max_new_tokens`` new tokens each (no early stop), so both do
the same decoding; the ratio is the cost of the interventions' hooks. Target: <= 1.1.
Identification (lingua, milliseconds per text) and the fluency pass are not generation and are
not timed here.

Run: ``python -m benchmarks.bench_steering`` (the suite's tiny random Llama) or
``python -m benchmarks.bench_steering --model gemma3-270m`` (built-in English prompts).
"""

from __future__ import annotations

import argparse
import json

import torch

from benchmarks.common import BenchResult, compare
from langneurons.evaluate.generation import greedy_generate
from langneurons.tasks.prompts import pad_id
from langneurons.intervene import build_intervention
from langneurons.models.loading import LoadedModel
from langneurons.steer.experiment import steered_generate


def steering_interventions(loaded: LoadedModel, fraction: float = 0.005, seed: int = 0) -> list:
    """[zero on set A, add on set B]: two disjoint random sets of ``fraction`` of each layer's neurons."""
    info = loaded.info
    layers, width = info.num_layers, info.neurons_per_layer
    per_layer = max(1, round(fraction * width))
    generator = torch.Generator().manual_seed(seed)
    rows_a, rows_b = [], []
    for layer in range(layers):
        chosen = torch.randperm(width, generator=generator)[: 2 * per_layer]
        rows_a += [[layer, int(n)] for n in chosen[:per_layer]]
        rows_b += [[layer, int(n)] for n in chosen[per_layer:]]
    offsets = torch.randn(layers, width, generator=generator)
    return [build_intervention("zero", torch.tensor(rows_a), layers, width),
            build_intervention("add", torch.tensor(rows_b), layers, width, offsets)]


def english_prompts(tokenizer, count: int, words: int = 8) -> list[list[int]]:
    from langneurons.steer.prompts import load_prompts

    return [list(tokenizer(text)["input_ids"]) for text in load_prompts("builtin", "en", count, words)]


def run(loaded: LoadedModel, repeats: int = 3, prompts: list[list[int]] | None = None, max_new_tokens: int = 16,
        batch_size: int = 8, warmup: int = 1) -> list[BenchResult]:
    prompts = prompts or english_prompts(loaded.tokenizer, batch_size)
    never = lambda token: False  # noqa: E731  (fixed length: both do the same decoding)
    pad = pad_id(loaded.tokenizer) if loaded.tokenizer is not None else 0
    interventions = steering_interventions(loaded)

    def plain():
        return greedy_generate(loaded.model, prompts, pad, never, max_new_tokens=max_new_tokens,
                               batch_size=batch_size)

    def steered():
        return steered_generate(loaded, prompts, interventions, pad, never, max_new_tokens, batch_size)

    result = compare("steering generation", f"plain batched greedy generation (batch {batch_size}, KV cache)", plain,
                     "steered: zero 0.5% + add 0.5% of neurons on all positions", steered, repeats=repeats,
                     warmup=warmup, target="<= 1.1")
    generations = len(prompts)
    result.extra |= {"prompts": generations, "new_tokens": max_new_tokens,
                     "neurons": sum(i.num_neurons for i in interventions),
                     "plain_generations_per_s": generations / result.baseline_seconds,
                     "steered_generations_per_s": generations / result.candidate_seconds,
                     "model": loaded.info.model_id, "device": str(loaded.device)}
    directions = [direction_intervention(loaded)]

    def direction_steered():
        return steered_generate(loaded, prompts, directions, pad, never, max_new_tokens, batch_size)

    direction = compare("direction steering generation", f"plain batched greedy generation (batch {batch_size}, "
                        "KV cache)", plain, "steered: add a vector to the residual stream after 3 middle blocks",
                        direction_steered, repeats=repeats, warmup=warmup, target="<= 1.1")
    direction.extra |= {"prompts": generations, "new_tokens": max_new_tokens, "layers": directions[0].layers,
                        "plain_generations_per_s": generations / direction.baseline_seconds,
                        "steered_generations_per_s": generations / direction.candidate_seconds,
                        "model": loaded.info.model_id, "device": str(loaded.device)}
    return [result, direction]


def direction_intervention(loaded: LoadedModel, norm: float = 8.0, seed: int = 0):
    """``add`` of a seeded random vector of norm ``norm`` after the three middle blocks."""
    from langneurons.directions import DirectionIntervention

    layers, hidden = loaded.info.num_layers, loaded.adapter.hidden_size
    middle = sorted({max(0, min(layers - 1, layers // 2 + offset)) for offset in (-1, 0, 1)})
    vector = torch.randn(hidden, generator=torch.Generator().manual_seed(seed))
    return DirectionIntervention.addition({layer: norm * vector / vector.norm() for layer in middle}, layers)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model to load (e.g. gemma3-270m); default: the suite's tiny random Llama")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    from benchmarks.run import load_benchmark_model

    loaded = load_benchmark_model(args.model or "tiny")
    prompts = english_prompts(loaded.tokenizer, args.prompts)
    for result in run(loaded, repeats=args.repeats, prompts=prompts, max_new_tokens=args.new_tokens,
                      batch_size=args.prompts, warmup=args.warmup):
        print(json.dumps(result.to_dict()))


if __name__ == "__main__":
    main()
