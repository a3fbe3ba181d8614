"""The ``stability:`` section: a cached stage per neuron set, a stable set usable downstream
(``min_frequency`` in an identification entry), a report section, and config checks."""

import json

import pytest

from langneurons.errors import LangNeuronsError
from langneurons.runner.config import load_config
from langneurons.runner.run import run_experiment


def _config(make_config, root):
    config = make_config(root)
    for key in ("ppxc", "tasks", "finetune", "evaluation", "claims"):
        config.pop(key)
    config["statistics"]["replicates"] = 4
    config["identification"] = [
        {"name": "lape", "method": "lape", "top_rate": 0.05, "filter_rate": 0.5, "figures": False},
        {"name": "lape-stable", "method": "lape", "top_rate": 0.05, "filter_rate": 0.5, "min_frequency": 0.5,
         "resamples": 10, "figures": False},
    ]
    config["stability"] = {"neuron_sets": ["lape"], "resamples": 12, "splits": 3}
    return config


def test_stability_stage_runs_caches_and_reports(tmp_path, make_config, make_fixtures, make_loader):
    make_fixtures(tmp_path)
    config = _config(make_config, tmp_path)
    result = run_experiment(config, tmp_path / "run", loader=make_loader(), progress=False)
    assert result.computed == ["statistics", "identify/lape", "identify/lape-stable", "stability/lape"]
    run_dir = tmp_path / "run"
    assert (run_dir / "statistics" / "en.replicates.safetensors").is_file()
    data = json.loads((run_dir / "stability" / "lape" / "stability.json").read_text())
    assert [row["language"] for row in data["table"]] == ["en", "fr", "hi"] and data["replicates"] == 4
    assert len(data["bootstrap_jaccard"]) == 12 and len(data["split_jaccard"]) == 3
    for name in ("stable.json", "frequency.safetensors", "stability_jaccard.png", "selection_frequency.svg"):
        assert (run_dir / "stability" / "lape" / name).is_file(), name
    stable = json.loads((run_dir / "identify" / "lape-stable" / "neurons.json").read_text())
    assert stable["parameters"]["min_frequency"] == 0.5 and "frequency" in stable
    assert "Stability of the neuron sets" in result.report[0].read_text()
    again = run_experiment(config, run_dir, loader=make_loader(), progress=False, report=False)
    assert again.computed == []


def test_stability_config_is_checked(make_config):
    config = _config(make_config, "/data")
    config["statistics"].pop("replicates")
    with pytest.raises(LangNeuronsError, match="replicates >= 2"):
        load_config(config)
    config = _config(make_config, "/data")
    config["stability"]["neuron_sets"] = ["nope"]
    with pytest.raises(LangNeuronsError, match="no neuron set named 'nope'"):
        load_config(config)
    assert "stability" not in load_config(make_config()).to_dict()
