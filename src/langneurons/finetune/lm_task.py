"""The language-modelling task: causal-LM loss on one language's text (``finetune --task lm``).

Text comes from ``source``:

* a statistics folder (it holds the pass's ``manifest.json``), or ``heldout`` with the options of
  that pass given: the documents that pass held out (same corpus, fraction and seed;
  :func:`langneurons.steer.prompts.heldout_documents`), so never the text the neurons were
  identified on;
* otherwise any corpus source :func:`langneurons.corpus.sources.load_corpus` reads (a folder of
  ``<lang>.txt``, ``builtin``).

Those documents are split once more, seeded: ``eval`` (``eval_fraction``; the perplexity
evaluation of :func:`finetuned_perplexity`, which training never sees), ``dev``
(``dev_fraction``; learning-rate choice and early stopping) and ``train`` (the rest). Training
text is packed into blocks of ``block_length`` tokens (:func:`langneurons.corpus.packing.pack_blocks`,
no padding); the loss covers every token except BOS.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from langneurons.corpus.packing import TokenBlocks, pack_blocks, split_documents
from langneurons.errors import LangNeuronsError
from langneurons.tasks.prompts import IGNORE_INDEX, EncodedData, EncodedExample
from langneurons.languages import check_language

LM_TASK = "lm"
DEFAULT_BLOCK_LENGTH = 256
PARTS = ("train", "dev", "eval")


@dataclass(frozen=True)
class LMText:
    """Where a language's LM text comes from and how it is split (module docstring)."""

    source: str
    language: str
    eval_fraction: float = 0.2
    dev_fraction: float = 0.1
    seed: int = 0
    max_documents: int | None = None


def is_statistics_folder(source: str) -> bool:
    return Path(source).is_dir() and (Path(source) / "manifest.json").is_file()


HELDOUT = "heldout"


def lm_documents(spec: LMText, statistics_options: Mapping | None = None) -> list[str]:
    """Every document of ``spec.language`` that the split draws from (``statistics_options``: the
    options of the statistics pass, for source ``heldout``)."""
    check_language(spec.language)
    if spec.source == HELDOUT or is_statistics_folder(spec.source):
        from langneurons.steer.api import statistics_options as read_options
        from langneurons.steer.prompts import heldout_documents

        if spec.source == HELDOUT and statistics_options is None:
            raise LangNeuronsError("LM text 'heldout' needs the statistics pass it was held out of")
        options = statistics_options if spec.source == HELDOUT else read_options(spec.source)
        documents = heldout_documents(options, spec.language, "LM text from a statistics pass")
    else:
        from langneurons.corpus.sources import load_corpus

        documents = load_corpus(spec.source, [spec.language], max_documents=spec.max_documents).get(spec.language, [])
    documents = [d for d in documents if d.strip()]
    if spec.max_documents:
        documents = documents[: spec.max_documents]
    if not documents:
        raise LangNeuronsError(f"{spec.source} has no {spec.language!r} text for the LM task")
    return documents


def lm_split(spec: LMText, statistics_options: Mapping | None = None) -> dict[str, list[str]]:
    """``{"train", "dev", "eval"}`` -> disjoint lists of documents (seeded, fractions of the whole)."""
    if not (0.0 <= spec.eval_fraction < 1.0 and 0.0 <= spec.dev_fraction < 1.0
            and spec.eval_fraction + spec.dev_fraction < 1.0):
        raise LangNeuronsError("LM text: need eval_fraction, dev_fraction >= 0 with a sum below 1")
    documents = lm_documents(spec, statistics_options)
    rest, evaluation = split_documents(documents, spec.eval_fraction, spec.seed + 101)
    dev_share = spec.dev_fraction / (1.0 - spec.eval_fraction) if spec.dev_fraction else 0.0
    train, dev = split_documents(rest, dev_share, spec.seed + 202)
    if not train:
        raise LangNeuronsError(f"LM text {spec.source} ({spec.language}): no documents left for training")
    return {"train": train, "dev": dev, "eval": evaluation}


def lm_blocks(tokenizer, texts: Sequence[str], language: str, block_length: int = DEFAULT_BLOCK_LENGTH,
              token_budget: int | None = None) -> TokenBlocks:
    """Packed blocks of ``texts`` (the project's one packing function)."""
    if not texts:
        raise LangNeuronsError(f"no {language!r} text to pack")
    return pack_blocks(tokenizer, list(texts), language, block_length, token_budget)


