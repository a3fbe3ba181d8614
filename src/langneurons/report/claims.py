"""The literature's claims about language neurons, each tested on a run's own artefacts.

:func:`evaluate_claims` reads a run directory (neuron sets, PPXC results with their per-block
NLLs, per-example evaluation records) and returns one :class:`ClaimResult` per claim whose
artefacts the run has: what was measured (estimate, 95 % interval, n), the test, its p-value and
a verdict decided by the rule stated with the claim (thresholds from :class:`ClaimsConfig`):

* ``supported`` / ``contradicted`` -- the interval (or test) settles the claim at ``alpha``;
* ``inconclusive`` -- it does not, at this sample size;
* ``inconclusive (too few units)`` -- a bootstrap interval would rest on fewer than
  :data:`~langneurons.evaluate.metrics.MIN_RESAMPLING_UNITS` (20) resampling units (held-out
  documents per language, examples): no interval and no p-value are given, and no verdict.

Pooling: where a per-language test is underpowered the claim pools the languages (the
per-example differences of all target languages together, paired by example; or the mean over
languages of a PPXC statistic, bootstrapped over every language's held-out blocks at once). The
per-language numbers are in ``details``.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from langneurons.errors import LangNeuronsError
from langneurons.languages import flores_code

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
TOO_FEW_UNITS = "inconclusive (too few units)"  # = langneurons.evaluate.metrics.TOO_FEW_UNITS


@dataclass(frozen=True)
class ClaimsConfig:
    """Thresholds and choices of :func:`evaluate_claims`.

    alpha: significance level (intervals are 1 - alpha). practical_points: the largest gain (points)
    that counts as "no gain" (Mondal et al.: 1 point). outer_fraction: the first and the last this
    fraction of layers are "outer". related_pairs: language pairs expected to share neurons.
    lape_set / own_set / pooled_set: the run's neuron-set names for LAPE and act-prob with the
    ``own`` and ``pooled`` thresholds. source_language: the fine-tuning language (not a target).
    """

    alpha: float = 0.05
    practical_points: float = 1.0
    outer_fraction: float = 0.25
    related_pairs: tuple[tuple[str, ...], ...] = (("fr", "es"), ("hi", "ur"))
    lape_set: str = "lape"
    pooled_set: str = "act-prob"
    own_set: str = "act-prob-own"
    source_language: str = "en"
    bootstrap_resamples: int = 2000
    seed: int = 0


@dataclass
class ClaimResult:
    """One tested claim: ``estimate`` with its interval ``[ci_low, ci_high]`` in ``unit``."""

    id: str
    claim: str
    source: str
    measure: str
    estimate: float
    ci_low: float | None
    ci_high: float | None
    unit: str
    n: str
    test: str
    p_value: float | None
    verdict: str
    rule: str
    details: list[dict] = field(default_factory=list)
    units: int | None = None
    """Resampling units behind the interval (fewest per language), None for exact tests."""

    def to_dict(self) -> dict:
        return asdict(self)


def _too_few(claim: ClaimResult) -> ClaimResult:
    """``claim`` without interval, p-value or verdict when its ``units`` are below the minimum."""
    from langneurons.evaluate.metrics import enough_units, unavailable

    if claim.units is None or enough_units(claim.units):
        return claim
    claim.ci_low = claim.ci_high = claim.p_value = None
    claim.verdict = TOO_FEW_UNITS
    claim.n = f"{claim.n}; interval {unavailable(claim.units)}"
    return claim


def _span(interval, units: int, spec: str = "+.3f") -> str:
    """``[low, high]`` or ``n/a (k units < 20)`` for an interval that is None."""
    from langneurons.evaluate.metrics import unavailable

    return unavailable(units) if interval is None else f"[{interval[0]:{spec}}, {interval[1]:{spec}}]"


# ---------------------------------------------------------------------------------- helpers


def permutation_p_value(group: Sequence[float], rest: Sequence[float]) -> float:
    """Exact one-sided permutation p-value of mean(group) - mean(rest) >= the observed value, over
    every split of the pooled values into groups of the same sizes."""
    values = list(group) + list(rest)
    k = len(group)
    observed = sum(group) / k - sum(rest) / len(rest)
    total = hits = 0
    for chosen in itertools.combinations(range(len(values)), k):
        inside = [values[i] for i in chosen]
        outside = [values[i] for i in range(len(values)) if i not in chosen]
        total += 1
        hits += sum(inside) / k - sum(outside) / len(outside) >= observed - 1e-12
    return hits / total


def script(language: str) -> str:
    """ISO 15924 script of ``language`` in FLORES-200 (e.g. ``Latn``, ``Deva``)."""
    return flores_code(language).split("_")[1]


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """Jaccard index of two boolean masks (0 when both are empty)."""
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 0.0


# ---------------------------------------------------------------------------------- neuron sets


def layer_concentration(neuron_set, config: ClaimsConfig) -> ClaimResult:
    """Tang et al. 2024: LAPE neurons sit mostly in the first and last layers."""
    layers = neuron_set.num_layers
    k = max(1, round(layers * config.outer_fraction))
    outer = list(range(k)) + list(range(layers - k, layers))
    union = neuron_set.union()
    per_layer = torch.bincount(union[:, 0], minlength=layers) if len(union) else torch.zeros(layers, dtype=torch.long)
    n, in_outer = int(per_layer.sum()), int(per_layer[outer].sum())
    if n == 0:
        raise LangNeuronsError("the LAPE set is empty")
    from scipy.stats import binomtest

    from langneurons.evaluate.metrics import wilson_interval

    expected = len(outer) / layers
    low, high = wilson_interval(in_outer, n, 1 - config.alpha)
    p_more = binomtest(in_outer, n, expected, alternative="greater").pvalue
    p_less = binomtest(in_outer, n, expected, alternative="less").pvalue
    verdict = SUPPORTED if p_more < config.alpha else CONTRADICTED if p_less < config.alpha else INCONCLUSIVE
    return ClaimResult(
        id="layers", claim="LAPE neurons concentrate in the first and last layers", source="Tang et al. 2024",
        measure=f"share of LAPE neurons in the first and last {k} of {layers} layers "
                f"(uniform layers: {100 * expected:.1f}%)",
        estimate=100.0 * in_outer / n, ci_low=100.0 * low, ci_high=100.0 * high, unit="%", n=f"{n} neurons",
        test="exact binomial test against the uniform share (neurons counted as independent); Wilson interval",
        p_value=float(p_more), verdict=verdict,
        rule="supported: share significantly above the uniform share; contradicted: significantly below",
        details=[{"layer": layer, "neurons": int(count)} for layer, count in enumerate(per_layer.tolist())],
    )


def script_counts(neuron_set, config: ClaimsConfig) -> ClaimResult | None:
    """Gurgurov et al. 2025: non-Latin-script languages get more specific neurons."""
    counts = {language: int(len(neuron_set.indices(language))) for language in neuron_set.languages}
    latin = {l: c for l, c in counts.items() if script(l) == "Latn"}
    other = {l: c for l, c in counts.items() if script(l) != "Latn"}
    if not latin or not other:
        return None
    latin_mean, other_mean = sum(latin.values()) / len(latin), sum(other.values()) / len(other)
    p_more = permutation_p_value(list(other.values()), list(latin.values()))
    p_less = permutation_p_value(list(latin.values()), list(other.values()))
    verdict = SUPPORTED if p_more < config.alpha else CONTRADICTED if p_less < config.alpha else INCONCLUSIVE
    return ClaimResult(
        id="scripts", claim="Non-Latin-script languages get more language-specific neurons",
        source="Gurgurov et al. 2025",
        measure=f"mean LAPE set size, non-Latin ({', '.join(other)}) / Latin ({', '.join(latin)}): "
                f"{other_mean:.1f} / {latin_mean:.1f}",
        estimate=other_mean / latin_mean if latin_mean else math.inf, ci_low=None, ci_high=None, unit="ratio",
        n=f"{len(latin)} Latin + {len(other)} non-Latin languages",
        test="exact one-sided permutation test of the difference in mean set size (languages are the units)",
        p_value=p_more, verdict=verdict,
        rule="supported: non-Latin mean significantly larger; contradicted: significantly smaller",
        details=[{"language": l, "script": script(l), "neurons": c} for l, c in counts.items()],
    )


# ---------------------------------------------------------------------------------- PPXC


def _pooled_specificity(resampled: dict, languages: Sequence[str]) -> torch.Tensor:
    """[n_resamples] mean over row languages of delta_nll(i, i) - mean_{j != i} delta_nll(i, j)."""
    differences = []
    for row in languages:
        others = torch.stack([resampled[row][c] for c in languages if c != row]).mean(0)
        differences.append(resampled[row][row] - others)
    return torch.stack(differences).mean(0)


def _ppxc_n(result) -> str:
    """``K languages x k held-out documents (t tokens)``: the fewest units and tokens of a language."""
    units, tokens = min(result.units().values()), min(result.baseline[l].token_count for l in result.languages)
    return f"{len(result.languages)} languages x {units} {result.unit_name} ({tokens} tokens)"


def _ppxc_point(result, set_name: str) -> float:
    specificity = result.specificity(set_name)
    return sum(v["difference"] for v in specificity.values()) / len(specificity)


def ppxc_specificity(result, config: ClaimsConfig) -> ClaimResult | None:
    """Deactivating i's neurons hurts i far more than other languages, and more than random neurons do."""
    from langneurons.evaluate.metrics import resampling_interval
    from langneurons.intervene.ppxc import LANGUAGE_SPECIFIC, RANDOM

    resampled = result.resampled_delta_nll()
    if resampled is None or RANDOM not in resampled or len(result.languages) < 2:
        return None
    languages = result.languages
    units = min(result.units().values())
    own = _pooled_specificity(resampled[LANGUAGE_SPECIFIC], languages)
    control = _pooled_specificity(resampled[RANDOM], languages)
    excess = own - control
    low, high = resampling_interval(excess, units, 1 - config.alpha) or (None, None)
    intervals = result.intervals()["difference"]
    individually = sum(intervals[LANGUAGE_SPECIFIC][l] is not None and intervals[LANGUAGE_SPECIFIC][l][0] > 0
                       for l in languages)
    own_point, control_point = _ppxc_point(result, LANGUAGE_SPECIFIC), _ppxc_point(result, RANDOM)
    own_interval = resampling_interval(own, units, 1 - config.alpha)
    verdict = (INCONCLUSIVE if low is None
               else SUPPORTED if low > 0 and own_interval[0] > 0 and individually > len(languages) / 2
               else CONTRADICTED if high < 0 else INCONCLUSIVE)
    details = [{"set": name, "language": l, "difference": result.specificity(name)[l]["difference"],
                "ci_low": (intervals[name][l] or (None, None))[0], "ci_high": (intervals[name][l] or (None, None))[1],
                "neurons": result.neuron_counts[name][l]}
               for name in (LANGUAGE_SPECIFIC, RANDOM) for l in languages]
    return _too_few(ClaimResult(
        id="ppxc", claim="Deactivating language i's neurons raises perplexity on i far more than on other "
                         "languages, and far more than random neurons of the same layers do",
        source="Tang et al. 2024; Mondal et al. 2025",
        measure=f"specificity (Δ NLL on i − mean Δ NLL on the others, nats/token), mean over {len(languages)} "
                f"languages: LAPE {own_point:+.3f} {_span(own_interval, units)}, random {control_point:+.3f}; "
                f"estimate: LAPE − random; {individually}/{len(languages)} languages individually > 0",
        estimate=own_point - control_point, ci_low=low, ci_high=high, unit="nats/token",
        n=_ppxc_n(result),
        test=f"bootstrap over {result.unit_name}, baseline and intervened on the same resampled {result.unit}",
        p_value=float((excess <= 0).double().mean()), verdict=verdict,
        rule="supported: LAPE specificity and LAPE − random both > 0 (intervals) and most languages > 0 "
             "individually; contradicted: LAPE − random < 0",
        details=details, units=units,
    ))


