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
    margin_verdict,
    neuron_lora,
    own_threshold,
    permutation_p_value,
    ppxc_specificity,
    related_languages,
    run_seed,
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


def test_the_margin_rule_supports_no_gain_beyond_the_margin_and_contradicts_a_gain_beyond_it():
    assert margin_verdict(-0.5, 0.9, 1.0) == SUPPORTED
    assert margin_verdict(0.2, 0.9, 1.0) == SUPPORTED  # a significant gain smaller than the margin is no gain
    assert margin_verdict(1.1, 3.0, 1.0) == CONTRADICTED
    assert margin_verdict(0.5, 1.5, 1.0) == INCONCLUSIVE
    assert margin_verdict(0.0, 1.0, 1.0) == INCONCLUSIVE  # the bound must lie strictly below the margin


LEARNED_EN = [True] * 80 + [False] * 20  # 80% on 100 English pairs: Wilson [71.1, 86.7], above 33.3 + 1


def test_intervention_claim_pools_target_languages_and_ignores_the_source_and_random_sets():
    base = [True] * 50 + [False] * 50
    gain = [True] * 70 + [False] * 30  # +20 points: far above 1
    grid = _grid("m", {("fr", "baseline"): base, ("fr", "lape:zero"): gain, ("hi", "baseline"): base,
                       ("hi", "lape:zero"): gain, ("en", "baseline"): LEARNED_EN, ("en", "lape:zero"): base,
                       ("fr", "random:zero"): base})
    claim = interventions({"m": grid}, CONFIG)
    assert claim.estimate == pytest.approx(20.0) and claim.n.startswith("200 examples (fr,hi)")
    assert claim.verdict == CONTRADICTED and claim.test == "mcnemar exact, Tango score CI"
    twin = next(d for d in claim.details if d.get("contrast") == "random twin")
    assert twin["versus"] == "random:zero" and twin["languages"] == "fr" and twin["delta"] == pytest.approx(20.0)
    assert "vs its random twin random:zero: +20.0" in claim.measure
    same = _grid("m", {("fr", "baseline"): base, ("fr", "lape:zero"): base, ("en", "baseline"): LEARNED_EN})
    agreeing = interventions({"m": same}, CONFIG)
    # exactly 0 on 100 pairs that all agree: Tango's interval is +-z^2/(100 + z^2) = +-3.7 points, which
    # does not exclude a 1-point gain (a bootstrap of the differences said [0, 0] and "supported")
    assert agreeing.verdict == INCONCLUSIVE and agreeing.ci_high == pytest.approx(100 * 3.841459 / 103.841459)
    many = [True] * 250 + [False] * 250
    same = _grid("m", {("fr", "baseline"): many, ("fr", "lape:zero"): many, ("en", "baseline"): LEARNED_EN})
    supported = interventions({"m": same}, CONFIG)
    assert supported.verdict == SUPPORTED  # 500 agreeing pairs: +-0.76 points, below the 1-point margin
    assert supported.largest_gain_excluded == pytest.approx(100 * 3.841459 / 503.841459, abs=1e-4)
    assert "m en accuracy 80.0 [71.1, 86.7] (n = 100) above chance + margin (34.3)" in supported.measure


