"""Claims of the literature: each measure, test and verdict against hand-computed expectations."""

import math

import pytest
import torch

from langneurons.evaluate.evaluation import GridResult
from langneurons.evaluate.metrics import wilson_interval
from langneurons.identify.neuron_set import NeuronSet
from langneurons.intervene import PerplexityResult, PPXCResult
from langneurons.report.claims import (
    CONTRADICTED,
    INCONCLUSIVE,
    SUPPORTED,
    ClaimsConfig,
    claims_markdown,
    interventions,
    layer_concentration,
    neuron_lora,
    own_threshold,
    permutation_p_value,
    ppxc_specificity,
    related_languages,
    script_counts,
    write_claims,
)

CONFIG = ClaimsConfig(bootstrap_resamples=300)


def _set(neurons: dict, layers=4, per_layer=10):
    return NeuronSet({l: torch.tensor(rows, dtype=torch.long).reshape(-1, 2) for l, rows in neurons.items()},
                     layers, per_layer, "lape")


def test_wilson_interval_matches_the_textbook_value():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)


def test_the_permutation_test_enumerates_every_split():
    assert permutation_p_value([5, 6, 7], [1, 2, 3]) == pytest.approx(1 / 20)  # only the observed split
    assert permutation_p_value([1, 2, 3], [5, 6, 7]) == 1.0


def test_neurons_in_the_first_and_last_layers_are_counted_against_the_uniform_share():
    # 4 layers, outer = layers 0 and 3 (expected share 1/2): 9 of 10 neurons are outer
    neurons = _set({"en": [[0, 1], [0, 2], [0, 3], [3, 1], [3, 2]], "fr": [[0, 4], [3, 3], [3, 4], [3, 5], [1, 1]]})
    claim = layer_concentration(neurons, CONFIG)
    assert claim.estimate == pytest.approx(90.0)
    assert claim.p_value == pytest.approx(11 / 1024)  # P(X >= 9), X ~ Binomial(10, 1/2)
    assert claim.verdict == SUPPORTED
    middle = _set({"en": [[1, i] for i in range(6)] + [[2, i] for i in range(6)]})
    assert layer_concentration(middle, CONFIG).verdict == CONTRADICTED


def test_script_claim_compares_latin_and_non_latin_set_sizes_by_permutation():
    neurons = _set({"en": [[0, 1]], "fr": [[0, 2]], "hi": [[1, i] for i in range(5)], "zh": [[2, i] for i in range(6)]})
    claim = script_counts(neurons, CONFIG)
    assert claim.estimate == pytest.approx(5.5 / 1.0)
    assert claim.p_value == pytest.approx(1 / 6)  # 2 + 2 languages: 6 splits, one as extreme
    assert claim.verdict == INCONCLUSIVE  # four languages cannot reach p < 0.05
    assert script_counts(_set({"en": [[0, 1]], "fr": [[0, 2]]}), CONFIG) is None


def _cell(base, shift):
    tokens = [10] * len(base)
    return PerplexityResult.from_sum(sum(10 * (b + shift) for b in base), sum(tokens),
                                     [10 * (b + shift) for b in base], tokens)


def _ppxc(shifts: dict, languages=("en", "fr", "es")):
    """Intervened NLL = baseline + shifts[set](row, col) in every block (a point interval)."""
    base = {l: [1.0 + 0.5 * i, 2.0, 0.5, 1.5] for i, l in enumerate(languages)}
    intervened = {name: {r: {c: _cell(base[c], shift(r, c)) for c in languages} for r in languages}
                  for name, shift in shifts.items()}
    counts = {name: {l: 3 for l in languages} for name in shifts}
    return PPXCResult(list(languages), {l: _cell(base[l], 0.0) for l in languages}, intervened, counts,
                      {"model_id": "m"}, "lape", "zero", resampling=(300, 0.95, 0))


