"""Hostile or careless input on the command line (issue 13): every case ends with exit code != 0
and one ``error: ...`` line (no traceback), before any file is written where it could poison a
later run."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

SRC = str(Path(__file__).resolve().parents[2] / "src")


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def collect_args(workspace, out, *extra, model=None):
    return ["collect", "--model", model or workspace / "model", "--corpus", workspace / "corpus", "-l", "en,fr",
            "--token-budget", "120", "--heldout-budget", "30", "--block-length", "16", "--out", out, "--no-progress",
            *extra]


@pytest.fixture(scope="module")
def statistics(workspace, tmp_path_factory):
    """A statistics folder (en, fr) of the workspace's tiny model, made through the CLI."""
    from langneurons.cli import main

    out = tmp_path_factory.mktemp("stats") / "stats"
    argv = sys.argv
    sys.argv = ["langneurons", *map(str, collect_args(workspace, out))]
    try:
        main()
    except SystemExit as exit_:  # typer ends a successful command with SystemExit(0)
        assert not exit_.code
    finally:
        sys.argv = argv
    return out


# ---------------------------------------------------------------- 2, 3: collect options


@pytest.mark.parametrize("option, value, message", [
    ("--batch-size", "0", "batch-size must be an integer >= 1, got 0"),
    ("--batch-size", "-1", "batch-size must be an integer >= 1, got -1"),
    ("--token-budget", "0", "token-budget must be an integer >= 1, got 0"),
    ("--token-budget", "-5", "token-budget must be an integer >= 1, got -5"),
    ("--heldout-budget", "-1", "heldout-budget must be an integer >= 0, got -1"),
])
def test_collect_refuses_bad_sizes_before_writing_anything(option, value, message, workspace, tmp_path, langneurons):
    out = tmp_path / "stats"
    result = langneurons(*collect_args(workspace, out, option, value))
    assert_one_line_error(result, message)
    assert not out.exists() or not any(out.glob("*.safetensors")) and not (out / "manifest.json").exists()


def test_a_correct_run_after_a_refused_one_succeeds_in_the_same_folder(workspace, tmp_path, langneurons):
    out = tmp_path / "stats"
    assert langneurons(*collect_args(workspace, out, "--batch-size", "-1")).returncode != 0
    result = langneurons(*collect_args(workspace, out))
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "manifest.json").read_text())["token_counts"]["en"] > 0


# ---------------------------------------------------------------- 4: top rate


@pytest.mark.parametrize("value", ["0", "1.5", "-0.1"])
def test_identify_refuses_a_top_rate_outside_0_1(value, statistics, tmp_path, langneurons):
    result = langneurons("identify", "-s", statistics, "--top-rate", value, "-o", tmp_path / "set.json",
                         "--no-figures")
    assert_one_line_error(result, "top_rate must be a fraction in (0, 1)")
    assert not (tmp_path / "set.json").exists()


# ---------------------------------------------------------------- 5: neuron indices


def _neuron_set_file(statistics, tmp_path, langneurons, rows) -> Path:
    good = tmp_path / "good.json"
    result = langneurons("identify", "-s", statistics, "--top-rate", "0.05", "-o", good, "--no-figures")
    assert result.returncode == 0, result.stderr
    data = json.loads(good.read_text())
    data["neurons"]["en"] = rows
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    return bad


@pytest.mark.parametrize("rows, shown", [([[0, 3.7]], "[0, 3.7]"), ([[True, 3]], "[True, 3]"),
                                         ([[0, 1], ["1", 2]], "['1', 2]")])
@pytest.mark.parametrize("command", ["ppl-matrix", "finetune"])
def test_non_integer_neuron_indices_are_refused_naming_file_and_entry(rows, shown, command, workspace, statistics,
                                                                      tmp_path, langneurons):
    bad = _neuron_set_file(statistics, tmp_path, langneurons, rows)
    if command == "ppl-matrix":
        args = ["ppl-matrix", "--model", workspace / "model", "-n", bad, "-s", statistics, "--out", tmp_path / "ppxc",
                "--cache-dir", tmp_path / "cache", "--no-progress"]
    else:
        args = ["finetune", "--model", workspace / "model", "--task", "xnli", "--limit", "6", "--max-steps", "1",
                "--neurons", "languages", "-l", "en", "--neurons-file", bad, "-o", tmp_path / "adapter",
                "--no-progress"]
    entry = len(rows) - 1
    assert_one_line_error(langneurons(*args), str(bad), f"neurons of 'en', entry {entry}", shown)


