"""Statistics pass with residual-stream sums (``collect --residual``) vs the same pass without.

Both sides run the neuron statistics of a real pass (counts, sums, histogram sketch, each
block's BOS left out); the candidate also adds every block's output to the float64 residual sums
and per-dimension sums of squares (:mod:`langneurons.activations.residual`). Issue 19's target:
at most 5% more time.
"""

from __future__ import annotations

import torch

from benchmarks.common import BenchResult, compare
from langneurons.activations.collect import StatisticsAccumulator
from langneurons.activations.statistics import ActivationStatistics, StatisticsMeta
from langneurons.activations.residual import ResidualAccumulator, ResidualStatistics
from langneurons.hooks import activation_hooks, residual_hooks
from langneurons.models.loading import LoadedModel


def run(loaded: LoadedModel, input_ids: torch.Tensor, repeats: int = 5) -> list[BenchResult]:
    body = loaded.adapter.body()
    meta = StatisticsMeta.for_model(loaded.info, "bench")
    accumulator = StatisticsAccumulator(ActivationStatistics.empty(meta, device=loaded.device))
    residual = ResidualAccumulator(ResidualStatistics.empty(meta, loaded.adapter.hidden_size, device=loaded.device))
    counted = torch.ones_like(input_ids, dtype=torch.bool)
    counted[:, 0] = False  # as in a real pass: each block's BOS is not counted
    accumulator.set_counted(counted.reshape(-1))
    residual.set_counted(counted.reshape(-1))

    def neurons_only():
        with activation_hooks(loaded.adapter, accumulator), torch.inference_mode():
            body(input_ids=input_ids, use_cache=False)

    def with_residual():
        with activation_hooks(loaded.adapter, accumulator), residual_hooks(loaded.adapter, residual), \
                torch.inference_mode():
            body(input_ids=input_ids, use_cache=False)

    result = compare("statistics pass + residual sums", "statistics pass", neurons_only,
                     "statistics pass + float64 residual sums and squares per layer", with_residual,
                     repeats=repeats, target="<= 1.05")
    result.extra.update({"tokens_per_batch": int(counted.sum()), "hidden_size": loaded.adapter.hidden_size,
                         "neurons_per_layer": loaded.info.neurons_per_layer})
    return [result]
