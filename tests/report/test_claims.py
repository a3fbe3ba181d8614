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
    TOO_FEW_UNITS,
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


def _ppxc(shifts: dict, languages=("en", "fr", "es"), blocks=20):
    """Intervened NLL = baseline + shifts[set](row, col) in every one of ``blocks`` blocks (a point
    interval; 20 blocks: just enough units for one)."""
    base = {l: ([1.0 + 0.5 * i, 2.0, 0.5, 1.5] * blocks)[:blocks] for i, l in enumerate(languages)}
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


def _steering_folder(directory, hits: dict, prompts: int = 12):
    """steering.json + generations.jsonl: ``hits[condition]`` = prompt indices continued in the target."""
    import json

    directory.mkdir()
    rows, lines = [], []
    for pair in ("en>fr", "en>hi"):
        source, target = pair.split(">")
        for condition in ("baseline", "lape:activate:add=4", "random:activate:add=4", "lape:deactivate"):
            chosen = hits.get((pair, condition), set())
            rows.append({"source": source, "target": target, "condition": condition, "n": prompts,
                         "neuron_set": condition.split(":")[0], "target_rate": 100.0 * len(chosen) / prompts,
                         "target_ci_low": 0.0, "target_ci_high": 100.0, "fluency_ppl": 10.0})
            lines += [json.dumps({"source": source, "target": target, "condition": condition, "prompt_index": i,
                                  "language": target if i in chosen else source}) for i in range(prompts)]
    (directory / "steering.json").write_text(json.dumps({"best_condition": "lape:activate:add=4", "rows": rows}))
    (directory / "generations.jsonl").write_text("\n".join(lines) + "\n")


def test_steering_claim_pairs_the_best_condition_with_its_random_twin_on_the_same_prompts(tmp_path):
    from langneurons.report.claims import steering

    # best condition: 18 of 24 prompts in the target; its random twin: 1 (prompt 0 of en>fr, also a hit
    # of the best); baseline none. Discordant pairs 17 vs 0: McNemar exact p = 2 x 0.5^17.
    _steering_folder(tmp_path / "steering", {("en>fr", "lape:activate:add=4"): set(range(9)),
                                             ("en>hi", "lape:activate:add=4"): set(range(1, 10)),
                                             ("en>fr", "random:activate:add=4"): {0},
                                             ("en>hi", "lape:deactivate"): set(range(12))})
    claim = steering(tmp_path / "steering", ClaimsConfig())
    assert claim.estimate == pytest.approx(100 * (18 - 1) / 24)
    assert claim.p_value == pytest.approx(2 * 0.5**17)
    assert claim.ci_low > 0 and claim.verdict == "supported" and claim.units == 24
    assert "75.0% vs 4.2% (baseline 0.0%)" in claim.measure and claim.n.startswith("24 prompts")
    # 8 (pair, prompt) units: too few for the bootstrap interval; no p-value, no verdict
    _steering_folder(tmp_path / "few", {("en>fr", "lape:activate:add=4"): {0, 1, 2, 3},
                                        ("en>hi", "lape:activate:add=4"): {0, 1, 2, 3}}, prompts=4)
    few = steering(tmp_path / "few", ClaimsConfig())
    assert (few.ci_low, few.ci_high, few.p_value, few.verdict) == (None, None, None, TOO_FEW_UNITS)
    # no gain over random: the interval straddles 0
    _steering_folder(tmp_path / "flat", {("en>fr", "lape:activate:add=4"): {0},
                                         ("en>fr", "random:activate:add=4"): {1}})
    assert steering(tmp_path / "flat", ClaimsConfig()).verdict == "inconclusive"
    assert steering(tmp_path / "missing", ClaimsConfig()) is None


# ------------------------------------------------------------------ too few resampling units


def test_one_held_out_unit_gives_no_interval_no_p_value_and_no_verdict(tmp_path):
    """The demo's old case: one block per language, a zero-width interval that said "supported, p < 0.001"."""
    shifts = {"language-specific": lambda r, c: 1.0 if r == c else 0.2, "random": lambda r, c: 0.1}
    languages = ("fr", "es", "hi", "zh")
    result = _ppxc(shifts, languages, blocks=1)
    neurons = _set({"fr": [[0, 1], [0, 2]], "es": [[0, 1], [0, 3]], "hi": [[1, 1]], "zh": [[2, 1]]})
    claims = [ppxc_specificity(result, CONFIG), related_languages(result, neurons, CONFIG),
              own_threshold(result, result, CONFIG)]
    for claim in claims:
        assert claim.verdict == TOO_FEW_UNITS == "inconclusive (too few units)"
        assert (claim.ci_low, claim.ci_high, claim.p_value, claim.units) == (None, None, None, 1)
        assert "n/a (1 units < 20)" in claim.n
    assert claims[0].estimate == pytest.approx(0.8)  # the point estimate is still reported
    assert "n/a (1 units < 20)" in claims[0].measure  # LAPE specificity's own interval too
    table = claims_markdown(claims)
    assert table.count("[n/a (1 units < 20)]") == 3 and "< 0.001" not in table
    assert "**supported**" not in table and "**contradicted**" not in table
    # 19 blocks: still too few; 20: an interval and a verdict
    assert ppxc_specificity(_ppxc(shifts, languages, blocks=19), CONFIG).verdict == TOO_FEW_UNITS
    assert ppxc_specificity(_ppxc(shifts, languages, blocks=20), CONFIG).verdict == SUPPORTED


def test_evaluation_claims_on_too_few_examples_are_inconclusive():
    base, gain = [True] * 5 + [False] * 5, [True] * 10  # 10 examples
    grid = _grid("m", {("fr", "baseline"): base, ("fr", "lape:zero"): gain})
    claim = interventions({"m": grid}, CONFIG)
    assert claim.estimate == pytest.approx(50.0)
    assert (claim.ci_low, claim.p_value, claim.verdict) == (None, None, TOO_FEW_UNITS)
    grids = {name: _grid(name, {("fr", "baseline"): base}) for name in ("lape", "random", "plain")}
    runs = {"lape": ("xnli", "languages"), "random": ("xnli", "random"), "plain": ("xnli", "none")}
    assert neuron_lora(grids, runs, CONFIG).verdict == TOO_FEW_UNITS
