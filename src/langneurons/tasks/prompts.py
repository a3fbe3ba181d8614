"""Prompt formats, tokenisation and collation for XNLI and XQuAD with a causal LM.

Both tasks use the model's own causal-LM head, so one model class serves training, zero-shot
evaluation of the base model and evaluation of fine-tuned models, and the MLP activations that
neurons are identified on are those of the very model that is trained.

* XNLI is a verbaliser classifier: the prompt :func:`nli_prompt` ends in ``"Answer:"`` and the
  class score is the LM logit of the first token of ``" " + word`` for the three
  :data:`NLI_LABEL_WORDS`, read at the last real (non-padding) token. Training minimises the
  3-way cross-entropy over exactly these logits, so training and evaluation score the same thing.
* XQuAD is generative: the prompt :func:`qa_prompt` ends in ``"Answer:"``, the target is
  ``" " + answer`` followed by EOS; the loss covers only those target tokens.

Prompts are plain strings, tokenised as a whole with ``tokenizer(prompt)`` (special tokens such as
BOS included), so evaluation may prompt with the same strings. A prompt longer than the token
budget is shortened by cutting the end of the context (premise for XNLI) at a token boundary,
never the question/hypothesis or the answer: :func:`fit_qa_prompt`, :func:`fit_nli_prompt`.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from langneurons.errors import LangNeuronsError
from langneurons.models.architectures import unwrap
from langneurons.tasks.xnli import LABELS, NLIExample
from langneurons.tasks.xquad import QAExample

TASKS = ("xnli", "xquad")
NLI_LABEL_WORDS: tuple[str, ...] = LABELS
"""Verbaliser words, indexed by ``NLIExample.label`` (0 entailment, 1 neutral, 2 contradiction)."""
NLI_INSTRUCTION = "Does the premise entail the hypothesis? Answer entailment, neutral or contradiction."
IGNORE_INDEX = -100
DEFAULT_MAX_LENGTH = {"xnli": 256, "xquad": 512}


def check_task(task: str) -> str:
    if task not in TASKS:
        raise LangNeuronsError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return task


# ---------------------------------------------------------------------------------- prompts


def nli_prompt(example: NLIExample, premise: str | None = None) -> str:
    """``Premise: ...\\nHypothesis: ...\\n<instruction>\\nAnswer:`` (``premise`` overrides the example's)."""
    premise = example.premise if premise is None else premise
    return f"Premise: {premise}\nHypothesis: {example.hypothesis}\n{NLI_INSTRUCTION}\nAnswer:"


def qa_prompt(example: QAExample, context: str | None = None) -> str:
    """``Context: ...\\nQuestion: ...\\nAnswer:`` (``context`` overrides the example's)."""
    context = example.context if context is None else context
    return f"Context: {context}\nQuestion: {example.question}\nAnswer:"


def qa_target(answer: str) -> str:
    """The text the model is trained to continue a QA prompt with (EOS follows)."""
    return " " + answer


def nli_label_token_ids(tokenizer, words: Sequence[str] = NLI_LABEL_WORDS) -> torch.Tensor:
    """int64 [3]: the first token of ``" " + word`` for each label word; they must differ."""
    ids = [tokenizer(" " + word, add_special_tokens=False)["input_ids"][0] for word in words]
    if len(set(ids)) != len(ids):
        raise LangNeuronsError(
            f"the tokenizer maps the label words {list(words)} to first tokens {ids} that are not distinct"
        )
    return torch.tensor(ids, dtype=torch.long)


def _token_count(tokenizer, text: str) -> int:
    return len(tokenizer(text)["input_ids"])


def _fit(tokenizer, build: Callable[[str], str], text: str, budget: int) -> tuple[str, bool] | None:
    """Longest prefix of ``text``, cut at a token boundary, with ``len(tokenizer(build(prefix))) <= budget``.

    Returns (prefix, cut) or None when even an empty ``text`` does not fit.
    """
    if _token_count(tokenizer, build(text)) <= budget:
        return text, False
    if not getattr(tokenizer, "is_fast", False):
        raise LangNeuronsError("truncating long contexts needs a fast (Rust) tokenizer with offset mappings")
    ends = [end for _, end in tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]
    if _token_count(tokenizer, build("")) > budget:
        return None
    low, high = 0, len(ends)  # invariant: keeping `low` tokens fits, keeping `high` tokens does not
    while high - low > 1:
        middle = (low + high) // 2
        if _token_count(tokenizer, build(text[: ends[middle - 1]])) <= budget:
            low = middle
        else:
            high = middle
    return (text[: ends[low - 1]] if low else ""), True


def fit_qa_prompt(tokenizer, example: QAExample, max_length: int, reserve: int = 0) -> tuple[str, bool] | None:
    """(prompt, context_was_cut) with at most ``max_length - reserve`` prompt tokens, or None
    when question and template alone are too long. ``reserve`` keeps room for the answer."""
    fitted = _fit(tokenizer, lambda c: qa_prompt(example, context=c), example.context, max_length - reserve)
    return None if fitted is None else (qa_prompt(example, context=fitted[0]), fitted[1])


def fit_nli_prompt(tokenizer, example: NLIExample, max_length: int) -> tuple[str, bool] | None:
    """(prompt, premise_was_cut) with at most ``max_length`` tokens, or None if it cannot fit."""
    fitted = _fit(tokenizer, lambda p: nli_prompt(example, premise=p), example.premise, max_length)
    return None if fitted is None else (nli_prompt(example, premise=fitted[0]), fitted[1])


# ---------------------------------------------------------------------------------- encoding


@dataclass(frozen=True)
class EncodedExample:
    """One training example as token ids.

    ``labels`` (XQuAD): same length as ``input_ids``, ``IGNORE_INDEX`` everywhere except the
    answer tokens and the final EOS (the HF convention: position t is predicted from t-1).
    ``class_label`` (XNLI): index into :data:`NLI_LABEL_WORDS`, scored at the last token.
    """

    input_ids: tuple[int, ...]
    labels: tuple[int, ...] | None = None
    class_label: int | None = None
    truncated: bool = False

    @property
    def target_count(self) -> int:
        """Number of loss terms this example contributes."""
        if self.labels is None:
            return 1
        return sum(label != IGNORE_INDEX for label in self.labels)


@dataclass
class EncodedData:
    task: str
    examples: list[EncodedExample]
    skipped: int
    truncated: int
    label_token_ids: torch.Tensor | None = None  # XNLI: the verbaliser tokens [3]


def encode_qa(tokenizer, example: QAExample, max_length: int) -> EncodedExample | None:
    """Prompt + ``" " + answers[0]`` + EOS; None when the answer would be cut (or cannot fit)."""
    if not example.answers:
        raise LangNeuronsError(f"XQuAD example {example.id!r} has no answer to train on")
    if tokenizer.eos_token_id is None:
        raise LangNeuronsError("the tokenizer has no EOS token to end answers with")
    answer_ids = tokenizer(qa_target(example.answers[0]), add_special_tokens=False)["input_ids"]
    answer_ids = answer_ids + [tokenizer.eos_token_id]
    fitted = fit_qa_prompt(tokenizer, example, max_length, reserve=len(answer_ids))
    if fitted is None:
        return None
    prompt, cut = fitted
    if cut:
        kept = len(prompt) - len(qa_prompt(example, context=""))  # characters of context kept
        start = example.answer_starts[0] if example.answer_starts else example.context.find(example.answers[0])
        if start < 0 or start + len(example.answers[0]) > kept:
            return None
    prompt_ids = tokenizer(prompt)["input_ids"]
    return EncodedExample(
        input_ids=tuple(prompt_ids + answer_ids),
        labels=tuple([IGNORE_INDEX] * len(prompt_ids) + answer_ids),
        truncated=cut,
    )


def encode_nli(tokenizer, example: NLIExample, max_length: int) -> EncodedExample | None:
    label = getattr(example, "label", None)
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(NLI_LABEL_WORDS):
        raise LangNeuronsError(f"XNLI example {getattr(example, 'id', '?')!r} has no valid label (got {label!r})")
    fitted = fit_nli_prompt(tokenizer, example, max_length)
    if fitted is None:
        return None
    prompt, cut = fitted
    return EncodedExample(input_ids=tuple(tokenizer(prompt)["input_ids"]), class_label=label, truncated=cut)


def encode_examples(tokenizer, task: str, examples: Sequence, max_length: int) -> EncodedData:
    """Encode training examples; examples that cannot fit are skipped with a warning and counted."""
    check_task(task)
    expected = NLIExample if task == "xnli" else QAExample
    if not examples:
        raise LangNeuronsError(f"no {task} training examples")
    wrong = [type(e).__name__ for e in examples if not isinstance(e, expected)]
    if wrong:
        raise LangNeuronsError(f"{task} training needs {expected.__name__} examples, got {wrong[0]}")
    encode = encode_nli if task == "xnli" else encode_qa
    encoded = [encode(tokenizer, example, max_length) for example in examples]
    kept = [e for e in encoded if e is not None]
    skipped = len(encoded) - len(kept)
    if skipped:
        reason = "the answer lies beyond" if task == "xquad" else "the prompt does not fit in"
        message = f"{skipped} of {len(examples)} {task} examples skipped: {reason} {max_length} tokens"
        warnings.warn(message, stacklevel=2)
    if not kept:
        raise LangNeuronsError(f"no {task} example fits in max_length={max_length} tokens")
    labels = nli_label_token_ids(tokenizer) if task == "xnli" else None
    return EncodedData(task, kept, skipped, sum(e.truncated for e in kept), labels)


# ---------------------------------------------------------------------------------- batches


def pad_id(tokenizer) -> int:
    """The tokenizer's pad token, else EOS (padding is masked out, its id never matters)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    raise LangNeuronsError("the tokenizer has neither a pad nor an EOS token")


def collate(examples: Sequence[EncodedExample], pad: int, padding_side: str = "left") -> dict[str, torch.Tensor]:
    """Pad to the longest example: ``input_ids``/``attention_mask`` [B, T], plus ``labels`` [B, T]
    (QA, ``IGNORE_INDEX`` at padding) or ``class_labels`` [B] (NLI)."""
    if padding_side not in ("left", "right"):
        raise LangNeuronsError(f"padding_side must be left or right, not {padding_side!r}")
    length = max(len(e.input_ids) for e in examples)

    def pad_row(row: Sequence[int], value: int) -> list[int]:
        filler = [value] * (length - len(row))
        return filler + list(row) if padding_side == "left" else list(row) + filler

    batch = {
        "input_ids": torch.tensor([pad_row(e.input_ids, pad) for e in examples], dtype=torch.long),
        "attention_mask": torch.tensor([pad_row([1] * len(e.input_ids), 0) for e in examples], dtype=torch.long),
    }
    if examples[0].labels is not None:
        batch["labels"] = torch.tensor([pad_row(e.labels, IGNORE_INDEX) for e in examples], dtype=torch.long)
    else:
        batch["class_labels"] = torch.tensor([e.class_label for e in examples], dtype=torch.long)
    return batch


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """int64 [B]: position of the last real token of each row, for left or right padding."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.bool() * (positions + 1)).argmax(dim=1)


def causal_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  keep: int | torch.Tensor) -> torch.Tensor:
    """LM logits [B, K, V] of the last ``keep`` positions (int) or of the positions in ``keep``
    (int64 tensor [K]). Position ids follow the attention mask, so left padding does not shift
    positions; the full [B, T, V] logits are never materialised."""
    kwargs = {}
    if "position_ids" in inspect.signature(unwrap(model).forward).parameters:
        kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    output = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep, use_cache=False, **kwargs)
    return output.logits


