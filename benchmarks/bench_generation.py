"""XQuAD answer generation: batched, KV-cached greedy decoding vs the paper code's decoding.

* langneurons: prompts batched (left padding), one prefill pass with the LM head on the last
  position only, then one single-token pass per new token reusing the KV cache;
* the paper code's approach: one prompt at a time, no KV cache, the whole prefix re-run through
  the model (LM head on every position) for every new token.

Both generate exactly ``max_new_tokens`` tokens per prompt (no early stop), so they do the same
amount of decoding. Target: the batched decoder at least 5x faster (ratio <= 0.2).

Run: ``python -m benchmarks.bench_generation`` (the suite's tiny random Llama) or
``python -m benchmarks.bench_generation --model gemma3-270m`` (the default model; built-in XQuAD prompts).
"""

from __future__ import annotations

import argparse
import json

import torch

from benchmarks.common import BenchResult, compare
from langneurons.evaluate.evaluation import prepare_task
from langneurons.evaluate.generation import greedy_generate, greedy_generate_naive
from langneurons.tasks.prompts import pad_id
from langneurons.models.loading import LoadedModel


def builtin_prompts(tokenizer, count: int = 8, languages=("en", "hi", "zh", "fr")) -> list[list[int]]:
    """Tokenised XQuAD prompts from the built-in samples, alternating languages."""
    from langneurons.tasks import load_xquad

    prompts = []
    for language in languages:
        examples = load_xquad("builtin", language, limit=count, seed=0)
        prompts.append(prepare_task(tokenizer, "xquad", language, examples, max_length=512).prompts)
    mixed = [p for group in zip(*prompts) for p in group]
    return mixed[:count]


def run(loaded: LoadedModel, repeats: int = 3, prompts: list[list[int]] | None = None, max_new_tokens: int = 8,
        batch_size: int = 8, warmup: int = 1) -> list[BenchResult]:
    prompts = prompts or builtin_prompts(loaded.tokenizer, count=batch_size)
    model = loaded.model
    never = lambda token: False  # noqa: E731  (fixed length: both decoders do the same work)
    pad = pad_id(loaded.tokenizer) if loaded.tokenizer is not None else 0

    def ours():
        return greedy_generate(model, prompts, pad, never, max_new_tokens=max_new_tokens, batch_size=batch_size)

    def paper():
        return greedy_generate_naive(model, prompts, never, max_new_tokens=max_new_tokens)

    with torch.inference_mode():
        agreement = sum(a == b for a, b in zip(ours(), paper())) / len(prompts)
    result = compare("XQuAD generation (greedy)", "paper: batch 1, no KV cache, full re-forward per token", paper,
                     f"langneurons: batch {batch_size}, left padding, KV cache", ours, repeats=repeats,
                     warmup=warmup, target="<= 0.2 (>= 5x faster)")
    result.extra |= {"prompts": len(prompts), "mean_prompt_tokens": sum(map(len, prompts)) / len(prompts),
                     "new_tokens": max_new_tokens, "identical_outputs": agreement, "speedup": 1 / result.ratio_median,
                     "model": loaded.info.model_id, "device": str(loaded.device)}
    return [result]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model to load (e.g. gemma3-270m); default: the suite's tiny random Llama")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default=None, help="move the model to this device (e.g. cuda)")
    args = parser.parse_args(argv)
    from benchmarks.run import load_benchmark_model

    loaded = load_benchmark_model(args.model or "tiny")
    if args.model:
        prompts = builtin_prompts(loaded.tokenizer, count=args.prompts)
    else:  # random prompts of 60-140 tokens: the tiny model's text would be meaningless anyway
        vocab = loaded.model.get_input_embeddings().weight.shape[0]
        generator = torch.Generator().manual_seed(0)
        prompts = [torch.randint(3, vocab, (int(n),), generator=generator).tolist()
                   for n in torch.randint(60, 140, (args.prompts,), generator=generator)]
    if args.device:
        loaded.model.to(args.device)
    for result in run(loaded, repeats=args.repeats, prompts=prompts, max_new_tokens=args.new_tokens,
                      batch_size=args.prompts, warmup=args.warmup):
        print(json.dumps(result.to_dict()))


if __name__ == "__main__":
    main()
