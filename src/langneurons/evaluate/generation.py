"""Greedy decoding for generative evaluation (XQuAD): batched, left-padded, with a KV cache.

:func:`greedy_generate` runs one prefill pass per batch of left-padded prompts (LM head on the
last position only) and then one single-token pass per new token, reusing the KV cache. Position
ids follow the attention mask, so left padding does not shift positions. A row stops at an EOS
token or at a token whose text contains a newline (the stop token is kept in the output so the
caller sees what ended it); a batch ends when every row stopped or after ``max_new_tokens``.

:func:`greedy_generate_naive` is the approach of the paper code: one example at a time, no KV
cache, the whole prefix re-run for every new token. It is kept as the reference the batched
decoder is tested and benchmarked against; both choose the same tokens.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
from torch import nn

from langneurons.errors import LangNeuronsError
from langneurons.models.architectures import unwrap


def stop_token_ids(model: nn.Module, tokenizer) -> set[int]:
    """EOS ids of the tokenizer and of the model's generation config (e.g. Gemma's <end_of_turn>)."""
    ids = {tokenizer.eos_token_id}
    config = getattr(unwrap(model), "generation_config", None)
    configured = getattr(config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    ids.discard(None)
    if not ids:
        raise LangNeuronsError("the tokenizer has no EOS token to stop generation at")
    return {int(i) for i in ids}


class StopRule:
    """``rule(token_id) -> bool``: the token ends an answer (EOS, or its text holds a newline).

    Token texts are decoded once per token id and cached."""

    def __init__(self, tokenizer, eos_ids: set[int], stop_at_newline: bool = True):
        self.tokenizer, self.eos_ids, self.stop_at_newline = tokenizer, set(eos_ids), stop_at_newline
        self._newline: dict[int, bool] = {}

    def __call__(self, token: int) -> bool:
        if token in self.eos_ids:
            return True
        if not self.stop_at_newline:
            return False
        if token not in self._newline:
            self._newline[token] = "\n" in self.tokenizer.decode([token])
        return self._newline[token]


def _forward_arguments(model: nn.Module) -> tuple[bool, str]:
    """(whether forward takes position ids, the name of its KV-cache argument: ``cache`` in
    transformers 5, ``past_key_values`` before)."""
    parameters = inspect.signature(unwrap(model).forward).parameters
    return "position_ids" in parameters, "cache" if "cache" in parameters else "past_key_values"


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if len(prompt):
            ids[row, width - len(prompt):] = torch.as_tensor(list(prompt), dtype=torch.long)
            mask[row, width - len(prompt):] = 1
    return ids.to(device), mask.to(device)


@torch.inference_mode()
def _generate_batch(model, prompts, pad_id: int, max_new_tokens: int, stop: Callable[[int], bool]) -> list[list[int]]:
    device = next(model.parameters()).device
    input_ids, mask = _left_pad(prompts, pad_id, device)
    with_positions, cache_argument = _forward_arguments(model)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    kwargs = {"position_ids": positions} if with_positions else {}
    out = model(input_ids=input_ids, attention_mask=mask, use_cache=True, logits_to_keep=1, **kwargs)
    outputs: list[list[int]] = [[] for _ in prompts]
    finished = [False] * len(prompts)
    for step in range(max_new_tokens):
        next_tokens = out.logits[:, -1].argmax(dim=-1)
        for row, token in enumerate(next_tokens.tolist()):
            if not finished[row]:
                outputs[row].append(token)
                finished[row] = stop(token)
        if all(finished) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, mask.new_ones((len(prompts), 1))], dim=1)
        positions = positions[:, -1:] + 1
        kwargs = {"position_ids": positions} if with_positions else {}
        kwargs[cache_argument] = out.cache if cache_argument == "cache" else out.past_key_values
        out = model(input_ids=next_tokens[:, None], attention_mask=mask, use_cache=True, logits_to_keep=1, **kwargs)
    return outputs


def greedy_generate(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    pad_id: int,
    stop: Callable[[int], bool],
    max_new_tokens: int = 32,
    batch_size: int = 8,
) -> list[list[int]]:
    """Greedy continuations (token ids, stop token included) of tokenised ``prompts``.

    Prompts are batched in order of length (less padding) and the outputs returned in input order.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise LangNeuronsError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}")
    if any(len(p) == 0 for p in prompts):
        raise LangNeuronsError("cannot generate from an empty prompt")
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        for index, output in zip(chosen, _generate_batch(model, [prompts[i] for i in chosen], pad_id,
                                                         max_new_tokens, stop)):
            results[index] = output
    return results


@torch.inference_mode()
def greedy_generate_naive(
    model: nn.Module, prompts: Sequence[Sequence[int]], stop: Callable[[int], bool], max_new_tokens: int = 32
) -> list[list[int]]:
    """Reference decoder (the paper code's approach): batch 1, no KV cache, full re-forward per token."""
    device = next(model.parameters()).device
    results = []
    for prompt in prompts:
        sequence = list(prompt)
        output: list[int] = []
        for _ in range(max_new_tokens):
            logits = model(input_ids=torch.tensor([sequence], device=device), use_cache=False).logits
            token = int(logits[0, -1].argmax())
            output.append(token)
            sequence.append(token)
            if stop(token):
                break
        results.append(output)
    return results


def answer_text(tokenizer, tokens: Sequence[int], eos_ids: set[int]) -> str:
    """The answer a continuation gives: its text up to the first newline (EOS removed), stripped."""
    kept = [t for t in tokens if t not in eos_ids]
    return tokenizer.decode(kept, skip_special_tokens=True).split("\n", 1)[0].strip()
