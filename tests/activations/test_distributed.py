"""Statistics over several processes equal those of one process.

Two gloo ranks on CPU are forked from the test process with torchrun's environment (``WORLD_SIZE``,
``RANK``, ``MASTER_ADDR`` ...), so they need no fresh import of torch; one slow test runs the real
``torchrun --nproc_per_node=2 -m langneurons collect`` command.

* two ranks write files equal to the single-process ones: counts, histograms, minima and maxima
  exactly, sums to float tolerance, and the same metadata (corpus fingerprint of the whole set);
* a rank that fails makes every rank fail (no hang) and no statistics file is put in place;
* each rank resumes from its own checkpoint without counting a block twice;
* ``--shard i/n`` files merge into the single-process statistics; files of another model,
  language, histogram layout, or the same shard twice are refused.
"""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from ranks import free_port, launcher_env, rank_errors, run_ranks
from tiny import tiny_model, tiny_tokenizer

from langneurons.activations.collect import CollectConfig, collect_statistics
from langneurons.activations.api import CollectOptions, collect, merge_statistics, statistics_path
from langneurons.activations.distributed import distributed_session, statistics_bytes
from langneurons.activations.sketch import SketchConfig
from langneurons.activations.statistics import ActivationStatistics, StatisticsMismatchError
from langneurons.corpus.packing import pack_blocks
from langneurons.errors import LangNeuronsError
from langneurons.hooks import hooks
from langneurons.models.loading import describe, load_model

LANGUAGES = ("en", "fr")
CLI_OPTIONS = ["--token-budget", "285", "--heldout-budget", "40", "--block-length", "16", "--batch-size", "3"]
OPTIONS = CollectOptions(languages=LANGUAGES, token_budget=285, heldout_budget=40, block_length=16, batch_size=3)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny Llama and tokenizer saved like a hub checkpoint (what the CLI loads)."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def single_process(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    collect(load_model(str(model_dir)), OPTIONS, out, progress=False)
    return out


