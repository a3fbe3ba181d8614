"""Perplexity of packed token blocks, optionally under an intervention.

Perplexity = exp(token-weighted mean NLL) over exactly the counted target tokens: the token at
position t >= 1 of a block is a target iff ``blocks.counted[b, t]``; it is predicted from
positions < t. Position 0 is never a target. Baseline and intervened runs over the same blocks
therefore score exactly the same tokens. Never a mean of per-block perplexities. The NLL is
also summed per block and, where the blocks record them, per held-out document (the units the
PPXC intervals resample).

The loss is computed here from the decoder body's last hidden states: only the hidden states
of target positions go through the LM head, in chunks of ``chunk_tokens`` rows, cast to
float32 for ``cross_entropy(reduction="sum")``, so a 262k-token vocabulary never needs a
[batch, seq, vocab] float32 tensor.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from langneurons.corpus.packing import TokenBlocks
from langneurons.errors import LangNeuronsError
from langneurons.intervene.interventions import Intervention, Positions, intervene
from langneurons.models.architectures import unwrap
from langneurons.progress import progress_bar

LOGIT_ELEMENTS = 2**25
"""Default bound on the logits materialised at once (float32 elements, 128 MiB)."""


@dataclass(frozen=True)
class PerplexityResult:
    """Summed NLL (nats) over ``token_count`` target tokens, its mean, and exp(mean).

    ``block_nll`` / ``block_tokens`` (optional, one entry per scored block in block order): the
    summed NLL and target-token count of each block, so that intervals can resample blocks
    (:func:`langneurons.intervene.ppxc.PPXCResult.intervals`). They add up to the totals.

    ``document_nll`` / ``document_tokens`` (optional, one entry per scored held-out document in
    document order; only when the blocks record ``document_ids``): the same per document, the
    unit intervals resample where documents exist. They add up to the totals too.
    """

    nll_sum: float
    token_count: int
    mean_nll: float
    perplexity: float
    block_nll: tuple[float, ...] | None = None
    block_tokens: tuple[int, ...] | None = None
    document_nll: tuple[float, ...] | None = None
    document_tokens: tuple[int, ...] | None = None

    @classmethod
    def from_sum(cls, nll_sum: float, token_count: int, block_nll=None, block_tokens=None,
                 document_nll=None, document_tokens=None) -> "PerplexityResult":
        if token_count <= 0:
            raise LangNeuronsError("perplexity needs at least one target token")
        mean = nll_sum / token_count
        blocks = (tuple(float(v) for v in block_nll), tuple(int(v) for v in block_tokens)) \
            if block_nll is not None else (None, None)
        documents = (tuple(float(v) for v in document_nll), tuple(int(v) for v in document_tokens)) \
            if document_nll is not None else (None, None)
        return cls(float(nll_sum), int(token_count), mean, math.exp(mean), *blocks, *documents)

    def to_dict(self) -> dict:
        data = asdict(self)
        for unit in ("block", "document"):
            if getattr(self, f"{unit}_nll") is None:
                del data[f"{unit}_nll"], data[f"{unit}_tokens"]
            else:
                data[f"{unit}_nll"] = list(getattr(self, f"{unit}_nll"))
                data[f"{unit}_tokens"] = list(getattr(self, f"{unit}_tokens"))
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "PerplexityResult":
        def pair(unit):
            values = data.get(f"{unit}_nll")
            if values is None:
                return None, None
            return tuple(float(v) for v in values), tuple(int(v) for v in data[f"{unit}_tokens"])

        return cls(float(data["nll_sum"]), int(data["token_count"]), float(data["mean_nll"]), float(data["perplexity"]),
                   *pair("block"), *pair("document"))


def target_count(blocks: TokenBlocks) -> int:
    """Number of target tokens perplexity scores on ``blocks`` (counted positions >= 1)."""
    return int(blocks.counted[:, 1:].sum())


def _target_documents(blocks: TokenBlocks) -> torch.Tensor | None:
    """int64 [targets]: the document of each target token (row-major order), or None when the
    blocks record no documents or a target belongs to none (then intervals resample blocks)."""
    if blocks.document_ids is None:
        return None
    documents = blocks.document_ids[:, 1:][blocks.counted[:, 1:]].long()
    if documents.numel() == 0 or bool((documents < 0).any()):
        return None
    return documents


def logits_from_hidden(lm: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """float32 logits of the causal LM ``lm`` from its body's last hidden states [..., hidden]
    (LM head, then the final logit soft-capping of Gemma 2/3 when configured)."""
    logits = lm.get_output_embeddings()(hidden).float()
    config = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def perplexity(
    loaded,
    blocks: TokenBlocks,
    batch_size: int = 8,
    intervention: Intervention | None = None,
    progress: bool = True,
    positions: Positions = "all",
    chunk_tokens: int | None = None,
) -> PerplexityResult:
    """Perplexity of ``loaded`` (a LoadedModel) on ``blocks``, under ``intervention`` if given."""
    if blocks.num_blocks == 0 or target_count(blocks) == 0:
        raise LangNeuronsError(f"no held-out tokens to score for {blocks.language!r}")
    if batch_size < 1:
        raise LangNeuronsError(f"batch size must be >= 1, got {batch_size}")
    lm = unwrap(loaded.adapter.model)
    body = loaded.adapter.body()
    vocab = lm.get_output_embeddings().weight.shape[0]
    chunk = chunk_tokens or max(1, LOGIT_ELEMENTS // vocab)
    device = loaded.device
    head_device = lm.get_output_embeddings().weight.device
    block_nll = torch.zeros(blocks.num_blocks, dtype=torch.float64, device=head_device)  # nats per block
    block_tokens = blocks.counted[:, 1:].sum(1)  # target tokens per block
    target_documents = _target_documents(blocks)  # document of each target, row-major; None: no documents
    document_nll = (torch.zeros(int(target_documents.max()) + 1, dtype=torch.float64, device=head_device)
                    if target_documents is not None else None)  # nats per document
    context = intervene(loaded, intervention, positions=positions) if intervention is not None else nullcontext()
    starts = range(0, blocks.num_blocks, batch_size)
    with context, torch.inference_mode():
        for start in progress_bar(starts, f"perplexity {blocks.language}", enabled=progress):
            input_ids = blocks.input_ids[start : start + batch_size]
            is_target = blocks.counted[start : start + batch_size, 1:]
            if not bool(is_target.any()):
                continue
            hidden = body(input_ids=input_ids.to(device), use_cache=False).last_hidden_state
            predictors = hidden[:, :-1][is_target.to(hidden.device)]  # [targets, hidden]
            targets = input_ids[:, 1:][is_target]
            block_of_target = (start + is_target.nonzero()[:, 0]).to(head_device)  # row-major, like the mask
            if document_nll is not None:
                rows = blocks.document_ids[start : start + batch_size, 1:]
                document_of_target = rows[is_target].long().to(head_device)
            for first in range(0, len(targets), chunk):
                logits = logits_from_hidden(lm, predictors[first : first + chunk])
                losses = F.cross_entropy(logits, targets[first : first + chunk].to(logits.device), reduction="none")
                block_nll.index_add_(0, block_of_target[first : first + chunk], losses.double().to(head_device))
                if document_nll is not None:
                    document_nll.index_add_(0, document_of_target[first : first + chunk],
                                            losses.double().to(head_device))
    scored = block_tokens > 0
    block_nll = block_nll.cpu()
    documents = (None, None)
    if document_nll is not None:
        document_tokens = torch.bincount(target_documents, minlength=len(document_nll))
        present = document_tokens > 0
        documents = (document_nll.cpu()[present].tolist(), document_tokens[present].tolist())
    return PerplexityResult.from_sum(float(block_nll.sum()), int(block_tokens.sum()),
                                     block_nll[scored].tolist(), block_tokens[scored].tolist(), *documents)
