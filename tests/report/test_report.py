"""The report of a run directory (Markdown + self-contained HTML) and the intervention-delta figure."""

import json
import re

import pytest
import torch

from langneurons.errors import LangNeuronsError
from langneurons.identify.neuron_set import NeuronSet
from langneurons.evaluate.figures import write_delta_figure
from langneurons.report.report import write_report


def score_row(model, language, condition, score, delta=None, metric="accuracy", task="xnli"):
    row = {"model": model, "task": task, "language": language, "condition": condition,
           "method": condition.split(":")[0] if delta is not None else "none",
           "action": condition.split(":")[-1], "neurons": 4 if delta is not None else 0, "metric": metric, "n": 24,
           "skipped": 0, "score": score, "ci_low": score - 10.0, "ci_high": score + 10.0,
           "delta": None, "delta_ci_low": None, "delta_ci_high": None, "p_value": None, "test": None}
    if delta is not None:
        row.update(delta=delta, delta_ci_low=delta - 5.0, delta_ci_high=delta + 5.0, p_value=0.0312,
                   test="mcnemar exact")
    return row


@pytest.fixture
def run_dir(tmp_path):
    """A hand-made run directory: manifest, one neuron set, results with deltas and comparisons."""
    run = tmp_path / "run"
    manifest = {
        "format": "langneurons.run/1", "tool_version": "0.1.0", "config_hash": "abc123",
        "config": {"name": "handmade", "languages": ["en", "hi"], "statistics": {"corpus": "builtin"}, "tasks": {}},
        "model": {"model_id": "tiny", "architecture": "llama", "num_layers": 2, "neurons_per_layer": 8,
                  "weights_fingerprint": "f00"},
        "stages": {"statistics": {"status": "cached", "seconds": 0.01, "compute_seconds": 12.5, "cpu_seconds": 20.0},
                   "identify/lape": {"status": "computed", "seconds": 1.0, "compute_seconds": 1.0, "cpu_seconds": 1.0},
                   "results": {"status": "computed", "seconds": 1.0, "compute_seconds": 1.0, "cpu_seconds": 1.0}},
        "stage_order": ["statistics", "identify/lape", "results"],
        "versions": {"python": "3.11", "torch": "2.x"},
        "last_run": {"seconds": 3.0, "finished": "2026-01-01T00:00:00+00:00"},
    }
    (run / "results").mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps(manifest))
    masks = {"en": torch.zeros(2, 8, dtype=torch.bool), "hi": torch.zeros(2, 8, dtype=torch.bool)}
    masks["en"][0, 1] = masks["hi"][1, [2, 3]] = True
    NeuronSet.from_masks(masks, "lape", {"top_rate": 0.1}, {}).save(run / "identify" / "lape" / "neurons.json")
    # a set from an earlier config, no longer a stage of the run: not reported
    NeuronSet.from_masks(masks, "act-prob", {}, {}).save(run / "identify" / "old" / "neurons.json")
    rows = [score_row("base", "en", "baseline", 61.5), score_row("base", "en", "lape:zero", 50.0, delta=-11.5),
            score_row("base", "hi", "baseline", 40.0), score_row("base", "hi", "lape:zero", 41.0, delta=1.0)]
    (run / "results" / "scores.json").write_text(json.dumps(rows))
    comparison = {"task": "xnli", "language": "hi", "metric": "accuracy", "model": "lape-lora",
                  "reference": "attention-lora", "n": 24, "score": 45.0, "reference_score": 40.0, "delta": 5.0,
                  "delta_ci_low": -2.0, "delta_ci_high": 12.0, "p_value": 0.0004, "test": "mcnemar exact"}
    (run / "results" / "model_comparisons.json").write_text(json.dumps([comparison]))
    write_delta_figure(rows, run / "results")
    return run


