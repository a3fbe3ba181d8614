"""The benchmark suite: every ``benchmarks/bench_*.py`` that has a ``run(...)``, on one model and one input.

    python -m benchmarks.run [--model tiny|gemma3-270m|HUB_ID] [--repeats 5] [--out bench-results]

Each module's ``run`` gets what its signature names: the loaded model (first argument), the token
ids [batch, length] of the suite (a second positional parameter such as ``input_ids`` or
``blocks``), ``repeats``, ``model`` (the model spec, for benchmarks that start fresh
processes), and the suite's workload settings (:data:`WORKLOAD`). Every figure is a ratio
measured in one process on the same model and inputs (median of repeats, with min and max). A module that fails becomes a row with its error, and the
suite goes on. Writes ``<out>/results.json`` and ``<out>/results.md``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import platform
import time
import traceback
from pathlib import Path

import torch

from langneurons.artefacts import write_json, write_text
from langneurons.models.loading import DEFAULT_MODEL, DEFAULT_MODEL_ID, LoadedModel, describe, load_model

ORDER = ("statistics", "interventions", "generation", "finetune", "memory")
"""Modules run in this order (others after them, alphabetically)."""

WORKLOAD = {
    # the suite's token blocks cut into 64-token prompts (4 of them from the 2x128 input) and 8
    # new tokens, decoded as one batch: the paper-style decoder re-runs the whole prefix with the
    # LM head on every position for every token, which with the module's default XQuAD prompts
    # (about 300 tokens) takes minutes per call on a CPU. The speed-up grows with prompt length,
    # new tokens and batch size, so this small workload understates it.
    "benchmarks.bench_generation": lambda ids: {
        "prompts": [half.tolist() for row in ids.cpu() for half in row.split(64) if len(half) == 64],
        "max_new_tokens": 8, "batch_size": max(1, 2 * ids.shape[0]),
        "warmup": 0},  # the run's check that both decoders agree already warms both up
}
"""Keyword arguments the suite passes to a module's ``run`` (those its signature has) so that the
whole suite stays small: it must finish in minutes on two CPU cores with the default model."""


def load_benchmark_model(spec: str) -> LoadedModel:
    """``tiny`` (random 4-layer Llama with a byte-level BPE tokenizer, built in-process) or any
    :func:`~langneurons.models.loading.load_model` argument."""
    if spec != "tiny":
        return load_model(spec)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from langneurons.corpus.sources import builtin_corpus

    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(builtin_corpus(("en",))["en"], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>",
                                        pad_token="<pad>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=1024, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    loaded = describe(LlamaForCausalLM(config).eval(), model_id="tiny-llama-bench")
    loaded.tokenizer = tokenizer
    return loaded


def model_spec(loaded: LoadedModel) -> str:
    """What :func:`load_benchmark_model` needs to load ``loaded`` again in another process."""
    return {DEFAULT_MODEL_ID: DEFAULT_MODEL, "tiny-llama-bench": "tiny"}.get(loaded.info.model_id, loaded.info.model_id)


def benchmark_input_ids(loaded: LoadedModel, batch_size: int = 2, length: int = 128) -> torch.Tensor:
    """English text of the built-in corpus packed into [batch_size, length] blocks (random ids if too short)."""
    from langneurons.corpus.packing import pack_blocks
    from langneurons.corpus.sources import builtin_corpus
    from langneurons.errors import LangNeuronsError

    try:
        blocks = pack_blocks(loaded.tokenizer, builtin_corpus(("en",))["en"], "en", length, min_blocks=batch_size)
        input_ids = blocks.input_ids[:batch_size]
    except (LangNeuronsError, AttributeError, TypeError):  # no tokenizer, or too little text
        vocab = loaded.model.get_input_embeddings().weight.shape[0]
        input_ids = torch.randint(3, vocab, (batch_size, length), generator=torch.Generator().manual_seed(0))
    return input_ids.to(loaded.device)


def discover(directory: Path | None = None) -> list[str]:
    """Module names ``benchmarks.bench_*`` present in ``directory``, in :data:`ORDER` first."""
    directory = directory or Path(__file__).parent
    names = sorted(p.stem[len("bench_"):] for p in directory.glob("bench_*.py"))
    ranked = [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]
    return [f"benchmarks.bench_{name}" for name in ranked]


def call_run(run, loaded: LoadedModel, input_ids: torch.Tensor, repeats: int, model: str,
             workload: dict | None = None) -> list[dict]:
    """Call a module's ``run`` with the arguments its signature names; rows as dicts."""
    parameters = list(inspect.signature(run).parameters.values())
    args: list = [loaded]
    if len(parameters) > 1 and parameters[1].name not in ("repeats", "model") and parameters[1].kind in (
        inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD
    ):
        args.append(input_ids)
    names = {p.name for p in parameters}
    kwargs = {"repeats": repeats} if "repeats" in names else {}
    if "model" in names:
        kwargs["model"] = model
    kwargs.update({key: value for key, value in (workload or {}).items() if key in names})
    results = run(*args, **kwargs)
    results = results if isinstance(results, (list, tuple)) else [results]
    return [r.to_dict() if hasattr(r, "to_dict") else dict(r) for r in results]


