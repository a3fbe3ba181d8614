"""The embedded demo, end to end on the default model with the reduced ``ci`` budget (slow; CI runs it)."""

import json
import re

import pytest

SECTIONS = ("Claims of the literature, tested", "Language-specific neurons", "Perplexity change (PPXC)",
            "Language steering", "Fine-tuning", "Evaluation", "Scores",
            "Interventions vs baseline", "Fine-tuned models compared", "Stages", "Reproduce")


@pytest.fixture(autouse=True)
def all_cores():
    """The real model wants both cores (the rest of the suite runs tiny models on one thread)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def zero_width_intervals(markdown: str) -> list[str]:
    """Every ``[a, a]`` interval of a report (the same number twice, as printed)."""
    return re.findall(r"\[([+-]?\d+(?:\.\d+)?)%?, \1%?\]", markdown)


def test_the_zero_width_check_finds_equal_bounds_only():
    assert zero_width_intervals("0.0 [0.0, 0.0] and +1.5 [+1.5, +1.5] but 2 [1.9, 2.1]") == ["0.0", "+1.5"]


@pytest.mark.slow
def test_demo_runs_end_to_end_and_writes_a_complete_report(tmp_path, capsys):
    from langneurons.runner import run_demo

    result = run_demo(tmp_path / "demo", budget="ci", progress=False)
    markdown_path, html_path = result.report
    assert str(html_path) in capsys.readouterr().out  # the demo ends by printing its report's path
    markdown, html = markdown_path.read_text(), html_path.read_text()
    for section in SECTIONS:
        assert f" {section}\n" in markdown and f">{section}<" in html
    assert "google/gemma-3-270m" in markdown
    assert "not research results" in markdown and "docs/results/README.md" in markdown
    # neuron figures, PPXC heatmap and intervention deltas, all inlined
    assert html.count("data:image/png;base64,") >= 6 and "src='../" not in html
    scores = json.loads((tmp_path / "demo" / "results" / "scores.json").read_text())
    assert {row["model"] for row in scores} == {"base", "attention-lora", "lape-neuron-lora"}
    for row in scores:  # an interval needs 20 examples; the ci budget scores fewer: "n/a (k units < 20)"
        if row["n"] >= 20:
            assert row["ci_low"] <= row["score"] <= row["ci_high"]
        else:
            assert row["ci_low"] is None and row["ci_high"] is None
    assert any(row["p_value"] is not None for row in scores)  # McNemar's exact test needs no minimum
    # no zero-width interval and no verdict from too few units: PPXC has a few held-out lines per language
    assert zero_width_intervals(markdown) == []
    for row in scores:
        assert row["ci_low"] is None or row["ci_low"] < row["ci_high"]
    claims = json.loads((tmp_path / "demo" / "claims" / "claims.json").read_text())
    for claim in claims:
        if claim["units"] is not None and claim["units"] < 20:
            assert claim["verdict"] == "inconclusive (too few units)" and claim["p_value"] is None
    predictions = (tmp_path / "demo" / "evaluate" / "base" / "predictions.jsonl").read_text().splitlines()
    assert predictions and all(json.loads(line)["id"] for line in predictions)