def related_languages(result, neuron_set, config: ClaimsConfig) -> ClaimResult | None:
    """Related languages share neurons and affect each other's perplexity more than unrelated ones."""
    from langneurons.evaluate.metrics import resampling_interval
    from langneurons.intervene.ppxc import LANGUAGE_SPECIFIC

    resampled = result.resampled_delta_nll()
    languages = result.languages
    pairs = [tuple(p) for p in config.related_pairs if len(p) == 2 and set(p) <= set(languages)]
    if resampled is None or not pairs or len(languages) < 3:
        return None
    units = min(result.units().values())
    cells = resampled[LANGUAGE_SPECIFIC]
    point = result.matrix("delta_nll", LANGUAGE_SPECIFIC)
    index = {l: i for i, l in enumerate(languages)}
    related = {l for pair in pairs for l in pair}
    excesses, details, all_clear = [], [], True
    for a, b in pairs:
        unrelated = [c for c in languages if c not in (a, b) and c not in related] or \
                    [c for c in languages if c not in (a, b)]
        cross = (cells[a][b] + cells[b][a]) / 2
        baseline = torch.stack([(cells[a][c] + cells[b][c]) / 2 for c in unrelated]).mean(0)
        excess = cross - baseline
        low, high = resampling_interval(excess, units, 1 - config.alpha) or (None, None)
        point_cross = float(point[index[a], index[b]] + point[index[b], index[a]]) / 2
        point_base = sum(float(point[index[a], index[c]] + point[index[b], index[c]]) / 2 for c in unrelated) / len(unrelated)
        shared = jaccard(neuron_set.mask(a), neuron_set.mask(b))
        others = [jaccard(neuron_set.mask(x), neuron_set.mask(c)) for x in (a, b) for c in unrelated]
        other_jaccard = sum(others) / len(others)
        all_clear &= low is not None and low > 0 and shared > other_jaccard
        excesses.append(excess)
        details.append({"pair": f"{a}/{b}", "unrelated": ",".join(unrelated), "cross_delta_nll": point_cross,
                        "unrelated_delta_nll": point_base, "excess": point_cross - point_base, "ci_low": low,
                        "ci_high": high, "jaccard": shared, "unrelated_jaccard": other_jaccard})
    pooled = torch.stack(excesses).mean(0)
    low, high = resampling_interval(pooled, units, 1 - config.alpha) or (None, None)
    estimate = sum(d["excess"] for d in details) / len(details)
    verdict = (INCONCLUSIVE if low is None else SUPPORTED if all_clear else CONTRADICTED if high < 0
               else INCONCLUSIVE)
    summary = "; ".join(f"{d['pair']}: Jaccard {d['jaccard']:.2f} vs {d['unrelated_jaccard']:.2f} unrelated, "
                        f"excess {d['excess']:+.3f} "
                        f"{_span(None if d['ci_low'] is None else (d['ci_low'], d['ci_high']), units)}"
                        for d in details)
    return _too_few(ClaimResult(
        id="related", claim="Related languages (fr/es; hi/ur) share neurons and cross-affect perplexity",
        source="Tang et al. 2024; Mondal et al. 2025",
        measure=f"Δ NLL when one of a pair's neurons are zeroed, on the other language, minus the same on unrelated "
                f"languages (nats/token), mean over pairs; {summary}",
        estimate=estimate, ci_low=low, ci_high=high, unit="nats/token",
        n=f"{len(pairs)} pairs; {_ppxc_n(result)}",
        test=f"bootstrap over {result.unit_name}; LAPE set overlap (Jaccard) against unrelated pairs",
        p_value=float((pooled <= 0).double().mean()), verdict=verdict,
        rule="supported: every pair's excess > 0 (interval) and its Jaccard above unrelated pairs'; "
             "contradicted: pooled excess < 0",
        details=details, units=units,
    ))


