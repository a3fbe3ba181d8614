"""Cost of ``collect --replicates R``: time of the statistics pass with per-chunk counts vs without
(same process, interleaved), and peak memory of a pass with R = 10 vs R = 1 (fresh processes).

The replicate update per layer: one [R, T] x [T, N] product for the positive counts, a fine-to-
octave lookup of the histogram's bins and one ``scatter_add_`` into [N, R x 38] octave bins. The
merged statistics are the same tensors either way.

    python -m benchmarks.bench_replicates --model gemma3-270m
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time

import torch

from benchmarks.common import BenchResult, compare
from langneurons.activations.collect import StatisticsAccumulator
from langneurons.activations.replicates import ReplicateAccumulator, ReplicateStatistics, replicate_bytes
from langneurons.activations.statistics import ActivationStatistics, StatisticsMeta
from langneurons.hooks import activation_hooks
from langneurons.models.loading import LoadedModel

REPLICATES = 10


def _time(loaded: LoadedModel, input_ids: torch.Tensor, repeats: int) -> BenchResult:
    body = loaded.adapter.body()
    meta = StatisticsMeta.for_model(loaded.info, "bench")
    counted = torch.ones_like(input_ids, dtype=torch.bool)
    counted[:, 0] = False  # as in a real pass: each block's BOS is not counted
    plain = StatisticsAccumulator(ActivationStatistics.empty(meta, device=loaded.device))
    plain.set_counted(counted.reshape(-1))
    stats = ActivationStatistics.empty(meta, device=loaded.device)
    chunked = ReplicateAccumulator(ReplicateStatistics.empty(meta, stats.sketch, REPLICATES, device=loaded.device))
    with_replicates = StatisticsAccumulator(stats, chunked)
    with_replicates.set_counted(counted.reshape(-1))
    chunks = (torch.arange(input_ids.shape[0]) % REPLICATES).repeat_interleave(counted.sum(1))

    def without():
        with activation_hooks(loaded.adapter, plain), torch.inference_mode():
            body(input_ids=input_ids, use_cache=False)

    def replicated():
        chunked.set_chunks(chunks)
        with activation_hooks(loaded.adapter, with_replicates), torch.inference_mode():
            body(input_ids=input_ids, use_cache=False)

    result = compare("statistics pass with replicates", "statistics pass", without,
                     f"statistics pass + per-chunk counts (R = {REPLICATES})", replicated, repeats=repeats,
                     target="<= 1.1")
    result.extra |= {"tokens_per_batch": int(counted.sum())}
    return result


def child(model: str, blocks: int, replicates: int, batch_size: int, length: int) -> dict:
    """In a fresh process: load ``model`` and run the statistics pass with ``replicates`` chunks."""
    from benchmarks.bench_memory import current_rss_mb, peak_rss_mb, reset_peak_rss
    from benchmarks.run import benchmark_input_ids, load_benchmark_model
    from langneurons.activations.collect import CollectConfig, collect_with_replicates
    from langneurons.corpus.packing import TokenBlocks

    loaded = load_benchmark_model(model)
    text = benchmark_input_ids(loaded, batch_size, length).cpu()
    input_ids = text.repeat(-(-blocks // text.shape[0]), 1)[:blocks]
    corpus = TokenBlocks("en", input_ids, torch.ones_like(input_ids, dtype=torch.bool))
    gc.collect()
    reset = reset_peak_rss()
    before = current_rss_mb()
    started = time.perf_counter()
    stats, _ = collect_with_replicates(loaded, corpus, CollectConfig(batch_size=batch_size, replicates=replicates),
                                       progress=False)
    return {"tokens": stats.token_count, "seconds": time.perf_counter() - started, "before_pass_mb": before,
            "peak_mb": peak_rss_mb(), "peak_reset": reset,
            "replicates_mb": replicate_bytes(*stats.shape, replicates, stats.sketch) / 2**20}


def _measure(model: str, blocks: int, replicates: int, batch_size: int, length: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.bench_replicates", "--child", "--model", model, "--blocks",
               str(blocks), "--replicates", str(replicates), "--batch-size", str(batch_size), "--length", str(length)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"replicates child failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _memory(model: str, blocks: int = 10, batch_size: int = 2, length: int = 128) -> BenchResult:
    one, ten = _measure(model, blocks, 1, batch_size, length), _measure(model, blocks, REPLICATES, batch_size, length)
    ratio = ten["peak_mb"] / one["peak_mb"]
    return BenchResult(
        name="peak memory, statistics pass with replicates", baseline="--replicates 1",
        candidate=f"--replicates {REPLICATES}", ratio_median=ratio, ratio_min=ratio, ratio_max=ratio, repeats=1,
        baseline_seconds=one["seconds"], candidate_seconds=ten["seconds"], target="reported",
        extra={"peak_MiB_R1": round(one["peak_mb"]), f"peak_MiB_R{REPLICATES}": round(ten["peak_mb"]),
               "pass_growth_MiB_R1": round(one["peak_mb"] - one["before_pass_mb"]),
               f"pass_growth_MiB_R{REPLICATES}": round(ten["peak_mb"] - ten["before_pass_mb"]),
               f"replicates_MiB_R{REPLICATES}": round(ten["replicates_mb"], 1), "tokens": one["tokens"],
               "peak_of_pass_only": one["peak_reset"]})


def run(loaded: LoadedModel, input_ids: torch.Tensor, repeats: int = 5, model: str | None = None) -> list[BenchResult]:
    from benchmarks.run import model_spec

    return [_time(loaded, input_ids, repeats), _memory(model or model_spec(loaded), length=input_ids.shape[1])]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--replicates", type=int, default=REPLICATES)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.model, args.blocks, args.replicates, args.batch_size, args.length)))
        return
    from benchmarks.run import benchmark_input_ids, load_benchmark_model

    loaded = load_benchmark_model(args.model)
    input_ids = benchmark_input_ids(loaded, args.batch_size, args.length)
    for result in run(loaded, input_ids, args.repeats, args.model):
        print(json.dumps(result.to_dict()))


if __name__ == "__main__":
    main()
