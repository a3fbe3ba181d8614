"""Experiment configs: typed parsing, errors that name the bad key or language, 'extends'."""

import pytest
import yaml

from langneurons.errors import LangNeuronsError
from langneurons.report.claims import LearningTarget
from langneurons.runner.config import ExperimentConfig, load_config
from langneurons.runner.demo import builtin_config


@pytest.fixture
def config_with(make_config):
    def changed(change) -> dict:
        config = make_config()
        change(config)
        return config

    return changed


def test_a_valid_config_parses_into_typed_dataclasses(make_config):
    config = load_config(make_config())
    assert isinstance(config, ExperimentConfig)
    assert config.model.name == "tiny-test" and config.languages == ("en", "fr", "hi")
    assert config.statistics.block_length == 16 and config.identification[2].options.like == "lape"
    run = config.run("lape-neurons")
    assert run.options.neurons == "languages" and run.options.languages == ("fr",)
    assert run.options.max_steps == 2 and run.options.lora_r == 4  # from finetune.defaults
    assert config.evaluation.actions == ("zero",) and config.evaluation.intervene_models == ("base",)
    assert config.statistics.languages == config.languages  # one list of languages for every stage


@pytest.mark.parametrize("name", ["tiny", "demo", "demo-ci", "paper", "replication", "transfer", "transfer-seeds",
                                  "subnetwork"])
def test_to_dict_reads_back_into_an_equal_config(name, make_config, tmp_path):
    """A run directory's config.yaml (written from ``to_dict``) reruns the same experiment."""
    config = load_config(make_config() if name == "tiny" else builtin_config(name))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    assert load_config(path) == config
    if config.finetune:
        assert config.to_dict()["finetune"]["runs"][0]["task"] == config.finetune[0].task


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(evalution={}), "unknown key evalution"),
    (lambda c: c["evaluation"].update(langs=["en"]), "unknown key evaluation.langs"),
    (lambda c: c["statistics"].update(token_budgt=5), "unknown key statistics.token_budgt"),
    (lambda c: c["finetune"]["runs"][1].update(lr=0.1), r"unknown key finetune.runs\[1\].lr"),
    (lambda c: c["identification"][0].update(rate=0.1), r"unknown key identification\[0\].rate"),
    (lambda c: c["tasks"].update(xquadd={}), "unknown key tasks.xquadd"),
])
def test_an_unknown_key_is_an_error_naming_it(config_with, change, message):
    with pytest.raises(LangNeuronsError, match=message):
        load_config(config_with(change))


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(languages=["en", "xx"]), r"unknown language 'xx' in languages\[1\]"),
    (lambda c: c["ppxc"].update(languages=["en", "de"]), r"ppxc.languages\[1\]: language 'de' is not among"),
    (lambda c: c["evaluation"].update(languages=["en", "qq"]), "unknown language 'qq' in evaluation.languages"),
    (lambda c: c["finetune"]["runs"][1].update(languages=["ta"]), r"finetune.runs\[1\].languages\[0\]: language 'ta'"),
    (lambda c: c["finetune"]["runs"][0].update(source_language="english"), "unknown language 'english'"),
])
def test_an_unknown_or_unavailable_language_is_an_error_naming_it(config_with, change, message):
    with pytest.raises(LangNeuronsError, match=message):
        load_config(config_with(change))


@pytest.mark.parametrize("change, message", [
    (lambda c: c["evaluation"].update(neuron_sets=["lapee"]), "no neuron set named 'lapee'"),
    (lambda c: c["evaluation"].update(models=["base", "attn"]), "no model .* named 'attn'"),
    (lambda c: c["identification"][2].update(like="nothing"), "no earlier neuron set named 'nothing'"),
    (lambda c: c["finetune"]["runs"][1].pop("neuron_set"), "needs neuron_set"),
    (lambda c: c["statistics"].update(token_budget="many"), "statistics.token_budget must be an integer"),
    (lambda c: c["evaluation"].update(actions=["explode"]), r"evaluation.actions\[0\]: unknown intervention kind"),
    (lambda c: c["identification"][0].update(method="magic"), "unknown method 'magic'"),
    (lambda c: c["finetune"]["runs"][0].update(name="base"), "reserved"),
])
def test_inconsistent_references_and_bad_values_are_clear_errors(config_with, change, message):
    with pytest.raises(LangNeuronsError, match=message):
        load_config(config_with(change))