# ---------------------------------------------------------------- 6: held-out blocks of another tokenizer


def _rewrite_heldout(path: Path, fingerprint: str | None) -> None:
    with safe_open(str(path), framework="pt") as handle:
        header = dict(handle.metadata())
    tensors = load_file(str(path))
    header.pop("tokenizer_fingerprint", None)
    if fingerprint is not None:
        header["tokenizer_fingerprint"] = fingerprint
    save_file(tensors, str(path), metadata=header)


def test_ppl_matrix_refuses_held_out_blocks_of_another_tokenizer(workspace, statistics, tmp_path, langneurons):
    import shutil

    stats = tmp_path / "stats"
    shutil.copytree(statistics, stats)
    neurons = _neuron_set_file(stats, tmp_path, langneurons, [[0, 1]])
    data = json.loads(neurons.read_text())
    data["neurons"]["en"] = [[0, 1], [1, 2]]
    neurons.write_text(json.dumps(data))
    _rewrite_heldout(stats / "fr.heldout.safetensors", "0123456789abcdef")
    args = ["ppl-matrix", "--model", workspace / "model", "-n", neurons, "-s", stats, "--token-budget", "20",
            "--out", tmp_path / "ppxc", "--cache-dir", tmp_path / "cache", "--no-progress"]
    assert_one_line_error(langneurons(*args), "held-out blocks of 'fr' were tokenized by another tokenizer")

    # a file of an older langneurons (no fingerprint): a warning line, and it still runs
    _rewrite_heldout(stats / "fr.heldout.safetensors", None)
    result = langneurons(*args)
    assert result.returncode == 0, result.stderr
    assert "warning: held-out blocks of 'fr' record no tokenizer fingerprint" in result.stderr
    assert "Traceback" not in result.stderr

    # ... unless its ids do not even fit the model's vocabulary (was: IndexError in the embedding)
    blocks = load_file(str(stats / "fr.heldout.safetensors"))
    blocks["input_ids"][0, 1] = 10_000
    with safe_open(str(stats / "fr.heldout.safetensors"), framework="pt") as handle:
        header = dict(handle.metadata())
    save_file(blocks, str(stats / "fr.heldout.safetensors"), metadata=header)
    assert_one_line_error(langneurons(*args), "token id 10000, beyond the tokenizer's")


# ---------------------------------------------------------------- 7: config values checked before any stage


@pytest.mark.parametrize("section, message", [
    ({"ppxc": {"neuron_sets": ["lape"], "action": "explode"}}, "ppxc: unknown intervention kind 'explode'"),
    ({"ppxc": {"neuron_sets": ["lape"], "action": "stat=p999"}}, "ppxc: unknown statistic 'p999'"),
    ({"evaluation": {"languages": ["en"], "tasks": ["xnli"], "neuron_sets": ["lape"], "actions": ["stat=p999"]}},
     "evaluation.actions[0]: unknown statistic 'p999'"),
    ({"identification": [{"name": "lape", "method": "lape", "top_rate": 0}]}, "top_rate must be a fraction"),
    ({"statistics": {"batch_size": 0}}, "batch-size must be an integer >= 1, got 0"),
])
def test_run_refuses_a_bad_config_value_before_any_stage(section, message, tmp_path, langneurons):
    import yaml

    config = {"name": "bad", "model": "./missing-model", "languages": ["en", "fr"], **section}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = langneurons("run", path, "--run-dir", tmp_path / "run", "--no-progress")
    assert_one_line_error(result, "bad.yaml", message)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- 8: unreadable inputs


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"the cat\n\xff\xfe sat\n"), "is not UTF-8 text"),
    (lambda p: p.write_bytes(b"the cat\x00\x00\x01 sat\n" * 3), "holds binary data"),
    (lambda p: p.mkdir(), "is not a file"),
])
def test_unreadable_corpus_files_are_one_line_errors(make, message, workspace, tmp_path, langneurons):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "fr.txt").write_text("le chat\n", encoding="utf-8")
    make(corpus / "en.txt")
    result = langneurons("collect", "--model", workspace / "model", "--corpus", corpus, "-l", "en,fr",
                         "--out", tmp_path / "stats", "--no-progress")
    assert_one_line_error(result, message, str(corpus / "en.txt"))