def own_threshold(own, pooled, config: ClaimsConfig) -> ClaimResult | None:
    """act-prob with the paper's own-percentile threshold selects neurons no better than chance."""
    from langneurons.evaluate.metrics import resampling_interval
    from langneurons.intervene.ppxc import LANGUAGE_SPECIFIC, RANDOM

    def excess(result):
        resampled = result.resampled_delta_nll()
        if resampled is None or RANDOM not in resampled:
            return None
        languages = result.languages
        values = (_pooled_specificity(resampled[LANGUAGE_SPECIFIC], languages)
                  - _pooled_specificity(resampled[RANDOM], languages))
        return values, _ppxc_point(result, LANGUAGE_SPECIFIC) - _ppxc_point(result, RANDOM)

    own_excess = excess(own)
    if own_excess is None:
        return None
    values, estimate = own_excess
    units = min(own.units().values())
    low, high = resampling_interval(values, units, 1 - config.alpha) or (None, None)
    note = ""
    if pooled is not None and excess(pooled) is not None:
        pooled_values, pooled_estimate = excess(pooled)
        pooled_units = min(pooled.units().values())
        note = (f"; the pooled threshold: {pooled_estimate:+.3f} "
                f"{_span(resampling_interval(pooled_values, pooled_units, 1 - config.alpha), pooled_units)}")
    verdict = (INCONCLUSIVE if low is None else CONTRADICTED if low > 0
               else SUPPORTED if high < 0 or (low <= 0 <= high) else INCONCLUSIVE)
    return _too_few(ClaimResult(
        id="own-threshold", claim="act-prob with the paper's own-language percentile threshold selects neurons "
                                  "no better than chance at language specificity",
        source="this project (pitfalls.md); the threshold of Mondal et al. 2025's code",
        measure=f"mean PPXC specificity of act-prob (own threshold) minus its layer-matched random control "
                f"(nats/token){note}",
        estimate=estimate, ci_low=low, ci_high=high, unit="nats/token",
        n=_ppxc_n(own), test=f"bootstrap over {own.unit_name}", p_value=float((values <= 0).double().mean()),
        verdict=verdict,
        rule="supported: no detectable excess over random (interval contains 0 or lies below); "
             "contradicted: excess > 0",
        units=units,
    ))


