"""Direction stages of the runner (issue 19): ``method: diffmean`` identification entries, the
``direction_ppxc:`` section and ``steering.directions``, cached like every stage; config checks."""

import json

import pytest

from langneurons.errors import LangNeuronsError
from langneurons.runner.config import load_config
from langneurons.runner.run import run_experiment


def _config(make_config, root):
    config = make_config(root)
    for key in ("tasks", "finetune", "evaluation"):
        config.pop(key)
    config["statistics"]["residual"] = True
    config["identification"] = [
        {"name": "lape", "method": "lape", "top_rate": 0.05, "filter_rate": 0.5, "figures": False},
        {"name": "diffmean", "method": "diffmean", "rank": 1},
    ]
    config["ppxc"] = {"neuron_sets": ["lape"], "languages": ["en", "fr"], "token_budget": 30, "batch_size": 4}
    config["direction_ppxc"] = {"direction_sets": ["diffmean"], "languages": ["en", "fr"], "layers": "1",
                                "token_budget": 30, "batch_size": 4}
    config["steering"] = {"neuron_set": "lape", "directions": "diffmean", "pairs": ["en>fr"], "actions": ["add=2"],
                          "deactivate": False, "direction_layers": ["0", "0-1"], "direction_strengths": [4],
                          "prompts": str(root / "corpus"), "prompt_count": 2, "prompt_words": 3,
                          "max_new_tokens": 2, "identifier_languages": ["en", "fr", "hi", "de"]}
    return config


def test_direction_stages_run_cache_and_feed_the_claims(tmp_path, make_config, make_fixtures, make_loader):
    make_fixtures(tmp_path)
    config = _config(make_config, tmp_path)
    run_dir = tmp_path / "run"
    result = run_experiment(config, run_dir, loader=make_loader(), progress=False)
    assert result.computed == ["statistics", "identify/lape", "identify/diffmean", "ppxc/lape",
                               "direction_ppxc/diffmean", "steering", "claims"]
    assert (run_dir / "statistics" / "en.residual.safetensors").is_file()
    from langneurons.directions import DirectionSet

    directions = DirectionSet.load(run_dir / "identify" / "diffmean" / "directions.safetensors")
    assert directions.languages == ["en", "fr", "hi"] and directions.rank == 1
    ppxc = json.loads((run_dir / "direction_ppxc" / "diffmean" / "ppxc.json").read_text())
    assert ppxc["method"] == "diffmean" and ppxc["config"]["layers"] == [1]
    data = json.loads((run_dir / "steering" / "steering.json").read_text())
    names = {r["condition"] for r in data["rows"]}
    assert names == {"baseline", "lape:activate:add=2", "random:activate:add=2", "diffmean:add=4@0",
                     "random-dir:add=4@0", "diffmean:add=4@0-1", "random-dir:add=4@0-1"}
    assert data["meta"]["direction_set"] == "diffmean" and set(data["best_conditions"]) == {"neurons", "directions"}
    claims = {c["id"] for c in json.loads((run_dir / "claims" / "claims.json").read_text())}
    assert {"direction-ppxc", "steering-directions", "steering", "ppxc"} <= claims
    html = result.report[1].read_text()
    assert "Perplexity change with residual directions removed" in html and "diffmean directions, blocks [1]" in html
    assert "random-dir:add=4@0-1" in html and "Best on the dev prompts: neurons" in html
    # a second run computes nothing; a changed direction strength reruns steering and claims only
    again = run_experiment(config, run_dir, loader=make_loader(), progress=False)
    assert again.computed == []
    config["steering"]["direction_strengths"] = [2]
    changed = run_experiment(config, run_dir, loader=make_loader(), progress=False)
    assert changed.computed == ["steering", "claims"]


def test_the_config_round_trips_and_keeps_configs_without_directions_as_they_were(tmp_path, make_config):
    config = load_config(_config(make_config, tmp_path))
    assert [e.name for e in config.identification] == ["lape"] and [e.name for e in config.directions] == ["diffmean"]
    assert config.direction_ppxc.layers == "1" and config.steering.directions == "diffmean"
    assert load_config(config.to_dict()) == config
    assert {"name": "diffmean", "method": "diffmean", "rank": 1} in config.to_dict()["identification"]
    plain = make_config(tmp_path)
    data = load_config(plain).to_dict()
    assert "direction_ppxc" not in data and all(e["method"] != "diffmean" for e in data["identification"])
    plain["steering"] = {"neuron_set": "lape", "pairs": ["en>fr"]}
    written = load_config(plain).to_dict()["steering"]
    assert not any(key.startswith("direction") or key == "neuron_modes" for key in written)
    plain["steering"]["neuron_modes"] = ["both"]
    assert load_config(plain).to_dict()["steering"]["neuron_modes"] == ["both"]
    # the claims fields added with the direction claims are written only when set
    assert not {"direction_set", "steering_margin"} & set(load_config(plain).to_dict()["claims"])
    plain["claims"]["steering_margin"] = 10.0
    assert load_config(plain).to_dict()["claims"]["steering_margin"] == 10.0


@pytest.mark.parametrize("change, message", [
    (lambda c: c["statistics"].pop("residual"), "method diffmean needs statistics.residual: true"),
    (lambda c: c["direction_ppxc"].update(direction_sets=["lape"]), "no diffmean direction set named 'lape'"),
    (lambda c: c["direction_ppxc"].update(layers="3-1"), "bad layer range"),
    (lambda c: c["direction_ppxc"].update(ablation="oblique"), "direction_ppxc: unknown ablation"),
    (lambda c: c["steering"].update(directions="other"), "no diffmean direction set named 'other'"),
    (lambda c: c["steering"].update(direction_layers=[]), "steering.direction_layers"),
    (lambda c: c["identification"].append({"name": "lape", "method": "diffmean"}), "defined twice"),
    (lambda c: c["identification"][1].update(rank=5), "rank"),
    (lambda c: c["identification"][1].update(colour=1), "colour"),
    (lambda c: c.update(directions=[]), "method: diffmean"),
    (lambda c: c["steering"].update(neuron_set=None, directions=None), "steering needs neuron_set or directions"),
])
def test_bad_direction_configs_are_one_line_errors(tmp_path, make_config, change, message):
    config = _config(make_config, tmp_path)
    change(config)
    with pytest.raises(LangNeuronsError, match=message) as error:
        load_config(config)
    assert "\n" not in str(error.value)


def test_the_shipped_directions_config_is_valid_and_sized_as_its_comment_says():
    from importlib.resources import files

    from langneurons.steer.directions import direction_conditions
    from langneurons.steer.experiment import conditions

    path = files("langneurons") / "data" / "configs" / "directions.yaml"
    config = load_config(str(path))
    assert config.statistics.residual and [e.name for e in config.directions] == ["diffmean"]
    assert config.steering.directions == "diffmean" and config.direction_ppxc.direction_sets == ("diffmean",)
    options = config.steering.options
    per_pair = len(conditions(options, ["lape", "random"])) + len(direction_conditions(
        "diffmean", options.direction_layer_choices, options.direction_strengths, options.direction_ablate, True))
    generations = per_pair * len(options.pairs) * options.prompt_count
    assert (per_pair, generations) == (17, 2720)
    assert "4 pairs x 17 conditions x 40 prompts = 2720" in path.read_text(encoding="utf-8")
