"""langneurons lm-eval: the grid of conditions on harness tasks and the paired statistics on the
harness's per-example results, checked against hand computations."""

import json
import math
import sys

import pytest
from harness_tasks import GEN_TASK, MC_TASK

from langneurons.errors import LangNeuronsError
from langneurons.harness.api import (
    BASELINE,
    HarnessCondition,
    LmEvalOptions,
    LmEvalResult,
    conditions_for,
    run_lm_eval,
    score_rows,
)
from langneurons.intervene.spec import parse_spec

pytest.importorskip("lm_eval")


def _samples(condition, accs, f1s=None):
    return [{"task": "t", "condition": condition, "doc_id": i, "filter": "none",
             "metrics": {"acc": float(a), **({"f1": f1s[i]} if f1s else {})}} for i, a in enumerate(accs)]


def test_paired_tests_match_a_hand_computation(tmp_path):
    base = [1, 1, 0, 0, 1, 0, 1, 1, 0, 1]
    other = [0, 1, 1, 0, 0, 0, 0, 1, 0, 0]  # only other right: doc 2; only base right: docs 0, 4, 6, 9
    f1_base = [0.5, 1.0, 0.0, 0.25, 0.75, 0.0, 1.0, 0.5, 0.0, 1.0]
    f1_other = [0.25, 1.0, 0.5, 0.25, 0.25, 0.0, 0.5, 0.5, 0.0, 0.5]
    spec = parse_spec("x.json:en:zero")
    conditions = [HarnessCondition(BASELINE, "baseline"),
                  HarnessCondition("x:en:zero", "intervention", spec, _FakeSet(7))]
    samples = _samples(BASELINE, base, f1_base)[::-1] + _samples("x:en:zero", other, f1_other)  # order must not matter
    harness = {BASELINE: {"t": {"acc,none": 0.6}}, "x:en:zero": {"t": {"acc,none": 0.3}}}
    rows = {(r["metric"], r["condition"]): r for r in score_rows("m", samples, harness, conditions, n_resamples=500)}

    acc = rows[("acc", "x:en:zero")]
    # exact McNemar by hand: 1 vs 4 discordant pairs -> p = 2 * P(Bin(5, 1/2) <= 1) = 2 * 6 / 32
    assert acc["p_value"] == pytest.approx(2 * (math.comb(5, 0) + math.comb(5, 1)) / 2**5)
    assert acc["test"] == "mcnemar exact, Tango score CI"
    assert acc["delta"] == pytest.approx(30.0 - 60.0)
    assert acc["score"] == pytest.approx(30.0) and acc["harness_value"] == pytest.approx(30.0)
    assert acc["unit"] == "percent" and acc["neurons"] == 7 and acc["n"] == 10
    # 10 documents are too few resampling units: no bootstrap interval (the exact McNemar p stands)
    assert acc["delta_ci_low"] is None and acc["delta_ci_high"] is None and acc["ci_low"] is None
    assert rows[("acc", BASELINE)]["score"] == pytest.approx(60.0) and rows[("acc", BASELINE)]["delta"] is None

    f1 = rows[("f1", "x:en:zero")]
    assert f1["test"] == "paired bootstrap" and f1["unit"] == "harness"
    assert f1["delta"] == pytest.approx((sum(f1_other) - sum(f1_base)) / 10)
    assert f1["score"] == pytest.approx(sum(f1_other) / 10)
    assert (f1["ci_low"], f1["ci_high"], f1["delta_ci_low"], f1["p_value"]) == (None, None, None, None)

    # the same documents twice over (20 documents): intervals and the bootstrap p-value appear
    twice = (_samples(BASELINE, base * 2, f1_base * 2) + _samples("x:en:zero", other * 2, f1_other * 2))
    rows = {(r["metric"], r["condition"]): r for r in score_rows("m", twice, harness, conditions, n_resamples=500)}
    acc, f1 = rows[("acc", "x:en:zero")], rows[("f1", "x:en:zero")]
    assert acc["n"] == 20 and acc["delta_ci_low"] <= acc["delta"] <= acc["delta_ci_high"]
    assert f1["ci_low"] <= f1["score"] <= f1["ci_high"] and 0.0 < f1["p_value"] <= 1.0


def test_unpaired_documents_are_refused():
    conditions = [HarnessCondition(BASELINE, "baseline"),
                  HarnessCondition("x", "intervention", parse_spec("x.json:en:zero"), _FakeSet(1))]
    samples = _samples(BASELINE, [1, 0, 1]) + _samples("x", [1, 0])
    with pytest.raises(LangNeuronsError, match="different documents"):
        score_rows("m", samples, {}, conditions)


class _FakeSet:
    def __init__(self, count):
        self.count = count

    def union(self, languages):
        import torch

        return torch.zeros(self.count, 2)


def test_conditions_are_baseline_intervention_and_layer_matched_random_control(neuron_file):
    conditions = conditions_for([f"{neuron_file}:en:zero"], random_control=True, seed=3)
    assert [c.name for c in conditions] == [BASELINE, "lape:en:zero", "random(lape):en:zero"]
    real, control = conditions[1].neuron_set, conditions[2].neuron_set
    assert control.counts_per_layer().tolist() == real.counts_per_layer().tolist()
    assert not (control.mask("en") == real.mask("en")).all()
    assert conditions[2].spec == conditions[1].spec


