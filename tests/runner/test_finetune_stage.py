"""The runner's fine-tuning stage: learning-rate choice and early stopping read the dev split, never a test split."""

import json

import pytest

from langneurons.errors import LangNeuronsError

from langneurons.runner.config import load_config


def test_learning_rate_search_and_early_stopping_never_load_a_test_split(
        tmp_path, make_config, make_fixtures, make_loader, monkeypatch):
    import langneurons.tasks as tasks
    from langneurons.runner.run import _Experiment

    make_fixtures(tmp_path)
    data = make_config(tmp_path)
    data["finetune"]["runs"] = [{"name": "attention", "neurons": "none", "learning_rates": [1e-3, 3e-2],
                                 "lr_search_steps": 1, "patience": 1}]
    data["evaluation"]["models"] = ["base", "attention"]
    config = load_config(data)
    splits = []
    real = tasks.load_xnli

    def spy(source, language, split="test", *args, **kwargs):
        splits.append(split)
        assert split != "test", "a test split was loaded during fine-tuning"
        return real(source, language, split, *args, **kwargs)

    def never(*args, **kwargs):
        raise AssertionError("XQuAD was loaded for an XNLI fine-tuning run")

    monkeypatch.setattr(tasks, "load_xnli", spy)
    monkeypatch.setattr(tasks, "load_xquad", never)
    experiment = _Experiment(config, tmp_path / "run", make_loader(), force=False, progress=False)
    record = experiment.finetune(config.run("attention"))
    assert splits and set(splits) == {"train"}  # training sample and the dev sample carved from it
    metadata = json.loads((tmp_path / "run" / "finetune" / "attention" / "langneurons_finetune.json").read_text())
    search = metadata["lr_search"]
    assert search["candidates"] == [1e-3, 3e-2] and len(search["dev_scores"]) == 2 and search["dev_n"] == 3
    assert metadata["config"]["learning_rate"] == search["chosen"]
    assert metadata["early_stopping"]["patience"] == 1 and metadata["curve"][0]["step"] == 0
    assert record.status == "computed"


def test_an_lm_run_trains_on_its_languages_text_scores_perplexity_and_is_evaluated_zero_shot(
        tmp_path, make_config, make_fixtures, make_loader):
    from langneurons.runner.run import _Experiment

    make_fixtures(tmp_path)
    data = make_config(tmp_path)
    data["tasks"]["lm"] = {"source": str(tmp_path / "corpus"), "eval_fraction": 0.25, "dev_fraction": 0.25,
                           "block_length": 8}
    data["finetune"]["runs"] = [{"name": "hi-lm", "task": "lm", "source_language": "hi", "max_length": 8,
                                 "eval_every": 1, "max_steps": 2, "batch_size": 1,
                                 "learning_rate": 0.05}]
    data["evaluation"]["models"] = ["base", "hi-lm"]
    data["evaluation"]["tasks"] = ["xnli"]
    config = load_config(data)
    experiment = _Experiment(config, tmp_path / "run", make_loader(), force=False, progress=False)
    experiment.finetune(config.run("hi-lm"))
    folder = tmp_path / "run" / "finetune" / "hi-lm"
    record = json.loads((folder / "perplexity.json").read_text())
    assert record["language"] == "hi" and record["tokens"] > 0
    assert record["base"]["perplexity"] > 0 and record["tuned"]["perplexity"] != record["base"]["perplexity"]
    metadata = json.loads((folder / "langneurons_finetune.json").read_text())
    assert metadata["task"] == "lm" and metadata["curve"][0]["dev_metric"] == "perplexity"
    experiment.evaluate("hi-lm", None)  # zero-shot on the evaluation tasks, like the base model
    scores = json.loads((tmp_path / "run" / "evaluate" / "hi-lm" / "scores.json").read_text())
    assert "xnli" in json.dumps(scores)