def test_report_has_every_section_with_scores_cis_deltas_and_p_values(run_dir):
    markdown_path, html_path = write_report(run_dir)
    assert markdown_path == run_dir / "report" / "report.md" and html_path == run_dir / "report" / "report.html"
    markdown = markdown_path.read_text()
    for heading in ("# langneurons report: handmade", "## Language-specific neurons", "### lape (lape)",
                    "## Evaluation", "### Scores", "### Interventions vs baseline", "### Fine-tuned models compared",
                    "## Stages", "## Reproduce"):
        assert heading in markdown
    assert "| base | xnli | en | baseline | accuracy | 24 | 61.5 [51.5, 71.5] |" in markdown
    assert "| base | xnli | en | lape:zero | 4 | accuracy | -11.5 [-16.5, -6.5] | 0.031 | mcnemar exact |" in markdown
    assert "| +5.0 [-2.0, +12.0] | <0.001 |" in markdown
    assert "| en | 1 | 1 | 0 |" in markdown  # neuron counts: total, layer thirds
    assert "Built-in sample data" in markdown
    assert "| statistics | cached | 0.0 | 12.5 | 20.0 |" in markdown
    assert "### old" not in markdown and "act-prob" not in markdown


def test_markdown_links_figures_and_html_inlines_them(run_dir):
    markdown_path, html_path = write_report(run_dir)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown_path.read_text())
    assert links == ["../results/intervention_deltas.png"]
    assert all((markdown_path.parent / link).resolve().is_file() for link in links)
    html = html_path.read_text()
    images = re.findall(r"<img [^>]*src='([^']+)'", html)
    assert len(images) == 1 and images[0].startswith("data:image/png;base64,iVBOR")  # PNG signature
    assert "<h2>Evaluation</h2>" in html and "<table>" in html


def test_a_folder_without_manifest_is_not_a_run(tmp_path):
    with pytest.raises(LangNeuronsError, match="not a langneurons run directory"):
        write_report(tmp_path)


def test_delta_figure_needs_deltas_and_writes_png_and_svg(tmp_path):
    rows = [score_row("base", "en", "baseline", 50.0)]
    with pytest.raises(LangNeuronsError, match="no intervention deltas"):
        write_delta_figure(rows, tmp_path)
    rows += [score_row("base", "en", "lape:zero", 40.0, delta=-10.0),
             score_row("base", "en", "lape:zero", 30.0, delta=-8.0, metric="f1", task="xquad")]
    paths = write_delta_figure(rows, tmp_path, name="deltas")
    assert [p.name for p in paths] == ["deltas.png", "deltas.svg"] and all(p.stat().st_size > 0 for p in paths)


def test_agreement_tables_of_the_run_directory_are_reported(run_dir):
    from langneurons.identify.agreement import agreement, write_agreement

    first = NeuronSet.load(run_dir / "identify" / "lape" / "neurons.json")
    masks = {"en": torch.zeros(2, 8, dtype=torch.bool), "hi": torch.zeros(2, 8, dtype=torch.bool)}
    masks["en"][0, 1] = masks["en"][1, 5] = masks["hi"][1, 2] = True
    second = NeuronSet.from_masks(masks, "ap", {}, {})
    rows = agreement(first, second)
    assert [(r["language"], r["shared"], r["jaccard"]) for r in rows] == [("en", 1, 0.5), ("hi", 1, 0.5)]
    write_agreement(rows, run_dir / "agreement", ("flores/lape", "flores/ap"), name="lape-vs-ap")
    markdown, _ = write_report(run_dir)
    text = markdown.read_text()
    assert "## Agreement between neuron sets" in text and "### lape-vs-ap: flores/lape vs flores/ap" in text
    assert "| en | 1 | 2 | 1 | 0.500 |" in text and "lape-vs-ap.png" in text


def test_the_built_in_data_warning_follows_the_data_the_run_used(run_dir):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    builtin_tasks = {"xnli": {"source": "builtin"}}
    for corpus, extra, warned in (("builtin", {}, True),
                                  ("/data/flores", {"tasks": builtin_tasks}, False),  # tasks unused
                                  ("/data/flores", {"tasks": builtin_tasks, "evaluation": {"models": ["base"]}}, True),
                                  ("/data/flores", {"tasks": {"xnli": {"source": "/data/xnli"}},
                                                    "evaluation": {"models": ["base"]}}, False)):
        manifest["config"] = {**manifest["config"], "statistics": {"corpus": corpus}, "tasks": {}, **extra}
        (run_dir / "manifest.json").write_text(json.dumps(manifest))
        markdown, _ = write_report(run_dir)
        assert ("Built-in sample data" in markdown.read_text()) is warned, (corpus, extra)


