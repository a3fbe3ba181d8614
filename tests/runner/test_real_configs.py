"""The real-data configs of issue 18 (transfer, transfer-seeds, subnetwork) end to end at tiny scale.

Each built-in config is read as shipped, its data folder pointed at hand-written files in the
layout of ``shared/data`` (flores200/devtest, xnli/{test,train}), its model replaced by the tiny
test model and its sizes shrunk; everything else (languages, neuron sets, runs, seeds, adapters,
learning-rate candidates, evaluation grid, claims) is the config's own. The three runs share one
statistics pass through ``statistics_from``, as ``make transfer`` / ``make subnetwork`` do.
"""

import json

import pytest

from langneurons.errors import LangNeuronsError
from langneurons.runner.config import load_config
from langneurons.runner.demo import builtin_config
from langneurons.runner.run import copy_statistics, run_experiment

WORDS = {
    "en": "the cat sat on a red mat and saw dog today".split(),
    "fr": "le chat est sur un tapis rouge et voit chien".split(),
    "es": "el gato está en una alfombra roja y ve perro".split(),
    "zh": "猫 坐 在 红色 垫子 上 看见 狗 今天 很".split(),
    "hi": "बिल्ली लाल चटाई पर बैठी और कुत्ता देखा आज है".split(),
    "bn": "বিড়াল লাল মাদুরে বসে এবং কুকুর দেখল আজ আছে".split(),
    "ta": "பூனை சிவப்பு பாயில் அமர்ந்து நாயை பார்த்தது இன்று உள்ளது".split(),
    "ur": "بلی سرخ چٹائی پر بیٹھی اور کتا دیکھا آج ہے".split(),
}
NLI_LANGUAGES = ("en", "fr", "es", "zh", "hi", "ur")


def line(language: str, i: int, length: int = 6) -> str:
    words = WORDS[language]
    return " ".join(words[(i * 3 + k) % len(words)] for k in range(length + i % 3))