def test_specificity_claim_needs_the_own_language_effect_to_beat_the_random_control():
    result = _ppxc({"language-specific": lambda r, c: 1.0 if r == c else 0.2, "random": lambda r, c: 0.1})
    claim = ppxc_specificity(result, CONFIG)
    assert claim.estimate == pytest.approx(0.8 - 0.0)
    assert (claim.ci_low, claim.ci_high) == pytest.approx((0.8, 0.8))
    assert claim.verdict == SUPPORTED
    flat = _ppxc({"language-specific": lambda r, c: 0.3, "random": lambda r, c: 0.1 if r == c else 0.0})
    assert ppxc_specificity(flat, CONFIG).verdict == CONTRADICTED  # random is "more specific" here


def test_related_pairs_must_cross_affect_more_than_unrelated_languages_and_share_neurons():
    languages = ("fr", "es", "hi", "zh")
    shifts = {"language-specific": lambda r, c: 1.0 if r == c else (0.5 if {r, c} == {"fr", "es"} else 0.1)}
    result = _ppxc(shifts, languages)
    neurons = _set({"fr": [[0, 1], [0, 2]], "es": [[0, 1], [0, 3]], "hi": [[1, 1]], "zh": [[2, 1]]})
    config = ClaimsConfig(bootstrap_resamples=300, related_pairs=(("fr", "es"),))
    claim = related_languages(result, neurons, config)
    assert claim.estimate == pytest.approx(0.5 - 0.1)
    detail = claim.details[0]
    assert detail["jaccard"] == pytest.approx(1 / 3) and detail["unrelated_jaccard"] == 0.0
    assert claim.verdict == SUPPORTED
    disjoint = _set({"fr": [[0, 1]], "es": [[0, 3]], "hi": [[1, 1]], "zh": [[2, 1]]})
    assert related_languages(result, disjoint, config).verdict == INCONCLUSIVE


def test_the_own_threshold_claim_holds_when_its_set_is_no_more_specific_than_random():
    chance = _ppxc({"language-specific": lambda r, c: 0.2, "random": lambda r, c: 0.2})
    assert own_threshold(chance, None, CONFIG).verdict == SUPPORTED
    better = _ppxc({"language-specific": lambda r, c: 0.6 if r == c else 0.2, "random": lambda r, c: 0.2})
    claim = own_threshold(better, chance, CONFIG)
    assert claim.verdict == CONTRADICTED and claim.estimate == pytest.approx(0.4)


def _grid(model, task_rows):
    """task_rows: (language, condition) -> list of correct flags."""
    predictions = [{"task": "xnli", "language": language, "condition": condition, "id": f"x{i}", "correct": flag}
                   for (language, condition), flags in task_rows.items() for i, flag in enumerate(flags)]
    return GridResult(model, [], predictions)


def test_intervention_claim_pools_target_languages_and_ignores_the_source_and_random_sets():
    base = [True] * 50 + [False] * 50
    gain = [True] * 70 + [False] * 30  # +20 points: far above 1
    grid = _grid("m", {("fr", "baseline"): base, ("fr", "lape:zero"): gain, ("hi", "baseline"): base,
                       ("hi", "lape:zero"): gain, ("en", "baseline"): base, ("en", "lape:zero"): base,
                       ("fr", "random:zero"): base})
    claim = interventions({"m": grid}, CONFIG)
    assert claim.estimate == pytest.approx(20.0) and claim.n.startswith("200 examples (fr,hi)")
    assert claim.verdict == CONTRADICTED and claim.test == "mcnemar exact"
    same = _grid("m", {("fr", "baseline"): base, ("fr", "lape:zero"): base})
    assert interventions({"m": same}, CONFIG).verdict == SUPPORTED  # exactly 0, interval [0, 0]