def steering(directory, config: ClaimsConfig) -> ClaimResult | None:
    """Gurgurov et al. 2025: intervening on language neurons makes the model write in the target
    language. The steering stage's best condition on the language set against the same condition
    on its layer-matched random set, paired by (pair, prompt), pairs pooled."""
    from langneurons.evaluate.metrics import compare_accuracy

    directory = Path(directory)
    if not (directory / "steering.json").exists() or not (directory / "generations.jsonl").exists():
        return None
    data = json.loads((directory / "steering.json").read_text(encoding="utf-8"))
    best = data.get("best_condition")
    if not best or ":" not in best:
        return None
    control = "random:" + best.split(":", 1)[1]
    in_target: dict[tuple, bool] = {}
    with open(directory / "generations.jsonl", encoding="utf-8") as handle:
        for line in handle:
            g = json.loads(line)
            if g["condition"] in (best, control, "baseline"):
                in_target[(g["condition"], g["source"], g["target"], g["prompt_index"])] = g["language"] == g["target"]
    keys = sorted(key[1:] for key in in_target if key[0] == best and (control, *key[1:]) in in_target)
    if not keys:
        return None
    steered = [in_target[(best, *key)] for key in keys]
    random_twin = [in_target[(control, *key)] for key in keys]
    baseline = [in_target.get(("baseline", *key), False) for key in keys]
    comparison = compare_accuracy(random_twin, steered, config.bootstrap_resamples, 1 - config.alpha, config.seed)
    rows = [r for r in data["rows"] if r["condition"] in (best, control, "baseline")]

    def mean(name, field):
        values = [r[field] for r in rows if r["condition"] == name and r[field] is not None]
        return sum(values) / len(values) if values else float("nan")

    pairs = sorted({f"{r['source']}>{r['target']}" for r in rows})
    verdict = (INCONCLUSIVE if comparison.ci_low is None else SUPPORTED if comparison.ci_low > 0
               else CONTRADICTED if comparison.ci_high < 0 else INCONCLUSIVE)
    return _too_few(ClaimResult(
        id="steering", claim="Intervening on language-specific neurons makes the model write in the target language",
        source="Gurgurov et al. 2025; Tang et al. 2024",
        measure=f"target-language rate of continuations (lingua), best condition {best} minus the same on "
                f"layer-matched random neurons, pairs pooled; rates {100 * sum(steered) / len(keys):.1f}% vs "
                f"{100 * sum(random_twin) / len(keys):.1f}% (baseline {100 * sum(baseline) / len(keys):.1f}%); "
                f"fluency ppl {mean(best, 'fluency_ppl'):.1f} vs random {mean(control, 'fluency_ppl'):.1f}, "
                f"baseline {mean('baseline', 'fluency_ppl'):.1f}",
        estimate=comparison.delta, ci_low=comparison.ci_low, ci_high=comparison.ci_high, unit="points",
        n=f"{len(keys)} prompts x pairs ({', '.join(pairs)})", test=comparison.test, p_value=comparison.p_value,
        verdict=verdict,
        rule="supported: lower bound > 0; contradicted: upper bound < 0. The best condition is chosen on the "
             "same prompts, which favours the language set; the random twin is the same action on random neurons",
        details=[{k: r[k] for k in ("source", "target", "condition", "n", "target_rate", "target_ci_low",
                                    "target_ci_high", "fluency_ppl")} for r in rows],
        units=len(keys),
    ))


