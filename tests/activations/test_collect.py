"""The streaming statistics pass equals statistics computed from full activations; padding
and the per-block BOS are never counted; shards merge exactly; killed runs resume."""

import pytest
import torch
from tiny import tiny_model

from langneurons.activations.collect import CollectConfig, collect_statistics
from langneurons.activations.sketch import bin_index
from langneurons.activations.statistics import ActivationStatistics, StatisticsMismatchError
from langneurons.corpus.packing import TokenBlocks, pack_blocks
from langneurons.errors import LangNeuronsError
from langneurons.hooks import activation_hooks
from langneurons.models.loading import describe

TEXTS = ["the cat sat on the mat", "le chat est sur le tapis et dort", "el gato está en la alfombra"] * 12


@pytest.fixture
def blocks(tokenizer):
    return pack_blocks(tokenizer, TEXTS, "en", block_length=12)


def _full_activations(loaded, blocks):
    seen = {}
    with activation_hooks(loaded.adapter, lambda layer, a: seen.__setitem__(layer, a.detach())), torch.no_grad():
        loaded.adapter.body()(input_ids=blocks.input_ids)
    return [seen[layer].reshape(-1, seen[layer].shape[-1])[blocks.counted.reshape(-1)] for layer in range(loaded.adapter.num_layers)]


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt"])
def test_streaming_counts_and_sums_equal_those_of_full_activations(family, tokenizer, blocks):
    loaded = describe(tiny_model(family), model_id=f"tiny-{family}")
    stats = collect_statistics(loaded, blocks, CollectConfig(batch_size=3), progress=False)
    full = _full_activations(loaded, blocks)
    assert stats.token_count == blocks.token_count == full[0].shape[0]
    for layer, values in enumerate(full):
        assert torch.equal(stats.positive_count[layer], (values > 0).sum(0))
        torch.testing.assert_close(stats.mean[layer].float(), values.mean(0), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(stats.std[layer].float(), values.std(0, unbiased=False), rtol=1e-3, atol=1e-5)
        assert torch.equal(stats.maximum[layer], values.amax(0))
        assert torch.equal(stats.minimum[layer], values.amin(0))
        assert torch.equal(stats.histogram[layer].sum(-1), torch.full((values.shape[1],), values.shape[0], dtype=torch.int32))
        # every value in the bin bin_index gives it, counted per neuron
        bins = bin_index(values, stats.sketch).long()  # [tokens, neurons]
        expected = torch.stack([torch.bincount(bins[:, n], minlength=stats.sketch.num_bins) for n in range(bins.shape[1])])
        assert torch.equal(stats.histogram[layer].long(), expected)


def test_padding_and_block_bos_are_never_counted(loaded_llama, blocks):
    padded = TokenBlocks("en", blocks.input_ids.clone(), blocks.counted.clone())
    padded.input_ids[:, -3:] = 0  # pretend the last three positions are padding
    padded.counted[:, -3:] = False
    stats = collect_statistics(loaded_llama, padded, CollectConfig(batch_size=4), progress=False)
    full = _full_activations(loaded_llama, padded)
    assert stats.token_count == int(padded.counted.sum()) == blocks.num_blocks * (12 - 1 - 3)
    assert torch.equal(stats.positive_count[0], (full[0] > 0).sum(0))


def test_statistics_of_shards_merge_exactly_into_one_pass(loaded_llama, blocks):
    config = CollectConfig(batch_size=2)
    whole = collect_statistics(loaded_llama, blocks, config, progress=False)
    first = collect_statistics(loaded_llama, blocks.select(slice(0, 5)), config, progress=False)
    second = collect_statistics(loaded_llama, blocks.select(slice(5, None)), config, progress=False)
    merged = first.merge(second)
    assert merged.token_count == whole.token_count
    assert torch.equal(merged.positive_count, whole.positive_count)
    assert torch.equal(merged.histogram, whole.histogram)
    torch.testing.assert_close(merged.activation_sum, whole.activation_sum, rtol=1e-5, atol=1e-6)  # float32 within a batch


def test_a_killed_run_resumes_without_double_counting(loaded_llama, blocks, tmp_path):
    output = tmp_path / "en.safetensors"
    config = CollectConfig(batch_size=2, checkpoint_every=1)
    collect_statistics(loaded_llama, blocks, config, output=output, progress=False, stop_after_batches=2)
    assert not output.exists() and output.with_name(output.name + ".partial").exists()
    resumed = collect_statistics(loaded_llama, blocks, config, output=output, progress=False)
    fresh = collect_statistics(loaded_llama, blocks, config, progress=False)
    assert resumed.token_count == fresh.token_count
    assert torch.equal(resumed.positive_count, fresh.positive_count)
    assert torch.equal(resumed.histogram, fresh.histogram)
    assert output.exists() and not output.with_name(output.name + ".partial").exists()


def test_saved_statistics_round_trip_with_metadata(loaded_llama, blocks, tmp_path):
    path = tmp_path / "en.safetensors"
    stats = collect_statistics(loaded_llama, blocks, CollectConfig(), output=path, progress=False)
    loaded = ActivationStatistics.load(path, expected=stats.meta)
    assert loaded.meta == stats.meta and loaded.token_count == stats.token_count
    assert loaded.meta.num_layers == 2 and loaded.meta.language == "en"
    assert torch.equal(loaded.histogram, stats.histogram)
    torch.testing.assert_close(loaded.percentile(90), stats.percentile(90))


def test_statistics_from_another_model_are_refused(loaded_llama, blocks, tmp_path):
    path = tmp_path / "en.safetensors"
    collect_statistics(loaded_llama, blocks, CollectConfig(), output=path, progress=False)
    other = describe(tiny_model("llama", seed=1), model_id="tiny-llama")
    with pytest.raises(StatisticsMismatchError, match="recorded on"):
        ActivationStatistics.load(path, expected=collect_statistics(other, blocks, progress=False).meta)


def test_truncated_statistics_file_gives_a_clear_error(loaded_llama, blocks, tmp_path):
    path = tmp_path / "en.safetensors"
    collect_statistics(loaded_llama, blocks, CollectConfig(), output=path, progress=False)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(LangNeuronsError, match="corrupted or truncated"):
        ActivationStatistics.load(path)


def test_merging_different_languages_is_refused_unless_pooling(loaded_llama, blocks):
    en = collect_statistics(loaded_llama, blocks, progress=False)
    fr = collect_statistics(loaded_llama, TokenBlocks("fr", blocks.input_ids, blocks.counted), progress=False)
    with pytest.raises(StatisticsMismatchError):
        en.merge(fr)
    pooled = ActivationStatistics.pooled([en, fr])
    assert pooled.token_count == 2 * en.token_count and pooled.meta.language == "en+fr"


def test_named_statistics_are_the_right_tensors(loaded_llama, blocks):
    stats = collect_statistics(loaded_llama, blocks, progress=False)
    assert torch.equal(stats.statistic("mean"), stats.mean.float())
    torch.testing.assert_close(stats.statistic("p90"), stats.percentile(90))
    assert torch.all(stats.statistic("p10") <= stats.statistic("p90"))
    with pytest.raises(LangNeuronsError, match="unknown statistic"):
        stats.statistic("median")


def test_recorded_statistics_live_in_the_activation_functions_range(loaded_llama, blocks):
    """Statistics are recorded on act_fn(gate x), the tensor interventions write to: for SiLU no
    recorded value may fall below SiLU's minimum (about -0.2785), unlike gate pre-activations."""
    with torch.no_grad():
        for layer in loaded_llama.adapter.layers:
            layer.gate.weight.mul_(200.0)  # gate pre-activations now reach far below -1
    gate_inputs = []
    with torch.no_grad(), activation_hooks(loaded_llama.adapter, lambda i, a: None):
        handle = loaded_llama.adapter.layers[0].gate.register_forward_hook(lambda m, i, out: gate_inputs.append(out))
        loaded_llama.adapter.body()(input_ids=blocks.input_ids[:2])
        handle.remove()
    assert gate_inputs[0].min() < -1.0
    stats = collect_statistics(loaded_llama, blocks, progress=False)
    silu_minimum = -0.2785
    assert stats.minimum.min() >= silu_minimum
    for name in ("mean", "p5", "p50", "p95"):
        assert stats.statistic(name).min() >= silu_minimum
