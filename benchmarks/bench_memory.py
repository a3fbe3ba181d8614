"""Peak resident memory of the statistics pass grows with the model, not with the number of tokens.

The pass runs in fresh processes on the same model, over a small and a large corpus (default 4
and 16 blocks of 128 tokens, 2 blocks per batch); each process reports its peak resident set size
during the pass (``VmHWM``/``ru_maxrss``, reset after loading the model where Linux allows, so the load
peak does not hide the pass). ratio = peak(large) / peak(small), expected ~1.0: the
statistics are O(layers x neurons x bins) and no activation is kept across batches. The row also
reports how much the pass adds on top of the loaded model for both sizes.

    python -m benchmarks.bench_memory --model tiny
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from benchmarks.common import BenchResult
from langneurons.models.loading import LoadedModel


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process (since :func:`reset_peak_rss`), MiB.

    Linux ``VmHWM``; elsewhere ``ru_maxrss``. (``ru_maxrss`` also keeps the peak recorded when a
    thread exits, so it can survive a reset.)"""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    current = _status_mb("VmRSS")
    return current if current is not None else peak_rss_mb()


def reset_peak_rss() -> bool:
    """Start the peak over from the current RSS (Linux >= 4.0: ``/proc/self/clear_refs``), so the
    peak of the pass is not hidden by a higher peak while loading the model."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def child(model: str, blocks: int, batch_size: int, length: int) -> dict:
    """In a fresh process: load ``model``, run the statistics pass over ``blocks`` blocks."""
    from benchmarks.run import benchmark_input_ids, load_benchmark_model
    from langneurons.activations.collect import CollectConfig, collect_statistics
    from langneurons.activations.distributed import statistics_bytes
    from langneurons.corpus.packing import TokenBlocks

    loaded = load_benchmark_model(model)
    text = benchmark_input_ids(loaded, batch_size, length).cpu()
    input_ids = text.repeat(-(-blocks // text.shape[0]), 1)[:blocks]
    corpus = TokenBlocks("en", input_ids, torch.ones_like(input_ids, dtype=torch.bool))
    load_peak = peak_rss_mb()
    gc.collect()
    reset = reset_peak_rss()
    before = current_rss_mb()
    started = time.perf_counter()
    stats = collect_statistics(loaded, corpus, CollectConfig(batch_size=batch_size), progress=False)
    return {"tokens": stats.token_count, "seconds": time.perf_counter() - started, "load_peak_mb": load_peak,
            "before_pass_mb": before, "peak_mb": peak_rss_mb(), "peak_reset": reset,
            "statistics_mb": statistics_bytes(*stats.shape, stats.sketch) / 2**20}


def measure(model: str, blocks: int, batch_size: int = 2, length: int = 128) -> dict:
    """:func:`child` in a subprocess; its JSON report."""
    command = [sys.executable, "-m", "benchmarks.bench_memory", "--child", "--model", model, "--blocks", str(blocks),
               "--batch-size", str(batch_size), "--length", str(length)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory child failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(loaded: LoadedModel, model: str | None = None, pairs: int = 1, batch_size: int = 2, length: int = 128,
        small: int = 4, large: int = 16) -> list[BenchResult]:
    """Peak RSS of the large run / the small run, over ``pairs`` pairs of fresh processes (one by
    default: peak RSS varies by a few MiB between runs, and each pair costs two model loads)."""
    from benchmarks.run import model_spec

    model = model or model_spec(loaded)
    pairs = [(measure(model, small, batch_size, length), measure(model, large, batch_size, length))
             for _ in range(max(1, pairs))]
    ratios = [big["peak_mb"] / little["peak_mb"] for little, big in pairs]
    little, big = pairs[0]
    return [BenchResult(
        name="peak memory of the statistics pass", baseline=f"{little['tokens']} tokens",
        candidate=f"{big['tokens']} tokens ({large // small}x)", ratio_median=statistics.median(ratios),
        ratio_min=min(ratios), ratio_max=max(ratios), repeats=len(pairs), baseline_seconds=little["seconds"],
        candidate_seconds=big["seconds"], target="~1.0 (independent of tokens)",
        extra={"peak_MiB_small": round(little["peak_mb"]), "peak_MiB_large": round(big["peak_mb"]),
               "pass_growth_MiB_small": round(little["peak_mb"] - little["before_pass_mb"]),
               "pass_growth_MiB_large": round(big["peak_mb"] - big["before_pass_mb"]),
               "model_load_peak_MiB": round(little["load_peak_mb"]),
               "statistics_MiB": round(little["statistics_mb"], 1), "peak_of_pass_only": little["peak_reset"]},
    )]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--blocks", type=int, default=None, help="(with --child) blocks in this process")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.model, args.blocks, args.batch_size, args.length)))
        return
    from benchmarks.run import load_benchmark_model

    for result in run(load_benchmark_model(args.model), args.model, args.pairs, args.batch_size, args.length):
        print(json.dumps(result.to_dict()))


if __name__ == "__main__":
    main()
