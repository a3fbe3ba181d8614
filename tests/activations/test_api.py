"""The statistics stage API: options are checked before any work, a statistics file without
tokens is never written nor taken as complete, a language without held-out text is reported."""

import json

import pytest
import torch

from langneurons.activations.api import CollectOptions, collect
from langneurons.activations.collect import CollectConfig, collect_statistics, statistics_meta
from langneurons.activations.statistics import ActivationStatistics
from langneurons.corpus.packing import pack_blocks
from langneurons.errors import LangNeuronsError, LangNeuronsWarning

TEXTS = ["the cat sat on the mat", "le chat est sur le tapis et dort", "el gato está en la alfombra"] * 12


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", 0, "batch-size must be an integer >= 1, got 0"),
    ("batch_size", -1, "batch-size must be an integer >= 1, got -1"),
    ("token_budget", 0, "token-budget must be an integer >= 1, got 0"),
    ("token_budget", -3, "token-budget must be an integer >= 1"),
    ("heldout_budget", -1, "heldout-budget must be an integer >= 0, got -1"),
    ("block_length", 1, "block-length must be an integer >= 2"),
    ("max_documents", 0, "max-documents must be an integer >= 1"),
    ("heldout_fraction", 1.0, "heldout-fraction must be in [0, 1)"),
    ("shard", (2, 2), "shard must be i/n with 0 <= i < n"),
])
def test_collect_options_refuse_values_that_cannot_work(field, value, message):
    with pytest.raises(LangNeuronsError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        CollectOptions(languages=("en",), **{field: value})


def test_defaults_and_unbounded_budgets_are_accepted():
    assert CollectOptions(languages=("en",), token_budget=None, heldout_budget=None).batch_size == 4
    assert CollectOptions(languages=("en",), heldout_budget=0).heldout_budget == 0


def test_a_zero_token_file_in_the_output_is_recomputed_never_returned(loaded_llama, tokenizer, tmp_path):
    blocks = pack_blocks(tokenizer, TEXTS, "en", block_length=12)
    config = CollectConfig(batch_size=3)
    poisoned = ActivationStatistics.empty(statistics_meta(loaded_llama, "en", blocks, config), config.sketch)
    poisoned.save(tmp_path / "en.safetensors")  # what `collect --batch-size -1` used to leave behind
    stats = collect_statistics(loaded_llama, blocks, config, output=tmp_path / "en.safetensors", progress=False)
    assert stats.token_count == blocks.token_count > 0
    assert ActivationStatistics.load(tmp_path / "en.safetensors").token_count == blocks.token_count


def test_the_statistics_pass_refuses_a_batch_size_below_one(loaded_llama, tokenizer, tmp_path):
    blocks = pack_blocks(tokenizer, TEXTS, "en", block_length=12)
    for size in (0, -1):
        with pytest.raises(LangNeuronsError, match="batch size must be an integer >= 1"):
            collect_statistics(loaded_llama, blocks, CollectConfig(batch_size=size), output=tmp_path / "en.safetensors",
                               progress=False)
    assert not (tmp_path / "en.safetensors").exists()


def test_a_language_without_held_out_text_is_reported(loaded_llama, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "en.txt").write_text(" ".join(TEXTS) + "\n", encoding="utf-8")  # one document: nothing to hold out
    options = CollectOptions(languages=("en",), corpus=str(corpus), token_budget=40, block_length=12, batch_size=2)
    with pytest.warns(LangNeuronsWarning, match="no held-out text for 'en' \\(1 document"):
        collect(loaded_llama, options, tmp_path / "stats", progress=False)
    assert not (tmp_path / "stats" / "en.heldout.safetensors").exists()
    assert json.loads((tmp_path / "stats" / "manifest.json").read_text())["token_counts"]["en"] > 0


def test_held_out_blocks_record_the_tokenizers_fingerprint(loaded_llama, tmp_path):
    from langneurons.activations.api import load_heldout
    from langneurons.corpus.packing import tokenizer_fingerprint

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "en.txt").write_text("\n".join(TEXTS), encoding="utf-8")
    options = CollectOptions(languages=("en",), corpus=str(corpus), token_budget=40, block_length=12, batch_size=2)
    collect(loaded_llama, options, tmp_path / "stats", progress=False)
    blocks = load_heldout(tmp_path / "stats", "en")
    assert blocks.tokenizer_fingerprint == tokenizer_fingerprint(loaded_llama.tokenizer)


def test_the_statistics_stage_inputs_are_unchanged():
    """The runner's statistics stage key hashes options_dict(CollectOptions): a new field at its
    default would re-key (and re-collect) every existing run; validation must not add one."""
    from langneurons.activations.api import options_dict

    assert list(options_dict(CollectOptions(languages=("en",)))) == [
        "languages", "corpus", "corpus_path", "max_documents", "token_budget", "heldout_fraction", "heldout_budget",
        "block_length", "batch_size", "seed", "sketch", "shard", "backend"]


def test_held_out_blocks_record_documents_and_older_files_get_them_back(loaded_llama, tmp_path):
    """New held-out files hold each token's document; files of older versions (no document_ids)
    get them back by re-packing the corpus the folder's manifest names, only when that gives
    exactly the same blocks."""
    from dataclasses import replace

    from langneurons.activations.api import heldout_path, load_heldout
    from langneurons.corpus.packing import load_blocks, save_blocks

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "en.txt").write_text("\n".join(f"{t} number {i}" for i, t in enumerate(TEXTS)), encoding="utf-8")
    options = CollectOptions(languages=("en",), corpus=str(corpus), token_budget=40, heldout_fraction=0.3,
                             block_length=12, batch_size=2)
    collect(loaded_llama, options, tmp_path / "stats", progress=False)
    path = heldout_path(tmp_path / "stats", "en")
    written = load_blocks(path)
    assert written.document_ids is not None and int(written.document_ids.max()) >= 1
    save_blocks(replace(written, document_ids=None), path)  # as an older version wrote it
    assert load_heldout(tmp_path / "stats", "en").document_ids is None  # no tokenizer: nothing to re-pack with
    again = load_heldout(tmp_path / "stats", "en", loaded_llama.tokenizer)
    assert torch.equal(again.document_ids, written.document_ids)
    # the corpus changed since: the re-packed blocks differ, the file loads without documents
    (corpus / "en.txt").write_text("\n".join(f"{t} changed {i}" for i, t in enumerate(TEXTS)), encoding="utf-8")
    assert load_heldout(tmp_path / "stats", "en", loaded_llama.tokenizer).document_ids is None