def test_a_config_file_can_extend_another_merging_mappings_and_replacing_lists(tmp_path, make_config):
    base = make_config(tmp_path)
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({
        "extends": "base.yaml", "languages": ["en", "fr"], "statistics": {"token_budget": 99},
        "ppxc": {"languages": ["fr"]}}))
    child = load_config(tmp_path / "child.yaml")
    assert child.languages == ("en", "fr")
    assert child.statistics.token_budget == 99 and child.statistics.block_length == 16  # merged
    assert child.ppxc.options.languages == ("fr",) and child.ppxc.options.token_budget == 30


def test_file_errors_name_the_file(tmp_path, make_config):
    (tmp_path / "broken.yaml").write_text("languages: [en\n")
    with pytest.raises(LangNeuronsError, match="broken.yaml: not valid YAML"):
        load_config(tmp_path / "broken.yaml")
    bad = make_config(tmp_path)
    bad["evaluation"]["langs"] = ["en"]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(LangNeuronsError, match="bad.yaml: unknown key evaluation.langs"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(LangNeuronsError, match="not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", ["demo", "demo-ci", "paper", "replication"])
def test_the_built_in_configs_are_valid(name):
    config = load_config(builtin_config(name))
    assert config.ppxc is not None
    if name != "replication":  # the neuron-level study only (see the replication test below)
        assert config.evaluation is not None and config.finetune


def test_the_issue_18_configs_choose_on_dev_stop_early_and_name_their_claims_models():
    transfer = load_config(builtin_config("transfer"), {"data": "/copies"})
    assert transfer.tasks.xnli.source == "/copies/xnli" and transfer.tasks.xnli.dev_limit
    attention = transfer.run("xnli-attention").options
    assert len(attention.learning_rates) == 3 and attention.lr_search_steps and attention.patience
    assert transfer.evaluation.reference == "xnli-attention" and transfer.evaluation.actions == ("zero", "stat=p90")
    assert transfer.evaluation.neuron_sets == ("lape", "random")
    transfer = load_config(builtin_config("transfer"))
    seeds = load_config(builtin_config("transfer-seeds"))  # extends transfer.yaml: same statistics and data
    assert seeds.statistics == transfer.statistics and seeds.identification == transfer.identification
    assert [r.name for r in seeds.finetune] == ["xnli-mlp-all"] + [f"xnli-{k}@{s}" for k in ("lape", "random")
                                                                   for s in (0, 1, 2)]
    assert {r.options.seed for r in seeds.finetune if r.options.neurons == "random"} == {0, 1, 2}
    assert all(r.options.learning_rates and r.options.patience for r in seeds.finetune)
    subnetwork = load_config(builtin_config("subnetwork"))
    assert subnetwork.tasks.lm.source == "heldout" and subnetwork.statistics == transfer.statistics
    roles = {(r.source_language, r.options.adapter, r.options.neurons, r.equal_parameters_to)
             for r in subnetwork.finetune}
    assert roles == {(l, a, n, e) for l in ("hi", "ur") for a, n, e in (
        ("rows", "languages", None), ("rows", "random", None), ("lora", "none", f"{l}-lape-rows"))}
    assert all(r.task == "lm" and r.options.languages in ((), (r.source_language,)) for r in subnetwork.finetune)


def test_variables_fill_string_values_from_vars_or_the_caller(make_config):
    data = make_config()
    data["vars"] = {"root": "/default"}
    data["tasks"]["xnli"]["source"] = "${root}/xnli"
    data["statistics"]["corpus"] = "${root}/corpus/${lang_dir}"
    config = load_config(data, {"lang_dir": "flores"})
    assert config.tasks.xnli.source == "/default/xnli" and config.statistics.corpus == "/default/corpus/flores"
    assert load_config(data, {"root": "/mine", "lang_dir": "x"}).tasks.xnli.source == "/mine/xnli"
    with pytest.raises(LangNeuronsError, match=r"statistics.corpus uses \$\{lang_dir\} but no value"):
        load_config(data)


def test_the_replication_config_reads_the_data_folder_it_is_given():
    config = load_config(builtin_config("replication"), {"data": "/copies"})
    assert config.statistics.corpus == "/copies/flores200/devtest"
    # the neuron-level study only: fine-tuning/transfer and steering are separate runs (issues 18, 19)
    assert not config.finetune and config.evaluation is None and config.steering is None
    assert config.statistics.replicates == 20 and config.ppxc.options.token_budget == 1536
    assert config.claims is not None and config.claims.related_pairs == (("fr", "es"), ("hi", "ur"))
    default = load_config(builtin_config("replication"))
    assert default.statistics.corpus == "../shared/data/flores200/devtest"


@pytest.mark.parametrize("change, message", [
    (lambda c: c["ppxc"].update(action="explode"), "ppxc: unknown intervention kind 'explode'"),
    (lambda c: c["ppxc"].update(action="stat=p999"), "ppxc: unknown statistic 'p999'"),
    (lambda c: c["ppxc"].update(action="stat=p90@xx"), "unknown language code 'xx'"),
    (lambda c: c["ppxc"].update(measure="delta"), "ppxc: unknown PPXC measure 'delta'"),
    (lambda c: c["ppxc"].update(batch_size=0), "ppxc: batch size must be an integer >= 1"),
    (lambda c: c["ppxc"].update(token_budget=0), "ppxc: token budget must be an integer >= 1"),
    (lambda c: c["evaluation"].update(actions=["stat=p999"]), r"evaluation.actions\[0\]: unknown statistic 'p999'"),
    (lambda c: c["evaluation"].update(actions=["add=2@en>zz"]), "unknown language code 'zz'"),
    (lambda c: c["evaluation"].update(confidence=1.5), r"evaluation.confidence must be in \(0, 1\)"),
    (lambda c: c["evaluation"].update(batch_size=0), "evaluation.batch_size must be at least 1"),
    (lambda c: c["identification"][0].update(top_rate=0), r"identification\[0\]: top_rate must be a fraction"),
    (lambda c: c["statistics"].update(batch_size=-1), "statistics: batch-size must be an integer >= 1, got -1"),
    (lambda c: c["statistics"].update(token_budget=0), "statistics: token-budget must be an integer >= 1"),
    (lambda c: c["tasks"]["xnli"].update(eval_limit=0), "tasks.xnli.eval_limit must be at least 1"),
    (lambda c: c.update(model={"name": "tiny-test", "dtype": "float8"}), "model.dtype: unknown dtype 'float8'"),
])
def test_every_value_is_checked_at_load_before_any_stage(config_with, change, message):
    with pytest.raises(LangNeuronsError, match=message):
        load_config(config_with(change))


def test_echoed_values_are_bounded_and_alias_bombs_are_refused(config_with, tmp_path):
    from langneurons.runner.config import MAX_CONFIG_VALUES

    with pytest.raises(LangNeuronsError, match="name must be a string") as error:
        load_config(config_with(lambda c: c.update(name=[["x" * 100] * 100] * 100)))
    assert len(str(error.value)) < 200
    bomb = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
        f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")) + "languages: *i\n"
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    with pytest.raises(LangNeuronsError, match=f"bomb.yaml: the config expands to more than {MAX_CONFIG_VALUES}"):
        load_config(path)
    self_referencing = tmp_path / "loop.yaml"
    self_referencing.write_text("languages: &l [en, *l]\n")
    with pytest.raises(LangNeuronsError, match="expands to more than"):
        load_config(self_referencing)


@pytest.mark.parametrize("steering, message", [
    ({"pairs": ["en>fr"], "prompt_cnt": 3}, "unknown key steering.prompt_cnt"),
    ({"pairs": ["en>de"]}, r"steering.pairs\[0\]: language 'de' is not among the experiment's languages"),
    ({"pairs": ["en-fr"]}, "steering: a steering pair is written SOURCE>TARGET"),
    ({"pairs": ["en>fr"], "neuron_set": "lapee"}, "steering.neuron_set.*no neuron set named 'lapee'"),
    ({"pairs": ["en>fr"], "actions": ["zero"]}, "activating the target takes one of"),
    ({"pairs": ["en>fr"], "dev_fraction": 1.0}, r"steering: dev_fraction must be in \[0, 1\)"),
    ({"pairs": ["en>fr"], "prompt_count": 1}, "steering: dev_fraction 0.5 of 1 prompts leaves no dev prompt"),
])
def test_steering_section_errors(make_config, steering, message):
    config = make_config()
    config["steering"] = steering
    with pytest.raises(LangNeuronsError, match=message):
        load_config(config)


def test_steering_section_parses_and_refuses_uncovered_languages(make_config):
    config = make_config()
    config["steering"] = {"neuron_set": "act-prob", "pairs": ["en>fr", "fr>hi"], "actions": "add=1,stat=p95",
                          "max_new_tokens": 4}
    parsed = load_config(config)
    assert parsed.steering.neuron_set == "act-prob"
    assert parsed.steering.options.pairs == ("en>fr", "fr>hi") and parsed.steering.options.actions == ("add=1", "stat=p95")
    assert parsed.to_dict()["steering"]["max_new_tokens"] == 4
    assert parsed.steering.options.dev_fraction == 0.5  # half the prompts choose, half are reported
    config["steering"]["dev_fraction"] = 0.25
    assert load_config(config).steering.options.dev_fraction == 0.25
    assert "steering" not in load_config(make_config()).to_dict()  # absent section: the config dict as before
    config["languages"] = ["en", "fr", "hi", "my"]
    config["steering"]["pairs"] = ["en>my"]
    with pytest.raises(LangNeuronsError, match=r"steering.pairs\[0\]: the language identifier \(lingua\) does not cover 'my'"):
        load_config(config)


# ---------------------------------------------------------------- names that become folders (issue 21, item 5)


@pytest.mark.parametrize("where", ["identification", "finetune", "name"])
@pytest.mark.parametrize("name", ["../../victim", "..", ".", "", "a/b", "/abs/dir", "a\\b"])
def test_a_stage_or_experiment_name_that_is_not_one_plain_name_is_refused(where, name, config_with):
    def change(config):
        if where == "identification":
            config["identification"][0]["name"] = name
            config["ppxc"]["neuron_sets"] = [name]
        elif where == "finetune":
            config["finetune"]["runs"][0]["name"] = name
            config["evaluation"]["models"] = ["base", name, "lape-neurons"]
        else:
            config["name"] = name

    with pytest.raises(LangNeuronsError, match="must be one plain name"):
        load_config(config_with(change))


def test_a_path_name_arriving_through_extends_is_refused(make_config, tmp_path):
    base = make_config()
    base["identification"][0]["name"] = "../../victim"
    base["ppxc"]["neuron_sets"] = ["../../victim"]
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({"extends": "base.yaml", "name": "child"}))
    with pytest.raises(LangNeuronsError, match=r"child.yaml: identification\[0\].name must be one plain name"):
        load_config(tmp_path / "child.yaml")