def test_grid_on_a_tiny_model_end_to_end(task_dir, model_dir, neuron_file, tmp_path):
    from langneurons.harness.backend import LangNeuronsLM

    lm = LangNeuronsLM(model=str(model_dir), device="cpu", batch_size=4)
    options = LmEvalOptions(tasks=(MC_TASK, GEN_TASK), include_path=(str(task_dir),), bootstrap_resamples=200)
    conditions = conditions_for([f"{neuron_file}:en:zero"])
    result = run_lm_eval(lm, conditions, options)
    assert lm.intervention is None  # cleared at the end
    cells = {(r["task"], r["metric"], r["condition"]) for r in result.rows}
    assert cells == {(t, m, c.name) for t, m in ((MC_TASK, "acc"), (GEN_TASK, "exact_match")) for c in conditions}
    for row in result.rows:
        assert row["score"] == pytest.approx(row["harness_value"])  # our per-example mean = the harness's aggregate
        assert row["n"] == 9
    baseline_ll = [s["loglikelihoods"] for s in result.samples if s["condition"] == BASELINE and s["task"] == MC_TASK]
    zeroed_ll = [s["loglikelihoods"] for s in result.samples if s["condition"] == "lape:en:zero" and s["task"] == MC_TASK]
    assert len(baseline_ll) == 9 and all(len(ll) == 3 for ll in baseline_ll) and baseline_ll != zeroed_ll
    assert all("doc" not in s for s in result.samples)  # numbers only, no document text

    files = result.write(tmp_path / "out")
    again = LmEvalResult.load(tmp_path / "out")
    assert again.rows == json.loads(json.dumps(result.rows)) and len(again.samples) == len(result.samples)
    assert files["scores_csv"].read_text().splitlines()[0].startswith("model,task,filter,metric")


def test_unknown_task_and_missing_folder_are_refused(task_dir):
    from langneurons.harness.api import task_manager

    with pytest.raises(LangNeuronsError, match="unknown harness tasks \\['nope'\\]"):
        task_manager(LmEvalOptions(tasks=("nope",), include_path=(str(task_dir),)))
    with pytest.raises(LangNeuronsError, match="include_path folder not found"):
        LmEvalOptions(tasks=(MC_TASK,), include_path=(str(task_dir / "missing"),))


@pytest.fixture
def langneurons_cli(capsys, monkeypatch):
    from langneurons.cli import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["langneurons", *map(str, args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        return code, *capsys.readouterr()

    return run


def test_cli_writes_scores_and_refuses_bad_input_in_one_line(langneurons_cli, task_dir, model_dir, neuron_file,
                                                             tmp_path, monkeypatch):
    code, out, err = langneurons_cli("lm-eval", "--model", model_dir, "--tasks", MC_TASK, "--include-path", task_dir,
                                     "-i", f"{neuron_file}:en:zero", "--bootstrap", 100, "--out", tmp_path / "o")
    assert code == 0, err
    rows = json.loads((tmp_path / "o" / "scores.json").read_text())["rows"]
    assert [r["condition"] for r in rows] == [BASELINE, "lape:en:zero", "random(lape):en:zero"]

    # the task is checked before the (here missing) model is loaded
    code, out, err = langneurons_cli("lm-eval", "--model", tmp_path / "no-model", "--tasks", "nope",
                                     "--include-path", task_dir)
    assert code == 1 and err.startswith("error: unknown harness tasks") and len(err.strip().splitlines()) == 1

    monkeypatch.setitem(sys.modules, "lm_eval", None)
    code, out, err = langneurons_cli("lm-eval", "--tasks", MC_TASK)
    assert code == 1 and "pip install 'langneurons[lm-eval]'" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- hostile input (issue 21, items 11, 12)


class _NoRequests:
    """A stand-in model that fails the test if the harness sends it any request."""

    class loaded:  # noqa: N801
        class info:  # noqa: N801
            model_id = "none"

    def set_intervention(self, spec, neuron_set=None):
        pass

    def __getattr__(self, name):
        raise AssertionError(f"the harness ran ({name}) before the refusal")


def test_a_prompt_scoped_intervention_on_a_multiple_choice_task_is_refused_before_any_request(task_dir, neuron_file):
    options = LmEvalOptions(tasks=(MC_TASK,), include_path=(str(task_dir),))
    conditions = conditions_for([f"{neuron_file}:en:zero:prompt"])
    with pytest.raises(LangNeuronsError, match=f"scope 'prompt'.*task '{MC_TASK}' is a multiple_choice task"):
        run_lm_eval(_NoRequests(), conditions, options)
    from langneurons.harness.api import check_prompt_scope

    check_prompt_scope(conditions, LmEvalOptions(tasks=(GEN_TASK,), include_path=(str(task_dir),)))  # generation: fine


@pytest.mark.parametrize("field, value, message", [
    ("bootstrap_resamples", 0, "bootstrap resamples must be an integer in \\[1, "),
    ("bootstrap_resamples", 10**15, "bootstrap resamples must be an integer in \\[1, "),
    ("seed", 2**64, "seed must be an integer in \\[0, 4294967295\\]"),
    ("seed", -1, "seed must be an integer in"),
    ("confidence", 1.0, "confidence must be strictly between 0 and 1"),
])
def test_out_of_range_options_are_refused_when_made(field, value, message, task_dir):
    with pytest.raises(LangNeuronsError, match=message):
        LmEvalOptions(tasks=(MC_TASK,), include_path=(str(task_dir),), **{field: value})


@pytest.mark.parametrize("args, message", [
    (["--bootstrap", "0"], "bootstrap resamples must be an integer in [1, "),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["-i", "{neurons}:en:zero:prompt"], "is a multiple_choice task"),
])
def test_cli_refuses_before_the_model_loads(args, message, langneurons_cli, task_dir, neuron_file, tmp_path):
    args = [a.format(neurons=neuron_file) for a in args]
    code, out, err = langneurons_cli("lm-eval", "--model", tmp_path / "no-model", "--tasks", MC_TASK,
                                     "--include-path", task_dir, *args, "--out", tmp_path / "o")
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()
