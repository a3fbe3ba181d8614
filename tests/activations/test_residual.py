"""Residual statistics of the statistics pass: per language and layer, the token count, the float64
sum and the per-dimension sum of squares of the residual stream after each block, over exactly the
tokens the neuron statistics count; optional (off: files and keys unchanged); merge across shards
and torchrun ranks; resumable."""

import pytest
import torch
from ranks import rank_errors, run_ranks
from tiny import tiny_model, tiny_tokenizer

from langneurons.activations.api import CollectOptions, collect, merge_statistics, options_dict, statistics_path
from langneurons.activations.collect import CollectConfig, collect_statistics
from langneurons.activations.statistics import ActivationStatistics
from langneurons.corpus.packing import TokenBlocks, pack_blocks
from langneurons.activations.residual import ResidualStatistics, load_residual_dir, residual_path
from langneurons.errors import LangNeuronsError
from langneurons.models.loading import describe, load_model

TEXTS = ["the cat sat on the mat", "le chat est sur le tapis et dort", "el gato está en la alfombra"] * 12


@pytest.fixture
def blocks(tokenizer):
    return pack_blocks(tokenizer, TEXTS, "en", block_length=12)


def _block_outputs(loaded, blocks) -> list[torch.Tensor]:
    """Every block's output at the counted tokens, float64 [tokens, H], from plain torch hooks."""
    seen = {}
    handles = [block.register_forward_hook(
        lambda m, i, o, layer=layer: seen.__setitem__(layer, (o[0] if isinstance(o, tuple) else o).detach()))
        for layer, block in enumerate(loaded.adapter.blocks)]
    try:
        with torch.no_grad():
            loaded.adapter.body()(input_ids=blocks.input_ids)
    finally:
        for handle in handles:
            handle.remove()
    return [seen[layer].reshape(-1, seen[layer].shape[-1])[blocks.counted.reshape(-1)].double()
            for layer in range(loaded.adapter.num_layers)]