@pytest.mark.parametrize("under", [False, True])
def test_an_output_folder_that_is_a_file_is_a_one_line_error(under, workspace, tmp_path, langneurons):
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    out = blocker / "stats" if under else blocker
    assert_one_line_error(langneurons(*collect_args(workspace, out)), f"{blocker} is a file, not a folder")


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: os.urandom(4096), lambda b: b""])
def test_a_corrupted_model_safetensors_is_a_one_line_error(damage, workspace, tmp_path, langneurons):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(workspace / "model", model)
    weights = model / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    result = langneurons(*collect_args(workspace, tmp_path / "stats", model=model))
    assert_one_line_error(result, "corrupted or truncated weights", str(weights))


# ---------------------------------------------------------------- 9: YAML alias bomb

BOMB = textwrap.dedent("""\
    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
    h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
    languages: [*h,*h,*h,*h,*h,*h,*h,*h,*h]
    """)


def test_a_yaml_alias_bomb_is_refused_with_a_short_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert len(BOMB) < 400
    result = subprocess.run([sys.executable, "-m", "langneurons", "run", str(path), "--run-dir", str(tmp_path / "r")],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": SRC})
    assert_one_line_error(result, "expands to more than")
    assert len(result.stderr) < 300, len(result.stderr)
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- 10: one writer per folder

HOLDER = "import sys, time\nfrom langneurons.artefacts import folder_lock\nwith folder_lock(sys.argv[1]):\n" \
         "    print('held', flush=True)\n    time.sleep(120)\n"


@pytest.fixture
def hold_folder():
    """``hold_folder(path)`` -> PID of another process holding the output lock of ``path``."""
    holders = []

    def hold(folder: Path) -> int:
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": SRC})
        holders.append(holder)
        assert holder.stdout.readline().strip() == "held"
        return holder.pid

    yield hold
    for holder in holders:
        holder.kill()
        holder.wait()


def test_collect_into_a_folder_another_process_writes_is_refused(workspace, tmp_path, langneurons, hold_folder):
    out = tmp_path / "stats"
    pid = hold_folder(out)
    assert_one_line_error(langneurons(*collect_args(workspace, out)), f"{out} is in use by process {pid}")
    assert not any(out.glob("*.safetensors")) and not (out / "manifest.json").exists()


def test_run_into_a_run_directory_another_process_writes_is_refused(tmp_path, langneurons, hold_folder):
    import yaml

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"name": "c", "model": "./missing-model", "languages": ["en"]}))
    run_dir = tmp_path / "run"
    pid = hold_folder(run_dir)
    assert_one_line_error(langneurons("run", config, "--run-dir", run_dir, "--no-progress"),
                          f"{run_dir} is in use by process {pid}")
    assert not (run_dir / "manifest.json").exists()


# ================================================================ issue 21: hostile input, round 2

# ---------------------------------------------------------------- 4, 5, 6: writes and deletions outside the output


@pytest.fixture
def victim(tmp_path):
    """A folder with a precious file next to the outputs of a test: nothing may delete or write into it."""
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "precious.txt").write_text("precious")
    return folder


def _untouched(folder: Path) -> bool:
    return sorted(p.name for p in folder.iterdir()) == ["precious.txt"] \
        and (folder / "precious.txt").read_text() == "precious"


