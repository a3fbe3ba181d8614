"""The two direction claims (issue 19) against hand-built steering results and PPXC matrices."""

import json

import pytest

from langneurons.intervene import PerplexityResult, PPXCResult
from langneurons.report.claims import (
    CONTRADICTED,
    INCONCLUSIVE,
    SUPPORTED,
    ClaimsConfig,
    direction_ppxc_specificity,
    direction_steering,
    evaluate_claims,
)

CONFIG = ClaimsConfig(bootstrap_resamples=300)
NEURON, NEURON_TWIN = "lape:activate:add=4", "random:activate:add=4"
DIRECTION, DIRECTION_TWIN = "diffmean:add=4@6", "random-dir:add=4@6"
SENTENCE = "Le chat dort sur le tapis depuis ce matin."
LOOP = "plus plus plus plus plus plus plus plus"


def _folder(directory, hits: dict, loops: dict | None = None, prompts: int = 12, bests=None):
    """steering.json + generations.jsonl: ``hits[condition]`` = test prompt indices (per pair, both
    pairs alike) continued in the target language, ``loops[condition]`` those of them that loop. The
    dev rows exist (one dev prompt per pair, no hit) so the choice is a dev choice."""
    directory.mkdir()
    loops = loops or {}
    twins = {NEURON: NEURON_TWIN, DIRECTION: DIRECTION_TWIN}
    rows, lines = [], []
    for pair in ("en>fr", "en>hi"):
        source, target = pair.split(">")
        for condition in ("baseline", NEURON, NEURON_TWIN, DIRECTION, DIRECTION_TWIN):
            for split, indices in (("test", range(prompts)), ("dev", [prompts])):
                chosen = hits.get(condition, set()) if split == "test" else set()
                rows.append({"source": source, "target": target, "condition": condition, "split": split,
                             "n": len(indices), "random_twin": twins.get(condition),
                             "target_rate": 100 * len(chosen) / len(indices), "fluent_target_rate": 0.0,
                             "fluency_ppl": 10.0})
                for i in indices:
                    lines.append(json.dumps({"source": source, "target": target, "condition": condition,
                                             "prompt_index": i, "split": split,
                                             "language": target if i in chosen else source,
                                             "continuation": LOOP if i in loops.get(condition, ()) else SENTENCE,
                                             "degenerate": i in loops.get(condition, ())}))
    bests = bests if bests is not None else {"neurons": NEURON, "directions": DIRECTION}
    (directory / "steering.json").write_text(json.dumps({"best_condition": NEURON, "best_conditions": bests,
                                                         "rows": rows}))
    (directory / "generations.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def test_directions_at_least_as_good_as_neurons_on_the_test_prompts(tmp_path):
    # per pair 12 test prompts (24 units). Neurons: fluent on prompts 0-5 (12/24 = 50%). Direction: target
    # language on all 12, loops on 10 and 11 -> fluent on 0-9 (20/24 = 83.3%), raw 100%. Discordant pairs:
    # direction-only 6-9 (8 units), neuron-only none: McNemar exact p = 2 x (1/2)^8; no unit is a loss.
    hits = {NEURON: set(range(6)), DIRECTION: set(range(12)), NEURON_TWIN: {0}}  # twin: 2/24 = 8.3%
    claim = direction_steering(_folder(tmp_path / "better", hits, {DIRECTION: {10, 11}}), CONFIG)
    assert claim.id == "steering-directions" and claim.units == 24
    assert claim.estimate == pytest.approx(100 * (20 - 12) / 24)
    assert claim.p_value == pytest.approx(2 / 2**8)
    assert claim.ci_low > -5 and claim.verdict == SUPPORTED
    assert f"best direction condition {DIRECTION}" in claim.measure and f"neuron condition {NEURON}" in claim.measure
    assert claim.ci_low >= 0.0
    assert "fluent 83.3% vs 50.0% (baseline 0.0%)" in claim.measure
    assert "raw target rates 100.0% vs 50.0%" in claim.measure
    # the twins are the ones the rows name, with their own rates
    assert f"random twin {DIRECTION_TWIN}: fluent 0.0%" in claim.measure
    assert f"random twin {NEURON_TWIN}: fluent 8.3%" in claim.measure
    assert "combined scores" in claim.measure and "5 points" in claim.rule and "dev prompts" in claim.rule
    assert {d["split"] for d in claim.details} == {"test"}
    assert {d["random_twin"] for d in claim.details if d["condition"] == DIRECTION} == {DIRECTION_TWIN}


def test_the_margin_decides_equal_small_loss_and_large_loss(tmp_path):
    same = direction_steering(_folder(tmp_path / "same", {NEURON: set(range(6)), DIRECTION: set(range(6))}), CONFIG)
    # 24 units that all agree: Tango's interval is +-100 z^2 / (24 + z^2) = +-13.8 points, not [0, 0]: it
    # does not exclude a 5-point loss, so a tie on 24 prompts settles nothing; a 25-point margin it does
    assert same.estimate == 0.0 and same.ci_high == pytest.approx(-same.ci_low)
    assert same.ci_high == pytest.approx(100 * 3.841459 / 27.841459) and same.verdict == INCONCLUSIVE
    wide = ClaimsConfig(bootstrap_resamples=300, steering_margin=25.0)
    assert direction_steering(tmp_path / "same", wide).verdict == SUPPORTED
    # two units of 24 lost: -8.3 points, the interval reaches below -5 and above it: inconclusive
    small = direction_steering(_folder(tmp_path / "small", {NEURON: set(range(6)), DIRECTION: set(range(5))}),
                               CONFIG)
    assert small.estimate == pytest.approx(-100 * 2 / 24)
    assert small.ci_low < -5 < small.ci_high and small.verdict == INCONCLUSIVE
    # a wider margin accepts that loss (Tango's interval of 2 lost of 24: [-25.8, +6.6] points)
    assert direction_steering(tmp_path / "small", ClaimsConfig(bootstrap_resamples=300,
                                                               steering_margin=30.0)).verdict == SUPPORTED
    large = direction_steering(_folder(tmp_path / "large", {NEURON: set(range(10))}), CONFIG)
    assert large.estimate == pytest.approx(-100 * 20 / 24) and large.ci_high < -5 and large.verdict == CONTRADICTED


def test_no_direction_or_no_neuron_condition_no_claim(tmp_path):
    assert direction_steering(_folder(tmp_path / "a", {}, bests={"neurons": NEURON, "directions": None}),
                              CONFIG) is None
    assert direction_steering(tmp_path / "missing", CONFIG) is None


def _cell(base, shift):
    tokens = [10] * len(base)
    return PerplexityResult.from_sum(sum(10 * (b + shift) for b in base), sum(tokens),
                                     [10 * (b + shift) for b in base], tokens)


def _ppxc(shifts: dict, method: str, languages=("en", "fr", "es"), blocks=20, config=None):
    base = {l: ([1.0 + 0.5 * i, 2.0, 0.5, 1.5] * blocks)[:blocks] for i, l in enumerate(languages)}
    intervened = {name: {r: {c: _cell(base[c], shift(r, c)) for c in languages} for r in languages}
                  for name, shift in shifts.items()}
    counts = {name: {l: 2 for l in languages} for name in shifts}
    return PPXCResult(list(languages), {l: _cell(base[l], 0.0) for l in languages}, intervened, counts,
                      {"model_id": "m"}, method, "ablate", config=config or {}, resampling=(300, 0.95, 0))


def test_directional_ppxc_specificity_beats_random_directions_with_the_neuron_claim_beside():
    directions = _ppxc({"language-specific": lambda r, c: 1.0 if r == c else 0.2, "random": lambda r, c: 0.1},
                       "diffmean", config={"layers": [4, 5]})
    neurons = _ppxc({"language-specific": lambda r, c: 0.5 if r == c else 0.0, "random": lambda r, c: 0.0}, "lape")
    claim = direction_ppxc_specificity(directions, neurons, CONFIG)
    assert claim.id == "direction-ppxc" and claim.verdict == SUPPORTED
    assert claim.estimate == pytest.approx(0.8) and (claim.ci_low, claim.ci_high) == pytest.approx((0.8, 0.8))
    assert "diffmean direction removed at layers [4, 5]" in claim.measure
    assert "direction +0.800" in claim.measure and "random direction of the same norm +0.000" in claim.measure
    assert "3/3 languages individually > 0" in claim.measure
    assert "zeroing neurons (lape): specificity +0.500, minus random +0.500 [+0.500, +0.500] (supported)" in claim.measure
    assert "direction − random" in claim.rule
    # random directions hurt the own language more than the language's direction: contradicted
    flat = _ppxc({"language-specific": lambda r, c: 0.3, "random": lambda r, c: 0.1 if r == c else 0.0}, "diffmean")
    flat_claim = direction_ppxc_specificity(flat, None, CONFIG)
    assert flat_claim.verdict == CONTRADICTED and "no neuron PPXC in this run" in flat_claim.measure
    without_random = _ppxc({"language-specific": lambda r, c: 1.0}, "diffmean")
    assert direction_ppxc_specificity(without_random, neurons, CONFIG) is None
    erased = _ppxc({"language-specific": lambda r, c: 1.0 if r == c else 0.2, "random": lambda r, c: 0.1},
                   "diffmean", config={"layers": [4, 5], "action": "erase (leace)"})
    assert "diffmean direction erased (LEACE, diagonal covariance) at layers [4, 5]" in \
        direction_ppxc_specificity(erased, neurons, CONFIG).measure


def test_evaluate_claims_reads_the_direction_ppxc_and_steering_folders(tmp_path):
    from langneurons.intervene.ppxc import write_ppxc

    directions = _ppxc({"language-specific": lambda r, c: 1.0 if r == c else 0.2, "random": lambda r, c: 0.1},
                       "diffmean")
    write_ppxc(directions, tmp_path / "direction_ppxc" / "diffmean")
    _folder(tmp_path / "steering", {NEURON: set(range(6)), DIRECTION: set(range(6))})
    claims = {c.id: c for c in evaluate_claims(tmp_path, ClaimsConfig(bootstrap_resamples=300, steering_margin=25.0))}
    assert claims["direction-ppxc"].verdict == SUPPORTED
    assert claims["steering-directions"].verdict == SUPPORTED  # a tie on 24 prompts, within a 25-point margin
    # the neuron steering claim compares the neuron best (not the run's direction best) with its named twin
    assert NEURON in claims["steering"].measure and claims["steering"].estimate == pytest.approx(50.0)