def test_intervals_resting_on_too_few_units_are_shown_as_unavailable(run_dir):
    """Scores of 12 examples, a PPXC of 3 held-out documents per language, a claim built on them and a
    steering run at a single strength: "n/a (k units < 20)", the too-few verdict, and why no sweep figure."""
    from langneurons.intervene import PerplexityResult, PPXCResult, write_ppxc
    from langneurons.report.claims import ClaimsConfig, ppxc_specificity, write_claims

    rows = [dict(score_row("base", "en", "baseline", 50.0), n=12, ci_low=None, ci_high=None),
            dict(score_row("base", "en", "lape:zero", 40.0, delta=-10.0), n=12, ci_low=None, ci_high=None,
                 delta_ci_low=None, delta_ci_high=None)]
    (run_dir / "results" / "scores.json").write_text(json.dumps(rows))

    def cell(shift):
        sums = [10 * (v + shift) for v in (1.0, 2.0, 3.0)]
        return PerplexityResult.from_sum(sum(sums), 30, [sum(sums)], [30], sums, [10, 10, 10])

    languages = ["en", "hi"]
    sets = {"language-specific": {r: {c: cell(1.0 if r == c else 0.1) for c in languages} for r in languages},
            "random": {r: {c: cell(0.1) for c in languages} for r in languages}}
    ppxc = PPXCResult(languages, {l: cell(0.0) for l in languages}, sets,
                      {name: {l: 2 for l in languages} for name in sets}, {"model_id": "tiny"}, "lape", "zero")
    write_ppxc(ppxc, run_dir / "ppxc" / "lape")
    write_claims([ppxc_specificity(ppxc, ClaimsConfig(bootstrap_resamples=100))], run_dir / "claims")
    steering = {"meta": {"options": {}, "identifier": {}}, "best_condition": "lape:activate:add=4",
                "rows": [{"source": "en", "target": "hi", "condition": c, "neuron_set": s, "mode": m, "kind": k,
                          "strength": v, "neurons": 2, "n": 5, "target_rate": 20.0, "target_ci_low": 3.6,
                          "target_ci_high": 62.4, "source_rate": 80.0, "source_ci_low": 37.6,
                          "source_ci_high": 96.4, "other_rate": 0.0, "fluency_ppl": 9.0}
                         for c, s, m, k, v in (("baseline", "", "baseline", "", None),
                                               ("lape:activate:add=4", "lape", "activate", "add", 4.0),
                                               ("random:activate:add=4", "random", "activate", "add", 4.0))]}
    (run_dir / "steering").mkdir()
    (run_dir / "steering" / "steering.json").write_text(json.dumps(steering))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for stage in ("ppxc/lape", "claims", "steering"):
        manifest["stages"][stage] = {"status": "computed", "seconds": 1.0, "compute_seconds": 1.0, "cpu_seconds": 1.0}
        manifest["stage_order"].append(stage)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))

    markdown = write_report(run_dir)[0].read_text()
    assert "| base | xnli | en | baseline | accuracy | 12 | 50.0 [n/a (12 units < 20)] |" in markdown
    assert "-10.0 [n/a (12 units < 20)]" in markdown
    assert "| language-specific | en | 2 | 0.9000 | n/a (3 units < 20) |" in markdown  # PPXC specificity
    assert "[n/a (3 units < 20)] nats/token" in markdown and "inconclusive (too few units)" in markdown
    assert "No strength-sweep figure: each action was run at a single strength" in markdown


