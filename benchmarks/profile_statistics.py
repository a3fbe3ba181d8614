"""Where the statistics pass spends its time beyond a bare forward pass (a profile, not a target).

On one batch of the suite's blocks (the BOS of each block left out, as in a real pass):

* whole passes, interleaved, median of ``--repeats``: the bare forward of the decoder body, the
  same with a hook that only returns (the cost of hook dispatch), the full statistics pass;
* every step of :class:`langneurons.activations.collect.StatisticsAccumulator`, timed alone on the
  activations the hooks captured from every layer ([tokens, neurons] float32), summed over
  layers: row selection (the BOS rows out), the two sums, the neuron-major (transposed) copy,
  min/max and the positive count along its rows, and the histogram sketch in that copy (key,
  table lookup, ``scatter_add_``);
* one plain copy of every layer's activations: the unit of a memory-bound pass over them.

Each figure is given in percent of the bare forward pass. The steps timed alone do not add up
exactly to the whole pass (caches are warmer when a step runs alone), which is why both are
reported. Writes JSON and a Markdown table (``--out``).

    python -m benchmarks.profile_statistics --model gemma3-270m --batch-size 8 --length 128
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from langneurons.activations.collect import StatisticsAccumulator
from langneurons.activations.sketch import SketchConfig, _key_shift_and_mask, _lookup_table_int64
from langneurons.activations.statistics import ActivationStatistics, StatisticsMeta
from langneurons.artefacts import write_json, write_text
from langneurons.hooks import activation_hooks


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _steps(values: torch.Tensor, rows: torch.Tensor, sketch: SketchConfig) -> dict:
    """The accumulator's steps on one layer's activations, as callables (buffers made once)."""
    counted = torch.index_select(values, 0, rows)
    tokens, neurons = counted.shape
    positive = torch.empty(neurons, tokens, dtype=torch.bool)
    transposed = torch.empty(neurons, tokens)
    key = torch.empty(neurons, tokens, dtype=torch.int32)  # the pass works in place; here apart, so steps repeat
    index = torch.empty(neurons * tokens, dtype=torch.int64)
    shift, mask = _key_shift_and_mask(sketch)
    table = _lookup_table_int64(sketch, values.device)
    histogram = torch.zeros(neurons, sketch.num_bins, dtype=torch.int32)
    plain = torch.empty_like(values)
    scatter_ones = torch.ones((), dtype=torch.int32).expand(neurons, tokens)
    transposed.copy_(counted.T)
    torch.bitwise_right_shift(transposed.view(torch.int32), shift, out=key).bitwise_and_(mask)
    torch.index_select(table, 0, key.view(-1), out=index)
    return {
        "one plain copy of the activations (unit)": lambda: plain.copy_(values),
        "row selection (BOS rows out)": lambda: torch.index_select(values, 0, rows, out=counted),
        "neuron-major (transposed) copy": lambda: transposed.copy_(counted.T),
        "sum (along rows)": lambda: transposed.sum(1),
        "sum of squares (squared 2-norm along rows)": lambda: torch.linalg.vector_norm(transposed, dim=1).square_(),
        "min / max (along neuron-major rows)": lambda: (torch.amin(transposed, 1), torch.amax(transposed, 1)),
        "positive count (> 0, sum along rows)": lambda: torch.gt(transposed, 0, out=positive).sum(1),
        "histogram: key (shift, mask)": lambda: torch.bitwise_right_shift(
            transposed.view(torch.int32), shift, out=key).bitwise_and_(mask),
        "histogram: table lookup": lambda: torch.index_select(table, 0, key.view(-1), out=index),
        "histogram: scatter_add_": lambda: histogram.scatter_add_(1, index.view(neurons, tokens), scatter_ones),
    }


def profile(loaded, input_ids: torch.Tensor, repeats: int = 5) -> dict:
    body = loaded.adapter.body()
    stats = ActivationStatistics.empty(StatisticsMeta.for_model(loaded.info, "profile"), device=loaded.device)
    accumulator = StatisticsAccumulator(stats)
    counted = torch.ones_like(input_ids, dtype=torch.bool)
    counted[:, 0] = False
    accumulator.set_counted(counted.reshape(-1))
    rows = counted.reshape(-1).nonzero().squeeze(1)

    def bare():
        with torch.inference_mode():
            body(input_ids=input_ids, use_cache=False)

    def hooked_noop():
        with activation_hooks(loaded.adapter, lambda layer, activation: None), torch.inference_mode():
            body(input_ids=input_ids, use_cache=False)

    def with_statistics():
        with activation_hooks(loaded.adapter, accumulator), torch.inference_mode():
            body(input_ids=input_ids, use_cache=False)

    captured: list[torch.Tensor] = []

    def capture(layer: int, activation: torch.Tensor) -> None:
        captured.append(activation.detach().reshape(-1, activation.shape[-1]).float().clone())

    with activation_hooks(loaded.adapter, capture), torch.inference_mode():
        body(input_ids=input_ids, use_cache=False)

    passes = {"bare forward": [], "forward + no-op hooks": [], "forward + statistics": []}
    for _ in range(repeats + 1):  # interleaved; the first round warms up
        for name, fn in zip(passes, (bare, hooked_noop, with_statistics)):
            start = time.perf_counter()
            fn()
            passes[name].append(time.perf_counter() - start)
    seconds = {name: statistics.median(times[1:]) for name, times in passes.items()}
    base = seconds["bare forward"]

    step_seconds: dict[str, float] = {}
    with torch.inference_mode():
        for values in captured:
            for name, fn in _steps(values, rows, stats.sketch).items():
                step_seconds[name] = step_seconds.get(name, 0.0) + _median_seconds(fn, repeats)
    unit = step_seconds["one plain copy of the activations (unit)"]
    accumulator_steps = {k: v for k, v in step_seconds.items() if k != "one plain copy of the activations (unit)"}
    rows_out = [{"part": name, "seconds": s, "percent_of_bare_forward": 100 * s / base} for name, s in seconds.items()]
    rows_out += [{"part": name, "seconds": s, "percent_of_bare_forward": 100 * s / base,
                  "plain_copies": s / unit} for name, s in step_seconds.items()]
    total_steps = sum(accumulator_steps.values())
    return {
        "model": loaded.info.model_id, "tokens_per_batch": int(input_ids.numel()),
        "layers": loaded.info.num_layers, "neurons_per_layer": loaded.info.neurons_per_layer,
        "threads": torch.get_num_threads(), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "repeats": repeats, "rows": rows_out,
        "statistics_over_bare": seconds["forward + statistics"] / base,
        "hook_dispatch_over_bare": seconds["forward + no-op hooks"] / base,
        "steps_alone_percent_of_bare": 100 * total_steps / base,
        "steps_alone_in_plain_copies": total_steps / unit,
    }


def markdown(result: dict) -> str:
    lines = [f"Statistics-pass profile: {result['model']}, {result['tokens_per_batch']} tokens per batch, "
             f"{result['layers']} layers x {result['neurons_per_layer']} neurons, {result['threads']} threads, "
             f"median of {result['repeats']}", "",
             "| part | ms per batch | % of bare forward | plain copies |", "| --- | --- | --- | --- |"]
    for row in result["rows"]:
        copies = f"{row['plain_copies']:.1f}" if "plain_copies" in row else ""
        lines.append(f"| {row['part']} | {1000 * row['seconds']:.1f} | {row['percent_of_bare_forward']:.1f} | {copies} |")
    lines += ["", f"statistics pass / bare forward: {result['statistics_over_bare']:.3f}; hook dispatch alone: "
              f"{result['hook_dispatch_over_bare']:.3f}; the accumulator's steps timed alone: "
              f"{result['steps_alone_percent_of_bare']:.1f}% of the bare forward = "
              f"{result['steps_alone_in_plain_copies']:.1f} plain copies of the activations", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("bench-results/profile_statistics"))
    args = parser.parse_args(argv)
    from benchmarks.run import benchmark_input_ids, load_benchmark_model

    loaded = load_benchmark_model(args.model)
    result = profile(loaded, benchmark_input_ids(loaded, args.batch_size, args.length), args.repeats)
    write_json(args.out.with_suffix(".json"), result)
    text = markdown(result)
    write_text(args.out.with_suffix(".md"), text)
    print(text)
    return result


if __name__ == "__main__":
    main()