@pytest.mark.parametrize("name", ["../victim", "..", "ABSOLUTE"])
def test_publish_refuses_a_name_that_is_not_one_folder_name(name, victim, tmp_path, langneurons):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"config": {"name": "x"}}))
    results = tmp_path / "docs"
    results.mkdir()
    (results / "pitfalls.md").write_text("kept")
    name = str(victim) if name == "ABSOLUTE" else name
    result = langneurons("publish", run, "--results", results, "--name", name)
    assert_one_line_error(result, "must be one plain name")
    assert _untouched(victim) and [p.name for p in results.iterdir()] == ["pitfalls.md"]


def test_run_refuses_a_stage_name_that_escapes_the_run_directory(victim, tmp_path, langneurons):
    import yaml

    config = {"name": "bad", "model": "./missing-model", "languages": ["en", "fr"],
              "identification": [{"name": "../../victim", "method": "lape"}]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = langneurons("run", path, "--run-dir", tmp_path / "runs" / "run", "--no-progress")
    assert_one_line_error(result, "bad.yaml", "identification[0].name must be one plain name")
    assert _untouched(victim) and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", ["../escaped", "ABSOLUTE"])
def test_agreement_refuses_a_name_that_leaves_the_output_folder(name, statistics, tmp_path, langneurons):
    name = str(tmp_path / "abs" / "x") if name == "ABSOLUTE" else name
    out = tmp_path / "out" / "agree"
    result = langneurons("agreement", statistics, statistics, "-o", out, "--name", name, "--no-figures")
    assert_one_line_error(result, "--name must be one plain name")
    assert not (tmp_path / "out").exists() and not (tmp_path / "abs").exists()


# ---------------------------------------------------------------- 12: counts and seeds out of range

HUGE = "1000000000000000"
SEED_OVERFLOW = str(2**64)


@pytest.mark.parametrize("args, message", [
    (["stability", "--resamples", HUGE], "resamples must be an integer in [1, 1,000,000]"),
    (["stability", "--splits", HUGE], "splits must be an integer in [0, 1,000,000]"),
    (["stability", "--seed", SEED_OVERFLOW], "seed must be an integer in [0, 4294967295]"),
    (["stability", "--seed", "-1"], "seed must be an integer in [0, 4294967295]"),
    (["identify", "--method", "lape", "--min-frequency", "0.8", "--resamples", HUGE], "resamples must be an integer"),
    (["steer", "-n", "missing.json", "--seed", SEED_OVERFLOW], "seed must be an integer in [0, 4294967295]"),
    (["steer", "-n", "missing.json", "--actions", "add=-1e30"], "add strength must be at most 1e+06"),
])
def test_counts_and_seeds_out_of_range_are_one_line_errors_before_any_work(args, message, tmp_path, langneurons):
    out = tmp_path / "out"
    result = langneurons(*args, "-s", tmp_path / "missing-stats", "-o", out,
                         *(["--model", tmp_path / "missing-model"] if args[0] == "steer" else []))
    assert_one_line_error(result, message)
    assert not out.exists()


@pytest.mark.parametrize("option, value, message", [
    ("--replicates", HUGE, "replicates must be an integer in [1, 10,000]"),
    ("--seed", SEED_OVERFLOW, "seed must be an integer in [0, 4294967295]"),
])
def test_collect_refuses_huge_replicates_or_seed_and_leaves_no_file(option, value, message, workspace, tmp_path,
                                                                   langneurons):
    out = tmp_path / "stats"
    assert_one_line_error(langneurons(*collect_args(workspace, out, option, value)), message)
    assert not out.exists()


# ---------------------------------------------------------------- 13, 14: damaged or inconsistent replicates


@pytest.fixture(scope="module")
def replicated(workspace, tmp_path_factory):
    """A statistics folder (en, fr) with per-chunk counts of 2 chunks, made through the CLI."""
    from langneurons.cli import main

    out = tmp_path_factory.mktemp("reps") / "stats"
    argv = sys.argv
    sys.argv = ["langneurons", *map(str, collect_args(workspace, out, "--replicates", "2"))]
    try:
        main()
    except SystemExit as exit_:
        assert not exit_.code
    finally:
        sys.argv = argv
    return out


def _rewrite(path: Path, change) -> None:
    """Apply ``change(tensors, header)`` to a safetensors file (both dicts, changed in place)."""
    with safe_open(str(path), framework="pt") as handle:
        header = dict(handle.metadata())
    tensors = load_file(str(path))
    change(tensors, header)
    save_file(tensors, str(path), metadata=header)


def _over_one(tensors, header):
    tensors["positive_count"][1, 0, 0] = tensors["token_count"][1] + 1


def _plus_one(tensors, header):  # still within the chunk's tokens, but no longer the merged statistics' sum
    counts = tensors["positive_count"]
    index = (counts[0] < tensors["token_count"][0]).nonzero()[0]
    counts[0][tuple(index)] += 1


@pytest.mark.parametrize("change, message", [
    (lambda t, h: t.pop("histogram"), "no histogram tensor"),
    (lambda t, h: h.update(meta="{not json"), "unreadable meta or sketch metadata"),
    (lambda t, h: h.update(meta='{"model_id": "x"}'), "unreadable meta or sketch metadata"),
    (lambda t, h: t.update(positive_count=t["positive_count"][..., : t["positive_count"].shape[-1] // 2].clone()),
     "positive_count has shape"),
    (_over_one, "chunk 1 counts more positive activations than its"),
    (lambda t, h: t.update(positive_count=2 * t["positive_count"]), ""),
    (_plus_one, "its chunks do not sum to the statistics"),
])
def test_damaged_or_inconsistent_replicates_are_one_line_errors_naming_the_file(change, message, replicated, tmp_path,
                                                                              langneurons):
    import shutil

    stats = tmp_path / "stats"
    shutil.copytree(replicated, stats)
    damaged = stats / "fr.replicates.safetensors"
    _rewrite(damaged, change)
    out = tmp_path / "stability"
    result = langneurons("stability", "-s", stats, "-o", out, "--resamples", "5", "--splits", "2", "--no-figures")
    assert_one_line_error(result, str(damaged), message)
    assert not out.exists()


def test_statistics_with_more_positive_tokens_than_tokens_are_refused(replicated, tmp_path, langneurons):
    import shutil

    stats = tmp_path / "stats"
    shutil.copytree(replicated, stats)
    damaged = stats / "en.safetensors"
    _rewrite(damaged, lambda t, h: t["positive_count"].__setitem__((0, 0), int(h["token_count"]) + 1))
    result = langneurons("identify", "-s", stats, "-o", tmp_path / "set.json", "--no-figures")
    assert_one_line_error(result, str(damaged), "positive counts outside [0, ")
    assert not (tmp_path / "set.json").exists()


# ---------------------------------------------------------------- 9: steer checks before the model loads


@pytest.fixture(scope="module")
def other_statistics(workspace, tmp_path_factory):
    """Statistics (en, fr) of another tiny model: same architecture and size, other weights."""
    from tiny import tiny_model, tiny_tokenizer

    from langneurons.cli import main

    root = tmp_path_factory.mktemp("other")
    tiny_model("llama", seed=1).save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    argv = sys.argv
    sys.argv = ["langneurons", *map(str, collect_args(workspace, root / "stats", model=root / "model"))]
    try:
        main()
    except SystemExit as exit_:
        assert not exit_.code
    finally:
        sys.argv = argv
    return root / "stats"


def _steer_set(statistics, tmp_path, langneurons) -> Path:
    path = tmp_path / "set.json"
    result = langneurons("identify", "-s", statistics, "--top-rate", "0.05", "-o", path, "--no-figures")
    assert result.returncode == 0, result.stderr
    return path


def test_steer_refuses_statistics_of_another_model_before_loading_the_model(statistics, other_statistics, tmp_path,
                                                                           langneurons):
    neurons = _steer_set(statistics, tmp_path, langneurons)
    out = tmp_path / "steering"
    result = langneurons("steer", "--model", tmp_path / "not-loaded", "-n", neurons, "-s", other_statistics,
                         "--pairs", "en>fr", "--actions", "add=1", "-o", out, "--no-progress")
    assert_one_line_error(result, "the statistics of 'en' were recorded on", "not on the neuron set's model")
    assert not out.exists()


def test_steer_into_an_existing_file_is_refused_before_any_work(statistics, tmp_path, langneurons):
    neurons = _steer_set(statistics, tmp_path, langneurons)
    taken = tmp_path / "taken"
    taken.write_text("a file")
    result = langneurons("steer", "--model", tmp_path / "not-loaded", "-n", neurons, "--pairs", "en>fr",
                         "--actions", "scale=2", "-o", taken, "--no-progress")
    assert_one_line_error(result, f"{taken} is a file, not a folder")
    assert taken.read_text() == "a file"


def test_run_steering_refuses_statistics_of_another_model_before_generating(statistics, other_statistics, workspace,
                                                                           monkeypatch):
    """The check after the model loaded (a set without a weights fingerprint cannot tell before)."""
    from langneurons.activations.api import load_statistics_dir
    from langneurons.errors import LangNeuronsError
    from langneurons.identify.neuron_set import NeuronSet
    from langneurons.models.loading import load_model
    from langneurons.steer import experiment
    from langneurons.steer.experiment import SteeringOptions, run_steering

    def never(*args, **kwargs):
        raise AssertionError("generated before the refusal")

    monkeypatch.setattr(experiment, "steered_generate", never)
    loaded = load_model(str(workspace / "model"))
    stats = load_statistics_dir(other_statistics, ["en", "fr"])
    neuron_set = NeuronSet({"en": [[0, 1]], "fr": [[0, 2]]}, loaded.info.num_layers, loaded.info.neurons_per_layer,
                           "lape", {}, {"weights_fingerprint": loaded.info.weights_fingerprint})
    identifier = type("Everything", (), {"covers": lambda self, language: True})()
    with pytest.raises(LangNeuronsError, match="not on .* \\(weights "):
        run_steering(loaded, neuron_set, SteeringOptions(pairs=("en>fr",), actions=("add=1",), random_control=False),
                     identifier, stats, prompts={"en": ["the cat"]}, progress=False)


# ---------------------------------------------------------------- 15: held-out prompts from a changed corpus


def test_heldout_prompts_from_a_reordered_corpus_are_refused(workspace, tmp_path, langneurons):
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(workspace / "corpus", corpus)
    stats = tmp_path / "stats"
    collect = ["collect", "--model", workspace / "model", "--corpus", corpus, "-l", "en,fr", "--token-budget", "120",
               "--heldout-budget", "30", "--block-length", "16", "--out", stats, "--no-progress"]
    assert langneurons(*collect).returncode == 0
    manifest = json.loads((stats / "manifest.json").read_text())
    assert set(manifest["corpus_files"]) == {"en", "fr"} and len(manifest["corpus_files"]["en"]["sha256"]) == 64
    neurons = _steer_set(stats, tmp_path, langneurons)
    steer = ["steer", "--model", tmp_path / "not-loaded", "-n", neurons, "-s", stats, "--pairs", "en>fr",
             "--actions", "scale=2", "--prompts", "heldout", "--prompt-count", "1", "--dev-fraction", "0",
             "--prompt-words", "3",
             "-o", tmp_path / "steering", "--no-progress"]
    # unchanged corpus: every input passes, the (missing) model is the first thing that fails
    assert "not-loaded" in assert_one_line_error(langneurons(*steer))

    lines = (corpus / "en.txt").read_text(encoding="utf-8").splitlines()
    (corpus / "en.txt").write_text("\n".join(reversed(lines)), encoding="utf-8")  # same lines, other order
    assert_one_line_error(langneurons(*steer), f"corpus file {corpus / 'en.txt'} changed since the statistics pass")
    assert not (tmp_path / "steering").exists()

    del manifest["corpus_files"]  # statistics of an older langneurons: a warning line, then on as before
    (stats / "manifest.json").write_text(json.dumps(manifest))
    result = langneurons(*steer)
    assert "warning: " in result.stderr and "records no corpus file fingerprints" in result.stderr
    assert "not-loaded" in assert_one_line_error(result)