def test_a_gain_shared_by_the_random_twin_does_not_contradict_and_a_model_at_chance_settles_nothing():
    base = [True] * 50 + [False] * 50
    gain = [True] * 70 + [False] * 30
    both = _grid("m", {("fr", "baseline"): base, ("fr", "lape:zero"): gain, ("fr", "random:zero"): gain,
                       ("en", "baseline"): LEARNED_EN})
    assert interventions({"m": both}, CONFIG).verdict == INCONCLUSIVE  # +20 over none, 0 over random
    at_chance = _grid("m", {("fr", "baseline"): base, ("fr", "lape:zero"): base,
                            ("en", "baseline"): [True] * 34 + [False] * 66})
    claim = interventions({"m": at_chance}, CONFIG)
    assert claim.verdict == INCONCLUSIVE and claim.ci_high == pytest.approx(100 * 3.841459 / 103.841459)
    assert "model did not learn the task: m en accuracy 34.0 [" in claim.measure
    assert "not above chance + margin (34.3)" in claim.measure
    english = next(d for d in claim.details if d.get("metric") == "accuracy" and "learned" in d)
    low, high = wilson_interval(34, 100)
    assert (english["ci_low"], english["ci_high"]) == pytest.approx((100 * low, 100 * high))
    no_english = _grid("m", {("fr", "baseline"): base, ("fr", "lape:zero"): base})
    assert interventions({"m": no_english}, CONFIG).verdict == INCONCLUSIVE


def test_the_intervention_claim_is_decided_on_the_reference_model_only():
    base = [True] * 50 + [False] * 50
    zero_shot = _grid("base", {("fr", "baseline"): base, ("fr", "lape:zero"): [True] * 70 + [False] * 30,
                               ("fr", "random:zero"): base, ("en", "baseline"): LEARNED_EN})
    agreeing = [True] * 250 + [False] * 250  # 500 pairs that agree: +-0.76 points, below the margin
    tuned = _grid("ft", {("fr", "baseline"): agreeing, ("fr", "lape:zero"): agreeing, ("en", "baseline"): LEARNED_EN})
    grids = {"base": zero_shot, "ft": tuned}
    assert interventions(grids, CONFIG).verdict == CONTRADICTED  # every model decides by default
    claim = interventions(grids, CONFIG, reference_model="ft")
    assert claim.verdict == SUPPORTED and "on ft," in claim.measure
    assert {d["model"]: d["decisive"] for d in claim.details if "decisive" in d} == {"base": False, "ft": True}


def test_the_power_of_an_intervention_cell_from_its_discordance_rates():
    # fr, 100 pairs: 10 only the intervened model gets right, 5 only the unintervened one (+5 points).
    # p01 = 0.10, p10 = 0.05: n for +-1 point = ceil(1.959964^2 x 0.1475 / 0.01^2) = 5667 > 5010 in XNLI test;
    # now: 1.959964 x sqrt(0.1475 / 100) = 7.527 points.
    reference = [True] * 5 + [False] * 10 + [True] * 40 + [False] * 45
    intervened = [False] * 5 + [True] * 10 + [True] * 40 + [False] * 45
    grid = _grid("ft", {("fr", "baseline"): reference, ("fr", "lape:stat=p90"): intervened,
                        ("en", "baseline"): LEARNED_EN})
    claim = interventions({"ft": grid}, CONFIG)
    assert claim.estimate == pytest.approx(5.0) and claim.verdict == INCONCLUSIVE
    (row,) = claim.power
    assert row["comparison"] == "ft xnli lape:stat=p90 - baseline" and row["decisive"]
    assert (row["p01"], row["p10"]) == pytest.approx((0.10, 0.05))
    assert row["required_n"] == 5667 and row["required_n_per_language"] == 5667
    assert row["achieved_half_width"] == pytest.approx(7.527, abs=1e-3)
    assert row["n"] == 100 and row["available_per_language"] == 5010
    assert not row["reached"] and row["reachable"] is False
    assert claim.largest_gain_excluded == claim.ci_high


def _capacity(details):
    return next(d for d in details if "capacity_control" in d)


