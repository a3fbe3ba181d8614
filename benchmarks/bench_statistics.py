"""Statistics pass vs bare forward pass of the decoder body (no LM head), same model and batch.

Also measures the approach of the paper's released code: per batch, ``torch.quantile`` over the
batch's tokens for 9 quantiles per layer, kept per batch (to be averaged later), plus the
same counts. Reports ratios to the bare forward pass. As in a real pass, the first token of
every block (the BOS) is left out of langneurons' statistics (the paper's code counts it).
"""

from __future__ import annotations

import torch

from benchmarks.common import BenchResult, compare
from langneurons.activations.collect import StatisticsAccumulator
from langneurons.activations.statistics import ActivationStatistics, StatisticsMeta
from langneurons.hooks import activation_hooks
from langneurons.models.loading import LoadedModel

PAPER_QUANTILES = torch.tensor([0.05, 0.1, 0.2, 0.25, 0.5, 0.75, 0.8, 0.9, 0.95])


def run(loaded: LoadedModel, input_ids: torch.Tensor, repeats: int = 5) -> list[BenchResult]:
    body = loaded.adapter.body()
    stats = ActivationStatistics.empty(StatisticsMeta.for_model(loaded.info, "bench"), device=loaded.device)
    accumulator = StatisticsAccumulator(stats)
    counted = torch.ones_like(input_ids, dtype=torch.bool)
    counted[:, 0] = False  # as in a real pass: each block's BOS is not counted
    accumulator.set_counted(counted.reshape(-1))
    paper_quantiles = PAPER_QUANTILES.to(loaded.device)
    per_batch: list[torch.Tensor] = []

    def paper_hook(layer: int, activation: torch.Tensor) -> None:
        values = activation.detach().reshape(-1, activation.shape[-1]).float()
        stats.positive_count[layer] += (values > 0).sum(0)
        per_batch.append(torch.quantile(values, paper_quantiles, dim=0))

    def bare():
        with torch.inference_mode():
            body(input_ids=input_ids, use_cache=False)

    def ours():
        with activation_hooks(loaded.adapter, accumulator), torch.inference_mode():
            body(input_ids=input_ids, use_cache=False)

    def paper():
        per_batch.clear()
        with activation_hooks(loaded.adapter, paper_hook), torch.inference_mode():
            body(input_ids=input_ids, use_cache=False)

    tokens = input_ids.numel()
    results = [
        compare("statistics pass", "bare forward", bare, "langneurons statistics (counts, sums, histogram sketch)",
                ours, repeats=repeats, target="<= 1.10"),
        compare("statistics pass (paper code)", "bare forward", bare,
                "per-batch torch.quantile (9 quantiles per layer)", paper, repeats=repeats, target="2.5-4.5 expected"),
    ]
    for result in results:
        result.extra.update({"tokens_per_batch": tokens, "bare_tokens_per_second": tokens / result.baseline_seconds})
    return results
