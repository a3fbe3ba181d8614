"""Intervention overhead vs bare forward pass of the decoder body (no LM head), same model and batch.

The intervention zeroes 1% of all neurons (random, seeded). Two implementations are timed
against the bare forward pass:

* langneurons: one out-of-place ``torch.where`` per affected layer, dense mask cached on device;
* the paper code's approach: a hook looping over the layer's neurons in Python, one in-place
  ``index_fill_`` per neuron, each with a fresh host-to-device index tensor.

Run: ``python -m benchmarks.bench_interventions --model tiny`` (small random Llama) or
``python -m benchmarks.bench_interventions`` (the default model); it takes the suite's options.
"""

from __future__ import annotations

import sys
import time

import torch

from benchmarks.common import BenchResult, compare
from langneurons.corpus.packing import TokenBlocks
from langneurons.hooks import activation_hooks
from langneurons.intervene import build_intervention, intervene
from langneurons.models.loading import LoadedModel


def random_neurons(num_layers: int, neurons_per_layer: int, fraction: float, seed: int = 0) -> torch.Tensor:
    """``fraction`` of all neurons drawn uniformly, int64 [k, 2] rows (layer, neuron)."""
    total = num_layers * neurons_per_layer
    flat = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[: max(1, round(fraction * total))]
    return torch.stack([flat // neurons_per_layer, flat % neurons_per_layer], dim=1)


class _Timed:
    """Wraps a benchmark callable and keeps each call's wall time (for the ratio of minima, the
    estimate least affected by other processes on a shared machine)."""

    def __init__(self, fn):
        self.fn, self.times = fn, []

    def __call__(self):
        start = time.perf_counter()
        result = self.fn()
        self.times.append(time.perf_counter() - start)
        return result


def run(loaded: LoadedModel, blocks_or_input_ids: TokenBlocks | torch.Tensor, repeats: int = 5,
        fraction: float = 0.01) -> list[BenchResult]:
    input_ids = blocks_or_input_ids.input_ids if isinstance(blocks_or_input_ids, TokenBlocks) else blocks_or_input_ids
    input_ids = input_ids.to(loaded.device)
    info = loaded.info
    body = loaded.adapter.body()
    neurons = random_neurons(info.num_layers, info.neurons_per_layer, fraction)
    zero = build_intervention("zero", neurons, info.num_layers, info.neurons_per_layer)
    per_layer = {layer: idx.tolist() for layer, idx in zero.neurons.items()}

    def paper_hook(layer: int, activation: torch.Tensor) -> torch.Tensor:
        for neuron in per_layer[layer]:
            activation.index_fill_(-1, torch.tensor([neuron]).to(activation.device), 0)
        return activation

    def forward():
        return body(input_ids=input_ids, use_cache=False).last_hidden_state

    def bare():
        with torch.inference_mode():
            return forward()

    def ours():
        with intervene(loaded, zero), torch.inference_mode():
            return forward()

    def paper():
        with activation_hooks(loaded.adapter, paper_hook, layers=zero.layers), torch.inference_mode():
            return forward()

    torch.testing.assert_close(ours(), paper(), rtol=1e-5, atol=1e-5)  # both do the same thing
    bare, ours, paper = _Timed(bare), _Timed(ours), _Timed(paper)
    results = []
    for name, candidate_name, candidate, target in [
        ("intervention overhead (zero 1% of neurons)", "langneurons intervene (one torch.where per layer)", ours,
         "<= 1.05"),
        ("intervention overhead (paper code)", "Python loop: index_fill_ per neuron, fresh H2D index", paper,
         "reference"),
    ]:
        bare.times.clear()
        candidate.times.clear()
        result = compare(name, "bare forward", bare, candidate_name, candidate, repeats=repeats, target=target)
        result.extra = {"ratio_of_minimum_times": min(candidate.times) / min(bare.times),
                        "tokens_per_batch": input_ids.numel(), "neurons": zero.num_neurons,
                        "layers": len(zero.layers), "model": info.model_id, "device": str(loaded.device),
                        "threads": torch.get_num_threads()}
        results.append(result)
    return results


if __name__ == "__main__":
    from benchmarks.run import main

    main(["--only", "interventions", *sys.argv[1:]])