def _assert_same_statistics(actual: ActivationStatistics, expected: ActivationStatistics) -> None:
    assert actual.token_count == expected.token_count
    for name in ("positive_count", "histogram", "minimum", "maximum"):
        assert torch.equal(getattr(actual, name), getattr(expected, name)), name
    # sums are float32 within a batch and float64 across batches: equal to float32 rounding
    torch.testing.assert_close(actual.activation_sum, expected.activation_sum, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(actual.activation_sum_sq, expected.activation_sum_sq, rtol=1e-5, atol=1e-6)


def _collect_as_rank(rank: int, model_dir, out) -> None:
    """What ``langneurons collect`` does on one rank (torchrun's environment is already set)."""
    collect(load_model(str(model_dir)), OPTIONS, out, progress=False)


def _run_two_ranks(model_dir, out, target=_collect_as_rank, timeout=90, **extra_env) -> list[int | None]:
    """Exit codes of two forked ranks running ``target(rank, model_dir, out)`` (None: hung)."""
    return run_ranks(target, (model_dir, out), out, world_size=2, timeout=timeout, **extra_env)


def test_two_gloo_ranks_write_the_single_process_files(model_dir, single_process, tmp_path):
    out = tmp_path / "two-ranks"
    assert _run_two_ranks(model_dir, out) == [0, 0], rank_errors(out)
    for language in LANGUAGES:
        expected = ActivationStatistics.load(statistics_path(single_process, language))
        actual = ActivationStatistics.load(statistics_path(out, language))
        assert actual.meta == expected.meta  # corpus fingerprint of the whole block set, not of a shard
        _assert_same_statistics(actual, expected)
    assert (out / "manifest.json").exists() and (out / "en.heldout.safetensors").exists()
    assert not list(out.glob("*.partial")), "per-rank checkpoints are removed once the file is written"
    written = statistics_path(out, "en").stat().st_mtime_ns
    assert _run_two_ranks(model_dir, out) == [0, 0]  # a rerun agrees on skipping the finished files
    assert statistics_path(out, "en").stat().st_mtime_ns == written


def test_a_failing_rank_fails_the_run_without_hanging_or_writing_a_file(model_dir, tmp_path):
    out = tmp_path / "failed"
    exitcodes = _run_two_ranks(model_dir, out, LANGNEURONS_TEST_FAULT="1:1", LANGNEURONS_DIST_TIMEOUT_S="20")
    assert exitcodes == [1, 1]  # no launcher here: rank 0 notices the dead peer by itself (None = hung)
    assert "injected fault on rank 1" in (out / "rank1.error").read_text()
    rank0 = (out / "rank0.error").read_text()
    assert "gloo" in rank0 and "injected" not in rank0  # rank 0 fails on the dead peer's connection
    assert not [p for p in out.glob("*.safetensors") if "heldout" not in p.name]


def _stop_then_resume_as_rank(rank: int, model_dir, out) -> None:
    """Stop after one batch (per-rank checkpoint), then finish; count the batches of the second run."""
    loaded = load_model(str(model_dir))
    blocks = pack_blocks(loaded.tokenizer, ["the cat sat on the mat and slept"] * 30, "en", block_length=12)
    config, output = CollectConfig(batch_size=2, checkpoint_every=1), Path(out) / "en.safetensors"
    with distributed_session() as context:
        collect_statistics(loaded, blocks, config, output, progress=False, distributed=context, stop_after_batches=1)
        checkpoint = output.with_name(f"en.safetensors.rank{rank}of2.partial")
        checkpoint_written = checkpoint.exists()
        forwards = []
        with hooks([(loaded.adapter.body(), lambda module, inputs, output: forwards.append(1))]):
            collect_statistics(loaded, blocks, config, output, progress=False, distributed=context)
    single = collect_statistics(loaded, blocks, config, progress=False)
    own_batches = -(-len(range(rank, blocks.num_blocks, 2)) // config.batch_size)
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(
        {"checkpoint_written": checkpoint_written, "forwards": len(forwards), "expected": own_batches - 1,
         "checkpoint_left": checkpoint.exists(), "token_count": single.token_count}))


def test_each_rank_resumes_from_its_own_checkpoint_without_double_counting(model_dir, tmp_path):
    assert _run_two_ranks(model_dir, tmp_path, target=_stop_then_resume_as_rank) == [0, 0], \
        rank_errors(tmp_path)
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    for report in reports:
        assert report["checkpoint_written"]
        assert report["forwards"] == report["expected"]  # the batch done before the stop is not rerun
        assert not report["checkpoint_left"]
    resumed = ActivationStatistics.load(tmp_path / "en.safetensors")
    assert resumed.token_count == reports[0]["token_count"]


@pytest.mark.slow
def test_torchrun_command_with_two_gloo_ranks_writes_the_single_process_files(model_dir, single_process, tmp_path):
    out = tmp_path / "torchrun"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(free_port()),
               "-m", "langneurons", "collect", "--model", str(model_dir), "--languages", ",".join(LANGUAGES),
               "--out", str(out), "--no-progress", *CLI_OPTIONS]
    run = subprocess.run(command, env=launcher_env(), capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    for language in LANGUAGES:
        expected = ActivationStatistics.load(statistics_path(single_process, language))
        actual = ActivationStatistics.load(statistics_path(out, language))
        assert actual.meta == expected.meta
        _assert_same_statistics(actual, expected)


def test_merged_shard_files_equal_the_single_process_file(model_dir, single_process, tmp_path):
    loaded = load_model(str(model_dir))
    shards = []
    for index in range(3):
        collect(loaded, replace(OPTIONS, languages=("en",), shard=(index, 3)), tmp_path, progress=False)
        shards.append(statistics_path(tmp_path, "en", (index, 3)))
    merged = merge_statistics(shards, tmp_path / "en.safetensors")
    _assert_same_statistics(merged, ActivationStatistics.load(statistics_path(single_process, "en")))
    assert ActivationStatistics.load(tmp_path / "en.safetensors").token_count == merged.token_count


@pytest.fixture(scope="module")
def shard_files(tmp_path_factory):
    """Shard 0/2 of en and shard 1/2 of en, fr, of another model and with other histogram bins."""
    files, folder = {}, tmp_path_factory.mktemp("shards")

    def write(name, loaded, languages=("en",), shard=(1, 2), sketch=SketchConfig()):
        options = CollectOptions(languages=languages, token_budget=200, heldout_budget=40, block_length=16,
                                 shard=shard, sketch=sketch)
        collect(loaded, options, folder / name, progress=False)
        files[name] = statistics_path(folder / name, languages[0], shard)

    tokenizer = tiny_tokenizer()
    llama, other = (describe(tiny_model("llama", seed=seed), model_id="tiny-llama") for seed in (0, 1))
    llama.tokenizer = other.tokenizer = tokenizer
    write("first", llama, shard=(0, 2))
    write("second", llama)
    write("french", llama, languages=("fr",))
    write("other_model", other)
    write("other_bins", llama, sketch=SketchConfig(mantissa_bits=2))
    return files


@pytest.mark.parametrize(("partner", "message"), [
    ("other_model", "different models"),
    ("french", "different languages"),
    ("other_bins", "histogram bins differ"),
    ("first", "same token blocks"),
])
def test_mismatched_shards_are_refused(shard_files, partner, message, tmp_path):
    output = tmp_path / "merged.safetensors"
    with pytest.raises(LangNeuronsError, match=message):
        merge_statistics([shard_files["first"], shard_files[partner]], output)
    assert not output.exists()
    merge_statistics([shard_files["first"], shard_files["second"]], output)  # the matching pair merges
    assert output.exists()


def test_a_different_model_is_a_statistics_mismatch(shard_files, tmp_path):
    with pytest.raises(StatisticsMismatchError):
        merge_statistics([shard_files["second"], shard_files["other_model"]], tmp_path / "x.safetensors")


def test_shard_option_and_torchrun_together_are_refused(loaded_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    options = CollectOptions(languages=("en",), shard=(0, 2))
    with pytest.raises(LangNeuronsError, match="either --shard"):
        collect(loaded_llama, options, tmp_path, progress=False)


def test_one_process_needs_no_process_group_and_unknown_backends_are_refused(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed_session() as context:
        assert context is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(LangNeuronsError, match="unknown distributed backend"):
        with distributed_session("mpi"):
            pass


def test_statistics_memory_formula_matches_the_allocated_tensors(loaded_llama):
    from langneurons.activations.collect import CollectConfig, statistics_meta
    from langneurons.corpus.packing import pack_blocks

    blocks = pack_blocks(loaded_llama.tokenizer, ["the cat sat on the mat"] * 4, "en", block_length=8)
    stats = ActivationStatistics.empty(statistics_meta(loaded_llama, "en", blocks, CollectConfig()))
    allocated = sum(getattr(stats, name).nbytes for name in
                    ("positive_count", "activation_sum", "activation_sum_sq", "minimum", "maximum", "histogram"))
    bins = SketchConfig().num_bins
    assert statistics_bytes(2, 48) == allocated == 2 * 48 * (bins * 4 + 8 + 8 + 8 + 4 + 4)
    assert statistics_bytes(32, 14336) == 458_752 * (bins * 4 + 32)  # Llama 3.1 8B, per language
