"""Tokenise texts and pack them into fixed-length blocks (no padding needed).

Documents are joined into one token stream, each wrapped as ``[BOS] doc [EOS]`` (whichever of
the two the tokenizer has; once if they are the same token). The stream is cut into blocks of
``block_length`` tokens. When the tokenizer has a BOS token, every block starts with BOS (as
the model saw in training) and that position is marked as not counted: statistics and
perplexities are computed on the text tokens only.

Documents are split into an identification part and a held-out part *before* packing, by a
seeded permutation of document indices, so no held-out text is ever used to identify neurons.
For parallel corpora (FLORES) the same lines are held out in every language.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from langneurons.artefacts import stable_hash
from langneurons.errors import LangNeuronsError, warn


@dataclass
class TokenBlocks:
    """Packed token blocks of one language.

    Attributes:
        input_ids: int64 [blocks, block_length].
        counted: bool [blocks, block_length]; False at positions that are not text (the BOS
            prepended to each block).
        tokenizer_fingerprint: :func:`tokenizer_fingerprint` of the tokenizer that made the ids
            (None for blocks read from a file written before it was recorded).
        document_ids: int32 [blocks, block_length] or None: index (into the packed ``texts``) of
            the document each token belongs to, -1 for the BOS prepended to each block. A
            document's EOS belongs to it, a BOS in the stream to the document it opens. Lets
            perplexity intervals resample documents rather than blocks. None for blocks read
            from a file written before it was recorded.
    """

    language: str
    input_ids: torch.Tensor
    counted: torch.Tensor
    tokenizer_fingerprint: str | None = None
    document_ids: torch.Tensor | None = None

    @property
    def token_count(self) -> int:
        return int(self.counted.sum())

    @property
    def num_blocks(self) -> int:
        return self.input_ids.shape[0]

    def fingerprint(self) -> str:
        return stable_hash(self.input_ids, self.counted)

    def select(self, rows: slice | torch.Tensor) -> "TokenBlocks":
        return TokenBlocks(self.language, self.input_ids[rows], self.counted[rows], self.tokenizer_fingerprint,
                           self.document_ids[rows] if self.document_ids is not None else None)

    def check_tokenizer(self, tokenizer, origin: str = "") -> None:
        """Refuse blocks made by another tokenizer than ``tokenizer`` (whose ids would index other
        tokens, or lie outside the model's vocabulary); blocks without a recorded fingerprint only
        get a warning, after checking their ids fit the vocabulary."""
        where = f"{origin}: " if origin else ""
        if self.tokenizer_fingerprint is None:
            warn(f"{where}held-out blocks of {self.language!r} record no tokenizer fingerprint (written by an "
                 "older langneurons); they cannot be checked against the model's tokenizer")
            size = len(tokenizer)
            if self.input_ids.numel() and int(self.input_ids.max()) >= size:
                raise LangNeuronsError(f"{where}held-out blocks of {self.language!r} hold token id "
                                       f"{int(self.input_ids.max())}, beyond the tokenizer's {size} tokens: they were "
                                       "tokenized by another tokenizer; run collect again with this model")
            return
        expected = tokenizer_fingerprint(tokenizer)
        if self.tokenizer_fingerprint != expected:
            raise LangNeuronsError(f"{where}held-out blocks of {self.language!r} were tokenized by another tokenizer "
                                   f"(vocabulary {self.tokenizer_fingerprint}, the model's is {expected}); run collect "
                                   "again with this model")


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of the tokenizer's vocabulary (every token string and its id, added tokens included):
    equal for the same tokenizer wherever it is loaded from, different once any id means another token."""
    size = len(tokenizer)
    try:
        cached = _FINGERPRINTS.get(tokenizer)
    except TypeError:  # not weak-referenceable: no cache
        cached = None
    if cached is not None and cached[0] == size:  # a tokenizer that gained tokens is hashed again
        return cached[1]
    fingerprint = stable_hash(sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]))
    try:
        _FINGERPRINTS[tokenizer] = (size, fingerprint)
    except TypeError:
        pass
    return fingerprint


_FINGERPRINTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
"""tokenizer -> (number of tokens, fingerprint): a 262k-token vocabulary is hashed once per process."""


