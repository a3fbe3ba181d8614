"""Learning targets (issue 18): a fine-tuned model's stated source-language score, met or missed,
and where missed what its dev learning curve says."""

import json

import pytest

from langneurons.evaluate.evaluation import GridResult
from langneurons.evaluate.metrics import wilson_interval
from langneurons.report.claims import (
    ClaimsConfig,
    LearningTarget,
    learning_curve_note,
    learning_targets,
    write_targets,
)


def _grid(model, correct: int, n: int = 100):
    predictions = [{"task": "xnli", "language": "en", "condition": "baseline", "id": f"x{i}", "correct": i < correct}
                   for i in range(n)]
    return GridResult(model, [], predictions)


def _meta(scores, step=50, total=300, stopped_early=False, search=None):
    curve = [{"step": i * step, "dev_score": s, "dev_n": 200, "dev_metric": "accuracy"} for i, s in enumerate(scores)]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    meta = {"curve": curve, "total_steps": total,
            "early_stopping": {"best_step": best * step, "best_score": scores[best], "stopped_early": stopped_early,
                               "stopped_step": curve[-1]["step"], "patience": 2}}
    if search:
        meta["lr_search"] = search
    return meta


RISING = _meta([34.0, 35.0, 40.5, 46.5, 50.5, 53.0, 53.5],
               search={"candidates": [2e-4, 5e-4, 1e-3], "chosen": 2e-4, "dev_scores": [36.0, 36.0, 35.0],
                       "steps": 40})


def test_a_curve_best_at_its_last_evaluation_says_the_budget_ended_first():
    note = learning_curve_note(RISING)
    assert note.startswith("dev accuracy 34.0 at step 0 → best 53.5 at step 300 (n = 200)")
    assert ("best at the last evaluation, step 300 of 300 (dev 50.5, 53.0, 53.5 at steps 200, 250, 300): the step "
            "budget ended before early stopping did") in note
    assert "learning rate 0.0002 chosen from 0.0002/0.0005/0.001 (dev 36.0/36.0/35.0 after 40 steps, a tie of 2" in note


def test_an_early_stopped_or_falling_curve_says_more_steps_would_not_help():
    stopped = learning_curve_note(_meta([38.3, 41.0, 40.0, 39.0], stopped_early=True))
    assert "best 41.0 at step 50" in stopped and "stopped early at step 150 of 300" in stopped
    assert "no dev gain in 2 evaluations" in stopped
    falling = learning_curve_note(_meta([38.3, 41.0, 40.0, 39.0]))
    assert "flat or falling after step 50 (last 39.0 at step 150 of 300)" in falling
    assert "learning rate" not in falling  # no search, nothing said about one
    assert learning_curve_note({}) == "no dev learning curve recorded"


def test_a_missed_target_is_reported_with_its_interval_and_learning_curve(tmp_path):
    (tmp_path / "finetune" / "attention").mkdir(parents=True)
    (tmp_path / "finetune" / "attention" / "langneurons_finetune.json").write_text(json.dumps(RISING))
    config = ClaimsConfig(learning_targets=(LearningTarget("attention", 60.0), LearningTarget("control", 50.0)))
    grids = {"attention": _grid("attention", 58), "control": _grid("control", 75)}
    attention, control = learning_targets(tmp_path, grids, config)
    low, high = (100 * v for v in wilson_interval(58, 100, 0.95))
    assert attention["score"] == pytest.approx(58.0) and attention["ci_low"] == pytest.approx(low)
    assert attention["ci_high"] == pytest.approx(high) and attention["n"] == 100
    assert attention["status"] == "missed" and attention["interval"] == "contains"  # 58 [48.2, 67.2] vs 60
    assert "best at the last evaluation" in attention["note"]
    assert control["status"] == "met" and control["interval"] == "above" and control["note"] == ""
    below = learning_targets(tmp_path, {"attention": _grid("attention", 40)}, config)[0]
    assert below["status"] == "missed" and below["interval"] == "below"
    assert below["note"].startswith("dev accuracy 34.0")
    written = write_targets([attention, control], tmp_path / "claims")
    assert [p.name for p in written] == ["targets.json", "targets.csv"]
    assert json.loads(written[0].read_text())[0]["status"] == "missed"
    assert written[1].read_text().splitlines()[0].startswith("model,task,language,metric,target,score,ci_low")


def test_a_seeded_base_name_names_every_seed_and_a_missing_model_says_so(tmp_path):
    config = ClaimsConfig(learning_targets=(LearningTarget("lape", 50.0),))
    grids = {"lape@0": _grid("lape@0", 55), "lape@1": _grid("lape@1", 45), "other": _grid("other", 90)}
    rows = learning_targets(tmp_path, grids, config)
    assert [(r["model"], r["status"]) for r in rows] == [("lape@0", "met"), ("lape@1", "missed")]
    assert rows[1]["note"] == "no fine-tuning record (langneurons_finetune.json)"
    missing = learning_targets(tmp_path, {}, config)[0]
    assert missing["status"] == "not evaluated" and missing["score"] is None