def test_a_lora_run_can_take_the_rank_that_matches_a_rows_runs_trainable_parameters(
        tmp_path, make_config, make_fixtures, make_loader):
    from langneurons.runner.run import _Experiment

    make_fixtures(tmp_path)
    data = make_config(tmp_path)
    data["identification"] = data["identification"][:1]  # lape
    data["finetune"]["runs"] = [
        {"name": "fr-rows", "adapter": "rows", "neurons": "languages", "languages": ["fr"], "neuron_set": "lape",
         "mlp_targets": ["gate", "up", "down"], "max_steps": 1, "eval_every": 0},
        {"name": "attention", "neurons": "none", "equal_parameters_to": "fr-rows", "max_steps": 1, "eval_every": 0}]
    data["evaluation"]["models"] = ["base", "attention"]
    data["evaluation"]["neuron_sets"] = ["lape"]
    data["ppxc"]["neuron_sets"] = ["lape"]
    config = load_config(data)
    assert config.run("attention").equal_parameters_to == "fr-rows"
    experiment = _Experiment(config, tmp_path / "run", make_loader(), force=False, progress=False)
    statistics = experiment.statistics()
    experiment.identify(config.identification[0], statistics)
    experiment.finetune(config.run("fr-rows"))
    experiment.finetune(config.run("attention"))
    rows = json.loads((tmp_path / "run" / "finetune" / "fr-rows" / "langneurons_finetune.json").read_text())
    lora = json.loads((tmp_path / "run" / "finetune" / "attention" / "langneurons_finetune.json").read_text())
    sizes = json.loads((tmp_path / "run" / "finetune" / "attention" / "equal_parameters.json").read_text())
    k = rows["neurons"]["count"]
    assert rows["parameters"]["trainable"] == sizes["target"] == k * 3 * 32  # gate, up rows + down columns
    per_rank = 448  # tiny llama: q, o 32+32; k, v 32+16; two layers
    assert sizes["rank"] == max(1, min((k * 96 // per_rank, k * 96 // per_rank + 1),
                                       key=lambda r: (abs(r * per_rank - k * 96), r)))
    assert lora["config"]["lora_r"] == sizes["rank"] and lora["parameters"]["trainable"] == sizes["rank"] * per_rank
    with pytest.raises(LangNeuronsError, match="equal_parameters_to"):
        data["finetune"]["runs"][1]["equal_parameters_to"] = "attention"
        load_config(data)


def test_lm_runs_write_the_subnetwork_claims_per_block_nlls_for_base_and_every_arm(
        tmp_path, make_config, make_fixtures, make_loader):
    from langneurons.report.claims import ClaimsConfig, evaluate_claims, load_perplexities
    from langneurons.runner.run import _Experiment

    make_fixtures(tmp_path)
    data = make_config(tmp_path)
    data["identification"] = data["identification"][:1]  # lape
    data["tasks"]["lm"] = {"source": "heldout", "eval_fraction": 0.5, "dev_fraction": 0.0, "block_length": 6}
    data["statistics"]["heldout_fraction"] = 0.5
    rows = {"task": "lm", "source_language": "hi", "adapter": "rows", "neuron_set": "lape", "languages": ["hi"],
            "mlp_targets": ["gate", "up", "down"], "max_steps": 2, "max_length": 6, "batch_size": 2,
            "learning_rate": 0.05, "eval_every": 0}
    data["finetune"]["runs"] = [
        {**rows, "name": "hi-lape-rows", "neurons": "languages"},
        {**rows, "name": "hi-random-rows", "neurons": "random"},
        {"name": "hi-lora", "task": "lm", "source_language": "hi", "neurons": "none", "max_steps": 2, "max_length": 6,
         "batch_size": 2, "learning_rate": 0.05, "eval_every": 0, "equal_parameters_to": "hi-lape-rows"}]
    data["evaluation"].update(models=["base", "hi-lape-rows"], tasks=["xnli"], intervene_models=[])
    data["evaluation"]["neuron_sets"] = data["ppxc"]["neuron_sets"] = ["lape"]
    config = load_config(data)
    experiment = _Experiment(config, tmp_path / "run", make_loader(), force=False, progress=False)
    statistics = experiment.statistics()
    experiment.identify(config.identification[0], statistics)
    for run in config.finetune:
        experiment.finetune(run)
    assert experiment.lm_perplexity_models() == ["base", "hi-lape-rows", "hi-random-rows", "hi-lora"]
    for name in experiment.lm_perplexity_models():
        experiment.lm_perplexity(name)
    found = load_perplexities(tmp_path / "run" / "lm_eval_ppl")
    assert {name: p.role for name, p in found.items()} == {"base": "baseline", "hi-lape-rows": "lape-rows",
                                                           "hi-random-rows": "random-rows", "hi-lora": "lora"}
    ids = [u["id"] for u in found["base"].languages["hi"]]
    assert ids and all([u["id"] for u in p.languages["hi"]] == ids for p in found.values())  # the same blocks
    assert found["hi-lape-rows"].trainable_parameters == found["hi-random-rows"].trainable_parameters
    tuned = json.loads((tmp_path / "run" / "finetune" / "hi-lape-rows" / "perplexity.json").read_text())
    assert sum(u["nll"] for u in found["hi-lape-rows"].languages["hi"]) == pytest.approx(tuned["tuned"]["nll_sum"])
    claims = evaluate_claims(tmp_path / "run", ClaimsConfig(bootstrap_resamples=50), {}, [])
    assert [c.id for c in claims if c.id == "subnetwork"] == ["subnetwork"]
    # the runner's claims stage: LM runs enter the subnetwork claim, never the neuron-LoRA comparison
    for name in ("base", "hi-lape-rows"):
        experiment.evaluate(name, statistics)
    experiment.claims()
    written = json.loads((tmp_path / "run" / "claims" / "claims.json").read_text())
    subnetwork = [c for c in written if c["id"] == "subnetwork"]
    assert subnetwork and subnetwork[0]["unit"] == "nats/token"
    assert not any("hi-lape-rows" in json.dumps(c) for c in written if c["id"] == "neuron-lora")


def test_seeds_of_a_run_share_one_learning_rate_search(tmp_path, make_config, make_fixtures, make_loader, monkeypatch):
    import langneurons.finetune.train as train
    from langneurons.runner.run import _Experiment

    make_fixtures(tmp_path)
    data = make_config(tmp_path)
    data["finetune"]["runs"] = [{"name": "attention", "neurons": "none", "seeds": [0, 1], "max_steps": 1,
                                 "learning_rates": [1e-3, 3e-2], "lr_search_steps": 1}]
    data["evaluation"]["models"] = ["base", "attention"]
    config = load_config(data)
    searches = []
    real = train.search_learning_rate
    monkeypatch.setattr(train, "search_learning_rate", lambda *a, **k: searches.append(1) or real(*a, **k))
    experiment = _Experiment(config, tmp_path / "run", make_loader(), force=False, progress=False)
    for run in config.finetune:
        experiment.finetune(run)
    first, second = (json.loads((tmp_path / "run" / "finetune" / name / "langneurons_finetune.json").read_text())
                     for name in ("attention@0", "attention@1"))
    assert len(searches) == 1  # searched once, for the first seed
    assert second["lr_search"] == dict(first["lr_search"], reused=True)
    assert second["config"]["learning_rate"] == first["lr_search"]["chosen"] and second["config"]["seed"] == 1


def test_the_lm_text_source_is_checked_before_any_stage_runs(tmp_path, make_config, make_fixtures):
    from langneurons.runner.config import check_input_paths

    make_fixtures(tmp_path)
    data = make_config(tmp_path)
    data["finetune"]["runs"].append({"name": "hi-lm", "task": "lm", "source_language": "hi"})
    for source in ("heldout", str(tmp_path / "corpus")):
        data["tasks"]["lm"] = {"source": source}
        check_input_paths(load_config(data))
    data["tasks"]["lm"] = {"source": str(tmp_path / "missing")}
    with pytest.raises(LangNeuronsError, match="tasks.lm.source: folder not found"):
        check_input_paths(load_config(data))