# ---------------------------------------------------------------------------------- evaluation


def _pooled_comparison(task: str, pairs: Sequence[tuple[str, list[dict], list[dict]]], config: ClaimsConfig) -> dict:
    """``other`` minus ``reference`` over the examples of every language together (paired by
    language and example id), for the task's headline metric."""
    from langneurons.evaluate.evaluation import compare_records

    reference = [dict(r, id=f"{language}/{r['id']}") for language, ref, _ in pairs for r in ref]
    other = [dict(r, id=f"{language}/{r['id']}") for language, _, mine in pairs for r in mine]
    metric = "accuracy" if task == "xnli" else "f1"
    comparison = compare_records(task, reference, other, config.bootstrap_resamples, 1 - config.alpha,
                                 config.seed)[metric]
    return {"metric": metric, "n": len(other), **comparison}


def _targets(grid, task: str, source: str) -> list[str]:
    return sorted({p["language"] for p in grid.predictions if p["task"] == task and p["language"] != source})


def interventions(grids: dict, config: ClaimsConfig) -> ClaimResult | None:
    """Mondal et al. 2025: test-time interventions on a target language's neurons gain < 1 point."""
    rows = []
    for model, grid in grids.items():
        conditions = sorted({p["condition"] for p in grid.predictions
                             if p["condition"].startswith(f"{config.lape_set}:")})
        for task in sorted({p["task"] for p in grid.predictions}):
            languages = _targets(grid, task, config.source_language)
            for condition in conditions:
                pairs = [(l, grid.records(task, l), grid.records(task, l, condition)) for l in languages]
                pairs = [p for p in pairs if p[1] and p[2]]
                if pairs:
                    rows.append({"model": model, "task": task, "condition": condition,
                                 "languages": ",".join(p[0] for p in pairs),
                                 **_pooled_comparison(task, pairs, config)})
    if not rows:
        return None
    best = max(rows, key=lambda r: r["delta"])
    practical = config.practical_points
    units = min(r["n"] for r in rows)
    verdict = (INCONCLUSIVE if any(r["delta_ci_low"] is None for r in rows)
               else CONTRADICTED if any(r["delta_ci_low"] > practical for r in rows)
               else SUPPORTED if all(r["delta_ci_high"] < practical for r in rows) else INCONCLUSIVE)
    return _too_few(ClaimResult(
        id="interventions", claim=f"Test-time interventions on a target language's neurons do not improve its "
                                  f"XNLI/XQuAD score by more than {practical:g} point",
        source="Mondal et al. 2025",
        measure=f"intervened minus unintervened score, target languages pooled; the best of {len(rows)} "
                f"(model, task, action) cells: {best['model']} {best['task']} {best['condition']}",
        estimate=best["delta"], ci_low=best["delta_ci_low"], ci_high=best["delta_ci_high"], unit="points",
        n=f"{best['n']} examples ({best['languages']})", test=best["test"], p_value=best["p_value"],
        verdict=verdict,
        rule=f"supported: every cell's upper bound < +{practical:g}; contradicted: some cell's lower bound > "
             f"+{practical:g}",
        details=rows, units=units,
    ))


