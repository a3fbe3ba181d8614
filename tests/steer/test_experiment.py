"""The steering experiment on a tiny model where steering is planted (tests/steer/conftest.py)."""

import json
import math

import pytest

from langneurons.errors import LangNeuronsError
from langneurons.evaluate.metrics import wilson_interval
from langneurons.steer.api import steer, write_steering
from langneurons.steer.experiment import (
    SteeringOptions,
    activation_kind,
    conditions,
    full_action,
    parse_pair,
    run_steering,
    strength,
)


@pytest.fixture
def run(planted, planted_set, planted_statistics, fake_identifier, english):
    def run_(**overrides):
        options = SteeringOptions(**{"pairs": ("en>fr",), "actions": ("add=0", "add=1", "stat=p90", "scale=4"),
                                     "max_new_tokens": 5, "batch_size": 4, **overrides})
        return run_steering(planted, planted_set, options, fake_identifier, planted_statistics, prompts=english,
                            progress=False)

    return run_


def test_the_pipeline_finds_the_planted_effect_and_the_random_control_does_not(run):
    result = run()
    # six prompts: three dev, three test (seeded), every condition has one row per split
    assert result.meta["splits"]["en"] == {"dev": [2, 3, 5], "test": [0, 1, 4]}
    assert [r["split"] for r in result.rows[:4]] == ["dev", "test", "dev", "test"]
    rows = {r["condition"]: r for r in result.rows if r["split"] == "test"}
    assert list(rows) == ["baseline", "lape:deactivate", "lape:activate:add=0", "lape:both:add=0",
                          "lape:activate:add=1", "lape:both:add=1", "lape:activate:stat=p90", "lape:both:stat=p90",
                          "lape:activate:scale=4", "lape:both:scale=4", "random:deactivate",
                          "random:activate:add=0", "random:both:add=0", "random:activate:add=1", "random:both:add=1",
                          "random:activate:stat=p90", "random:both:stat=p90", "random:activate:scale=4",
                          "random:both:scale=4"]
    # unintervened: the model continues in English
    assert (rows["baseline"]["target_rate"], rows["baseline"]["source_rate"]) == (0.0, 100.0)
    # the planted neuron's target mean is positive, its source mean ~0: adding turns every continuation French,
    # and so does setting it to the French P90; strength 0 and scaling a ~0 activation do nothing
    for name in ("lape:activate:add=1", "lape:both:add=1", "lape:activate:stat=p90", "lape:both:stat=p90"):
        assert rows[name]["target_rate"] == 100.0 and rows[name]["target_count"] == 3, name
    for name in ("lape:deactivate", "lape:activate:add=0", "lape:activate:scale=4"):
        assert rows[name]["target_rate"] == 0.0, name
    # the layer-matched random control never includes the planted neuron and never steers
    random_rows = [r for r in result.rows if r["neuron_set"] == "random"]
    assert random_rows and all(r["target_rate"] == 0.0 and r["source_rate"] == 100.0 for r in random_rows)
    assert result.meta["neurons"]["random"] == {"en": 2, "fr": 3}
    # the counts of intervened neurons: deactivate = en's 2, activate = fr's 3, both = 5
    assert [rows[n]["neurons"] for n in ("lape:deactivate", "lape:activate:add=1", "lape:both:add=1")] == [2, 3, 5]
    # CIs are Wilson intervals of the counts (of the three test prompts)
    low, high = wilson_interval(3, 3)
    assert (rows["lape:activate:add=1"]["target_ci_low"], rows["lape:activate:add=1"]["target_ci_high"]) == \
        pytest.approx((100 * low, 100 * high))
    # fluency: the unintervened model finds the steered French continuation far less likely
    assert math.isfinite(rows["baseline"]["fluency_ppl"]) and rows["baseline"]["fluency_tokens"] == 15
    assert rows["lape:activate:add=1"]["fluency_ppl"] > 10 * rows["baseline"]["fluency_ppl"]
    # the planted model counts upwards (w104 w105 ...), it does not loop: the fluent target rate is the
    # target rate, the combined score the harmonic mean of 100 and 100, without an interval at 3 prompts
    assert rows["lape:activate:add=1"]["degenerate_count"] == 0
    assert rows["lape:activate:add=1"]["fluent_target_rate"] == 100.0
    assert rows["lape:activate:add=1"]["combined_score"] == 100.0
    assert rows["lape:activate:add=1"]["combined_ci_low"] is None
    assert rows["baseline"]["combined_score"] == 0.0  # harmonic mean of 0 (target) and 100 (fluency)
    # the first fluent-target-best condition on the dev prompts
    assert result.best_condition("lape") == "lape:activate:add=1"
    assert result.meta["selection"]["split"] == "dev"
    steered = [g for g in result.generations if g["condition"] == "lape:activate:add=1"]
    assert len(steered) == 6 and all(g["language"] == "fr" and not g["degenerate"] for g in steered)
    assert [g["split"] for g in steered] == ["test", "test", "dev", "dev", "test", "dev"]