@pytest.mark.parametrize("family", ["llama", "gemma", "gpt2", "bloom"])  # bloom's blocks return tuples
def test_sums_equal_those_of_the_block_outputs_at_the_counted_tokens(family, blocks, tmp_path):
    loaded = describe(tiny_model(family), model_id=f"tiny-{family}")
    collect_statistics(loaded, blocks, CollectConfig(batch_size=3, residual=True), output=tmp_path / "en.safetensors",
                       progress=False)
    residual = ResidualStatistics.load(tmp_path / "en.residual.safetensors")
    outputs = _block_outputs(loaded, blocks)
    assert residual.hidden_size == loaded.adapter.hidden_size == 32
    assert residual.token_count.tolist() == [blocks.token_count] * loaded.adapter.num_layers
    for layer, values in enumerate(outputs):
        torch.testing.assert_close(residual.residual_sum[layer], values.sum(0), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(residual.residual_sum_sq[layer], values.square().sum(0), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(residual.mean[layer], values.mean(0))
        torch.testing.assert_close(residual.variance[layer], values.var(0, unbiased=False))


def test_the_block_output_is_the_hidden_state_after_the_block(loaded_llama, blocks):
    """Layer l's residual is what transformers reports as hidden_states[l + 1] (before the final norm)."""
    outputs = _block_outputs(loaded_llama, blocks)
    with torch.no_grad():
        states = loaded_llama.adapter.body()(input_ids=blocks.input_ids, output_hidden_states=True).hidden_states
    counted = blocks.counted.reshape(-1)
    for layer in range(loaded_llama.adapter.num_layers - 1):  # the last entry is after the final norm
        torch.testing.assert_close(outputs[layer], states[layer + 1].reshape(-1, 32)[counted].double())


def test_padding_and_the_block_bos_are_never_counted(loaded_llama, blocks, tmp_path):
    padded = TokenBlocks("en", blocks.input_ids.clone(), blocks.counted.clone())
    padded.input_ids[:, -3:] = 0
    padded.counted[:, -3:] = False
    collect_statistics(loaded_llama, padded, CollectConfig(batch_size=4, residual=True), output=tmp_path / "en.safetensors",
                       progress=False)
    residual = ResidualStatistics.load(tmp_path / "en.residual.safetensors")
    assert int(residual.token_count[0]) == blocks.num_blocks * (12 - 1 - 3)
    torch.testing.assert_close(residual.residual_sum[1], _block_outputs(loaded_llama, padded)[1].sum(0))


def test_off_by_default_and_the_neuron_statistics_are_the_same_either_way(loaded_llama, blocks, tmp_path):
    assert CollectConfig().residual is False
    assert "residual" not in options_dict(CollectOptions(languages=("en",)))  # runner keys of old folders unchanged
    assert options_dict(CollectOptions(languages=("en",), residual=True))["residual"] is True
    from langneurons.runner.config import load_config

    assert "residual" not in load_config({"languages": ["en", "fr"]}).to_dict()["statistics"]
    assert load_config({"languages": ["en"], "statistics": {"residual": True}}).statistics.residual is True
    plain = collect_statistics(loaded_llama, blocks, CollectConfig(batch_size=3), output=tmp_path / "a" / "en.safetensors",
                               progress=False)
    assert not (tmp_path / "a" / "en.residual.safetensors").exists()
    with_residual = collect_statistics(loaded_llama, blocks, CollectConfig(batch_size=3, residual=True),
                                       output=tmp_path / "b" / "en.safetensors", progress=False)
    # the same metadata and tensors (safetensors orders metadata keys arbitrarily, so not the same bytes)
    assert _metadata(tmp_path / "a" / "en.safetensors") == _metadata(tmp_path / "b" / "en.safetensors")
    assert plain.meta == with_residual.meta and plain.token_count == with_residual.token_count
    for name in ("positive_count", "activation_sum", "activation_sum_sq", "minimum", "maximum", "histogram"):
        assert torch.equal(getattr(plain, name), getattr(with_residual, name)), name


def _metadata(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


def test_a_finished_file_without_residual_sums_is_recomputed_when_they_are_asked_for(loaded_llama, blocks, tmp_path):
    output = tmp_path / "en.safetensors"
    collect_statistics(loaded_llama, blocks, CollectConfig(batch_size=3), output=output, progress=False)
    collect_statistics(loaded_llama, blocks, CollectConfig(batch_size=3, residual=True), output=output, progress=False)
    assert residual_path(output).exists()
    written = residual_path(output).stat().st_mtime_ns
    collect_statistics(loaded_llama, blocks, CollectConfig(batch_size=3, residual=True), output=output, progress=False)
    assert residual_path(output).stat().st_mtime_ns == written  # complete: reused


def test_a_stopped_pass_resumes_without_counting_a_block_twice(loaded_llama, blocks, tmp_path):
    config = CollectConfig(batch_size=2, checkpoint_every=1, residual=True)
    output = tmp_path / "en.safetensors"
    collect_statistics(loaded_llama, blocks, config, output=output, progress=False, stop_after_batches=2)
    assert (tmp_path / "en.residual.safetensors.partial").exists()
    from langneurons.hooks import hooks

    forwards = []
    with hooks([(loaded_llama.adapter.body(), lambda module, inputs, output: forwards.append(1))]):
        collect_statistics(loaded_llama, blocks, config, output=output, progress=False)
    assert len(forwards) == -(-blocks.num_blocks // 2) - 2  # the two batches before the stop are not rerun
    assert not list(tmp_path.glob("*.partial"))
    resumed = ResidualStatistics.load(residual_path(output))
    whole = _block_outputs(loaded_llama, blocks)
    assert int(resumed.token_count[0]) == blocks.token_count
    torch.testing.assert_close(resumed.residual_sum[0], whole[0].sum(0))


def test_a_checkpoint_without_residual_sums_does_not_resume_a_pass_with_them(loaded_llama, blocks, tmp_path):
    output = tmp_path / "en.safetensors"
    collect_statistics(loaded_llama, blocks, CollectConfig(batch_size=2, checkpoint_every=1), output=output,
                       progress=False, stop_after_batches=2)
    collect_statistics(loaded_llama, blocks, CollectConfig(batch_size=2, residual=True), output=output, progress=False)
    residual = ResidualStatistics.load(residual_path(output))
    assert int(residual.token_count[0]) == blocks.token_count == ActivationStatistics.load(output).token_count


def test_shards_merge_exactly_into_the_single_pass(loaded_llama, tokenizer, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "en.txt").write_text("\n".join(f"the cat sat on the mat {i}" for i in range(40)), encoding="utf-8")
    options = dict(languages=("en",), corpus=str(corpus), token_budget=200, heldout_budget=20, block_length=12,
                   batch_size=3, residual=True)
    collect(loaded_llama, CollectOptions(**options), tmp_path / "single", progress=False)
    for index in range(2):
        collect(loaded_llama, CollectOptions(**options, shard=(index, 2)), tmp_path / "shards", progress=False)
    shards = [statistics_path(tmp_path / "shards", "en", (index, 2)) for index in range(2)]
    merge_statistics(shards, tmp_path / "merged" / "en.safetensors")
    from langneurons.activations.api import load_statistics_dir

    assert list(load_statistics_dir(tmp_path / "single")) == ["en"]  # the residual file is no language of its own
    single = load_residual_dir(tmp_path / "single")["en"]
    merged = load_residual_dir(tmp_path / "merged", ["en"])["en"]
    assert torch.equal(merged.token_count, single.token_count)
    torch.testing.assert_close(merged.residual_sum, single.residual_sum, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(merged.residual_sum_sq, single.residual_sum_sq, rtol=1e-12, atol=1e-9)
    (tmp_path / "shards" / "en.shard1of2.residual.safetensors").unlink()
    with pytest.raises(LangNeuronsError, match="some shards have residual"):
        merge_statistics(shards, tmp_path / "merged2" / "en.safetensors")


def test_files_of_other_languages_or_models_do_not_merge(make_residual):
    hand_residual = make_residual
    en, fr = hand_residual("en", torch.ones(2, 3)), hand_residual("fr", torch.ones(2, 3))
    with pytest.raises(LangNeuronsError, match="different languages"):
        en.merge(fr)
    with pytest.raises(LangNeuronsError, match="different models"):
        en.merge(hand_residual("en", torch.ones(2, 3), weights_fingerprint="other"))
    assert en.merge(fr, same_language=False).tokens == 8


def test_missing_or_foreign_files_are_one_line_errors(tmp_path):
    with pytest.raises(LangNeuronsError, match="collect them with --residual"):
        load_residual_dir(tmp_path)
    (tmp_path / "en.residual.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(LangNeuronsError, match="corrupted"):
        load_residual_dir(tmp_path)


LANGUAGES = ("en", "fr")
OPTIONS = CollectOptions(languages=LANGUAGES, token_budget=150, heldout_budget=20, block_length=16, batch_size=3,
                         residual=True)


def _collect_as_rank(rank: int, model_dir, out) -> None:
    collect(load_model(str(model_dir)), OPTIONS, out, progress=False)


def test_two_gloo_ranks_write_the_single_process_residual_files(tmp_path):
    model_dir = tmp_path / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    collect(load_model(str(model_dir)), OPTIONS, tmp_path / "single", progress=False)
    out = tmp_path / "ranks"
    assert run_ranks(_collect_as_rank, (model_dir, out), out, world_size=2) == [0, 0], rank_errors(out)
    single, ranks = load_residual_dir(tmp_path / "single"), load_residual_dir(out)
    for language in LANGUAGES:
        assert ranks[language].meta == single[language].meta
        assert torch.equal(ranks[language].token_count, single[language].token_count)
        torch.testing.assert_close(ranks[language].residual_sum, single[language].residual_sum, rtol=1e-12, atol=1e-9)
    assert not list(out.glob("*.partial"))


def _stop_then_resume_as_rank(rank: int, model_dir, out) -> None:
    """Stop after one batch (per-rank checkpoints of both statistics), then finish."""
    import json
    from pathlib import Path

    from langneurons.activations.distributed import distributed_session
    from langneurons.hooks import hooks

    loaded = load_model(str(model_dir))
    blocks = pack_blocks(loaded.tokenizer, ["the cat sat on the mat and slept"] * 30, "en", block_length=12)
    config, output = CollectConfig(batch_size=2, checkpoint_every=1, residual=True), Path(out) / "en.safetensors"
    with distributed_session() as context:
        collect_statistics(loaded, blocks, config, output, progress=False, distributed=context, stop_after_batches=1)
        written = Path(out, f"en.residual.safetensors.rank{rank}of2.partial").exists()
        forwards = []
        with hooks([(loaded.adapter.body(), lambda module, inputs, output: forwards.append(1))]):
            collect_statistics(loaded, blocks, config, output, progress=False, distributed=context)
    own_batches = -(-len(range(rank, blocks.num_blocks, 2)) // config.batch_size)
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(
        {"checkpoint_written": written, "forwards": len(forwards), "expected": own_batches - 1}))


def test_each_rank_resumes_its_residual_sums_without_double_counting(tmp_path):
    import json

    model_dir = tmp_path / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    out = tmp_path / "ranks"
    assert run_ranks(_stop_then_resume_as_rank, (model_dir, out), out, world_size=2) == [0, 0], rank_errors(out)
    for rank in range(2):
        report = json.loads((out / f"rank{rank}.json").read_text())
        assert report["checkpoint_written"] and report["forwards"] == report["expected"]  # resumed, not rerun
    assert not list(out.glob("*.partial"))
    loaded = load_model(str(model_dir))
    blocks = pack_blocks(loaded.tokenizer, ["the cat sat on the mat and slept"] * 30, "en", block_length=12)
    collect_statistics(loaded, blocks, CollectConfig(batch_size=2, residual=True), tmp_path / "one" / "en.safetensors",
                       progress=False)
    resumed = ResidualStatistics.load(out / "en.residual.safetensors")
    single = ResidualStatistics.load(tmp_path / "one" / "en.residual.safetensors")
    assert torch.equal(resumed.token_count, single.token_count)
    torch.testing.assert_close(resumed.residual_sum, single.residual_sum, rtol=1e-12, atol=1e-9)