def neuron_lora(grids: dict, runs: dict, config: ClaimsConfig) -> ClaimResult | None:
    """Mondal et al. 2025: neuron-specific LoRA transfers no better than random-neuron or plain LoRA.

    ``runs``: fine-tuning run name -> (task, neuron mode)."""
    by_mode = {}
    for name, (task, mode) in runs.items():
        if name in grids:
            by_mode.setdefault((task, mode), name)
    rows = []
    for (task, mode), name in by_mode.items():
        if mode != "languages":
            continue
        for reference_mode in ("random", "none", "all"):
            reference = by_mode.get((task, reference_mode))
            if reference is None:
                continue
            languages = _targets(grids[name], task, config.source_language)
            pairs = [(l, grids[reference].records(task, l), grids[name].records(task, l)) for l in languages]
            rows.append({"model": name, "reference": reference, "reference_mode": reference_mode, "task": task,
                         "languages": ",".join(languages), **_pooled_comparison(task, pairs, config)})
    decisive = [r for r in rows if r["reference_mode"] in ("random", "none")]
    if not decisive:
        return None
    verdict = (INCONCLUSIVE if any(r["delta_ci_low"] is None for r in decisive)
               else CONTRADICTED if any(r["delta_ci_low"] > 0 for r in decisive)
               else SUPPORTED if all(r["delta_ci_high"] < config.practical_points for r in decisive)
               else INCONCLUSIVE)
    capacity = _capacity_check(grids, by_mode, decisive[0]["task"], config)
    if verdict == SUPPORTED and not capacity["learned"]:
        verdict = INCONCLUSIVE  # a null result of MLP adapters that cannot learn the task proves nothing
    headline = next((r for r in decisive if r["reference_mode"] == "random"), decisive[0])
    def span(r):
        return _span(None if r["delta_ci_low"] is None else (r["delta_ci_low"], r["delta_ci_high"]), r["n"], "+.1f")

    others = "; ".join(f"vs {r['reference']}: {r['delta']:+.1f} {span(r)}" for r in rows if r is not headline)
    if capacity["capacity_control"]:
        others += (f"; matched-module control {capacity['capacity_control']}: {capacity['accuracy']:.1f}% on the "
                   f"targets (chance 33.3%, p = {capacity['p_value']:.3g})")
    else:
        others += "; " + capacity["note"]
    return _too_few(ClaimResult(
        id="neuron-lora", claim="Neuron-specific LoRA does not transfer better than random-neuron LoRA or plain LoRA",
        source="Mondal et al. 2025",
        measure=f"{headline['model']} minus {headline['reference']} on the target languages pooled "
                f"({headline['metric']}); {others}",
        estimate=headline["delta"], ci_low=headline["delta_ci_low"], ci_high=headline["delta_ci_high"],
        unit="points", n=f"{headline['n']} examples ({headline['languages']})", test=headline["test"],
        p_value=headline["p_value"], verdict=verdict,
        rule=f"supported: upper bounds vs random and vs plain LoRA < +{config.practical_points:g}, and the "
             "matched-module control (LoRA on every MLP neuron's same weights) learned the task (target-language "
             "accuracy above chance); contradicted: a lower bound > 0",
        details=rows + [capacity], units=min(r["n"] for r in decisive),
    ))


