"""Per-chunk counts kept in the statistics pass: they sum exactly to the merged statistics, the
merged statistics are exactly those of a pass without replicates, chunks are the blocks
b mod R, shards and resumed runs give the same chunks, and the coarse-bin estimate of a
resample's count above a threshold is the full-data estimate when every chunk counts once."""

import pytest
import torch

from langneurons.activations.collect import CollectConfig, collect_statistics, collect_with_replicates
from langneurons.activations.replicates import (
    ReplicateStatistics,
    ThresholdSplit,
    coarse_sketch,
    fine_to_coarse,
    merged_check,
    read_metadata,
    replicates_path,
    resampled_above,
)
from langneurons.activations.sketch import SketchConfig, bin_index
from langneurons.activations.statistics import ActivationStatistics
from langneurons.corpus.packing import pack_blocks
from langneurons.hooks import activation_hooks

TEXTS = ["the cat sat on the mat", "le chat est sur le tapis et dort", "el gato está en la alfombra"] * 12


@pytest.fixture
def blocks(tokenizer):
    return pack_blocks(tokenizer, TEXTS, "en", block_length=12)


def _full_activations(loaded, blocks):
    seen = {}
    with activation_hooks(loaded.adapter, lambda layer, a: seen.__setitem__(layer, a.detach())), torch.no_grad():
        loaded.adapter.body()(input_ids=blocks.input_ids)
    return [seen[layer] for layer in range(loaded.adapter.num_layers)]  # [blocks, length, N]


def test_fine_bins_nest_in_octaves():
    sketch = SketchConfig()
    values = torch.tensor([-300.0, -3.0, -1e-5, -0.0, 0.0, 1e-5, 0.001, 0.7, 1.0, 1.9, 2.0, 255.0, 1e9])
    fine = bin_index(values, sketch).long()
    coarse = bin_index(values, coarse_sketch(sketch)).long()
    assert torch.equal(fine_to_coarse(sketch)[fine], coarse)
    assert coarse_sketch(sketch).num_bins == 38 and fine_to_coarse(sketch).max() == 37


def test_chunks_hold_blocks_b_mod_r_and_sum_exactly_to_the_merged_statistics(loaded_llama, blocks):
    R = 4
    plain = collect_statistics(loaded_llama, blocks, CollectConfig(batch_size=3), progress=False)
    stats, replicates = collect_with_replicates(loaded_llama, blocks, CollectConfig(batch_size=3, replicates=R),
                                                progress=False)
    for name in ("positive_count", "histogram", "minimum", "maximum", "activation_sum", "activation_sum_sq"):
        assert torch.equal(getattr(stats, name), getattr(plain, name)), name  # the merged file is unchanged
    assert stats.token_count == plain.token_count
    assert merged_check(replicates, stats)
    full = _full_activations(loaded_llama, blocks)
    for chunk in range(R):
        rows = torch.arange(blocks.num_blocks) % R == chunk
        counted = blocks.counted[rows]
        assert int(replicates.token_count[chunk]) == int(counted.sum())
        for layer, values in enumerate(full):
            chunk_values = values[rows][counted]
            assert torch.equal(replicates.positive_count[chunk, layer], (chunk_values > 0).sum(0))
            expected = torch.zeros(values.shape[-1], 38, dtype=torch.int64)
            expected.scatter_add_(1, bin_index(chunk_values, coarse_sketch(stats.sketch)).long().T,
                                  torch.ones_like(chunk_values.T, dtype=torch.int64))
            assert torch.equal(replicates.histogram[layer, :, chunk].long(), expected)


def test_replicate_file_round_trips_next_to_an_unchanged_statistics_file(loaded_llama, blocks, tmp_path):
    plain_path, path = tmp_path / "plain" / "en.safetensors", tmp_path / "en.safetensors"
    collect_statistics(loaded_llama, blocks, CollectConfig(batch_size=2), output=plain_path, progress=False)
    _, replicates = collect_with_replicates(loaded_llama, blocks, CollectConfig(batch_size=2, replicates=3),
                                            output=path, progress=False)
    plain, with_replicates = ActivationStatistics.load(plain_path), ActivationStatistics.load(path)
    assert read_metadata(path) == read_metadata(plain_path) and plain.meta == with_replicates.meta
    for name in ("positive_count", "histogram", "minimum", "maximum", "activation_sum", "activation_sum_sq"):
        assert torch.equal(getattr(plain, name), getattr(with_replicates, name))
    loaded = ReplicateStatistics.load(replicates_path(path))
    assert loaded.count == 3 and loaded.meta == replicates.meta
    assert torch.equal(loaded.histogram, replicates.histogram)
    assert torch.equal(loaded.positive_count, replicates.positive_count)
    # a finished file with its replicates is reused; without them the pass runs again
    again = collect_with_replicates(loaded_llama, blocks, CollectConfig(batch_size=2, replicates=3), output=path,
                                    progress=False)[1]
    assert torch.equal(again.positive_count, replicates.positive_count)
    replicates_path(path).unlink()
    rerun = collect_with_replicates(loaded_llama, blocks, CollectConfig(batch_size=2, replicates=3), output=path,
                                    progress=False)[1]
    assert rerun is not None and replicates_path(path).exists()