def test_neuron_lora_claim_compares_with_random_and_plain_lora_on_the_same_examples():
    base = [True] * 200 + [False] * 300  # 500 pairs on which the three agree: Tango's interval +-0.76 points
    grids = {name: _grid(name, {("fr", "baseline"): flags, ("en", "baseline"): [True] * 100})
             for name, flags in (("lape", base), ("random", base), ("plain", base))}
    runs = {"lape": ("xnli", "languages"), "random": ("xnli", "random"), "plain": ("xnli", "none"),
            "all": ("xnli", "all")}
    grids["all"] = _grid("all", {("fr", "baseline"): [True] * 250 + [False] * 250})  # 50% > chance, p < 0.001
    claim = neuron_lora(grids, runs, CONFIG)
    assert claim.estimate == 0.0 and claim.verdict == SUPPORTED
    assert claim.largest_gain_excluded == pytest.approx(100 * 3.841459 / 503.841459, abs=1e-4)
    assert {d.get("reference") for d in claim.details} == {"random", "plain", "all", None}
    assert _capacity(claim.details)["learned"] and _capacity(claim.details)["accuracy"] == 50.0
    assert {row["contrast"] for row in claim.power} == {"random", "none", "all"}
    grids["all"] = _grid("all", {("fr", "baseline"): [True] * 170 + [False] * 330})  # at chance: proves nothing
    assert neuron_lora(grids, runs, CONFIG).verdict == INCONCLUSIVE
    del runs["all"]
    assert neuron_lora(grids, runs, CONFIG).verdict == INCONCLUSIVE  # no capacity control at all
    grids["lape"] = _grid("lape", {("fr", "baseline"): [True] * 400 + [False] * 100})
    assert neuron_lora(grids, runs, CONFIG).verdict == CONTRADICTED


def test_a_significant_neuron_lora_gain_below_the_margin_supports_the_claim():
    # 4000 fr pairs, LAPE LoRA right on 20 more: +0.5 points, interval about [+0.3, +0.7]: above 0, below +1
    base = [True] * 1600 + [False] * 2400
    better = [True] * 1620 + [False] * 2380
    grids = {name: _grid(name, {("fr", "baseline"): flags, ("en", "baseline"): LEARNED_EN}) for name, flags in
             (("lape", better), ("random", base), ("plain", base), ("all", [True] * 2000 + [False] * 2000))}
    runs = {"lape": ("xnli", "languages"), "random": ("xnli", "random"), "plain": ("xnli", "none"),
            "all": ("xnli", "all")}
    claim = neuron_lora(grids, runs, CONFIG)
    assert claim.estimate == pytest.approx(0.5) and 0 < claim.ci_low and claim.ci_high < 1.0
    assert claim.verdict == SUPPORTED and claim.p_value < 0.05
    # the same null result from a neuron-LoRA model at chance in English settles nothing
    grids["lape"] = _grid("lape", {("fr", "baseline"): better, ("en", "baseline"): [True] * 34 + [False] * 66})
    claim = neuron_lora(grids, runs, CONFIG)
    assert claim.verdict == INCONCLUSIVE and "model did not learn the task: lape en accuracy 34.0" in claim.measure
    # ... and its learning rate at a grid edge does not hide that: not learning is the more basic reason
    claim = neuron_lora(grids, runs, CONFIG, edges={"lape": "largest"})
    assert claim.verdict == INCONCLUSIVE and "model did not learn the task: lape en accuracy 34.0" in claim.measure
    assert "a better one may lie beyond: lape (largest)" in claim.measure