def _capacity_check(grids: dict, by_mode: dict, task: str, config: ClaimsConfig) -> dict:
    """Did the matched-module control (neuron mode ``all``) learn ``task``? Its pooled target-language
    accuracy against chance (one-sided exact binomial test); without such a run: not shown."""
    name = by_mode.get((task, "all"))
    if name is None or task != "xnli":
        return {"capacity_control": None, "learned": False,
                "note": "no matched-module control (a run with neurons: all) to show that MLP LoRA can learn"}
    from scipy.stats import binomtest

    records = [r for l in _targets(grids[name], task, config.source_language) for r in grids[name].records(task, l)]
    correct = sum(bool(r["correct"]) for r in records)
    p_value = float(binomtest(correct, len(records), 1 / 3, alternative="greater").pvalue)
    return {"capacity_control": name, "accuracy": 100.0 * correct / len(records), "n": len(records),
            "chance": 100.0 / 3, "p_value": p_value, "learned": p_value < config.alpha}


# ---------------------------------------------------------------------------------- a run


def evaluate_claims(run_dir, config: ClaimsConfig, finetune_runs: dict | None = None,
                    models: Sequence[str] = ()) -> list[ClaimResult]:
    """Every claim the run directory has artefacts for (see the module docstring).

    finetune_runs: run name -> (task, neuron mode); models: the evaluated models (``evaluate/<model>``)."""
    from langneurons.evaluate.evaluation import GridResult
    from langneurons.identify.neuron_set import NeuronSet
    from langneurons.intervene.ppxc import PPXCResult

    run_dir = Path(run_dir)

    def neuron_set(name):
        path = run_dir / "identify" / name / "neurons.json"
        return NeuronSet.load(path) if path.exists() else None

    def ppxc(name):
        path = run_dir / "ppxc" / name / "ppxc.json"
        if not path.exists():
            return None
        result = PPXCResult.load(path)
        result.resampling = (config.bootstrap_resamples, 1 - config.alpha, config.seed)
        return result

    claims: list[ClaimResult | None] = []
    lape = neuron_set(config.lape_set)
    if lape is not None:
        claims += [layer_concentration(lape, config), script_counts(lape, config)]
    lape_ppxc = ppxc(config.lape_set)
    if lape_ppxc is not None:
        claims.append(ppxc_specificity(lape_ppxc, config))
        if lape is not None:
            claims.append(related_languages(lape_ppxc, lape, config))
    grids = {name: GridResult.load(run_dir / "evaluate" / name) for name in models
             if (run_dir / "evaluate" / name / "scores.json").exists()}
    claims.append(interventions(grids, config) if grids else None)
    claims.append(neuron_lora(grids, finetune_runs or {}, config) if grids else None)
    own = ppxc(config.own_set)
    if own is not None:
        claims.append(own_threshold(own, ppxc(config.pooled_set), config))
    claims.append(steering(run_dir / "steering", config))
    return [claim for claim in claims if claim is not None]