@pytest.mark.parametrize("change, message", [
    (lambda c: c["statistics"].update(replicates=10**15), "replicates must be an integer in"),
    (lambda c: c["statistics"].update(seed=2**64), "seed must be an integer in"),
    (lambda c: (c["statistics"].update(replicates=2), c.update(stability={"neuron_sets": ["lape"], "seed": 2**64})),
     "stability: seed must be an integer in"),
    (lambda c: (c["statistics"].update(replicates=2), c.update(stability={"neuron_sets": ["lape"],
                                                                           "resamples": 10**15})),
     "stability: resamples must be an integer in"),
    (lambda c: c.update(steering={"neuron_set": "lape", "pairs": ["en>fr"], "seed": -1}), "seed must be an integer"),
    (lambda c: c.update(lm_eval={"tasks": ["x"], "batch_size": 0}), "lm_eval.batch_size must be an integer in"),
    (lambda c: c.update(lm_eval={"tasks": ["x"], "bootstrap_resamples": 0}), "lm_eval.bootstrap_resamples"),
    (lambda c: c.update(lm_eval={"tasks": ["x"], "seed": 2**64}), "lm_eval.seed must be an integer in"),
])
def test_counts_and_seeds_out_of_range_are_refused_when_the_config_loads(change, message, config_with):
    """Issue 21, item 12: the bounds of the commands hold for the config's sections too."""
    with pytest.raises(LangNeuronsError, match=message):
        load_config(config_with(change))