def test_neuron_lora_seeds_are_pooled_paired_by_seed_and_their_spread_is_reported():
    # seed s: LAPE LoRA right on 40 + 10 s of 100 fr pairs, random LoRA of the same seed on 40:
    # per-seed differences 0, +10, +20; pooled over the 300 (seed, example) pairs: +10
    base = [True] * 40 + [False] * 60
    grids, runs = {}, {}
    for seed in range(3):
        for name, flags, mode in ((f"xnli-lape@{seed}", [True] * (40 + 10 * seed) + [False] * (60 - 10 * seed),
                                   "languages"), (f"xnli-random@{seed}", base, "random")):
            grids[name] = _grid(name, {("fr", "baseline"): flags, ("en", "baseline"): LEARNED_EN})
            runs[name] = ("xnli", mode)
    grids["plain"] = _grid("plain", {("fr", "baseline"): base})  # one plain-LoRA run serves every seed
    runs["plain"] = ("xnli", "none")
    claim = neuron_lora(grids, runs, CONFIG)
    assert claim.estimate == pytest.approx(10.0) and claim.n.startswith("300 examples (fr)")
    assert "xnli-lape minus xnli-random" in claim.measure and "3 seeds pooled" in claim.measure
    assert "seeds 0,1,2: per seed +0.0 to +20.0" in claim.measure
    plain = next(d for d in claim.details if d.get("reference_mode") == "none")
    assert plain["reference"] == "plain" and plain["n"] == 300 and plain["delta"] == pytest.approx(10.0)
    assert plain["seed_deltas"] == pytest.approx([0.0, 10.0, 20.0])
    # the same runs under other names, their seeds given by the runner
    renamed = {f"run{i}": grids[name] for i, name in enumerate(sorted(runs))}
    names = dict(zip(sorted(runs), renamed))
    seeds = {names[n]: run_seed(n) for n in runs if "@" in n}
    again = neuron_lora(renamed, {names[n]: runs[n] for n in runs}, CONFIG, seeds=seeds)
    assert again.estimate == pytest.approx(10.0) and "per seed +0.0 to +20.0" in again.measure
    assert run_seed("xnli-lape@2") == ("xnli-lape", 2) and run_seed("a@b") == ("a@b", None)


def test_claims_are_written_as_json_csv_and_a_markdown_table(tmp_path):
    neurons = _set({"en": [[0, 1], [3, 1]], "hi": [[0, 2], [3, 2], [3, 3]]})
    claims = [layer_concentration(neurons, CONFIG), script_counts(neurons, CONFIG)]
    paths = write_claims(claims, tmp_path)
    assert sorted(p.name for p in paths) == ["claims.csv", "claims.json", "claims.md", "power.csv", "power.json"]
    table = claims_markdown(claims)
    assert table.count("\n") == 4 and "Tang et al. 2024" in table and "**supported**" in table
    assert "| largest gain excluded |" in table and f"| {claims[0].ci_high:+.1f} % |" in table
    assert claims[0].largest_gain_excluded == claims[0].ci_high and claims[1].largest_gain_excluded is None
    header = (tmp_path / "claims.csv").read_text().splitlines()[0]
    assert header.split(",")[7] == "largest_gain_excluded"
    assert (tmp_path / "power.json").read_text().strip() == "[]"
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
    assert claim.ci_low > 0 and claim.verdict == "supported" and claim.units == 24
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
    # 8 (pair, prompt) units: too few for the bootstrap interval; no p-value, no verdict
    _steering_folder(tmp_path / "few", {("en>fr", best): {0, 1, 2, 3}, ("en>hi", best): {0, 1, 2, 3}},
                     test_prompts=4)
    few = steering(tmp_path / "few", ClaimsConfig())
    assert (few.ci_low, few.ci_high, few.p_value, few.verdict) == (None, None, None, TOO_FEW_UNITS)
    # no gain over random: the interval straddles 0
    _steering_folder(tmp_path / "flat", {("en>fr", best): {0, 5}, ("en>fr", twin): {1, 6}})
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


# ---------------------------------------------------------------------------------- subnetwork enhancement

# per target, summed NLL (nats) of four held-out units; tokens hi [10, 20, 30, 40], ur [10] x 4
# NLL/token:       hi: untuned 3.0, LAPE rows 2.5, random rows 2.8, LoRA 2.7
#                  ur: untuned 4.0, LAPE rows 3.5, random rows 3.8, LoRA 3.8
# LAPE-rows advantage (comparator - LAPE rows), mean of hi and ur: random 0.3, LoRA (0.2 + 0.3) / 2 = 0.25
SUBNETWORK = {
    "hi": {"tokens": [10, 20, 30, 40], "baseline": [30, 60, 90, 120], "lape-rows": [20, 50, 80, 100],
           "random-rows": [28, 56, 84, 112], "lora": [27, 54, 81, 108]},
    "ur": {"tokens": [10, 10, 10, 10], "baseline": [40, 40, 40, 40], "lape-rows": [30, 34, 36, 40],
           "random-rows": [36, 38, 38, 40], "lora": [38, 38, 38, 38]},
}