def test_shards_and_resumed_runs_give_the_same_chunks(loaded_llama, blocks, tmp_path):
    config = CollectConfig(batch_size=2, replicates=3, checkpoint_every=1)
    _, whole = collect_with_replicates(loaded_llama, blocks, config, progress=False)
    ids = torch.arange(blocks.num_blocks)
    _, first = collect_with_replicates(loaded_llama, blocks.select(slice(0, None, 2)), config, progress=False,
                                       block_ids=ids[0::2])
    _, second = collect_with_replicates(loaded_llama, blocks.select(slice(1, None, 2)), config, progress=False,
                                        block_ids=ids[1::2])
    summed = first.add(second)
    assert torch.equal(summed.positive_count, whole.positive_count)
    assert torch.equal(summed.histogram, whole.histogram)
    output = tmp_path / "en.safetensors"
    collect_with_replicates(loaded_llama, blocks, config, output=output, progress=False, stop_after_batches=2)
    assert replicates_path(output).with_name(replicates_path(output).name + ".partial").exists()
    _, resumed = collect_with_replicates(loaded_llama, blocks, config, output=output, progress=False)
    assert torch.equal(resumed.positive_count, whole.positive_count)
    assert torch.equal(resumed.histogram, whole.histogram)
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_resampled_count_above_a_threshold(loaded_llama, blocks):
    stats, replicates = collect_with_replicates(loaded_llama, blocks, CollectConfig(batch_size=3, replicates=4),
                                                progress=False)
    threshold = stats.percentile(70)
    all_chunks = replicates.weighted_histogram(torch.ones(4))
    expected = stats.probability_above(threshold) * stats.token_count
    torch.testing.assert_close(resampled_above(stats, all_chunks, threshold), expected, rtol=1e-9, atol=1e-9)
    split = ThresholdSplit(stats, threshold)
    weights = torch.tensor([2.0, 0.0, 1.0, 3.0])
    torch.testing.assert_close(split.above_weighted(split.per_chunk(replicates), weights),
                               split.above(replicates.weighted_histogram(weights)), rtol=1e-12, atol=1e-9)
    # one chunk alone: octaves above the threshold's count whole, so the estimate lies between
    # the chunk's exact counts above the octave's upper and lower edge
    one = replicates.weighted_histogram(torch.tensor([0.0, 1.0, 0.0, 0.0]))
    estimate = resampled_above(stats, one, threshold)
    full = _full_activations(loaded_llama, blocks)
    rows = torch.arange(blocks.num_blocks) % 4 == 1
    for layer, values in enumerate(full):
        chunk_values = values[rows][blocks.counted[rows]]
        above_exact = (chunk_values > threshold[layer]).sum(0).double()
        octave = bin_index(threshold[layer], coarse_sketch(stats.sketch)).long()
        in_octave = (bin_index(chunk_values, coarse_sketch(stats.sketch)).long() == octave).sum(0).double()
        assert torch.all((estimate[layer] - above_exact).abs() <= in_octave + 1e-9)


def test_default_options_keep_the_keys_of_existing_statistics_folders():
    """Manifests and the runner's statistics cache key hash options_dict(options): without
    replicates it must be the dict of the options as they were before the field existed."""
    from dataclasses import asdict

    from langneurons.activations.api import CollectOptions, options_dict
    from langneurons.runner.config import load_config

    options = CollectOptions(languages=("en", "fr"))
    before = {k: v for k, v in asdict(options).items() if k not in ("replicates", "residual")}  # fields added later
    assert options_dict(options) == before and "replicates" not in options_dict(options)
    assert options_dict(CollectOptions(languages=("en",), replicates=10))["replicates"] == 10
    config = load_config({"languages": ["en", "fr"]})
    assert "replicates" not in config.to_dict()["statistics"]
    assert load_config({"languages": ["en"], "statistics": {"replicates": 5}}).statistics.replicates == 5


def test_replicate_bytes_match_the_allocated_tensors():
    from langneurons.activations.replicates import replicate_bytes
    from langneurons.activations.statistics import StatisticsMeta

    meta = StatisticsMeta("m", "r", "llama", 3, 20, "w", "en")
    replicates = ReplicateStatistics.empty(meta, SketchConfig(), 7)
    allocated = sum(t.numel() * t.element_size()
                    for t in (replicates.token_count, replicates.positive_count, replicates.histogram))
    assert replicate_bytes(3, 20, 7) == allocated


def test_langneurons_merge_adds_the_shards_replicates(loaded_llama, blocks, tmp_path):
    from langneurons.activations.api import merge_statistics

    config = CollectConfig(batch_size=2, replicates=3)
    _, whole = collect_with_replicates(loaded_llama, blocks, config, progress=False)
    ids = torch.arange(blocks.num_blocks)
    paths = [tmp_path / f"en.shard{i}of2.safetensors" for i in range(2)]
    for i, path in enumerate(paths):
        collect_with_replicates(loaded_llama, blocks.select(slice(i, None, 2)), config, output=path, progress=False,
                                block_ids=ids[i::2])
    merged = merge_statistics(paths, tmp_path / "en.safetensors")
    replicates = ReplicateStatistics.load(replicates_path(tmp_path / "en.safetensors"))
    assert torch.equal(replicates.positive_count, whole.positive_count) and merged_check(replicates, merged)