def nli_label_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     label_token_ids: torch.Tensor) -> torch.Tensor:
    """float [B, 3]: the logits of the label-word tokens at each row's last real token.

    Predicted class = ``argmax(dim=1)``; any padding side gives the same scores."""
    last = last_token_index(attention_mask)
    positions, row_position = torch.unique(last, return_inverse=True)
    logits = causal_logits(model, input_ids, attention_mask, positions)  # [B, P, V]
    rows = torch.arange(len(last), device=logits.device)
    return logits[rows, row_position][:, label_token_ids.to(logits.device)].float()


def qa_loss_sum(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token cross-entropy over the target (non-ignored) label positions."""
    labels = batch["labels"]
    targets = labels != IGNORE_INDEX
    length = labels.shape[1]
    first = int(targets.float().argmax(dim=1).min())  # earliest target position in the batch
    keep = length - first + 1  # logits of positions first-1 .. T-1
    logits = causal_logits(model, batch["input_ids"], batch["attention_mask"], keep)
    predicted = logits[:, :-1].float()
    return nn.functional.cross_entropy(
        predicted.reshape(-1, predicted.shape[-1]), labels[:, length - keep + 1 :].reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="sum",
    )


def nli_loss_sum(model: nn.Module, batch: dict[str, torch.Tensor], label_token_ids: torch.Tensor) -> torch.Tensor:
    """Summed 3-way cross-entropy of the verbaliser logits."""
    scores = nli_label_logits(model, batch["input_ids"], batch["attention_mask"], label_token_ids)
    return nn.functional.cross_entropy(scores, batch["class_labels"].to(scores.device), reduction="sum")