def _perplexity_files(directory, table=SUBNETWORK, parameters=None, repeat=5):
    """The table's four units per language, repeated ``repeat`` times (doc0..doc19: 20 units, the
    fewest an interval needs; every rate is unchanged)."""
    from langneurons.report.claims import PerplexityUnits

    parameters = parameters or {"lape-rows": 1000, "random-rows": 1000, "lora": 1008}
    languages = sorted(table)

    def units(language, role):
        column = table[language]
        return [{"id": f"doc{i}", "nll": float(nll), "tokens": tokens}
                for i, (nll, tokens) in enumerate(zip(column[role] * repeat, column["tokens"] * repeat))]

    files = [PerplexityUnits("base", "baseline", None, None, {l: units(l, "baseline") for l in languages})]
    files += [PerplexityUnits(f"{l}-{role}", role, l, parameters[role], {l: units(l, role)})
              for l in languages for role in ("lape-rows", "random-rows", "lora")]
    for entry in files:
        entry.write(directory / "lm_eval_ppl" / entry.model / "perplexity.json")


def test_subnetwork_claim_reads_per_unit_nll_files_and_pools_the_target_languages(tmp_path):
    import json

    from langneurons.report.claims import evaluate_claims, load_perplexities

    _perplexity_files(tmp_path)
    data = json.loads((tmp_path / "lm_eval_ppl" / "hi-lape-rows" / "perplexity.json").read_text())
    assert data["format"] == "langneurons.perplexity/1" and data["target_language"] == "hi"
    assert data["languages"]["hi"][1] == {"id": "doc1", "nll": 50.0, "tokens": 20}
    # zero-shot XNLI (context, not the verdict): on hi, LAPE rows 26/60 vs untuned 20/60 -> +10 points
    _grid("base", {("hi", "baseline"): [True] * 20 + [False] * 40}).write(tmp_path / "evaluate" / "base")
    _grid("hi-lape-rows", {("hi", "baseline"): [True] * 26 + [False] * 34}).write(
        tmp_path / "evaluate" / "hi-lape-rows")
    (claim,) = [c for c in evaluate_claims(tmp_path, CONFIG) if c.id == "subnetwork"]
    assert claim.estimate == pytest.approx(0.3)
    lora = next(d for d in claim.details if d.get("comparison") == "lora - lape-rows")
    assert lora["estimate"] == pytest.approx(0.25) and lora["per_language"] == pytest.approx({"hi": 0.2, "ur": 0.3})
    gain = next(d for d in claim.details if d.get("comparison") == "untuned - lape-rows")
    assert gain["estimate"] == pytest.approx(0.5)
    assert claim.ci_low > CONFIG.practical_nats and lora["ci_low"] > CONFIG.practical_nats
    assert claim.verdict == SUPPORTED and claim.largest_gain_excluded == min(claim.ci_high, lora["ci_high"])
    assert claim.n == "2 languages x 40 held-out units (700 tokens)" and "(unequal)" not in claim.measure
    xnli = next(d for d in claim.details if d.get("kind") == "zero-shot xnli")
    assert xnli["role"] == "lape-rows" and xnli["delta"] == pytest.approx(10.0) and xnli["n"] == 60
    assert "zero-shot XNLI minus the untuned model: lape-rows +10.0" in claim.measure
    assert set(load_perplexities(tmp_path / "lm_eval_ppl")) == {"base"} | {
        f"{l}-{r}" for l in ("hi", "ur") for r in ("lape-rows", "random-rows", "lora")}


