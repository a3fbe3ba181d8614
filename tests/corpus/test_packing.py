"""Packing: fixed-length blocks, no padding, a BOS per block that is not counted, budgets,
and a deterministic held-out split that never shares documents with identification."""

import pytest
import torch

from langneurons.corpus.packing import load_blocks, pack_blocks, prepare_language, save_blocks, split_documents
from langneurons.errors import LangNeuronsError

DOCS = [f"document number {i} says the cat sat on the mat" for i in range(40)]


def test_blocks_have_fixed_length_and_start_with_an_uncounted_bos(tokenizer):
    blocks = pack_blocks(tokenizer, DOCS, "en", block_length=16)
    assert blocks.input_ids.shape[1] == 16
    assert torch.all(blocks.input_ids[:, 0] == tokenizer.bos_token_id)
    assert not blocks.counted[:, 0].any() and blocks.counted[:, 1:].all()
    assert blocks.token_count == blocks.num_blocks * 15
    assert tokenizer.pad_token_id not in blocks.input_ids.tolist()


def test_documents_are_separated_by_eos_then_bos(tokenizer):
    blocks = pack_blocks(tokenizer, DOCS[:3], "en", block_length=8)
    stream = blocks.input_ids[:, 1:].reshape(-1).tolist()
    first_doc = tokenizer(DOCS[0], add_special_tokens=False)["input_ids"]
    assert stream[: len(first_doc)] == first_doc
    assert stream[len(first_doc) : len(first_doc) + 2] == [tokenizer.eos_token_id, tokenizer.bos_token_id]


def test_token_budget_caps_the_counted_tokens(tokenizer):
    blocks = pack_blocks(tokenizer, DOCS, "en", block_length=16, token_budget=60)
    assert blocks.token_count == 60  # 4 blocks of 15 text tokens


def test_a_too_short_corpus_is_a_clear_error(tokenizer):
    with pytest.raises(LangNeuronsError, match="too short"):
        pack_blocks(tokenizer, ["hi"], "en", block_length=64)


def test_held_out_split_is_deterministic_disjoint_and_parallel_across_languages():
    ident, held = split_documents(DOCS, 0.25, seed=3)
    assert len(held) == 10 and not set(ident) & set(held)
    assert split_documents(DOCS, 0.25, seed=3) == (ident, held)
    other = [d.upper() for d in DOCS]  # a "parallel translation": same line positions
    assert split_documents(other, 0.25, seed=3)[1] == [d.upper() for d in held]


def test_prepare_language_never_puts_held_out_text_into_identification(tokenizer):
    data = prepare_language(tokenizer, DOCS, "en", block_length=16, heldout_fraction=0.2, seed=1)
    assert data.heldout is not None and data.heldout.num_blocks >= 1
    assert data.identification.token_count > data.heldout.token_count


def test_blocks_round_trip_through_safetensors(tokenizer, tmp_path):
    blocks = pack_blocks(tokenizer, DOCS, "fr", block_length=16)
    save_blocks(blocks, tmp_path / "fr.safetensors")
    again = load_blocks(tmp_path / "fr.safetensors")
    assert again.language == "fr" and torch.equal(again.input_ids, blocks.input_ids)
    assert again.fingerprint() == blocks.fingerprint()


def test_blocks_carry_a_fingerprint_of_the_tokenizers_vocabulary(tokenizer, tmp_path):
    from tiny import tiny_tokenizer
    from transformers import AutoTokenizer

    from langneurons.corpus.packing import load_blocks, save_blocks, tokenizer_fingerprint

    blocks = pack_blocks(tokenizer, ["the cat sat on the mat"] * 4, "en", block_length=8)
    assert blocks.tokenizer_fingerprint == tokenizer_fingerprint(tokenizer) == tokenizer_fingerprint(tiny_tokenizer())
    tokenizer.save_pretrained(tmp_path / "tok")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert tokenizer_fingerprint(reloaded) == blocks.tokenizer_fingerprint
    reloaded.add_tokens(["<new>"])  # a tokenizer that gains a token is another tokenizer (not a cached hash)
    assert tokenizer_fingerprint(reloaded) != blocks.tokenizer_fingerprint
    save_blocks(blocks, tmp_path / "en.heldout.safetensors")
    assert load_blocks(tmp_path / "en.heldout.safetensors").tokenizer_fingerprint == blocks.tokenizer_fingerprint
    # the same number of tokens, two ids swapped: another tokenizer
    vocab = tokenizer.get_vocab()
    swapped = {**vocab, "the": vocab["cat"], "cat": vocab["the"]} if "the" in vocab and "cat" in vocab else None

    class Other:
        def __len__(self):
            return len(vocab)

        def get_vocab(self):
            return swapped or {token: (i + 1) % len(vocab) for token, i in vocab.items()}

    assert tokenizer_fingerprint(Other()) != blocks.tokenizer_fingerprint
    assert len(Other().get_vocab()) == len(vocab)


def test_every_token_records_its_document_and_the_block_bos_none(tokenizer):
    blocks = pack_blocks(tokenizer, DOCS[:6], "en", block_length=8)
    ids = blocks.document_ids
    assert ids.dtype == torch.int32 and ids.shape == blocks.input_ids.shape
    assert (ids[:, 0] == -1).all()  # the BOS prepended to each block is no document's
    stream, owner = blocks.input_ids[:, 1:].reshape(-1).tolist(), ids[:, 1:].reshape(-1).tolist()
    # document 0's text and EOS are document 0's; the BOS in the stream opens document 1
    first = tokenizer(DOCS[0], add_special_tokens=False)["input_ids"]
    assert owner[: len(first) + 1] == [0] * (len(first) + 1)
    assert stream[len(first) + 1] == tokenizer.bos_token_id and owner[len(first) + 1] == 1
    assert owner == sorted(owner) and set(owner) <= set(range(6))
    assert any(len(set(row)) > 1 for row in ids[:, 1:].tolist())  # some block holds two documents
    # a document spans two blocks: its tokens are in both
    spans = {d: {b for b, row in enumerate(ids.tolist()) if d in row} for d in set(owner)}
    assert any(len(blocks_of) >= 2 for blocks_of in spans.values())


def test_document_ids_survive_selection_and_the_safetensors_round_trip(tokenizer, tmp_path):
    blocks = pack_blocks(tokenizer, DOCS, "fr", block_length=16)
    assert torch.equal(blocks.select(slice(1, 3)).document_ids, blocks.document_ids[1:3])
    save_blocks(blocks, tmp_path / "fr.safetensors")
    assert torch.equal(load_blocks(tmp_path / "fr.safetensors").document_ids, blocks.document_ids)


def test_blocks_written_without_document_ids_load_without_them(tokenizer, tmp_path):
    from dataclasses import replace

    blocks = replace(pack_blocks(tokenizer, DOCS, "fr", block_length=16), document_ids=None)
    save_blocks(blocks, tmp_path / "old.safetensors")
    again = load_blocks(tmp_path / "old.safetensors")
    assert again.document_ids is None and torch.equal(again.input_ids, blocks.input_ids)