def test_neuron_lora_claim_compares_with_random_and_plain_lora_on_the_same_examples():
    base = [True] * 40 + [False] * 60
    grids = {name: _grid(name, {("fr", "baseline"): flags, ("en", "baseline"): [True] * 100})
             for name, flags in (("lape", base), ("random", base), ("plain", base))}
    runs = {"lape": ("xnli", "languages"), "random": ("xnli", "random"), "plain": ("xnli", "none"),
            "all": ("xnli", "all")}
    grids["all"] = _grid("all", {("fr", "baseline"): [True] * 50 + [False] * 50})  # 50% > chance, p < 0.001
    claim = neuron_lora(grids, runs, CONFIG)
    assert claim.estimate == 0.0 and claim.verdict == SUPPORTED
    assert {d.get("reference") for d in claim.details} == {"random", "plain", "all", None}
    assert claim.details[-1]["learned"] and claim.details[-1]["accuracy"] == 50.0
    grids["all"] = _grid("all", {("fr", "baseline"): [True] * 34 + [False] * 66})  # at chance: proves nothing
    assert neuron_lora(grids, runs, CONFIG).verdict == INCONCLUSIVE
    del runs["all"]
    assert neuron_lora(grids, runs, CONFIG).verdict == INCONCLUSIVE  # no capacity control at all
    grids["lape"] = _grid("lape", {("fr", "baseline"): [True] * 80 + [False] * 20})
    assert neuron_lora(grids, runs, CONFIG).verdict == CONTRADICTED


def test_claims_are_written_as_json_csv_and_a_markdown_table(tmp_path):
    neurons = _set({"en": [[0, 1], [3, 1]], "hi": [[0, 2], [3, 2], [3, 3]]})
    claims = [layer_concentration(neurons, CONFIG), script_counts(neurons, CONFIG)]
    paths = write_claims(claims, tmp_path)
    assert sorted(p.name for p in paths) == ["claims.csv", "claims.json", "claims.md"]
    table = claims_markdown(claims)
    assert table.count("\n") == 4 and "Tang et al. 2024" in table and "**supported**" in table
    assert not math.isnan(claims[0].estimate)


LOOP, SENTENCE = "plus plus plus plus plus plus", "Le conseil a voté un nouveau plan hier soir."


def _steering_folder(directory, hits: dict, loops: dict = None, dev_hits: dict = None, test_prompts: int = 12,
                     dev_prompts: int = 4, with_flags: bool = True):
    """steering.json + generations.jsonl of hand-built results: ``hits[(pair, condition)]`` = test prompt
    indices continued in the target language, ``loops[...]`` = those of them that loop (degenerate);
    ``dev_hits`` the same for the dev prompts (indices after the test ones)."""
    import json

    directory.mkdir()
    loops, dev_hits = loops or {}, dev_hits or {}
    rows, lines = [], []
    for pair in ("en>fr", "en>hi"):
        source, target = pair.split(">")
        for condition in ("baseline", "lape:activate:add=4", "random:activate:add=4", "lape:deactivate"):
            for split, chosen, indices in (("test", hits.get((pair, condition), set()), range(test_prompts)),
                                           ("dev", dev_hits.get((pair, condition), set()),
                                            range(test_prompts, test_prompts + dev_prompts))):
                if not indices:
                    continue
                looping = loops.get((pair, condition), set())
                rows.append({"source": source, "target": target, "condition": condition, "split": split,
                             "n": len(indices), "neuron_set": condition.split(":")[0],
                             "target_rate": 100 * len(chosen) / len(indices), "target_ci_low": 0.0,
                             "target_ci_high": 100.0, "fluency_ppl": 10.0})
                for i in indices:
                    record = {"source": source, "target": target, "condition": condition, "prompt_index": i,
                              "split": split, "language": target if i in chosen else source,
                              "continuation": LOOP if i in looping else SENTENCE}
                    if with_flags:
                        record["degenerate"] = i in looping
                    lines.append(json.dumps(record))
    (directory / "steering.json").write_text(json.dumps({"best_condition": "lape:activate:add=4", "rows": rows}))
    (directory / "generations.jsonl").write_text("\n".join(lines) + "\n")


