"""Perplexity is exp of the token-weighted mean NLL over exactly the counted targets."""

import math

import pytest
import torch
from tiny import LAYERS, NEURONS, VOCAB

from langneurons.corpus.packing import TokenBlocks
from langneurons.errors import LangNeuronsError
from langneurons.intervene import build_intervention, perplexity


def _blocks(counted_rows, length=9, seed=0):
    ids = torch.randint(3, VOCAB, (len(counted_rows), length), generator=torch.Generator().manual_seed(seed))
    counted = torch.zeros(len(counted_rows), length, dtype=torch.bool)
    for row, positions in enumerate(counted_rows):
        counted[row, positions] = True
    return TokenBlocks("en", ids, counted)


def test_perplexity_is_token_weighted_not_a_mean_of_per_block_perplexities(make_loaded):
    loaded = make_loaded("llama")
    blocks = _blocks([[1, 2, 3], [1, 2, 3, 4, 5, 6, 7, 8]])  # 3 and 8 targets
    with torch.no_grad():
        log_probs = loaded.model(input_ids=blocks.input_ids).logits.log_softmax(-1)
    per_token = -log_probs[:, :-1].gather(-1, blocks.input_ids[:, 1:, None])[..., 0]  # [2, 8]
    targets = blocks.counted[:, 1:]
    row_sums = [float(per_token[row][targets[row]].sum()) for row in range(2)]
    expected = math.exp(sum(row_sums) / 11)
    mean_of_rows = (math.exp(row_sums[0] / 3) + math.exp(row_sums[1] / 8)) / 2

    result = perplexity(loaded, blocks, batch_size=2, progress=False)
    assert result.token_count == 11
    assert result.nll_sum == pytest.approx(sum(row_sums), rel=1e-5)
    assert result.perplexity == pytest.approx(expected, rel=1e-5)
    assert result.perplexity != pytest.approx(mean_of_rows, rel=1e-3)  # the two definitions differ here
    assert result.block_tokens == (3, 8)
    assert result.block_nll == pytest.approx(row_sums, rel=1e-5)


def test_per_block_sums_skip_blocks_without_targets_and_do_not_depend_on_the_batch_size(make_loaded):
    loaded = make_loaded("llama")
    blocks = _blocks([[1, 2], [], [3, 4, 5]])
    one, three = (perplexity(loaded, blocks, batch_size=b, progress=False) for b in (1, 3))
    assert one.block_tokens == three.block_tokens == (2, 3)
    assert one.block_nll == pytest.approx(three.block_nll, rel=1e-6)
    assert sum(one.block_nll) == pytest.approx(one.nll_sum, rel=1e-12)
    assert type(one).from_dict(one.to_dict()) == one


@pytest.mark.parametrize("family", ["llama", "gemma2", "gemma3_text", "gemma3", "phi3", "gpt2", "bloom", "opt"])
def test_mean_nll_equals_the_transformers_loss_on_the_same_labels(family, make_loaded):
    """An independent reference: HF's causal-LM loss (mean over labels != -100), incl. Gemma's
    final logit soft-capping that the LM head alone would miss."""
    loaded = make_loaded(family)
    blocks = _blocks([[1, 2, 5, 6, 7], [2, 3, 4, 8]], seed=2)
    labels = blocks.input_ids.masked_fill(~blocks.counted, -100)
    with torch.no_grad():
        reference = float(loaded.model(input_ids=blocks.input_ids, labels=labels).loss)
    assert perplexity(loaded, blocks, batch_size=2, progress=False).mean_nll == pytest.approx(reference, rel=1e-5)


def test_position_zero_is_never_a_target_and_batching_and_chunking_do_not_change_the_result(make_loaded):
    loaded = make_loaded("llama")
    blocks = _blocks([[1, 4, 5], [2, 3, 8], [1, 2, 3, 4, 5, 6, 7]], seed=3)
    reference = perplexity(loaded, blocks, batch_size=3, progress=False)
    with_bos_counted = TokenBlocks("en", blocks.input_ids, blocks.counted.clone())
    with_bos_counted.counted[:, 0] = True
    assert perplexity(loaded, with_bos_counted, batch_size=3, progress=False) == reference
    other = perplexity(loaded, blocks, batch_size=1, progress=False, chunk_tokens=2)
    assert other.token_count == reference.token_count == 13
    assert other.nll_sum == pytest.approx(reference.nll_sum, rel=1e-6)


def test_intervened_runs_score_the_same_tokens_and_change_the_loss(make_loaded):
    loaded = make_loaded("llama")
    blocks = _blocks([[1, 2, 3, 4], [5, 6, 7, 8]], seed=4)
    half = torch.stack([torch.arange(48) // 24, torch.arange(48) % 24], 1)
    baseline = perplexity(loaded, blocks, progress=False)
    zeroed = perplexity(loaded, blocks, intervention=build_intervention("zero", half, LAYERS, NEURONS), progress=False)
    assert zeroed.token_count == baseline.token_count
    assert zeroed.nll_sum != pytest.approx(baseline.nll_sum, rel=1e-4)


def test_blocks_without_targets_are_refused(make_loaded):
    loaded = make_loaded("llama")
    with pytest.raises(LangNeuronsError, match="no held-out tokens"):
        perplexity(loaded, _blocks([[0], [0]]), progress=False)
    with pytest.raises(LangNeuronsError, match="no held-out tokens"):
        perplexity(loaded, _blocks([]), progress=False)


def test_per_document_sums_follow_documents_across_block_boundaries(make_loaded):
    """Hand-built blocks: document 1 runs from the end of block 0 into block 1; each document's
    NLL sum is the sum of its own tokens' NLLs, and the documents add up to the total."""
    loaded = make_loaded("llama")
    blocks = _blocks([list(range(1, 9)), list(range(1, 9))], seed=3)
    blocks.document_ids = torch.tensor([[-1, 0, 0, 0, 1, 1, 1, 1, 1],
                                        [-1, 1, 1, 2, 2, 2, 2, 2, 2]], dtype=torch.int32)
    with torch.no_grad():
        log_probs = loaded.model(input_ids=blocks.input_ids).logits.log_softmax(-1)
    per_token = -log_probs[:, :-1].gather(-1, blocks.input_ids[:, 1:, None])[..., 0]  # [2, 8], target t+1
    owner = blocks.document_ids[:, 1:]
    expected = [float(per_token[owner == d].sum()) for d in range(3)]
    for batch_size in (1, 2):
        result = perplexity(loaded, blocks, batch_size=batch_size, progress=False)
        assert result.document_tokens == (3, 7, 6)
        assert result.document_nll == pytest.approx(expected, rel=1e-5)
        assert sum(result.document_nll) == pytest.approx(result.nll_sum, rel=1e-12)
        assert result.perplexity == pytest.approx(math.exp(sum(expected) / 16), rel=1e-5)  # still exact
        assert type(result).from_dict(result.to_dict()) == result


def test_blocks_without_document_ids_give_no_document_sums(make_loaded):
    result = perplexity(make_loaded("llama"), _blocks([[1, 2], [3, 4, 5]]), progress=False)
    assert result.document_nll is None and "document_nll" not in result.to_dict()