def write_shared_data(root) -> None:
    """FLORES-like lines for the eight languages; XNLI test (six languages) and an English train file."""
    flores = root / "flores200" / "devtest"
    flores.mkdir(parents=True)
    for language in WORDS:
        (flores / f"{language}.txt").write_text("".join(line(language, i) + "\n" for i in range(20)), encoding="utf-8")
    for split in ("test", "train"):
        (root / "xnli" / split).mkdir(parents=True)
    for language in NLI_LANGUAGES:
        rows = [{"premise": line(language, i), "hypothesis": line(language, i + 5, 3), "label": i % 3} for i in range(6)]
        (root / "xnli" / "test" / f"{language}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    train = [{"premise": line("en", i + 2), "hypothesis": line("en", i, 3), "label": i % 3} for i in range(12)]
    (root / "xnli" / "train" / "en.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))


def tiny_version(name: str, root) -> dict:
    """The built-in config ``name`` on the files under ``root``, the tiny model and tiny sizes."""
    data = load_config(builtin_config(name), {"data": str(root)}).to_dict()
    data["model"]["name"] = "tiny-test"
    data["statistics"].update(token_budget=160, heldout_fraction=0.5, heldout_budget=64, block_length=16,
                              batch_size=4, replicates=None)
    for entry in data["identification"]:
        entry["figures"] = False
        if entry["method"] == "lape":
            entry.update(top_rate=0.05, filter_rate=0.5)
    tasks = data["tasks"]
    if tasks.get("xnli"):
        tasks["xnli"].update(train_limit=6, dev_limit=3, eval_limit=6, max_length=120)
    if tasks.get("lm"):
        tasks["lm"].update(block_length=4, eval_token_budget=96)  # 24 scored blocks from a few held-out lines
    for run in data["finetune"]["runs"]:
        lm = run["task"] == "lm"
        run.update(max_steps=2, batch_size=2 if lm else 3, max_length=8 if lm else 120, lora_r=4, lora_dropout=0.0,
                   lr_search_steps=1 if run["learning_rates"] else 0, eval_every=2, save_every=0)
        if name != "transfer":  # two candidates still make a choice; transfer's test checks all three
            run["learning_rates"] = run["learning_rates"][:2]
    data["evaluation"].update(batch_size=8, bootstrap_resamples=100)
    data["claims"]["bootstrap_resamples"] = 200
    return data


def tiny_loader(spec):
    """``model: tiny-test`` -> the tiny random Llama with the tiny tokenizer (as conftest's TinyLoader)."""
    from tiny import tiny_model, tiny_tokenizer

    from langneurons.models.loading import describe

    assert spec.name == "tiny-test"
    loaded = describe(tiny_model("llama", seed=0), model_id="tiny-test")
    loaded.tokenizer = tiny_tokenizer()
    return loaded


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """(root, {config name: RunResult}) of the three configs run at tiny scale, sharing one statistics pass."""
    root = tmp_path_factory.mktemp("real-configs")
    write_shared_data(root)
    results, statistics = {}, None
    for name in ("transfer", "transfer-seeds", "subnetwork"):
        results[name] = run_experiment(tiny_version(name, root), root / "runs" / name, loader=tiny_loader,
                                       progress=False, report=False, statistics_from=statistics)
        statistics = root / "runs" / "transfer" / "statistics"
    return root, results


def claims_of(run_dir) -> dict:
    return {claim["id"]: claim for claim in json.loads((run_dir / "claims" / "claims.json").read_text())}


def test_the_shipped_configs_share_the_replications_statistics_section():
    replication = load_config(builtin_config("replication")).statistics
    for name in ("transfer", "transfer-seeds", "subnetwork"):
        assert load_config(builtin_config(name)).statistics == replication, name


def test_transfer_trains_attention_lora_chosen_on_dev_and_tests_interventions_on_it(real_runs):
    root, results = real_runs
    result = results["transfer"]
    assert result.computed == ["statistics", "identify/lape", "identify/random", "finetune/xnli-attention",
                               "evaluate/xnli-attention", "results", "claims"]
    metadata = json.loads((result.run_dir / "finetune" / "xnli-attention" / "langneurons_finetune.json").read_text())
    assert metadata["lr_search"]["candidates"] == [2e-4, 5e-4, 1e-3] and len(metadata["lr_search"]["dev_scores"]) == 3
    assert metadata["early_stopping"]["patience"] == 2
    scores = json.loads((result.run_dir / "results" / "scores.json").read_text())
    assert {r["condition"] for r in scores} == {"baseline", "lape:zero", "lape:stat=p90", "random:zero",
                                                "random:stat=p90"}
    assert {r["language"] for r in scores} == set(NLI_LANGUAGES)
    claim = claims_of(result.run_dir)["interventions"]
    assert "xnli-attention" in claim["measure"] and claim["verdict"] and claim["n"]
    assert "largest_gain_excluded" in claim
    assert "neuron-lora" not in claims_of(result.run_dir)
    power = json.loads((result.run_dir / "claims" / "power.json").read_text())  # stated for every cell
    assert {(p["comparison"].split(" ")[2], p["contrast"]) for p in power} == {
        (condition, contrast) for condition in ("lape:zero", "lape:stat=p90")
        for contrast in ("unintervened", "random twin")}


def test_transfer_seeds_pools_three_seeds_of_lape_and_random_lora_with_the_mlp_control(real_runs):
    root, results = real_runs
    result = results["transfer-seeds"]
    assert result.cached == ["statistics"]  # copied from the transfer run: the FLORES pass is not repeated
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["statistics_copied_from"] == str(root / "runs" / "transfer" / "statistics")
    runs = [f"xnli-{kind}@{seed}" for kind in ("lape", "random") for seed in (0, 1, 2)]
    assert {f"finetune/{name}" for name in ["xnli-mlp-all", *runs]} <= set(result.computed)
    first, later = (json.loads((result.run_dir / "finetune" / name / "langneurons_finetune.json").read_text())
                    for name in ("xnli-random@0", "xnli-random@2"))
    assert later["lr_search"] == dict(first["lr_search"], reused=True)  # one search per run, not per seed
    claim = claims_of(result.run_dir)["neuron-lora"]
    headline = next(d for d in claim["details"] if d.get("reference_mode") == "random")
    assert headline["seeds"] == [0, 1, 2] and headline["runs"] == runs[:3]
    assert any(d.get("capacity_control") == "xnli-mlp-all" for d in claim["details"])
    assert claim["verdict"] and "largest_gain_excluded" in claim
    power = json.loads((result.run_dir / "claims" / "power.json").read_text())
    assert {p["comparison"] for p in power} == {"xnli-lape - xnli-random", "xnli-lape - xnli-mlp-all"}


def test_subnetwork_compares_lape_rows_random_rows_and_equal_size_lora_on_held_out_text(real_runs):
    root, results = real_runs
    result = results["subnetwork"]
    assert result.cached == ["statistics"]
    arms = [f"{language}-{arm}" for language in ("hi", "ur") for arm in ("lape-rows", "random-rows", "lora")]
    assert [f"lm_eval_ppl/{name}" for name in ["base", *arms]] == [n for n in result.computed if n.startswith("lm_")]
    for language in ("hi", "ur"):
        sizes = json.loads((result.run_dir / "finetune" / f"{language}-lora" / "equal_parameters.json").read_text())
        assert sizes["matched_run"] == f"{language}-lape-rows"
        perplexity = json.loads((result.run_dir / "finetune" / f"{language}-lape-rows" / "perplexity.json").read_text())
        assert perplexity["language"] == language
    scores = json.loads((result.run_dir / "results" / "scores.json").read_text())
    assert {(r["model"], r["language"]) for r in scores} >= {(m, l) for m in ["base", *arms] for l in ("hi", "ur")}
    claim = claims_of(result.run_dir)["subnetwork"]
    assert claim["unit"] == "nats/token" and "hi, ur" in claim["measure"] and claim["verdict"]
    assert {d["role"] for d in claim["details"] if d.get("kind") == "zero-shot xnli"} == {"lape-rows", "random-rows",
                                                                                           "lora"}


def test_statistics_from_copies_only_a_finished_folder_and_never_over_an_existing_one(real_runs, tmp_path):
    root, _ = real_runs
    finished = root / "runs" / "transfer" / "statistics"
    assert copy_statistics(finished, tmp_path / "run") and (tmp_path / "run" / "statistics" / "en.safetensors").is_file()
    assert not copy_statistics(finished, tmp_path / "run")  # this run's own statistics are kept
    unfinished = tmp_path / "half"
    unfinished.mkdir()
    (unfinished / "stage.json").write_text(json.dumps({"key": "x", "status": "running"}))
    with pytest.raises(LangNeuronsError, match="not the statistics folder of a finished run"):
        run_experiment(tiny_version("transfer", root), tmp_path / "other", progress=False, statistics_from=unfinished)
    assert not (tmp_path / "other").exists()  # refused before anything was written
