"""The experiment runner end to end on a tiny model: artefacts, manifest, caching, invalidation."""

import json
from pathlib import Path
import shutil

import pytest

from langneurons import __version__
from langneurons.errors import LangNeuronsError
from langneurons.runner.run import MANIFEST, run_experiment

ALL_STAGES = ["statistics", "identify/lape", "identify/act-prob", "identify/random", "ppxc/lape",
              "finetune/attention", "finetune/lape-neurons", "evaluate/base", "evaluate/attention",
              "evaluate/lape-neurons", "results", "claims"]


def copy_run(tiny_run, tmp_path):
    """A private copy of the finished tiny run (the fixture's own directory is shared)."""
    root, config, run_dir, _, _ = tiny_run
    target = tmp_path / "run"
    shutil.copytree(run_dir, target)
    return json.loads(json.dumps(config)), target


@pytest.fixture
def rerun(make_loader):
    """``rerun(config, run_dir, seed=0, **run_experiment options)`` -> (result, loader)."""

    def run(config, run_dir, seed=0, **kwargs):
        loader = make_loader(seed)
        return run_experiment(config, run_dir, loader=loader, progress=False, **kwargs), loader

    return run


def test_a_tiny_experiment_runs_every_stage_and_records_it_in_the_manifest(tiny_run):
    _, config, run_dir, result, loader = tiny_run
    assert result.computed == ALL_STAGES and loader.calls == 1
    manifest = json.loads((run_dir / MANIFEST).read_text())
    assert manifest["tool_version"] == __version__ and manifest["config"]["name"] == "tiny"
    assert manifest["model"]["model_id"] == "tiny-test" and manifest["model"]["weights_fingerprint"]
    assert {"torch", "transformers", "peft", "python"} <= set(manifest["versions"])
    for name in ALL_STAGES:
        stage = manifest["stages"][name]
        assert stage["status"] == "computed" and stage["compute_seconds"] > 0 and len(stage["key"]) == 16
        assert stage["outputs"] and all((run_dir / path).is_file() for path in stage["outputs"])
    for path in ["statistics/en.safetensors", "statistics/fr.heldout.safetensors", "identify/lape/neurons.json",
                 "ppxc/lape/ppxc.json", "ppxc/lape/ppxc.png", "finetune/lape-neurons/adapter_model.safetensors",
                 "evaluate/base/predictions.jsonl", "results/scores.csv", "results/model_comparisons.csv",
                 "results/intervention_deltas.png", "results/intervention_deltas.svg", "config.yaml"]:
        assert (run_dir / path).is_file(), path
    scores = json.loads((run_dir / "results" / "scores.json").read_text())
    # base: 2 languages x (baseline + lape:zero + random:zero) x (xnli accuracy + xquad EM, F1); others: baseline xnli
    assert len([r for r in scores if r["model"] == "base"]) == 2 * 3 * 3
    assert {(r["model"], r["condition"]) for r in scores if r["model"] != "base"} == {
        ("attention", "baseline"), ("lape-neurons", "baseline")}
    comparisons = json.loads((run_dir / "results" / "model_comparisons.json").read_text())
    assert {(c["model"], c["reference"]) for c in comparisons} == {
        ("lape-neurons", "attention"), ("lape-neurons", "base"), ("attention", "base")}
    html = result.report[1].read_text()
    for section in ("Language-specific neurons", "Perplexity change (PPXC)", "Fine-tuning", "Evaluation",
                    "Interventions vs baseline", "Stages"):
        assert f">{section}<" in html
    assert html.count("data:image/png;base64,") == 4  # PPXC heatmap, intervention deltas, 2 learning curves


def test_a_second_run_reuses_every_stage_without_loading_the_model(tiny_run, tmp_path, rerun):
    config, run_dir = copy_run(tiny_run, tmp_path)
    result, loader = rerun(config, run_dir)
    assert result.computed == [] and result.cached == ALL_STAGES
    assert loader.calls == 0
    manifest = json.loads((run_dir / MANIFEST).read_text())
    assert {stage["status"] for stage in manifest["stages"].values()} == {"cached"}


def test_a_changed_option_reruns_only_the_stages_that_depend_on_it(tiny_run, tmp_path, rerun):
    config, run_dir = copy_run(tiny_run, tmp_path)
    config["evaluation"]["actions"] = ["zero", "scale=0.5"]
    result, _ = rerun(config, run_dir)
    assert result.computed == ["evaluate/base", "results", "claims"]
    scores = json.loads((run_dir / "results" / "scores.json").read_text())
    assert {r["condition"] for r in scores} >= {"lape:scale=0.5", "random:scale=0.5"}

    config["identification"][0]["filter_rate"] = 0.6  # LAPE, and everything that reads the LAPE set
    result, _ = rerun(config, run_dir)
    assert result.computed == ["identify/lape", "identify/random", "ppxc/lape", "finetune/lape-neurons",
                               "evaluate/base", "evaluate/lape-neurons", "results", "claims"]
    assert json.loads((run_dir / "identify" / "lape" / "neurons.json").read_text())["parameters"]["filter_rate"] == 0.6


