"""The command line: every command has --help, the core commands run end to end on a tiny
local model, and bad input ends with a one-line error and a non-zero exit."""

import json
import subprocess
import sys

import pytest

COMMANDS = ["architectures", "collect", "merge", "identify", "stability", "agreement", "plot", "ppl-matrix", "finetune",
            "run", "report", "demo", "evaluate", "steer", "lm-eval"]


def test_the_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "langneurons", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "collect" in result.stdout


def test_every_command_has_help():
    from typer.testing import CliRunner

    from langneurons.cli import app

    runner = CliRunner()
    for command in COMMANDS:
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, command
        assert "Usage" in result.output


def test_collect_identify_plot_ppxc_finetune_end_to_end(workspace, langneurons):
    stats = workspace / "stats"
    result = langneurons("collect", "--model", workspace / "model", "--corpus", workspace / "corpus", "-l", "en,fr,es",
                         "--token-budget", "400", "--heldout-budget", "40", "--block-length", "16", "--out", stats,
                         "--no-progress")
    assert result.returncode == 0, result.stderr
    assert {p.name for p in stats.iterdir()} >= {"en.safetensors", "fr.heldout.safetensors", "manifest.json"}
    manifest = json.loads((stats / "manifest.json").read_text())
    assert manifest["token_counts"]["en"] == 390  # 26 blocks x 15 text tokens
    result = langneurons("identify", "-s", stats, "--method", "lape", "-o", workspace / "lape.json", "--top-rate", "0.1")
    assert result.returncode == 0, result.stderr
    assert "lape neurons" in result.stdout
    assert (workspace / "lape_figures" / "neuron_counts.png").stat().st_size > 0
    result = langneurons("identify", "-s", stats, "--method", "act-prob", "-o", workspace / "ap.safetensors", "--no-figures")
    assert result.returncode == 0, result.stderr
    result = langneurons("plot", workspace / "lape.json", "--venn", "en,fr")
    assert result.returncode == 0, result.stderr
    assert (workspace / "lape_figures" / "neuron_venn_en_fr.svg").exists()

    result = langneurons("ppl-matrix", "--model", workspace / "model", "-n", workspace / "lape.json", "-s", stats,
                         "--token-budget", "30", "--out", workspace / "ppxc", "--cache-dir", workspace / "cache",
                         "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "specificity" in result.stdout
    rows = (workspace / "ppxc" / "ppxc.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 3 * 3  # header + (language-specific, random) x 3 rows x 3 columns
    assert (workspace / "ppxc" / "ppxc.png").exists()

    result = langneurons("finetune", "--model", workspace / "model", "--task", "xnli", "--limit", "6", "--max-steps", "2",
                         "--batch-size", "3", "--neurons", "languages", "-l", "fr", "--neurons-file",
                         workspace / "lape.json", "-o", workspace / "adapter", "--no-progress")
    assert result.returncode == 0, result.stderr
    metadata = json.loads((workspace / "adapter" / "langneurons_finetune.json").read_text())
    assert metadata["step"] == 2 and metadata["task"] == "xnli"

    (workspace / "prompts").mkdir()
    (workspace / "prompts" / "en.txt").write_text("the cat sat on it\na mat is red today\nthe dog and the cat\n")
    result = langneurons("steer", "--model", workspace / "model", "-n", workspace / "lape.json", "-s", stats,
                         "--pairs", "en>fr,en>es", "--actions", "add=2,stat=p90", "--prompts", workspace / "prompts",
                         "--prompt-count", "3", "--prompt-words", "3", "--max-new-tokens", "3",
                         "--identifier-languages", "en,fr,es,de", "-o", workspace / "steer", "--no-progress")
    assert result.returncode == 0, result.stderr
    data = json.loads((workspace / "steer" / "steering.json").read_text())
    # per pair and prompt split (1 dev, 2 test prompts): baseline + 2 sets x (deactivate + 2 actions x (activate, both))
    assert len(data["rows"]) == 2 * 2 * (1 + 2 * (1 + 2 * 2)) and "steering" in result.stdout
    assert sorted(r["n"] for r in data["rows"] if r["condition"] == "baseline") == [1, 1, 2, 2]
    assert {r["condition"] for r in data["rows"]} >= {"baseline", "lape:both:add=2", "random:activate:stat=p90"}
    assert data["meta"]["identifier"]["languages"] == ["de", "en", "es", "fr"]
    assert (workspace / "steer" / "steering_heatmap.svg").exists()
    # add=2 and stat=p90 are one strength of two kinds each: no strength sweep to draw
    assert not (workspace / "steer" / "steering_sweep.svg").exists()
    manifest = json.loads((workspace / "steer" / "manifest.json").read_text())
    assert manifest["inputs"]["neuron_set"]["sha256"] and set(manifest["inputs"]["statistics"]) == {"en", "fr", "es"}
    assert "steering.json" in manifest["outputs"] and "lingua-language-detector" in manifest["versions"]


def test_direction_steering_from_the_command_line(workspace, langneurons, tmp_path):
    stats = tmp_path / "stats"
    result = langneurons("collect", "--model", workspace / "model", "--corpus", workspace / "corpus", "-l", "en,fr,es",
                         "--token-budget", "200", "--heldout-budget", "20", "--block-length", "16", "--residual",
                         "--out", stats, "--no-progress")
    assert result.returncode == 0, result.stderr
    result = langneurons("identify", "-s", stats, "--method", "diffmean", "-o", tmp_path / "diffmean.safetensors")
    assert result.returncode == 0, result.stderr
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "en.txt").write_text("the cat sat on it\na mat is red today\nthe dog and the cat\n")
    result = langneurons("steer", "--model", workspace / "model", "-d", tmp_path / "diffmean.safetensors",
                         "--layers", "0,0-1", "--strengths", "0,3", "--pairs", "en>fr", "--prompts", tmp_path / "prompts",
                         "--prompt-count", "3", "--prompt-words", "3", "--max-new-tokens", "3",
                         "--identifier-languages", "en,fr,es,de", "-o", tmp_path / "steer", "--no-progress")
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "steer" / "steering.json").read_text())
    assert [r["condition"] for r in data["rows"] if r["split"] == "test"] == [
        "baseline", "diffmean:add=0@0", "random-dir:add=0@0", "diffmean:add=3@0", "random-dir:add=3@0",
        "diffmean:add=0@0-1", "random-dir:add=0@0-1", "diffmean:add=3@0-1", "random-dir:add=3@0-1"]
    assert data["best_conditions"]["neurons"] is None and data["best_conditions"]["directions"].startswith("diffmean:")
    generations = [json.loads(line) for line in (tmp_path / "steer" / "generations.jsonl").open()]
    by = {}
    for g in generations:
        by.setdefault(g["condition"], []).append(g["continuation"])
    assert by["diffmean:add=0@0-1"] == by["baseline"]  # strength 0 is the unintervened model