CLAIM_FIELDS = ("id", "claim", "source", "measure", "estimate", "ci_low", "ci_high", "unit", "n", "test", "p_value",
                "verdict", "rule", "units")


def claims_markdown(claims: Sequence[ClaimResult]) -> str:
    """The claims table (Markdown): claim, what was measured (estimate, interval, n), verdict."""

    def number(value) -> str:
        if value is None:
            return "–"
        return f"{value:+.3f}" if abs(value) < 10 else f"{value:+.1f}"

    lines = ["| claim (source) | measured | estimate [95% CI] | n | p | verdict |",
             "| --- | --- | --- | --- | --- | --- |"]
    for c in claims:
        interval = f" [{number(c.ci_low)}, {number(c.ci_high)}]" if c.ci_low is not None else ""
        if c.verdict == TOO_FEW_UNITS:
            from langneurons.evaluate.metrics import unavailable

            interval = f" [{unavailable(c.units)}]"
        p = "–" if c.p_value is None else ("< 0.001" if c.p_value < 0.001 else f"{c.p_value:.3f}")
        lines.append(f"| {c.claim} ({c.source}) | {c.measure} | {number(c.estimate)}{interval} {c.unit} | {c.n} | "
                     f"{p} | **{c.verdict}** |")
    return "\n".join(lines) + "\n"


def write_claims(claims: Sequence[ClaimResult], directory) -> list[Path]:
    """``claims.json`` (everything, with details), ``claims.csv`` and ``claims.md`` in ``directory``."""
    from langneurons.artefacts import write_json, write_text
    from langneurons.evaluate.evaluation import rows_to_csv

    directory = Path(directory)
    data = [c.to_dict() for c in claims]
    return [write_json(directory / "claims.json", json.loads(json.dumps(data, default=float))),
            write_text(directory / "claims.csv", rows_to_csv(data, CLAIM_FIELDS)),
            write_text(directory / "claims.md", claims_markdown(claims))]