def split_documents(texts: list[str], heldout_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Deterministic split into (identification, held-out) documents, original order kept.

    The held-out part has ``round(len * fraction)`` documents (at least one when the fraction
    is positive and there are two or more documents).
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise LangNeuronsError(f"held-out fraction must be in [0, 1), got {heldout_fraction}")
    n = len(texts)
    n_heldout = round(n * heldout_fraction)
    if heldout_fraction > 0 and n >= 2:
        n_heldout = max(1, n_heldout)
    generator = torch.Generator().manual_seed(seed)
    heldout = set(torch.randperm(n, generator=generator)[:n_heldout].tolist())
    identification = [t for i, t in enumerate(texts) if i not in heldout]
    held = [t for i, t in enumerate(texts) if i in heldout]
    return identification, held


def pack_blocks(
    tokenizer,
    texts: list[str],
    language: str,
    block_length: int = 512,
    token_budget: int | None = None,
    min_blocks: int = 1,
) -> TokenBlocks:
    """Tokenise ``texts`` and cut the stream into full blocks of ``block_length`` tokens.

    ``token_budget`` caps the number of counted (text) tokens; the trailing partial block is
    dropped. Raises if fewer than ``min_blocks`` blocks result (corpus too short).
    """
    if block_length < 2:
        raise LangNeuronsError(f"block length must be >= 2, got {block_length}")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    prefix = [bos] if bos is not None else []
    suffix = [eos] if eos is not None and eos != bos else []
    body_length = block_length - len(prefix)
    needed = None if token_budget is None else token_budget
    stream: list[int] = []
    documents: list[int] = []  # document index of each stream token
    batch = 256
    for start in range(0, len(texts), batch):
        encoded = tokenizer(texts[start : start + batch], add_special_tokens=False)["input_ids"]
        for offset, ids in enumerate(encoded):
            piece = (prefix if stream else []) + list(ids) + suffix
            stream.extend(piece)
            documents.extend([start + offset] * len(piece))
        if needed is not None and len(stream) >= needed + body_length:
            break
    n_blocks = len(stream) // body_length
    if needed is not None:
        n_blocks = min(n_blocks, max(1, needed // body_length))
    if n_blocks < min_blocks:
        raise LangNeuronsError(
            f"corpus for {language!r} is too short: {len(stream)} tokens give {n_blocks} block(s) of "
            f"{block_length}, need {min_blocks}"
        )
    body = torch.tensor(stream[: n_blocks * body_length], dtype=torch.long).view(n_blocks, body_length)
    document_ids = torch.tensor(documents[: n_blocks * body_length], dtype=torch.int32).view(n_blocks, body_length)
    counted = torch.ones((n_blocks, block_length), dtype=torch.bool)
    if prefix:
        body = torch.cat([torch.full((n_blocks, 1), bos, dtype=torch.long), body], dim=1)
        document_ids = torch.cat([torch.full((n_blocks, 1), -1, dtype=torch.int32), document_ids], dim=1)
        counted[:, 0] = False
    return TokenBlocks(language=language, input_ids=body, counted=counted,
                       tokenizer_fingerprint=tokenizer_fingerprint(tokenizer), document_ids=document_ids)


@dataclass
class LanguageData:
    """Identification and held-out blocks of one language."""

    identification: TokenBlocks
    heldout: TokenBlocks | None


def prepare_language(
    tokenizer,
    texts: list[str],
    language: str,
    block_length: int = 512,
    token_budget: int | None = None,
    heldout_fraction: float = 0.1,
    heldout_budget: int | None = None,
    seed: int = 0,
) -> LanguageData:
    """Split documents, then pack each part (identification budget ``token_budget``)."""
    if not texts:
        raise LangNeuronsError(f"corpus for {language!r} is empty")
    identification, heldout = split_documents(texts, heldout_fraction, seed)
    ident_blocks = pack_blocks(tokenizer, identification, language, block_length, token_budget)
    held_blocks = None
    if heldout and heldout_budget != 0:
        held_blocks = pack_blocks(tokenizer, heldout, language, block_length, heldout_budget)
    return LanguageData(ident_blocks, held_blocks)


BLOCKS_FORMAT = "langneurons.token-blocks/1"


def save_blocks(blocks: TokenBlocks, path, metadata: dict | None = None) -> None:
    """Write blocks to safetensors (atomic) with the language, fingerprint, the tokenizer's
    fingerprint (when known), the ``document_ids`` tensor (when known) and extra metadata."""
    import json

    from langneurons.artefacts import atomic_save_safetensors

    header = {"format": BLOCKS_FORMAT, "language": blocks.language, "fingerprint": blocks.fingerprint(),
              "extra": json.dumps(metadata or {}, sort_keys=True)}
    if blocks.tokenizer_fingerprint is not None:
        header["tokenizer_fingerprint"] = blocks.tokenizer_fingerprint
    tensors = {"input_ids": blocks.input_ids.contiguous(), "counted": blocks.counted.contiguous()}
    if blocks.document_ids is not None:
        tensors["document_ids"] = blocks.document_ids.to(torch.int32).contiguous()
    atomic_save_safetensors(tensors, path, header)


def load_blocks(path) -> TokenBlocks:
    """Read blocks written by :func:`save_blocks`; a missing or damaged file is a clear error."""
    from pathlib import Path

    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise LangNeuronsError(f"token blocks file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            input_ids, counted = handle.get_tensor("input_ids"), handle.get_tensor("counted")
            document_ids = handle.get_tensor("document_ids") if "document_ids" in handle.keys() else None
    except (SafetensorError, OSError, ValueError) as error:
        raise LangNeuronsError(f"corrupted or truncated token blocks file {path}: {error}") from error
    if header.get("format") != BLOCKS_FORMAT:
        raise LangNeuronsError(f"{path} is not a langneurons token blocks file")
    if document_ids is not None and document_ids.shape != input_ids.shape:
        raise LangNeuronsError(f"corrupted token blocks file {path}: document_ids {tuple(document_ids.shape)} do not "
                               f"match input_ids {tuple(input_ids.shape)}")
    return TokenBlocks(header["language"], input_ids, counted, header.get("tokenizer_fingerprint"), document_ids)