def run_suite(loaded: LoadedModel, repeats: int = 5, batch_size: int = 2, length: int = 128,
              modules: list[str] | None = None) -> list[dict]:
    """Rows of every benchmark module (``module``, and ``error`` for a module that failed)."""
    input_ids = benchmark_input_ids(loaded, batch_size, length)
    rows: list[dict] = []
    for name in modules or discover():
        started = time.perf_counter()
        try:
            module = importlib.import_module(name)
            if not callable(getattr(module, "run", None)):
                raise AttributeError(f"{name} has no run(...)")
            workload = WORKLOAD[name](input_ids) if name in WORKLOAD else None
            module_rows = call_run(module.run, loaded, input_ids, repeats, model_spec(loaded), workload)
        except Exception as error:  # noqa: BLE001 - a failing benchmark is a row, not the end of the suite
            module_rows = [{"name": name, "error": f"{type(error).__name__}: {error}".splitlines()[0],
                            "traceback": traceback.format_exc(limit=3)}]
        for row in module_rows:
            row["module"] = name
            row["module_seconds"] = round(time.perf_counter() - started, 1)
        rows.extend(module_rows)
        print(f"{name}: {len(module_rows)} row(s) in {time.perf_counter() - started:.0f} s", flush=True)
    return rows


def _extra(extra: dict) -> str:
    def short(value):
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    return "; ".join(f"{key} {short(value)}" for key, value in (extra or {}).items())


def markdown_table(rows: list[dict], header: dict) -> str:
    lines = [
        f"Benchmarks of {header['model']} ({header['device']}, {header['threads']} threads, "
        f"input {header['input']}, {header['repeats']} repeats); ratio = candidate / baseline, "
        "median [min, max], measured in one process on the same model and inputs.",
        "",
        "| benchmark | candidate vs baseline | ratio (median [min, max]) | target | baseline s | details |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['name']} | **failed**: {row['error']} | - | - | - | |")
            continue
        ratio = f"{row['ratio_median']:.3f} [{row['ratio_min']:.3f}, {row['ratio_max']:.3f}]"
        lines.append(f"| {row['name']} | {row['candidate']} vs {row['baseline']} | {ratio} | {row.get('target', '')} "
                     f"| {row['baseline_seconds']:.3g} | {_extra(row.get('extra', {}))} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="tiny, gemma3-270m (default) or a hub id / path")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--only", default=None, help="comma-separated module names, e.g. statistics,memory")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a busy shared machine)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_benchmark_model(args.model)
    modules = [f"benchmarks.bench_{name}" for name in args.only.split(",")] if args.only else None
    started = time.perf_counter()
    rows = run_suite(loaded, args.repeats, args.batch_size, args.length, modules)
    header = {
        "model": loaded.info.model_id, "device": str(loaded.device), "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
        "input": f"{args.batch_size}x{args.length} tokens", "repeats": args.repeats,
        "suite_seconds": round(time.perf_counter() - started, 1),
    }
    write_json(args.out / "results.json", {"header": header, "rows": rows})
    table = markdown_table(rows, header)
    write_text(args.out / "results.md", table)
    print(table)


if __name__ == "__main__":
    main()