def test_seeds_expand_a_run_into_one_run_per_seed_and_evaluation_names_follow(make_config, tmp_path):
    from langneurons.runner.config import seed_groups

    data = make_config()
    data["finetune"]["runs"].append({"name": "random-neurons", "neurons": "random", "languages": ["fr"],
                                     "neuron_set": "lape", "seeds": [0, 1, 2]})
    data["evaluation"]["models"] = ["base", "attention", "random-neurons"]
    data["evaluation"]["reference"] = "random-neurons"
    config = load_config(data)
    seeded = [run for run in config.finetune if run.name.startswith("random-neurons")]
    assert [(run.name, run.options.seed) for run in seeded] == [
        ("random-neurons@0", 0), ("random-neurons@1", 1), ("random-neurons@2", 2)]
    assert all(run.options.neurons == "random" and run.neuron_set == "lape" for run in seeded)
    assert config.evaluation.models == ("base", "attention", "random-neurons@0", "random-neurons@1", "random-neurons@2")
    assert config.evaluation.reference == "random-neurons@0"
    assert seed_groups(config.finetune)["random-neurons"] == [run.name for run in seeded]
    path = tmp_path / "config.yaml"  # the expanded runs read back into an equal config
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    assert load_config(path) == config
    for bad in ([], [1, 1], ["x"]):
        data["finetune"]["runs"][-1]["seeds"] = bad
        with pytest.raises(LangNeuronsError, match="seeds"):
            load_config(data)