def encode_lm(tokenizer, texts: Sequence[str], max_length: int, language: str = "lm") -> EncodedData:
    """Training examples of the LM task: one packed block each, ``labels`` = the block's ids with
    BOS (and any padding id) ignored, so the loss covers every text token (and EOS)."""
    if not texts or not all(isinstance(t, str) for t in texts):
        raise LangNeuronsError("the lm task trains on a list of texts (strings)")
    blocks = lm_blocks(tokenizer, texts, language, max_length)
    ignored = {tokenizer.bos_token_id, tokenizer.pad_token_id} - {None, tokenizer.eos_token_id}
    examples = []
    for ids, counted in zip(blocks.input_ids.tolist(), blocks.counted.tolist()):
        labels = tuple(t if keep and t not in ignored else IGNORE_INDEX for t, keep in zip(ids, counted))
        examples.append(EncodedExample(input_ids=tuple(ids), labels=labels))
    return EncodedData(LM_TASK, examples, 0, 0, None)


def finetuned_perplexity(loaded, texts: Sequence[str], language: str, block_length: int = DEFAULT_BLOCK_LENGTH,
                         batch_size: int = 8, token_budget: int | None = None, progress: bool = False):
    """Perplexity (:func:`langneurons.intervene.perplexity.perplexity`) of ``loaded`` -- a base or
    fine-tuned model -- on ``texts`` packed into blocks; give the ``eval`` part of :func:`lm_split`,
    which neither identification nor training saw."""
    from langneurons.intervene.perplexity import perplexity

    blocks = lm_blocks(loaded.tokenizer, texts, language, block_length, token_budget)
    return perplexity(loaded, blocks, batch_size=batch_size, progress=progress)


def perplexity_before_after(base, tuned, texts: Sequence[str], language: str,
                            block_length: int = DEFAULT_BLOCK_LENGTH, batch_size: int = 8,
                            token_budget: int | None = None, progress: bool = False) -> dict:
    """Perplexity of the base and the tuned model on the same blocks of ``texts`` (the ``eval``
    part: text neither identification nor training saw), with per-block sums for intervals."""
    from langneurons.intervene.perplexity import perplexity

    blocks = lm_blocks(base.tokenizer, texts, language, block_length, token_budget)
    before = perplexity(base, blocks, batch_size=batch_size, progress=progress)
    after = perplexity(tuned, blocks, batch_size=batch_size, progress=progress)
    return perplexity_record(blocks, before, after)


def perplexity_record(blocks: TokenBlocks, before, after) -> dict:
    """What ``perplexity.json`` holds: the blocks, both perplexities and their :func:`perplexity_change`."""
    return {"language": blocks.language, "blocks": blocks.num_blocks, "tokens": before.token_count,
            "fingerprint": blocks.fingerprint(), "base": before.to_dict(), "tuned": after.to_dict(),
            "change": perplexity_change(before.to_dict(), after.to_dict())}


def perplexity_change(before: Mapping, after: Mapping, n_resamples: int = 1000, confidence: float = 0.95,
                      seed: int = 0) -> dict:
    """``after`` minus ``before`` in mean NLL (nats per token) on the same blocks, with a percentile
    bootstrap interval that resamples blocks jointly (each resample: summed NLL difference over
    summed tokens). ``before`` / ``after``: :meth:`PerplexityResult.to_dict` records with per-block
    sums. ``ratio`` = exp(delta) is the perplexity ratio (below 1: the second model is better)."""
    import math

    import torch

    from langneurons.evaluate.metrics import percentile_interval

    if before.get("block_nll") is None or after.get("block_nll") is None:
        raise LangNeuronsError("comparing perplexities needs per-block NLL sums")
    tokens = torch.tensor(before["block_tokens"], dtype=torch.float64)
    if list(before["block_tokens"]) != list(after["block_tokens"]):
        raise LangNeuronsError("the two perplexities were not measured on the same blocks")
    difference = torch.tensor(after["block_nll"], dtype=torch.float64) - torch.tensor(before["block_nll"],
                                                                                       dtype=torch.float64)
    delta = float(difference.sum() / tokens.sum())
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(tokens), (n_resamples, len(tokens)), generator=generator)
    resampled = difference[picks].sum(1) / tokens[picks].sum(1)
    low, high = percentile_interval(resampled, confidence)
    return {"delta_nll": delta, "ci_low": low, "ci_high": high, "ratio": math.exp(delta),
            "ratio_ci": [math.exp(low), math.exp(high)], "blocks": len(tokens), "tokens": int(tokens.sum()),
            "confidence": confidence, "n_resamples": n_resamples}