def test_steering_claim_compares_fluent_target_rates_on_test_prompts_only(tmp_path):
    from langneurons.report.claims import steering

    # test prompts (12 per pair, 24 pairs x prompts): the best condition continues 10 of 12 per pair in the
    # target language, 4 of them loops -> 12 fluent (50%), 20 raw (83.3%); its random twin one fluent
    # (en>fr prompt 0, a loop for the best condition); baseline none. Discordant pairs 12 vs 1:
    # McNemar exact p = 2 x P(X >= 12 | 13, 1/2) = 2 x 14 / 2^13.
    best, twin = "lape:activate:add=4", "random:activate:add=4"
    hits = {("en>fr", best): set(range(10)), ("en>hi", best): set(range(10)), ("en>fr", twin): {0}}
    loops = {("en>fr", best): {0, 1, 2, 3}, ("en>hi", best): {0, 1, 2, 3}}
    # the dev prompts say the opposite (the twin always succeeds): a claim that read them would differ
    dev_hits = {(pair, twin): set(range(12, 16)) for pair in ("en>fr", "en>hi")}
    _steering_folder(tmp_path / "steering", hits, loops, dev_hits)
    claim = steering(tmp_path / "steering", ClaimsConfig())
    assert claim.estimate == pytest.approx(100 * (12 - 1) / 24)
    assert claim.p_value == pytest.approx(2 * 14 / 2**13)
    assert claim.ci_low > 0 and claim.verdict == "supported"
    assert "fluent 50.0% vs 4.2% (baseline 0.0%)" in claim.measure
    assert "raw target rates 83.3% vs 4.2% (baseline 0.0%)" in claim.measure
    assert claim.n.startswith("24 test prompts") and "chosen on the dev prompts" in claim.rule
    assert {d["split"] for d in claim.details} == {"test"}
    # results written without degeneration flags: the continuations are tested again, same claim
    _steering_folder(tmp_path / "unflagged", hits, loops, dev_hits, with_flags=False)
    assert steering(tmp_path / "unflagged", ClaimsConfig()).estimate == pytest.approx(claim.estimate)
    # the raw target rate would call a loop-maker a success; the fluent target rate does not
    all_loops = {key: set(range(10)) for key in loops}
    _steering_folder(tmp_path / "loops", hits, all_loops)
    looping = steering(tmp_path / "loops", ClaimsConfig())
    assert looping.estimate == pytest.approx(-100 / 24) and looping.verdict != "supported"
    # no gain over random: the interval straddles 0
    _steering_folder(tmp_path / "flat", {("en>fr", best): {0, 5}, ("en>fr", twin): {1, 6}})
    assert steering(tmp_path / "flat", ClaimsConfig()).verdict == "inconclusive"
    assert steering(tmp_path / "missing", ClaimsConfig()) is None


def test_steering_claim_of_results_without_a_prompt_split_says_the_choice_was_made_on_them(tmp_path):
    import json

    from langneurons.report.claims import steering

    best, twin = "lape:activate:add=4", "random:activate:add=4"
    _steering_folder(tmp_path / "old", {("en>fr", best): set(range(12)), ("en>hi", best): set(range(12))},
                     dev_prompts=0)
    for name in ("steering.json", "generations.jsonl"):  # results written before the split: no split fields
        path = tmp_path / "old" / name
        text = path.read_text()
        path.write_text(text.replace(', "split": "test"', "").replace(', "split": "dev"', ""))
    assert '"split"' not in (tmp_path / "old" / "generations.jsonl").read_text()
    claim = steering(tmp_path / "old", ClaimsConfig())
    assert claim.estimate == pytest.approx(100.0) and "chosen on the same prompts" in claim.rule
    assert json.loads((tmp_path / "old" / "steering.json").read_text())["rows"][0]["n"] == 12