def test_selection_rows_and_lm_options_are_read_and_checked(make_config):
    data = make_config()
    data["tasks"]["lm"] = {"source": "heldout", "eval_fraction": 0.25, "dev_fraction": 0.25}
    data["finetune"]["runs"].append({"name": "hi-rows", "task": "lm", "source_language": "hi", "adapter": "rows",
                                     "neurons": "languages", "languages": ["hi"], "neuron_set": "lape",
                                     "learning_rates": [1e-4, 1e-3], "lr_search_steps": 2, "patience": 2})
    config = load_config(data)
    run = config.run("hi-rows")
    assert (run.options.adapter, run.options.learning_rates, run.options.patience) == ("rows", (1e-4, 1e-3), 2)
    assert config.tasks.lm.eval_fraction == 0.25
    assert "lm" not in load_config(make_config()).to_dict()["tasks"]  # configs without it keep their form
    data["tasks"]["lm"]["eval_fraction"] = 0.9
    with pytest.raises(LangNeuronsError, match="tasks.lm"):
        load_config(data)
    del data["tasks"]["lm"]
    with pytest.raises(LangNeuronsError, match="no data section"):
        load_config(data)
    data = make_config()
    data["tasks"]["xnli"]["dev_limit"] = None
    data["finetune"]["runs"][0]["patience"] = 2
    with pytest.raises(LangNeuronsError, match="dev_limit"):
        load_config(data)
    data = make_config()
    data["statistics"]["heldout_fraction"] = 0.0
    data["tasks"]["lm"] = {"source": "heldout"}
    data["finetune"]["runs"].append({"name": "lm", "task": "lm", "source_language": "hi"})
    with pytest.raises(LangNeuronsError, match="heldout_fraction"):
        load_config(data)


def test_exponent_numbers_without_a_dot_read_as_numbers(make_config, tmp_path):
    data = make_config()
    text = yaml.safe_dump(data, sort_keys=False).replace("learning_rate: 0.005", "learning_rate: 5e-3")
    text = text.replace("eval_every: 1", "eval_every: 1\n    learning_rates: [1e-4, 3e-4, 1E-3]\n    lr_search_steps: 2")
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert yaml.safe_load(text)["finetune"]["defaults"]["learning_rates"] == ["1e-4", "3e-4", "1E-3"]  # YAML 1.1
    config = load_config(path)
    assert config.run("attention").options.learning_rates == (1e-4, 3e-4, 1e-3)
    assert config.run("attention").options.learning_rate == 5e-3
    data["finetune"]["defaults"]["learning_rate"] = "fast"
    with pytest.raises(LangNeuronsError, match="must be a number"):
        load_config(data)


def test_learning_targets_are_read_written_back_only_when_set_and_checked(tmp_path, make_config):
    plain = make_config(tmp_path)
    assert "learning_targets" not in load_config(plain).to_dict()["claims"]  # earlier configs keep their form
    plain["claims"]["learning_targets"] = [{"model": "attention", "score": 60}]
    config = load_config(plain)
    assert config.claims.learning_targets == (LearningTarget("attention", 60.0, "xnli"),)
    assert load_config(config.to_dict()) == config
    for target, message in (({"model": "nope", "score": 60}, "model 'nope' is not evaluated"),
                            ({"model": "attention", "score": 0}, "score must be a percentage in (0, 100]"),
                            ({"model": "attention", "score": 60, "task": "sts"}, "task 'sts' is not evaluated")):
        plain["claims"]["learning_targets"] = [target]
        with pytest.raises(LangNeuronsError, match=r"claims\.learning_targets\[0\]") as error:
            load_config(plain)
        assert message in str(error.value) and "\n" not in str(error.value)