def test_subnetwork_claim_is_contradicted_only_when_the_lape_rows_learned(tmp_path):
    from langneurons.report.claims import load_perplexities, subnetwork_enhancement

    same = {l: dict(columns, **{"random-rows": columns["lape-rows"]}) for l, columns in SUBNETWORK.items()}
    _perplexity_files(tmp_path / "same", same)
    claim = subnetwork_enhancement(load_perplexities(tmp_path / "same" / "lm_eval_ppl"), CONFIG)
    assert (claim.estimate, claim.ci_low, claim.ci_high) == (0.0, 0.0, 0.0)
    assert claim.verdict == CONTRADICTED  # LAPE rows learned (0.5 nats/token) but no better than random rows
    untrained = {l: dict(columns, **{"lape-rows": columns["baseline"], "random-rows": columns["baseline"]})
                 for l, columns in SUBNETWORK.items()}
    _perplexity_files(tmp_path / "flat", untrained, {"lape-rows": 1000, "random-rows": 1000, "lora": 5000})
    claim = subnetwork_enhancement(load_perplexities(tmp_path / "flat" / "lm_eval_ppl"), CONFIG)
    assert claim.verdict == INCONCLUSIVE and claim.measure.startswith("LAPE rows did not learn")
    assert "(unequal)" in claim.measure


def test_perplexity_files_are_checked(tmp_path):
    import json

    from langneurons.errors import LangNeuronsError
    from langneurons.report.claims import PerplexityUnits, load_perplexities, subnetwork_enhancement

    good = {"format": "langneurons.perplexity/1", "model": "m", "role": "lora", "target_language": "hi",
            "trainable_parameters": 8, "languages": {"hi": [{"id": "d0", "nll": 3.5, "tokens": 2}]}}
    assert PerplexityUnits.from_dict(good).languages["hi"][0]["nll"] == 3.5
    for broken in ({"role": "full"}, {"target_language": None}, {"format": "other"},
                   {"languages": {"hi": [{"id": "d0", "nll": 3.5, "tokens": 0}]}},
                   {"languages": {"hi": [{"id": "d0", "nll": 1.0, "tokens": 1}] * 2}}):
        with pytest.raises(LangNeuronsError):
            PerplexityUnits.from_dict({**good, **broken})
    _perplexity_files(tmp_path)
    path = tmp_path / "lm_eval_ppl" / "hi-lora" / "perplexity.json"
    data = json.loads(path.read_text())
    data["languages"]["hi"] = data["languages"]["hi"][:3]  # one unit missing: cannot pair
    path.write_text(json.dumps(data))
    with pytest.raises(LangNeuronsError, match="same held-out units"):
        subnetwork_enhancement(load_perplexities(tmp_path / "lm_eval_ppl"), CONFIG)
    assert load_perplexities(tmp_path / "nothing") == {}


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


def test_subnetwork_claim_on_too_few_units_has_no_interval_and_no_verdict(tmp_path):
    from langneurons.report.claims import load_perplexities, subnetwork_enhancement

    _perplexity_files(tmp_path, repeat=1)  # four units per language
    claim = subnetwork_enhancement(load_perplexities(tmp_path / "lm_eval_ppl"), CONFIG)
    assert claim.estimate == pytest.approx(0.3) and claim.units == 4
    assert (claim.ci_low, claim.ci_high, claim.p_value, claim.verdict) == (None, None, None, TOO_FEW_UNITS)
    assert claim.largest_gain_excluded is None and "n/a (4 units < 20)" in claim.measure