def _report_with_claims(run_dir) -> str:
    """The Markdown report of ``run_dir`` once its manifest lists a computed claims stage."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["stages"]["claims"] = {"status": "computed", "seconds": 1.0, "compute_seconds": 1.0, "cpu_seconds": 1.0}
    manifest["stage_order"].append("claims")
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return write_report(run_dir)[0].read_text()


def test_claims_section_states_the_largest_excluded_gain_and_the_power_of_the_headline_comparisons(run_dir):
    from langneurons.evaluate.evaluation import GridResult
    from langneurons.report.claims import ClaimsConfig, interventions, write_claims

    # fr, 100 pairs: p01 = 0.10, p10 = 0.05 -> +5 points; n for +-1 point: ceil(1.959964^2 x 0.1475 / 1e-4) = 5667
    reference = [True] * 5 + [False] * 10 + [True] * 40 + [False] * 45
    intervened = [False] * 5 + [True] * 10 + [True] * 40 + [False] * 45
    flags = {("fr", "baseline"): reference, ("fr", "lape:stat=p90"): intervened,
             ("en", "baseline"): [True] * 80 + [False] * 20}
    predictions = [{"task": "xnli", "language": l, "condition": c, "id": f"x{i}", "correct": f}
                   for (l, c), values in flags.items() for i, f in enumerate(values)]
    claim = interventions({"ft": GridResult("ft", [], predictions)}, ClaimsConfig(bootstrap_resamples=200))
    write_claims([claim], run_dir / "claims")
    markdown = _report_with_claims(run_dir)
    assert "| claim (source) | measured | estimate [95% CI] | largest gain excluded | n | p | verdict |" in markdown
    bound = f"{claim.ci_high:+.3f}" if abs(claim.ci_high) < 10 else f"{claim.ci_high:+.1f}"
    assert f"| {bound} points | 100 examples (fr) |" in markdown
    assert "### Power of the headline comparisons" in markdown
    assert ("| interventions | ft xnli lape:stat=p90 - baseline | fr | 100 | 100 | 0.100 / 0.050 | ±7.5 | 5667 | "
            "5010 | not reached; the test set is too small |") in markdown


def _steering_row(condition, split, n, target, fluent, degenerate, combined, ci=None):
    return {"source": "en", "target": "hi", "condition": condition, "split": split,
            "neuron_set": condition.split(":")[0] if ":" in condition else None,
            "mode": "baseline" if condition == "baseline" else "activate", "kind": None if condition == "baseline"
            else "add", "strength": None if condition == "baseline" else 4.0, "neurons": 0 if condition == "baseline"
            else 6, "n": n, "target_rate": target, "target_ci_low": target - 10, "target_ci_high": target + 5,
            "source_rate": 100 - target, "source_ci_low": 0.0, "source_ci_high": 100.0, "other_rate": 0.0,
            "fluency_ppl": 12.0, "degenerate_rate": degenerate, "fluent_target_rate": fluent,
            "fluent_target_ci_low": fluent - 20, "fluent_target_ci_high": fluent + 10, "combined_score": combined,
            "combined_ci_low": None if ci is None else ci[0], "combined_ci_high": None if ci is None else ci[1]}


def test_the_steering_section_reports_test_prompts_with_loop_aware_scores(run_dir):
    from langneurons.steer.figures import write_steering_figures

    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["stages"]["steering"] = {"status": "computed", "seconds": 1.0, "compute_seconds": 1.0, "cpu_seconds": 1.0}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    rows = [_steering_row("baseline", "dev", 25, 0.0, 0.0, 4.0, 0.0),
            _steering_row("baseline", "test", 25, 0.0, 0.0, 8.0, 0.0, (0.0, 0.0)),
            _steering_row("lape:activate:add=4", "dev", 25, 97.0, 91.0, 8.0, 94.0),
            _steering_row("lape:activate:add=4", "test", 25, 84.0, 52.0, 36.0, 73.5, (61.2, 83.9)),
            _steering_row("random:activate:add=4", "dev", 25, 0.0, 0.0, 0.0, 0.0),
            _steering_row("random:activate:add=4", "test", 25, 4.0, 4.0, 0.0, 7.7, (0.0, 18.5))]
    folder = run_dir / "steering"
    folder.mkdir()
    meta = {"neuron_set": "lape", "options": {"prompts": "heldout", "prompt_count": 50, "prompt_words": 8,
                                              "max_new_tokens": 16, "positions": "all", "dev_fraction": 0.5},
            "identifier": {"identifier": "lingua-language-detector", "languages": ["en", "hi"]}}
    pooled = [{"condition": "lape:activate:add=4", "split": "test", "pairs": ["en>fr", "en>hi"], "n": 50,
               "target_rate": 80.0, "target_ci_low": 67.0, "target_ci_high": 89.0, "fluent_target_rate": 50.0,
               "fluent_target_ci_low": 36.7, "fluent_target_ci_high": 63.3, "degenerate_rate": 30.0,
               "combined_score": 75.0, "combined_ci_low": 64.0, "combined_ci_high": 84.0}]
    (folder / "steering.json").write_text(json.dumps({"meta": meta, "best_condition": "lape:activate:add=4",
                                                      "rows": rows, "pooled": pooled}))
    figures = write_steering_figures(rows, folder, "lape:activate:add=4")
    # one strength (add=4): no sweep figure (issue 21)
    assert sorted(p.name for p in figures if p.suffix == ".png") == ["steering_heatmap.png", "steering_scores.png"]
    text = write_report(run_dir)[0].read_text()
    assert "split (seeded, disjoint) into 25 dev and 25 test prompts" in text
    assert "| fluent target % [95% CI] | degenerate % | combined [95% CI] |" in text
    # test rows only: the dev rows' 97% / 91% never appear
    assert "| en>hi | lape:activate:add=4 | 6 | 25 | 84.0 [74.0, 89.0] | 52.0 [32.0, 62.0] | 36.0 | " \
           "73.5 [61.2, 83.9] |" in text
    assert "97.0" not in text and "91.0" not in text
    assert text.count("| en>hi |") == 3
    assert "steering_scores.png" in text
    assert "| lape:activate:add=4 | 2 | 50 | 80.0 [67.0, 89.0] | 50.0 [36.7, 63.3] | 30.0 | 75.0 [64.0, 84.0] |" in text
    # a combined score without an interval says why
    rows[3]["combined_ci_low"] = rows[3]["combined_ci_high"] = None
    rows[3]["n"] = 12
    (folder / "steering.json").write_text(json.dumps({"meta": meta, "best_condition": "lape:activate:add=4",
                                                      "rows": rows}))
    assert "73.5 [n/a (12 prompts < 20)]" in write_report(run_dir)[0].read_text()


def test_the_claims_section_lists_learning_targets_met_or_missed_with_the_learning_curve(run_dir):
    from langneurons.evaluate.evaluation import GridResult
    from langneurons.report.claims import ClaimsConfig, LearningTarget, learning_targets, write_claims, write_targets

    write_claims([], run_dir / "claims")
    curve = [{"step": s, "dev_score": d, "dev_n": 200, "dev_metric": "accuracy"} for s, d in ((0, 34.0), (50, 41.0))]
    (run_dir / "finetune" / "ft").mkdir(parents=True)
    (run_dir / "finetune" / "ft" / "langneurons_finetune.json").write_text(json.dumps({"curve": curve,
                                                                                       "total_steps": 50}))
    predictions = [{"task": "xnli", "language": "en", "condition": "baseline", "id": f"x{i}", "correct": i < 45}
                   for i in range(100)]
    config = ClaimsConfig(learning_targets=(LearningTarget("ft", 60.0),))
    write_targets(learning_targets(run_dir, {"ft": GridResult("ft", [], predictions)}, config), run_dir / "claims")
    markdown = _report_with_claims(run_dir)
    assert "### Learning targets" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| ft |"))
    assert "| xnli en accuracy | 60 | 45.0 [35.6, 54.8] | 100 | missed | below |" in row
    assert "best at the last evaluation, step 50 of 50 (dev 34.0, 41.0 at steps 0, 50)" in row