def test_deleted_or_edited_outputs_are_recomputed_never_reused(tiny_run, tmp_path, rerun):
    config, run_dir = copy_run(tiny_run, tmp_path)
    predictions = run_dir / "evaluate" / "attention" / "predictions.jsonl"
    original = predictions.read_text()
    predictions.unlink()
    (run_dir / "identify" / "lape" / "neurons.json").write_text("{}")
    result, _ = rerun(config, run_dir)
    # both stages rerun; their products come out identical, so nothing downstream reruns
    assert result.computed == ["identify/lape", "evaluate/attention"]
    assert predictions.read_text() == original
    assert json.loads((run_dir / "identify" / "lape" / "neurons.json").read_text())["method"] == "lape"


def test_a_run_directory_of_another_tool_version_is_refused_unless_forced(tiny_run, tmp_path, make_config, rerun,
                                                                         monkeypatch):
    config = make_config(tiny_run[0])
    for section in ("ppxc", "finetune", "evaluation"):
        config.pop(section)
    config["identification"] = config["identification"][:1]
    run_dir = tmp_path / "small"
    rerun(config, run_dir)
    monkeypatch.setattr("langneurons.runner.run.__version__", "9.9.9")  # a newer langneurons reads the folder
    message = rf"manifest.json was written by langneurons {__version__}, this is 9.9.9"
    with pytest.raises(LangNeuronsError, match=message):
        rerun(config, run_dir)
    result, _ = rerun(config, run_dir, force=True)
    assert result.computed == ["statistics", "identify/lape", "claims"]  # the version is part of every key
    assert json.loads((run_dir / MANIFEST).read_text())["tool_version"] == "9.9.9"


def test_other_model_weights_or_a_foreign_directory_are_refused(tiny_run, tmp_path, rerun):
    config, run_dir = copy_run(tiny_run, tmp_path)
    config["ppxc"]["token_budget"] = 20  # PPXC must run, so the model is loaded
    with pytest.raises(LangNeuronsError, match="made with model weights"):
        rerun(config, run_dir, seed=1)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(LangNeuronsError, match="not a langneurons run directory"):
        rerun(config, foreign)


def test_a_removed_run_disappears_from_results_and_report(tiny_run, tmp_path, rerun):
    config, run_dir = copy_run(tiny_run, tmp_path)
    config["finetune"]["runs"] = config["finetune"]["runs"][:1]
    config["evaluation"]["models"] = ["base", "attention"]
    result, _ = rerun(config, run_dir)
    assert result.computed == ["results", "claims"]
    assert "lape-neurons" not in (run_dir / "results" / "scores.csv").read_text()
    assert "lape-neurons" not in result.report[0].read_text()  # its folders remain, unreported