def test_runs_whose_learning_rate_lies_at_the_edge_of_the_search_grid_are_named_and_cannot_lose_a_verdict(tmp_path):
    import json

    from langneurons.report.claims import (AT_GRID_EDGE, evaluate_claims, learning_rate_edges, load_perplexities,
                                           subnetwork_enhancement)

    def finetune_record(name, rate, candidates=(1e-4, 3e-4, 1e-3)):
        folder = tmp_path / "finetune" / name
        folder.mkdir(parents=True)
        search = {"candidates": list(candidates), "chosen": rate, "dev_scores": [1.0] * len(candidates), "steps": 20}
        (folder / "langneurons_finetune.json").write_text(json.dumps({"config": {"learning_rate": rate},
                                                                      "lr_search": search}))

    finetune_record("hi-lape-rows", 1e-4)
    finetune_record("hi-random-rows", 1e-3)
    finetune_record("hi-lora", 3e-4)
    finetune_record("ur-lape-rows", 1e-3, candidates=(1e-3,))  # one candidate: no grid, no edge
    assert learning_rate_edges(tmp_path) == {"hi-lape-rows": "smallest", "hi-random-rows": "largest"}
    _perplexity_files(tmp_path)
    # LAPE rows beat both comparators (SUBNETWORK), but random rows, the losing arm, chose its grid's largest rate
    (claim,) = [c for c in evaluate_claims(tmp_path, CONFIG) if c.id == "subnetwork"]
    assert claim.verdict == AT_GRID_EDGE
    assert "; learning rate at its grid's edge, a better one may lie beyond: hi-lape-rows (smallest), " \
           "hi-random-rows (largest); not called supported: the losing arm's learning rate lies at its grid's edge " \
           "(hi-random-rows (largest))" in claim.measure
    perplexities = load_perplexities(tmp_path / "lm_eval_ppl")
    assert subnetwork_enhancement(perplexities, CONFIG, edges={"hi-lape-rows": "smallest"}).verdict == SUPPORTED
    worse = {l: dict(columns, **{"lape-rows": columns["random-rows"], "random-rows": columns["lape-rows"]})
             for l, columns in SUBNETWORK.items()}  # now random rows beat the LAPE rows
    _perplexity_files(tmp_path / "worse", worse)
    swapped = load_perplexities(tmp_path / "worse" / "lm_eval_ppl")
    assert subnetwork_enhancement(swapped, CONFIG, edges={"hi-random-rows": "largest"}).verdict == CONTRADICTED
    assert subnetwork_enhancement(swapped, CONFIG, edges={"ur-lape-rows": "smallest"}).verdict == AT_GRID_EDGE
    # neuron LoRA: a null result needs a neuron-LoRA arm tuned inside its grid; a gain, references tuned inside theirs
    base = [True] * 200 + [False] * 300
    grids = {name: _grid(name, {("fr", "baseline"): base, ("en", "baseline"): [True] * 100})
             for name in ("lape", "random", "other", "all")}
    grids["all"] = _grid("all", {("fr", "baseline"): [True] * 250 + [False] * 250})
    runs = {"lape": ("xnli", "languages"), "random": ("xnli", "random"), "other": ("xnli", "none"),
            "all": ("xnli", "all")}
    assert "grid's edge" not in neuron_lora(grids, runs, CONFIG).measure
    claim = neuron_lora(grids, runs, CONFIG, edges={"random": "largest", "other": "smallest"})
    assert claim.verdict == SUPPORTED and claim.measure.endswith(
        "; learning rate at its grid's edge, a better one may lie beyond: other (smallest), random (largest)")
    assert neuron_lora(grids, runs, CONFIG, edges={"lape": "smallest"}).verdict == AT_GRID_EDGE
    grids["lape"] = _grid("lape", {("fr", "baseline"): [True] * 400 + [False] * 100, ("en", "baseline"): [True] * 100})
    assert neuron_lora(grids, runs, CONFIG, edges={"lape": "smallest"}).verdict == CONTRADICTED
    assert neuron_lora(grids, runs, CONFIG, edges={"random": "largest"}).verdict == AT_GRID_EDGE