def test_rows_count_degenerate_and_fluent_generations_of_their_split(run):
    from langneurons.steer.degeneration import is_degenerate

    result = run(actions=("add=1",), random_control=False)
    for row in result.rows:
        mine = [g for g in result.generations if (g["condition"], g["split"]) == (row["condition"], row["split"])]
        assert row["n"] == len(mine) == 3
        assert row["degenerate_count"] == sum(is_degenerate(g["continuation"]) for g in mine)
        assert row["fluent_target_count"] == sum(g["language"] == "fr" and not g["degenerate"] for g in mine)
        low, high = wilson_interval(row["fluent_target_count"], 3)
        assert (row["fluent_target_ci_low"], row["fluent_target_ci_high"]) == pytest.approx((100 * low, 100 * high))


def test_without_a_dev_part_every_prompt_is_a_test_prompt(run):
    result = run(actions=("add=1",), random_control=False, dev_fraction=0.0)
    assert {r["split"] for r in result.rows} == {"test"} and all(r["n"] == 6 for r in result.rows)
    assert result.meta["selection"]["split"] == "test"
    assert result.best_condition("lape") == "lape:activate:add=1"


def test_prompt_only_interventions_steer_the_first_token(run):
    # with the intervention on prompt tokens only, the last prompt position still predicts a French word;
    # from then on the planted neuron fires by itself on French input
    result = run(positions="prompt", actions=("add=1",), random_control=False)
    rows = {r["condition"]: r for r in result.rows}
    assert rows["lape:activate:add=1"]["target_rate"] == 100.0
    assert rows["lape:activate:add=1"]["positions"] == "prompt"


def test_files_are_written(run, tmp_path):
    result = run(actions=("add=0", "add=1"))
    paths = write_steering(result, tmp_path, example_count=2)
    names = sorted(p.name for p in paths)
    assert names == ["examples.json", "generations.jsonl", "steering.csv", "steering.json", "steering_heatmap.png",
                     "steering_heatmap.svg", "steering_scores.png", "steering_scores.svg", "steering_sweep.png",
                     "steering_sweep.svg"]
    data = json.loads((tmp_path / "steering.json").read_text())
    assert data["best_condition"] == "lape:activate:add=1" and len(data["rows"]) == len(result.rows)
    pooled = {p["condition"]: p for p in data["pooled"]}  # the test prompts of every pair, per condition
    assert len(pooled) == len({r["condition"] for r in result.rows})
    assert pooled["lape:activate:add=1"]["n"] == 3 and pooled["lape:activate:add=1"]["fluent_target_rate"] == 100.0
    assert pooled["baseline"]["target_count"] == 0 and pooled["baseline"]["pairs"] == ["en>fr"]
    examples = json.loads((tmp_path / "examples.json").read_text())
    assert len(examples) == 2 and examples[0]["baseline_language"] == "en" and examples[0]["steered_language"] == "fr"
    # examples are test prompts (0 and 1 of the split), never dev prompts
    assert [e["prompt"] for e in examples] == [result.generations[i]["prompt"] for i in (0, 1)]
    assert examples[0]["steered_degenerate"] is False
    header = (tmp_path / "steering.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["source", "target", "condition", "split", "neuron_set"] and "fluency_ppl" in header
    assert {"degenerate_rate", "fluent_target_rate", "fluent_target_ci_low", "combined_score",
            "combined_ci_high"} <= set(header)


def test_the_files_name_the_condition_best_on_dev_even_when_another_is_best_on_test(tmp_path):
    from langneurons.steer.experiment import SteeringResult

    def row(condition, split, fluent, target):
        return {"source": "en", "target": "fr", "condition": condition, "split": split, "neuron_set": "lape",
                "mode": "activate", "kind": "add", "strength": float(condition[-1]), "target_rate": target,
                "target_ci_low": 0.0, "target_ci_high": 100.0, "fluent_target_rate": fluent,
                "fluent_target_ci_low": 0.0, "fluent_target_ci_high": 100.0, "combined_score": fluent,
                "combined_ci_low": None, "combined_ci_high": None}

    rows = [row("lape:activate:add=1", "dev", 60.0, 70.0), row("lape:activate:add=1", "test", 20.0, 30.0),
            row("lape:activate:add=2", "dev", 40.0, 90.0), row("lape:activate:add=2", "test", 80.0, 95.0)]
    result = SteeringResult(rows, [], {"neuron_set": "lape"})
    assert result.best_condition("lape") == "lape:activate:add=1"
    assert result.row("en", "fr", "lape:activate:add=2")["fluent_target_rate"] == 80.0  # the test row by default
    write_steering(result, tmp_path)
    assert json.loads((tmp_path / "steering.json").read_text())["best_condition"] == "lape:activate:add=1"


def test_conditions_and_actions():
    options = SteeringOptions(actions=("add=2", "scale=3"), deactivate=False)
    assert [c.name for c in conditions(options, ["lape"])] == ["baseline", "lape:activate:add=2",
                                                               "lape:activate:scale=3"]
    assert full_action("add=2", "en", "hi") == "add=2@en>hi"
    assert full_action("stat=p90", "en", "hi") == "stat=p90@hi"
    assert full_action("scale=3", "en", "hi") == "scale=3"
    assert [strength(a) for a in ("add=2", "stat=p95", "stat=mean", "scale=0.5")] == [2.0, 95.0, None, 0.5]
    assert parse_pair(" en > zh ") == ("en", "zh")


@pytest.mark.parametrize("options, message", [
    ({"pairs": ("en-fr",)}, "SOURCE>TARGET"),
    ({"pairs": ("en>en",)}, "the same language"),
    ({"pairs": ("en>xx",)}, "unknown language code 'xx'"),
    ({"pairs": ()}, "at least one"),
    ({"actions": ("zero",)}, "activating the target takes one of"),
    ({"actions": ("add=2@en>fr",)}, "without languages"),
    ({"actions": ("add=x",)}, "must be a number"),
    ({"actions": ("stat=p900",)}, "unknown statistic"),
    ({"positions": "generated"}, "positions"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"dev_fraction": 1.0}, r"dev_fraction must be in \[0, 1\)"),
    ({"dev_fraction": 0.5, "prompt_count": 1}, "leaves no dev prompt"),
])
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(LangNeuronsError, match=message):
        SteeringOptions(**options)