@pytest.mark.parametrize(
    "args, message",
    [
        (["identify", "-s", "missing-folder"], "statistics folder not found"),
        (["collect", "-l", "en,xx", "--model", "missing/model/path"], "unknown language code 'xx'"),
        (["collect", "-l", "en", "--model", "./missing-model"], "model path not found"),
        (["identify", "--method", "magic"], "unknown method 'magic'"),
        (["plot", "missing.json"], "not found"),
        (["finetune", "--task", "xnlx", "-o", "out", "--model", "./missing"], "unknown task 'xnlx'"),  # before loading
        (["ppl-matrix", "-n", "missing.json", "--model", "./missing"], "model path not found"),
        (["steer", "-n", "missing.json", "--pairs", "en>my", "--model", "./missing"], "does not cover 'my'"),
        (["steer", "-n", "missing.json", "--pairs", "en-fr", "--model", "./missing"], "SOURCE>TARGET"),
        (["steer", "-n", "missing.json", "--pairs", "en>fr", "--actions", "scale=2", "--model", "./missing"], "not found"),
        (["steer", "-n", "missing.json", "--actions", "zero", "--model", "./missing"], "activating the target"),
        (["steer", "-n", "missing.json", "--dev-fraction", "1", "--model", "./missing"], "dev_fraction must be in [0, 1)"),
        (["steer", "-n", "missing.json", "--prompt-count", "1", "--model", "./missing"], "leaves no dev prompt"),
        (["steer", "-n", "missing.json", "--actions", "scale=2", "--prompts", "heldout", "--model", "./missing"],
         "'heldout' prompts need --statistics"),
        (["steer", "--pairs", "en>fr", "--model", "./missing"], "a neuron set (--neurons) or a direction set (--directions)"),
        (["steer", "-d", "missing.safetensors", "--layers", "3", "--model", "./missing"], "direction set not found"),
        (["steer", "-d", "missing.safetensors", "--layers", "3-1", "--model", "./missing"], "bad layer range"),
        (["steer", "-d", "missing.safetensors", "--layers", "3", "--strengths", "1,x", "--model", "./missing"],
         "--strengths takes comma-separated numbers"),
    ],
)
def test_bad_input_is_a_one_line_error_with_nonzero_exit(args, message, tmp_path, langneurons):
    result = langneurons(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
