"""The runner's lm_eval section: parsed and validated up front, one cached stage that adds nothing
to the keys of the other stages, and a report section."""

import json
import sys

import pytest
from harness_tasks import MC_TASK, write_task_folder

from langneurons.errors import LangNeuronsError
from langneurons.runner.config import load_config

pytest.importorskip("lm_eval")


def small_config(make_config, make_fixtures, root):
    """The tiny experiment cut to statistics and identification (what the lm_eval stage reads)."""
    make_fixtures(root)
    config = make_config(root)
    for section in ("ppxc", "finetune", "evaluation", "claims"):
        config.pop(section)
    config["identification"] = [entry for entry in config["identification"] if entry["name"] in ("lape", "random")]
    return config


@pytest.fixture
def rerun(make_loader):
    from langneurons.runner.run import run_experiment

    def run(config, run_dir, seed=0, **kwargs):
        loader = make_loader(seed)
        return run_experiment(config, run_dir, loader=loader, progress=False, **kwargs), loader

    return run


def _section(task_dir, **extra):
    return {"tasks": [MC_TASK], "include_path": [str(task_dir)], "neuron_sets": ["lape"], "languages": ["en"],
            "bootstrap_resamples": 50, "batch_size": 4, **extra}


def test_the_section_is_parsed_validated_and_absent_by_default(make_config, tmp_path):
    config = make_config(tmp_path)
    assert load_config(config).lm_eval is None and "lm_eval" not in load_config(config).to_dict()
    task_dir = write_task_folder(tmp_path / "tasks")
    config["lm_eval"] = _section(task_dir)
    parsed = load_config(config)
    assert parsed.lm_eval.options.tasks == (MC_TASK,) and parsed.lm_eval.random_control is True
    assert load_config(parsed.to_dict()) == parsed
    for change, message in [({"neuron_sets": ["nope"]}, "no neuron set named 'nope'"),
                            ({"languages": ["de"]}, "not among the experiment's languages"),
                            ({"actions": ["explode"]}, "lm_eval.actions\\[0\\]"),
                            ({"include_path": [str(tmp_path / "missing")]}, "folder not found"),
                            ({"tasks": []}, "at least one harness task")]:
        config["lm_eval"] = _section(task_dir, **change)
        with pytest.raises(LangNeuronsError, match=message):
            load_config(config)


def test_the_stage_runs_alone_is_cached_and_reported(make_config, make_fixtures, tmp_path, rerun):
    config, run_dir = small_config(make_config, make_fixtures, tmp_path), tmp_path / "run"
    first, _ = rerun(config, run_dir)
    assert first.computed == ["statistics", "identify/lape", "identify/random"]
    task_dir = write_task_folder(tmp_path / "tasks")
    config["lm_eval"] = _section(task_dir)
    result, _ = rerun(config, run_dir)
    assert result.computed == ["lm_eval"]  # no other stage's key changed by the new section
    assert result.cached == first.computed
    rows = json.loads((run_dir / "lm_eval" / "scores.json").read_text())["rows"]
    assert [r["condition"] for r in rows] == ["baseline", "lape:en:zero", "random(lape):en:zero"]
    assert rows[1]["neurons"] == rows[2]["neurons"] > 0 and rows[1]["p_value"] is not None
    report = (run_dir / "report" / "report.md").read_text()
    assert "## lm-evaluation-harness tasks" in report and "random(lape):en:zero" in report

    result, _ = rerun(config, run_dir)
    assert result.computed == []
    (task_dir / "data.jsonl").write_text((task_dir / "data.jsonl").read_text().replace("mat", "rug"))
    result, _ = rerun(config, run_dir)
    assert result.computed == ["lm_eval"]  # the task files are an input


def test_unknown_tasks_and_a_missing_extra_stop_the_run_before_any_stage(make_config, make_fixtures, tmp_path, rerun,
                                                                       monkeypatch):
    config, run_dir = small_config(make_config, make_fixtures, tmp_path), tmp_path / "run"
    config["lm_eval"] = _section(write_task_folder(tmp_path / "tasks"), tasks=["nope"])
    with pytest.raises(LangNeuronsError, match="unknown harness tasks"):
        rerun(config, run_dir)
    config["lm_eval"]["tasks"] = [MC_TASK]
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(LangNeuronsError, match="langneurons\\[lm-eval\\]"):
        rerun(config, run_dir)
    assert not (run_dir / "statistics").exists()  # refused before any stage ran