def test_bad_inputs_are_refused_before_generation(planted, planted_set, planted_statistics, fake_identifier, english,
                                                 planted_neuron, tmp_path):
    identifier = fake_identifier
    with pytest.raises(LangNeuronsError, match="not among the identifier's candidate languages"):
        run_steering(planted, planted_set, SteeringOptions(pairs=("en>es",)), identifier, planted_statistics,
                     prompts=english, progress=False)
    with pytest.raises(LangNeuronsError, match="does not cover 'my'"):  # lingua lacks Burmese
        run_steering(planted, planted_set, SteeringOptions(pairs=("en>my",)), identifier, planted_statistics,
                     prompts=english, progress=False)
    with pytest.raises(LangNeuronsError, match="add/stat actions need activation statistics of \\['hi'\\]"):
        run_steering(planted, planted_set, SteeringOptions(pairs=("en>hi",)), identifier, planted_statistics,
                     prompts=english, progress=False)
    neuron_file = planted_set.save(tmp_path / "set.json")
    with pytest.raises(LangNeuronsError, match="need --statistics"):
        steer(planted, neuron_file, SteeringOptions(), tmp_path / "out", identifier=identifier)
    assert activation_kind("constant=2") == "constant"
    assert planted_neuron in planted_set.indices("fr")[:, 1].tolist()


def test_a_single_strength_draws_no_sweep_figure_and_says_why(run, tmp_path):
    from langneurons.steer.figures import no_sweep_reason, sweep_strengths

    for name in ("steering_sweep.png", "steering_sweep.svg"):  # left by an earlier run with a sweep
        (tmp_path / name).write_text("stale")
    result = run(actions=("add=4",))
    assert sweep_strengths(result.rows) == 1
    assert no_sweep_reason(result.rows) == ("No strength-sweep figure: each action was run at a single strength "
                                            "(it is drawn for 2 or more).")
    names = {p.name for p in write_steering(result, tmp_path)}
    assert "steering_heatmap.png" in names and not any(name.startswith("steering_sweep") for name in names)
    assert not (tmp_path / "steering_sweep.png").exists() and not (tmp_path / "steering_sweep.svg").exists()


def test_a_sweep_needs_two_strengths_of_the_same_action():
    from langneurons.steer.figures import no_sweep_reason, sweep_strengths

    def row(kind, value, neuron_set="lape", mode="activate"):
        return {"source": "en", "target": "fr", "neuron_set": neuron_set, "mode": mode, "kind": kind,
                "strength": value}

    baseline = {"source": "en", "target": "fr", "neuron_set": "", "mode": "baseline", "kind": "", "strength": None}
    assert sweep_strengths([baseline]) == 0 and no_sweep_reason([baseline]).endswith("no condition has a strength.")
    # add=4 on the language set and on the random set, scale=2: still one strength per sweep
    single = [baseline, row("add", 4.0), row("add", 4.0, "random"), row("scale", 2.0)]
    assert sweep_strengths(single) == 1 and no_sweep_reason(single) is not None
    assert sweep_strengths(single + [row("add", 2.0)]) == 2 and no_sweep_reason(single + [row("add", 2.0)]) is None