def test_the_runner_refuses_to_start_under_a_multi_process_launcher(make_config, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(LangNeuronsError, match="launch 'collect' or 'finetune'"):
        run_experiment(make_config(), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_two_runs_of_the_same_config_write_identical_artefacts(tiny_run, tmp_path, rerun):
    """The run is deterministic for its seeds: every stage's products (neuron sets, PPXC, adapters,
    scores, claims) hash the same in a second run from scratch."""
    root, config, first_dir, first, _ = tiny_run
    second, _ = rerun(json.loads(json.dumps(config)), tmp_path / "again")
    assert second.computed == ALL_STAGES
    for name in ALL_STAGES:
        assert second.stages[name].product == first.stages[name].product, (name, first.stages[name].outputs, second.stages[name].outputs)
    for name in ("results/scores.json", "claims/claims.json", "ppxc/lape/ppxc.json"):
        assert (tmp_path / "again" / name).read_bytes() == (first_dir / name).read_bytes(), name


def test_outputs_recorded_as_raw_file_hashes_by_earlier_versions_still_count_as_intact(tiny_run, tmp_path, rerun):
    import hashlib

    config, run_dir = copy_run(tiny_run, tmp_path)
    record_path = run_dir / "statistics" / "stage.json"
    record = json.loads(record_path.read_text())
    record["outputs"] = {path: hashlib.sha256((run_dir / path).read_bytes()).hexdigest() for path in record["outputs"]}
    record_path.write_text(json.dumps(record))
    result, _ = rerun(config, run_dir)
    assert result.computed == []


def test_held_out_files_without_a_tokenizer_fingerprint_keep_an_existing_run_working(tiny_run, tmp_path, rerun):
    """Runs made before held-out blocks recorded their tokenizer: the statistics stage stays
    cached (same key, same files) and a rerun PPXC stage scores them after a warning."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from langneurons.errors import LangNeuronsWarning

    config, run_dir = copy_run(tiny_run, tmp_path)
    for path in (run_dir / "statistics").glob("*.heldout.safetensors"):  # as an older version wrote them
        with safe_open(str(path), framework="pt") as handle:
            header = {k: v for k, v in handle.metadata().items() if k != "tokenizer_fingerprint"}
        save_file(load_file(str(path)), str(path), metadata=header)
    stage = json.loads((run_dir / "statistics" / "stage.json").read_text())
    stage["outputs"] = {name: _sha256(run_dir / name) for name in stage["outputs"]}  # the old run's own hashes
    (run_dir / "statistics" / "stage.json").write_text(json.dumps(stage))
    config["ppxc"]["token_budget"] = 20  # PPXC must run again on the old held-out files
    with pytest.warns(LangNeuronsWarning, match="record no tokenizer fingerprint"):
        result, _ = rerun(config, run_dir)
    assert "statistics" in result.cached and "ppxc/lape" in result.computed


def test_ppxc_resamples_documents_and_older_held_out_files_get_theirs_back(tiny_run, tmp_path, rerun):
    """The PPXC intervals resample held-out documents; a run whose held-out files predate document
    ids keeps its cached statistics and its rerun PPXC still resamples documents (re-packed)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    _, _, tiny_dir, _, _ = tiny_run
    fresh = json.loads((tiny_dir / "ppxc" / "lape" / "ppxc.json").read_text())["resampling"]
    assert fresh["unit"] == "held-out documents" and min(fresh["units"].values()) >= 1
    config, run_dir = copy_run(tiny_run, tmp_path)
    for path in (run_dir / "statistics").glob("*.heldout.safetensors"):  # as an older version wrote them
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata()
        tensors = load_file(str(path))
        tensors.pop("document_ids")
        save_file(tensors, str(path), metadata=header)
    stage = json.loads((run_dir / "statistics" / "stage.json").read_text())
    stage["outputs"] = {name: _sha256(run_dir / name) for name in stage["outputs"]}  # the old run's own hashes
    (run_dir / "statistics" / "stage.json").write_text(json.dumps(stage))
    config["ppxc"]["token_budget"] = 20  # PPXC must run again on the old held-out files
    result, _ = rerun(config, run_dir)
    assert "statistics" in result.cached and "ppxc/lape" in result.computed
    again = json.loads((run_dir / "ppxc" / "lape" / "ppxc.json").read_text())["resampling"]
    assert again["unit"] == "held-out documents"


def test_a_run_directory_in_use_by_another_run_is_refused(tiny_run, tmp_path, rerun):
    from langneurons.artefacts import folder_lock

    config, run_dir = copy_run(tiny_run, tmp_path)
    with folder_lock(run_dir):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        with context.Pool(1) as pool:
            message = pool.apply(_try_lock, (str(run_dir),))
    assert message == f"{run_dir} is in use by process {__import__('os').getpid()}; wait for it to finish or " \
                      "choose another folder"


def _try_lock(folder: str) -> str:
    from langneurons.artefacts import folder_lock

    try:
        with folder_lock(folder):
            return "acquired"
    except LangNeuronsError as error:
        return str(error)


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_steering_section_adds_one_cached_stage_and_a_report_section(tiny_run, tmp_path, rerun):
    config, run_dir = copy_run(tiny_run, tmp_path)
    config["steering"] = {"neuron_set": "lape", "pairs": ["en>fr", "en>hi"], "actions": ["add=2"],
                          "prompts": str(tiny_run[0] / "corpus"), "prompt_count": 2, "prompt_words": 3,
                          "max_new_tokens": 3, "identifier_languages": ["en", "fr", "hi", "de"]}
    result, loader = rerun(config, run_dir)
    # after identification nothing else reruns but the claims, which test steering too
    assert result.computed == ["steering", "claims"] and loader.calls == 1
    assert "steering" in {c["id"] for c in json.loads((run_dir / "claims" / "claims.json").read_text())}
    data = json.loads((run_dir / "steering" / "steering.json").read_text())
    # per pair and prompt split (1 dev, 1 test prompt): baseline + (lape, random) x (deactivate + activate + both)
    assert len(data["rows"]) == 2 * 2 * (1 + 2 * 3) and data["meta"]["neuron_set"] == "lape"
    assert {r["n"] for r in data["rows"]} == {1} and {r["split"] for r in data["rows"]} == {"dev", "test"}
    for name in ("steering.csv", "generations.jsonl", "examples.json", "steering_heatmap.svg"):
        assert (run_dir / "steering" / name).is_file(), name
    assert not (run_dir / "steering" / "steering_sweep.png").exists()  # one strength: no sweep to draw
    html = result.report[1].read_text()
    assert ">Language steering<" in html and "lape:both:add=2" in html
    assert "No strength-sweep figure: each action was run at a single strength" in html
    prompts = {g["prompt"] for g in map(json.loads, (run_dir / "steering" / "generations.jsonl").open())}
    assert "own examples are not shown" in html and not [p for p in prompts if p in html]  # corpus text stays out
    result, loader = rerun(config, run_dir)
    assert result.computed == [] and loader.calls == 0
    # prompts from the lines the statistics pass held out (corpus, fraction and seed of the statistics section)
    config["steering"]["prompts"] = "heldout"
    result, _ = rerun(config, run_dir)
    assert result.computed == ["steering", "claims"]
    from langneurons.corpus.packing import split_documents
    statistics = config["statistics"]
    lines = (Path(statistics["corpus"]) / "en.txt").read_text(encoding="utf-8").splitlines()
    heldout = split_documents(lines, statistics["heldout_fraction"], statistics.get("seed", 0))[1]
    prompts = {g["prompt"] for g in map(json.loads, (run_dir / "steering" / "generations.jsonl").open())}
    assert prompts and all(any(line.startswith(p) for line in heldout) for p in prompts)
    config["steering"]["prompts"] = str(tiny_run[0] / "corpus")
    config["steering"]["actions"] = ["add=2", "scale=3"]
    result, _ = rerun(config, run_dir)
    assert result.computed == ["steering", "claims"]


# ---------------------------------------------------------------- missing inputs (issue 21, item 10)


@pytest.mark.parametrize("change, message", [
    (lambda c, r: c.update(steering={"neuron_set": "lape", "pairs": ["en>fr"], "prompts": str(r / "missing")}),
     "steering.prompts: folder not found"),
    (lambda c, r: c["tasks"]["xnli"].update(source=str(r / "missing" / "xnli")), "tasks.xnli.source: file or folder"),
    (lambda c, r: c["tasks"]["xquad"].update(train_source=str(r / "missing.json")), "tasks.xquad.train_source"),
    (lambda c, r: c["statistics"].update(corpus=str(r / "missing")), "statistics.corpus: folder not found"),
    (lambda c, r: c["statistics"].update(corpus="wikimedia/wikipedia", corpus_path=str(r / "missing")),
     "statistics.corpus_path: folder not found"),
])
def test_a_missing_input_path_is_refused_before_any_stage_or_model_load(change, message, make_config, make_fixtures,
                                                                        make_loader, tmp_path):
    make_fixtures(tmp_path)
    config = make_config(tmp_path)
    change(config, tmp_path)
    loader = make_loader()
    with pytest.raises(LangNeuronsError, match=message):
        run_experiment(config, tmp_path / "run", loader=loader, progress=False)
    assert loader.calls == 0 and not (tmp_path / "run").exists()


def test_an_unused_task_section_is_not_checked(make_config, make_fixtures, tmp_path):
    from langneurons.runner.config import check_input_paths, load_config

    make_fixtures(tmp_path)
    config = make_config(tmp_path)
    config["tasks"]["xquad"]["source"] = str(tmp_path / "missing")
    config["evaluation"]["tasks"] = ["xnli"]
    check_input_paths(load_config(config))  # xquad is neither evaluated nor fine-tuned on: no error


def test_heldout_steering_prompts_are_refused_when_the_corpus_changed_since_the_statistics(make_config, make_fixtures,
                                                                                        tmp_path, rerun):
    """Issue 21, item 15: the statistics record each corpus file's SHA-256; re-read held-out lines
    must come from the same file."""
    make_fixtures(tmp_path)
    config = make_config(tmp_path)
    for key in ("ppxc", "finetune", "evaluation", "claims"):
        config.pop(key)
    config["identification"] = config["identification"][:1]
    config["steering"] = {"neuron_set": "lape", "pairs": ["en>fr"], "actions": ["scale=2"], "prompts": "heldout",
                          "prompt_count": 1, "dev_fraction": 0, "prompt_words": 2, "max_new_tokens": 2,
                          "random_control": False, "deactivate": False, "identifier_languages": ["en", "fr", "hi"]}
    result, _ = rerun(config, tmp_path / "run", report=False)
    assert "steering" in result.computed
    recorded = json.loads((tmp_path / "run" / "statistics" / "manifest.json").read_text())["corpus_files"]
    assert recorded["en"]["path"] == str(tmp_path / "corpus" / "en.txt")
    corpus = tmp_path / "corpus" / "en.txt"
    corpus.write_text("\n".join(reversed(corpus.read_text(encoding="utf-8").splitlines())) + "\n", encoding="utf-8")
    config["steering"]["max_new_tokens"] = 3  # the steering stage runs again; the statistics are reused
    with pytest.raises(LangNeuronsError, match=f"corpus file {corpus} changed since the statistics pass"):
        rerun(config, tmp_path / "run", report=False)
