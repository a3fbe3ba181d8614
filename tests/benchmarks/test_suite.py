"""`make bench` keeps working: every benchmark module runs in the suite on a tiny model and
writes a table. (Only that the suite runs and reports ratios; speed is measured, not tested.)"""

import json

import pytest

from benchmarks import run as suite


@pytest.fixture(scope="module")
def rows():
    loaded = suite.load_benchmark_model("tiny")
    modules = [m for m in suite.discover() if not m.endswith(("memory", "replicates"))]  # these start fresh processes
    return suite.run_suite(loaded, repeats=1, batch_size=2, length=128, modules=modules)


def test_every_module_reports_ratios_without_errors(rows):
    assert not [row for row in rows if "error" in row], [row.get("error") for row in rows]
    assert {row["module"] for row in rows} == {"benchmarks.bench_statistics", "benchmarks.bench_interventions",
                                              "benchmarks.bench_generation", "benchmarks.bench_finetune",
                                              "benchmarks.bench_steering", "benchmarks.bench_lm_eval",
                                              "benchmarks.bench_residual"}
    for row in rows:
        assert row["ratio_min"] <= row["ratio_median"] <= row["ratio_max"] and row["ratio_median"] > 0


def test_generation_decoders_agree_on_the_suite_workload(rows):
    generation = next(row for row in rows if row["module"] == "benchmarks.bench_generation")
    assert generation["extra"]["identical_outputs"] == 1.0  # batched KV-cached == batch-1 uncached
    assert generation["extra"]["prompts"] == 4 and generation["extra"]["new_tokens"] == 8


def test_the_harness_backend_gives_the_plain_backends_loglikelihoods(rows):
    lm_eval = next(row for row in rows if row["module"] == "benchmarks.bench_lm_eval")
    assert lm_eval["extra"]["identical_loglikelihoods"] == 1.0 and lm_eval["extra"]["documents"] == 8


def test_the_table_is_written_as_json_and_markdown(rows, tmp_path):
    header = {"model": "tiny", "device": "cpu", "threads": 1, "input": "2x128 tokens", "repeats": 1}
    table = suite.markdown_table(rows + [{"name": "broken", "error": "ValueError: boom"}], header)
    assert table.count("\n| ") == len(rows) + 3  # header, separator, one row per result, the failed module
    assert "**failed**: ValueError: boom" in table
    json.dumps(rows)  # every row is JSON-serialisable


def test_steering_benchmark_reports_generations_per_second(rows):
    steering = next(row for row in rows if row["module"] == "benchmarks.bench_steering")
    assert steering["extra"]["neurons"] > 0 and steering["extra"]["steered_generations_per_s"] > 0


def test_replicates_timing_runs_on_the_tiny_model():
    from benchmarks import bench_replicates

    loaded = suite.load_benchmark_model("tiny")
    result = bench_replicates._time(loaded, suite.benchmark_input_ids(loaded, 2, 128), repeats=1)
    assert result.ratio_median > 0 and result.extra["tokens_per_batch"] == 2 * 127


def test_every_row_reports_the_ratio_of_the_fastest_repeats(rows):
    assert all(row["extra"]["ratio_of_minimum_times"] > 0 for row in rows)


def test_the_statistics_profile_times_every_step_of_the_update(tmp_path):
    from benchmarks import profile_statistics

    result = profile_statistics.main(["--model", "tiny", "--repeats", "1", "--batch-size", "2", "--length", "32",
                                      "--out", str(tmp_path / "profile")])
    parts = [row["part"] for row in result["rows"]]
    assert parts[:3] == ["bare forward", "forward + no-op hooks", "forward + statistics"]
    assert {"neuron-major (transposed) copy", "positive count (> 0, sum along rows)",
            "histogram: scatter_add_"} <= set(parts)
    assert all(row["seconds"] > 0 for row in result["rows"]) and result["steps_alone_in_plain_copies"] > 0
    assert (tmp_path / "profile.md").read_text().startswith("Statistics-pass profile: tiny-llama-bench")


def test_residual_benchmark_runs_on_the_tiny_model():
    from benchmarks import bench_residual

    loaded = suite.load_benchmark_model("tiny")
    [result] = bench_residual.run(loaded, suite.benchmark_input_ids(loaded, 2, 128), repeats=1)
    assert result.ratio_median > 0 and result.target == "<= 1.05"
    assert result.extra["tokens_per_batch"] == 2 * 127 and result.extra["hidden_size"] == loaded.adapter.hidden_size
