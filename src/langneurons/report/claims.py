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

The two headline claims of Mondal et al. 2025 ("no gain larger than ``practical_points``") use
the margin rule of :func:`margin_verdict`: supported when the pooled interval's upper bound is
below +margin, contradicted when its lower bound is above +margin; a null result is never called
from a model that did not learn the task (:func:`english_score`). Every claim states the largest
gain its run excludes (``largest_gain_excluded``, the upper bound) and the headline comparisons
carry a power table (``power.json``/``power.csv``: the n now, the half-width it achieves, the n a
±margin interval needs; :mod:`langneurons.evaluate.power`). The subnetwork-enhancement claim
(Gurgurov et al. 2025) reads per-unit held-out NLLs from ``lm_eval_ppl/<model>/perplexity.json``
(:class:`PerplexityUnits`).

Over 500 lines on purpose: each claim is one function of 20 to 80 lines, its verdict rule next
to its test, and the claims are read (and reviewed) side by side; split per claim they would
share every helper across modules.
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
AT_GRID_EDGE = "inconclusive (learning rate at its grid's edge)"
"""The verdict of a comparison the interval settles but whose losing arm chose its learning rate at
the edge of its search grid: better tuned, it might not lose (:func:`_edge_guard`)."""


@dataclass(frozen=True)
class LearningTarget:
    """The score (percent: XNLI accuracy, XQuAD F1) that fine-tuned ``model`` should reach on the
    source language's ``task`` test set; the report says whether it did and, where not, what its
    learning curve shows. ``model``: an evaluated model, or a seeded run's base name (every seed)."""

    model: str
    score: float
    task: str = "xnli"


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
    random_set: str = "random"
    practical_nats: float = 0.01
    source_language: str = "en"
    bootstrap_resamples: int = 2000
    seed: int = 0
    direction_set: str = "diffmean"
    steering_margin: float = 5.0
    """Points: "directions steer at least as well as neurons" allows a loss of at most this (fluent target rate)."""
    learning_targets: tuple[LearningTarget, ...] = ()
    """Stated learning targets of fine-tuned models (:func:`learning_targets`; ``claims/targets.*``)."""


ADDED_CLAIMS_KEYS = ("direction_set", "steering_margin", "learning_targets")
"""ClaimsConfig fields added after the claims stage first ran (issues 19 and 18): left out of a config's
dict and the claims stage's key at their defaults, so configs and runs without them keep their form
and cache keys."""


def claims_options(config: ClaimsConfig) -> dict:
    """``asdict(config)`` without the :data:`ADDED_CLAIMS_KEYS` at their defaults."""
    defaults = ClaimsConfig()
    return {k: v for k, v in asdict(config).items()
            if not (k in ADDED_CLAIMS_KEYS and v == getattr(defaults, k))}


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
    largest_gain_excluded: float | None = None
    power: list[dict] = field(default_factory=list)

    def __post_init__(self):
        if self.largest_gain_excluded is None and self.ci_high is not None:
            self.largest_gain_excluded = self.ci_high

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


def _row_span(row: dict) -> str:
    """``[low, high]`` of a comparison row (points), or ``n/a (k units < 20)``."""
    interval = None if row["delta_ci_low"] is None else (row["delta_ci_low"], row["delta_ci_high"])
    return _span(interval, row["n"], "+.1f")


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
    language. The steering stage's best condition on the language set (chosen on the dev prompts)
    against the same condition on its layer-matched random set, on the *test* prompts only, paired
    by (pair, prompt), pairs pooled. Success is a fluent target continuation: in the target language
    and not degenerate (:mod:`langneurons.steer.degeneration`), so loops in the target script do not
    count; the raw target rates are stated beside it."""
    from langneurons.evaluate.metrics import compare_accuracy
    from langneurons.steer.degeneration import is_degenerate
    from langneurons.steer.selection import TEST, selection_split

    directory = Path(directory)
    if not (directory / "steering.json").exists() or not (directory / "generations.jsonl").exists():
        return None
    data = json.loads((directory / "steering.json").read_text(encoding="utf-8"))
    best = (data["best_conditions"].get("neurons") if "best_conditions" in data  # runs with directions
            else data.get("best_condition"))
    if not best or ":" not in best:
        return None
    named = next((r.get("random_twin") for r in data["rows"] if r["condition"] == best and r.get("random_twin")), None)
    control = named or "random:" + best.split(":", 1)[1]  # rows written before random_twin existed
    chosen_on = selection_split(data["rows"])
    outcomes: dict[tuple, tuple[bool, bool]] = {}  # (condition, source, target, prompt) -> (in target, fluent)
    with open(directory / "generations.jsonl", encoding="utf-8") as handle:
        for line in handle:
            g = json.loads(line)
            if g["condition"] in (best, control, "baseline") and g.get("split", TEST) == TEST:
                degenerate = g["degenerate"] if "degenerate" in g else is_degenerate(g.get("continuation", ""))
                in_target = g["language"] == g["target"]
                outcomes[(g["condition"], g["source"], g["target"], g["prompt_index"])] = (in_target,
                                                                                           in_target and not degenerate)
    keys = sorted(key[1:] for key in outcomes if key[0] == best and (control, *key[1:]) in outcomes)
    if not keys:
        return None

    def flags(condition, which):  # which: 0 = in the target language, 1 = fluent target
        return [outcomes.get((condition, *key), (False, False))[which] for key in keys]

    def percent(values):
        return 100 * sum(values) / len(keys)

    steered, random_twin, baseline = flags(best, 1), flags(control, 1), flags("baseline", 1)
    comparison = compare_accuracy(random_twin, steered, config.bootstrap_resamples, 1 - config.alpha, config.seed)
    rows = [r for r in data["rows"] if r["condition"] in (best, control, "baseline") and r.get("split", TEST) == TEST]

    def mean(name, field):
        values = [r[field] for r in rows if r["condition"] == name and r.get(field) is not None]
        return sum(values) / len(values) if values else float("nan")

    pairs = sorted({f"{r['source']}>{r['target']}" for r in rows})
    low, high = comparison.ci_low, comparison.ci_high
    verdict = (INCONCLUSIVE if low is None or high is None else SUPPORTED if low > 0 else CONTRADICTED if high < 0
               else INCONCLUSIVE)
    selection = ("The best condition is chosen on the dev prompts (by fluent target rate) and scored on the "
                 "disjoint test prompts" if chosen_on != TEST else
                 "The best condition is chosen on the same prompts (no dev split), which favours the language set")
    return _too_few(ClaimResult(
        id="steering", claim="Intervening on language-specific neurons makes the model write in the target language",
        source="Gurgurov et al. 2025; Tang et al. 2024",
        measure=f"fluent target rate of test-prompt continuations (target language by lingua, not degenerate), "
                f"best condition {best} minus the same on layer-matched random neurons, pairs pooled; "
                f"fluent {percent(steered):.1f}% vs {percent(random_twin):.1f}% (baseline {percent(baseline):.1f}%); "
                f"raw target rates {percent(flags(best, 0)):.1f}% vs {percent(flags(control, 0)):.1f}% "
                f"(baseline {percent(flags('baseline', 0)):.1f}%); "
                f"fluency ppl {mean(best, 'fluency_ppl'):.1f} vs random {mean(control, 'fluency_ppl'):.1f}, "
                f"baseline {mean('baseline', 'fluency_ppl'):.1f}",
        estimate=comparison.delta, ci_low=low, ci_high=high, unit="points",
        n=f"{len(keys)} test prompts x pairs ({', '.join(pairs)})", test=comparison.test, p_value=comparison.p_value,
        verdict=verdict,
        rule=f"supported: lower bound > 0; contradicted: upper bound < 0. {selection}; the random twin is the "
             "same action on random neurons",
        details=[{k: r.get(k) for k in ("source", "target", "condition", "split", "n", "target_rate",
                                        "fluent_target_rate", "fluent_target_ci_low", "fluent_target_ci_high",
                                        "combined_score", "fluency_ppl")} for r in rows],
        units=len(keys),
    ))


# ---------------------------------------------------------------------------------- directions (issue 19)


def _test_outcomes(directory: Path, conditions) -> dict[tuple, tuple[bool, bool, bool]]:
    """(condition, source, target, prompt) -> (in target, degenerate, fluent target) of the test
    generations of ``conditions`` in ``directory/generations.jsonl``."""
    from langneurons.steer.degeneration import is_degenerate
    from langneurons.steer.selection import TEST

    out = {}
    with open(directory / "generations.jsonl", encoding="utf-8") as handle:
        for line in handle:
            g = json.loads(line)
            if g["condition"] in conditions and g.get("split", TEST) == TEST:
                degenerate = bool(g["degenerate"] if "degenerate" in g else is_degenerate(g.get("continuation", "")))
                in_target = g["language"] == g["target"]
                out[(g["condition"], g["source"], g["target"], g["prompt_index"])] = (in_target, degenerate,
                                                                                       in_target and not degenerate)
    return out


def direction_steering(directory, config: ClaimsConfig) -> ClaimResult | None:
    """CLaS-Bench (Gurgurov et al. 2026): a residual DiffMean direction steers the output language at
    least as well as the language's neurons. The steering stage's best direction condition and best
    neuron condition, each chosen on the dev prompts by the fluent target rate, compared on the same
    *test* prompts, paired by (pair, prompt), pairs pooled: fluent target rate of direction minus
    neurons (Tango's paired score interval, exact McNemar p-value). Rule ("at least as well" = no loss
    larger than ``steering_margin`` points): supported when the interval's lower bound is above
    -margin; contradicted when its upper bound is below -margin (the directions lose by more than
    the margin); inconclusive otherwise. Raw target rates, combined scores and both random twins
    are stated beside it."""
    from langneurons.evaluate.metrics import compare_accuracy
    from langneurons.steer.metric import combined_score
    from langneurons.steer.selection import TEST, selection_split

    directory = Path(directory)
    if not (directory / "steering.json").exists() or not (directory / "generations.jsonl").exists():
        return None
    data = json.loads((directory / "steering.json").read_text(encoding="utf-8"))
    bests = data.get("best_conditions") or {}
    neuron, direction = bests.get("neurons"), bests.get("directions")
    if not neuron or not direction:
        return None
    twins = {r["condition"]: r.get("random_twin") for r in data["rows"]}
    names = [name for name in (direction, neuron, twins.get(direction), twins.get(neuron), "baseline") if name]
    outcomes = _test_outcomes(directory, set(names))
    keys = sorted(key[1:] for key in outcomes if key[0] == direction and (neuron, *key[1:]) in outcomes)
    if not keys:
        return None

    def flags(condition, which):  # 0: in the target language, 1: degenerate, 2: fluent target
        return [outcomes.get((condition, *key), (False, False, False))[which] for key in keys]

    def percent(condition, which=2):
        return 100 * sum(flags(condition, which)) / len(keys)

    def combined(condition):
        score, low, high = combined_score(flags(condition, 0), flags(condition, 1), 1 - config.alpha,
                                          config.bootstrap_resamples, config.seed)
        return f"{score:.1f}" + ("" if low is None else f" [{low:.1f}, {high:.1f}]")

    comparison = compare_accuracy(flags(neuron, 2), flags(direction, 2), config.bootstrap_resamples,
                                  1 - config.alpha, config.seed)
    low, high, margin = comparison.ci_low, comparison.ci_high, config.steering_margin
    verdict = (INCONCLUSIVE if low is None else SUPPORTED if low > -margin else CONTRADICTED if high < -margin
               else INCONCLUSIVE)
    random_note = "; ".join(f"{name}'s random twin {twins[name]}: fluent {percent(twins[name]):.1f}%"
                            for name in (direction, neuron) if twins.get(name))
    pairs = sorted({f"{source}>{target}" for source, target, _ in keys})
    chosen_on = selection_split(data["rows"])
    selection = ("each unit's best condition is chosen on the dev prompts (fluent target rate) and scored on the "
                 "disjoint test prompts" if chosen_on != TEST else
                 "no dev split: the conditions are chosen on the prompts they are scored on")
    rows = [r for r in data["rows"] if r["condition"] in names and r.get("split", TEST) == TEST]
    return _too_few(ClaimResult(
        id="steering-directions",
        claim="A residual DiffMean direction steers the output language at least as well as the language's neurons",
        source="Gurgurov et al. 2026 (CLaS-Bench)",
        measure=f"fluent target rate of test-prompt continuations, best direction condition {direction} minus best "
                f"neuron condition {neuron}, pairs pooled; fluent {percent(direction):.1f}% vs {percent(neuron):.1f}% "
                f"(baseline {percent('baseline'):.1f}%); raw target rates {percent(direction, 0):.1f}% vs "
                f"{percent(neuron, 0):.1f}%; combined scores {combined(direction)} vs {combined(neuron)}; "
                f"{random_note}",
        estimate=comparison.delta, ci_low=low, ci_high=high, unit="points",
        n=f"{len(keys)} test prompts x pairs ({', '.join(pairs)})", test=comparison.test,
        p_value=comparison.p_value, verdict=verdict,
        rule=f"at least as well = no loss larger than {margin:g} points: supported when the interval's lower bound "
             f"> -{margin:g}; contradicted when its upper bound < -{margin:g}; {selection}",
        details=[{k: r.get(k) for k in ("source", "target", "condition", "random_twin", "split", "n", "target_rate",
                                        "fluent_target_rate", "fluent_target_ci_low", "fluent_target_ci_high",
                                        "combined_score", "combined_ci_low", "combined_ci_high", "fluency_ppl")}
                 for r in rows],
        units=len(keys),
    ))


def direction_ppxc_specificity(result, neuron_result, config: ClaimsConfig) -> ClaimResult | None:
    """Projecting out a language's residual direction raises perplexity on that language more than
    on others, as zeroing its neurons does: the directional PPXC's pooled specificity against its
    random-direction rows, with the same resampling and rule as the neuron PPXC claim
    (:func:`ppxc_specificity`); the neuron PPXC's specificity (``neuron_result``) is stated beside."""
    from dataclasses import replace

    from langneurons.evaluate.metrics import resampling_interval
    from langneurons.intervene.ppxc import LANGUAGE_SPECIFIC, RANDOM

    claim = ppxc_specificity(result, config)
    if claim is None:
        return None
    languages = result.languages
    units = min(result.units().values())
    resampled = result.resampled_delta_nll()
    own_interval = resampling_interval(_pooled_specificity(resampled[LANGUAGE_SPECIFIC], languages), units,
                                       1 - config.alpha)
    individually = sum(d["set"] == LANGUAGE_SPECIFIC and d["ci_low"] is not None and d["ci_low"] > 0
                       for d in claim.details)
    beside = "no neuron PPXC in this run"
    neuron_claim = ppxc_specificity(neuron_result, config) if neuron_result is not None else None
    if neuron_claim is not None:
        beside = (f"zeroing neurons ({neuron_result.method}): specificity {_ppxc_point(neuron_result, LANGUAGE_SPECIFIC):+.3f}, "
                  f"minus random {neuron_claim.estimate:+.3f} "
                  f"{_span(None if neuron_claim.ci_low is None else (neuron_claim.ci_low, neuron_claim.ci_high), neuron_claim.units or 0)}"
                  f" ({neuron_claim.verdict})")
    layers = (result.config or {}).get("layers")
    from langneurons.directions.ppxc import ERASE_ACTION

    how = "erased (LEACE, diagonal covariance)" if (result.config or {}).get("action") == ERASE_ACTION else "removed"
    return replace(
        claim, id="direction-ppxc",
        claim="Projecting out a language's residual direction raises perplexity on that language more than on "
              "others, as zeroing its neurons does",
        source="Zhao et al. 2025; Deng et al. 2025; as for neurons: Tang et al. 2024",
        measure=f"specificity (Δ NLL on i − mean Δ NLL on the others, nats/token) with i's {result.method} direction "
                f"{how}{'' if not layers else f' at layers {layers}'}, mean over {len(languages)} languages: "
                f"direction {_ppxc_point(result, LANGUAGE_SPECIFIC):+.3f} {_span(own_interval, units)}, random "
                f"direction of the same norm {_ppxc_point(result, RANDOM):+.3f}; estimate: direction − random; "
                f"{individually}/{len(languages)} languages individually > 0; beside it, {beside}",
        rule="supported: direction specificity and direction − random both > 0 (intervals) and most languages > 0 "
             "individually; contradicted: direction − random < 0",
    )


# ---------------------------------------------------------------------------------- evaluation

TEST_POOL_PER_LANGUAGE = {"xnli": 5010}
"""Test examples per language a comparison could use (XNLI test: 5,010 pairs per language). XQuAD's
held-out articles depend on the split, so its pool is passed in (``available``) or left unknown."""

CHANCE = {"xnli": 100.0 / 3, "xquad": 0.0}
"""Chance score (percent) of a task's headline metric: 3-way XNLI; XQuAD F1 has no guessing floor."""


def margin_verdict(ci_low: float, ci_high: float, margin: float) -> str:
    """The rule for "no gain larger than ``margin``": supported when the interval's upper bound is
    below +margin, contradicted when its lower bound is above +margin, otherwise inconclusive; no
    interval (too few resampling units): inconclusive (too few units)."""
    if ci_low is None or ci_high is None:
        return TOO_FEW_UNITS
    return SUPPORTED if ci_high < margin else CONTRADICTED if ci_low > margin else INCONCLUSIVE


def run_seed(name: str, seeds=None) -> tuple[str, int | None]:
    """(base run name, seed) of a fine-tuning run: from ``seeds`` (run name -> (base name, seed)),
    else from a name ``<base>@<seed>`` (``xnli-lape@2`` -> ``("xnli-lape", 2)``), else ``(name, None)``."""
    if seeds and name in seeds:
        base, seed = seeds[name]
        return str(base), None if seed is None else int(seed)
    base, at, tail = name.rpartition("@")
    if at and base and tail.isdigit():
        return base, int(tail)
    return name, None


def _metric(task: str) -> str:
    return "accuracy" if task == "xnli" else "f1"


def _comparison(task: str, pairs: Sequence[tuple[str, list[dict], list[dict]]], config: ClaimsConfig,
                available: dict | None = None) -> tuple[dict, dict]:
    """``other`` minus ``reference`` over the examples of every group (``pairs``: (group, reference
    records, other records); a group is a language, or language@seed) together, paired by group
    and example id, for the task's headline metric; and the power of that comparison for a
    half-width of ``practical_points`` (languages are the groups before any ``@``)."""
    from langneurons.evaluate.evaluation import compare_records, metric_values
    from langneurons.evaluate.power import paired_power

    reference = [dict(r, id=f"{group}/{r['id']}") for group, ref, _ in pairs for r in ref]
    other = [dict(r, id=f"{group}/{r['id']}") for group, _, mine in pairs for r in mine]
    metric = _metric(task)
    comparison = compare_records(task, reference, other, config.bootstrap_resamples, 1 - config.alpha,
                                 config.seed)[metric]
    by_id = {r["id"]: r for r in reference}
    differences = metric_values(task, other, metric) - metric_values(task, [by_id[r["id"]] for r in other], metric)
    languages = [r["id"].split("/", 1)[0].split("@", 1)[0] for r in other]
    pool = (available if available is not None else TEST_POOL_PER_LANGUAGE).get(task)
    power = paired_power(differences, languages, config.practical_points, 1 - config.alpha,
                         accuracy=metric == "accuracy", available_per_language=pool)
    return {"metric": metric, "n": len(other), **comparison}, {"task": task, "metric": metric, **power.to_dict()}


def _pooled_comparison(task: str, pairs: Sequence[tuple[str, list[dict], list[dict]]], config: ClaimsConfig) -> dict:
    """``other`` minus ``reference`` over the examples of every language together (paired by
    language and example id), for the task's headline metric."""
    return _comparison(task, pairs, config)[0]


def _targets(grid, task: str, source: str) -> list[str]:
    return sorted({p["language"] for p in grid.predictions if p["task"] == task and p["language"] != source})


def english_score(records: Sequence[dict], task: str, config: ClaimsConfig, model: str) -> dict:
    """Did ``model`` learn ``task``? Its source-language score (``records``) with a 95% interval
    (accuracy: Wilson; F1: bootstrap) must lie above chance + ``practical_points``."""
    from langneurons.evaluate.evaluation import metric_values
    from langneurons.evaluate.metrics import bootstrap_ci, wilson_interval

    metric, language = _metric(task), config.source_language
    threshold = CHANCE.get(task, 0.0) + config.practical_points
    if not records:
        return {"model": model, "task": task, "language": language, "metric": metric, "learned": False,
                "note": f"{model}: no {language} {task} score, so it cannot show that it learned the task"}
    values = metric_values(task, records, metric)
    if metric == "accuracy":
        low, high = (100.0 * v for v in wilson_interval(int(sum(bool(r["correct"]) for r in records)), len(records),
                                                         1 - config.alpha))
    else:
        low, high = bootstrap_ci(values, config.bootstrap_resamples, 1 - config.alpha, config.seed)
    score, learned = float(values.mean()), low is not None and low > threshold  # no interval: not shown to learn
    shown = _span(None if low is None else (low, high), len(records), ".1f")
    return {"model": model, "task": task, "language": language, "metric": metric, "score": score, "ci_low": low,
            "ci_high": high, "n": len(records), "chance": CHANCE.get(task, 0.0), "threshold": threshold,
            "learned": learned,
            "note": f"{model} {language} {metric} {score:.1f} {shown} (n = {len(records)}) "
                    f"{'above' if learned else 'not above'} chance + margin ({threshold:.1f})"}


def learning_curve_note(meta: dict) -> str:
    """What a fine-tuning run's dev learning curve (``langneurons_finetune.json``) says about why it
    stopped where it did: early stopping (more steps at this rate would not help), best at the last
    evaluation (the step budget ended first), or flat/falling after its best step; and the
    learning-rate search behind it (candidates, their dev scores, ties)."""
    curve = meta.get("curve") or []
    if not curve:
        return "no dev learning curve recorded"
    stopping = meta.get("early_stopping") or {}
    best_step = stopping.get("best_step")
    best = next((c for c in curve if c["step"] == best_step), None) or max(curve, key=lambda c: c["dev_score"])
    first, last, total = curve[0], curve[-1], meta.get("total_steps")
    text = (f"dev {first.get('dev_metric', 'score')} {first['dev_score']:.1f} at step {first['step']} → best "
            f"{best['dev_score']:.1f} at step {best['step']} (n = {last.get('dev_n', '?')})")
    if stopping.get("stopped_early"):
        text += (f"; stopped early at step {stopping.get('stopped_step')} of {total}: no dev gain in "
                 f"{stopping.get('patience')} evaluations, so more steps at this rate would not have reached it")
    elif len(curve) > 1 and best["step"] == last["step"] and last["dev_score"] > curve[-2]["dev_score"]:
        recent = curve[-3:]
        scores = ", ".join(f"{c['dev_score']:.1f}" for c in recent)
        steps = ", ".join(str(c["step"]) for c in recent)
        text += (f"; best at the last evaluation, step {last['step']} of {total} (dev {scores} at steps {steps}): "
                 "the step budget ended before early stopping did")
    else:
        text += f"; flat or falling after step {best['step']} (last {last['dev_score']:.1f} at step {last['step']} of {total})"
    search = meta.get("lr_search")
    if search:
        scores, candidates, chosen = search["dev_scores"], search["candidates"], search["chosen"]
        tried = "/".join(f"{s:.1f}" for s in scores)
        tied = [r for r, s in zip(candidates, scores) if s == max(scores)]
        text += (f"; learning rate {chosen:g} chosen from {'/'.join(f'{r:g}' for r in candidates)} (dev {tried} after "
                 f"{search['steps']} steps" + (f", a tie of {len(tied)} on dev score" if len(tied) > 1 else "")
                 + (f", by {search['selection']}" if "selection" in search else "") + ")")
    return text


TARGET_FIELDS = ("model", "task", "language", "metric", "target", "score", "ci_low", "ci_high", "n", "status",
                 "interval", "note")


def learning_targets(run_dir, grids: dict, config: ClaimsConfig) -> list[dict]:
    """One row per (target of ``config.learning_targets``, evaluated model it names): the model's
    source-language score with its 95% interval (:func:`english_score`) against the target;
    status ``met`` when the score reaches it, else ``missed`` (or ``not evaluated``); interval
    ``above`` / ``contains`` / ``below`` the target; where missed, the learning-curve note
    (:func:`learning_curve_note`) from ``finetune/<model>/langneurons_finetune.json``."""
    run_dir = Path(run_dir)
    rows = []
    for target in config.learning_targets:
        names = sorted(name for name in grids if name == target.model or run_seed(name)[0] == target.model)
        base = {"task": target.task, "language": config.source_language, "metric": _metric(target.task),
                "target": target.score}

        def unevaluated(model: str, note: str) -> dict:
            return {"model": model, **base, "score": None, "ci_low": None, "ci_high": None, "n": 0,
                    "status": "not evaluated", "interval": "–", "note": note}

        if not names:
            rows.append(unevaluated(target.model, f"no evaluation of {target.model} in this run"))
        for name in names:
            score = english_score(grids[name].records(target.task, config.source_language), target.task, config, name)
            if "score" not in score:
                rows.append(unevaluated(name, score["note"]))
                continue
            met = score["score"] >= target.score
            low, high = score["ci_low"], score["ci_high"]
            interval = ("–" if low is None else "above" if low >= target.score
                        else "below" if high < target.score else "contains")
            meta_path = run_dir / "finetune" / name / "langneurons_finetune.json"
            note = "" if met else (learning_curve_note(json.loads(meta_path.read_text(encoding="utf-8")))
                                   if meta_path.is_file() else "no fine-tuning record (langneurons_finetune.json)")
            rows.append({"model": name, **base, "score": score["score"], "ci_low": low, "ci_high": high,
                         "n": score["n"], "status": "met" if met else "missed", "interval": interval, "note": note})
    return rows


def write_targets(rows: Sequence[dict], directory) -> list[Path]:
    """``targets.json`` and ``targets.csv`` (fields :data:`TARGET_FIELDS`) in ``directory``."""
    from langneurons.artefacts import write_json, write_text
    from langneurons.tables import rows_to_csv

    directory = Path(directory)
    return [write_json(directory / "targets.json", json.loads(json.dumps(list(rows), default=float))),
            write_text(directory / "targets.csv", rows_to_csv(list(rows), TARGET_FIELDS))]


def _names(models) -> list[str]:
    if models is None:
        return []
    return [models] if isinstance(models, str) else list(models)


def interventions(grids: dict, config: ClaimsConfig, reference_model=None, available: dict | None = None
                  ) -> ClaimResult | None:
    """Mondal et al. 2025: test-time interventions on a target language's neurons gain < 1 point.

    Every (model, task, action) cell of ``lape_set`` is compared, target languages pooled, with the
    unintervened model and with its random twin (the same action on ``random_set``'s neurons).
    The verdict is decided on ``reference_model`` (a name or names: the fine-tuned models that
    learned the task; default every model): supported when every cell's gain over the
    unintervened model has upper bound < +margin and each decisive model's source-language score
    lies above chance + margin; contradicted when some cell's lower bound is > +margin over both
    the unintervened model and its random twin. Cells of other models are listed as context."""
    from langneurons.evaluate.evaluation import BASELINE

    rows, power = [], []
    for model, grid in grids.items():
        present = {p["condition"] for p in grid.predictions}
        conditions = sorted(c for c in present if c.startswith(f"{config.lape_set}:"))
        for task in sorted({p["task"] for p in grid.predictions}):
            languages = _targets(grid, task, config.source_language)
            for condition in conditions:
                twin = f"{config.random_set}:{condition.split(':', 1)[1]}"
                for contrast, versus in (("unintervened", BASELINE), ("random twin", twin)):
                    if versus not in present:
                        continue
                    pairs = [(l, grid.records(task, l, versus), grid.records(task, l, condition)) for l in languages]
                    pairs = [p for p in pairs if p[1] and p[2]]
                    if not pairs:
                        continue
                    row, estimate = _comparison(task, pairs, config, available)
                    rows.append({"model": model, "task": task, "condition": condition, "versus": versus,
                                 "contrast": contrast, "languages": ",".join(p[0] for p in pairs), **row})
                    power.append({"claim": "interventions", "comparison": f"{model} {task} {condition} - {versus}",
                                  "contrast": contrast, **estimate})
    if not rows:
        return None
    chosen = [m for m in _names(reference_model) if any(r["model"] == m for r in rows)]
    decisive_models = chosen or sorted({r["model"] for r in rows})
    for row in rows:
        row["decisive"] = row["model"] in decisive_models
    for row in power:
        row["decisive"] = row["comparison"].split(" ", 1)[0] in decisive_models
    gains = [r for r in rows if r["decisive"] and r["contrast"] == "unintervened"]
    twins = {(r["model"], r["task"], r["condition"]): r for r in rows
             if r["decisive"] and r["contrast"] != "unintervened"}
    learned = [english_score(grids[m].records(t, config.source_language), t, config, m)
               for m, t in sorted({(r["model"], r["task"]) for r in gains})]
    margin = config.practical_points
    units = min(r["n"] for r in gains + list(twins.values()))
    too_few = any(r["delta_ci_low"] is None for r in gains + list(twins.values()))  # < 20 examples: no intervals
    contradicting = [] if too_few else [
        g for g in gains if g["delta_ci_low"] > margin
        and twins.get((g["model"], g["task"], g["condition"]), {"delta_ci_low": math.inf})["delta_ci_low"] > margin]
    all_learned = all(entry["learned"] for entry in learned)
    verdict = (INCONCLUSIVE if too_few else CONTRADICTED if contradicting
               else SUPPORTED if all(g["delta_ci_high"] < margin for g in gains) and all_learned else INCONCLUSIVE)
    headline = (max(contradicting, key=lambda r: r["delta_ci_low"]) if contradicting
                else max(gains, key=lambda r: r["delta"] if too_few else r["delta_ci_high"]))
    twin = twins.get((headline["model"], headline["task"], headline["condition"]))
    twin_text = (f"; vs its random twin {twin['versus']}: {twin['delta']:+.1f} {_row_span(twin)}" if twin
                 else "; no random twin evaluated")
    learn_text = "; ".join(e["note"] for e in learned)
    if not all_learned:
        learn_text = "model did not learn the task: " + learn_text
    return _too_few(ClaimResult(
        id="interventions", claim=f"Test-time interventions on a target language's neurons do not improve its "
                                  f"XNLI/XQuAD score by more than {margin:g} point",
        source="Mondal et al. 2025",
        measure=f"intervened minus unintervened score on {', '.join(decisive_models)}, target languages pooled; "
                f"the least favourable of {len(gains)} (model, task, action) cells (largest upper bound): "
                f"{headline['model']} {headline['task']} {headline['condition']}{twin_text}; {learn_text}",
        estimate=headline["delta"], ci_low=headline["delta_ci_low"], ci_high=headline["delta_ci_high"], unit="points",
        n=f"{headline['n']} examples ({headline['languages']})", test=headline["test"], p_value=headline["p_value"],
        verdict=verdict,
        rule=f"supported: on the model(s) that learned the task ({config.source_language} score's interval above "
             f"chance + {margin:g}), every cell's gain over the unintervened model has upper bound < +{margin:g}; "
             f"contradicted: some cell's lower bound > +{margin:g} over the unintervened model and over its random "
             f"twin ({config.random_set}:<action>, where evaluated); largest gain excluded: the largest upper bound",
        details=rows + learned, power=power, units=units,
        largest_gain_excluded=None if too_few else max(g["delta_ci_high"] for g in gains),
    ))


def _seed_key(seed) -> int:
    return -1 if seed is None else seed


def _same_seed(references: dict, seed):
    """The reference run of ``seed``, else the reference's only run, else None."""
    if seed in references:
        return references[seed]
    return next(iter(references.values())) if len(references) == 1 else None


def neuron_lora(grids: dict, runs: dict, config: ClaimsConfig, seeds=None, available: dict | None = None,
                edges: dict | None = None) -> ClaimResult | None:
    """Mondal et al. 2025: neuron-specific LoRA transfers no better than random-neuron or plain LoRA.

    ``runs``: fine-tuning run name -> (task, neuron mode). Several seeds of a run (``seeds``: run
    name -> (base name, seed), or names ``<base>@<seed>``) are pooled: each seed's neuron-LoRA
    model is paired with the reference of the same seed (or the reference's only run) by
    (language, seed, example); the spread of the per-seed estimates is in the measure, and so are
    the compared runs whose learning rate lies at its grid's edge (``edges``, :func:`learning_rate_edges`)."""
    groups: dict[tuple[str, str], dict] = {}
    bases = {}
    for name, (task, mode) in runs.items():
        if name in grids:
            bases[name], seed = run_seed(name, seeds)
            groups.setdefault((task, mode), {}).setdefault(seed, name)
    rows, power = [], []
    for (task, mode), own in groups.items():
        if mode != "languages":
            continue
        for reference_mode in ("random", "none", "all"):
            references = groups.get((task, reference_mode))
            if not references:
                continue
            ordered = sorted(own.items(), key=lambda item: _seed_key(item[0]))
            matched = [(seed, name, _same_seed(references, seed)) for seed, name in ordered]
            matched = [m for m in matched if m[2] is not None]
            if not matched:
                continue
            several = len(matched) > 1
            languages = _targets(grids[matched[0][1]], task, config.source_language)

            def pairs_of(chosen):
                return [(f"{l}@{seed}" if several else l, grids[reference].records(task, l),
                         grids[name].records(task, l)) for seed, name, reference in chosen for l in languages]

            row, estimate = _comparison(task, pairs_of(matched), config, available)
            per_seed = ([_comparison(task, pairs_of([m]), config, available)[0]["delta"] for m in matched]
                        if several else [])
            model = bases[matched[0][1]] if several else matched[0][1]
            reference = bases[matched[0][2]] if several and len({m[2] for m in matched}) > 1 else matched[0][2]
            rows.append({"model": model, "reference": reference, "reference_mode": reference_mode, "task": task,
                         "languages": ",".join(languages), "seeds": [m[0] for m in matched if m[0] is not None],
                         "seed_deltas": per_seed, "runs": [m[1] for m in matched],
                         "reference_runs": sorted({m[2] for m in matched}), **row})
            power.append({"claim": "neuron-lora", "comparison": f"{model} - {reference}",
                          "contrast": reference_mode, "decisive": reference_mode in ("random", "none"), **estimate})
    decisive = [r for r in rows if r["reference_mode"] in ("random", "none")]
    if not decisive:
        return None
    margin = config.practical_points
    too_few = any(r["delta_ci_low"] is None for r in decisive)  # < 20 examples: no intervals
    verdict = (INCONCLUSIVE if too_few else CONTRADICTED if any(r["delta_ci_low"] > margin for r in decisive)
               else SUPPORTED if all(r["delta_ci_high"] < margin for r in decisive) else INCONCLUSIVE)
    first = {key: by_seed[min(by_seed, key=_seed_key)] for key, by_seed in groups.items()}
    capacity = _capacity_check(grids, first, decisive[0]["task"], config)
    if verdict == SUPPORTED and not capacity["learned"]:
        verdict = INCONCLUSIVE  # a null result of MLP adapters that cannot learn the task proves nothing
    headline = next((r for r in decisive if r["reference_mode"] == "random"), decisive[0])

    def spread(r) -> str:
        if not r["seed_deltas"]:
            return ""
        return (f" (seeds {','.join(map(str, r['seeds']))}: per seed {min(r['seed_deltas']):+.1f} to "
                f"{max(r['seed_deltas']):+.1f})")

    parts = [f"vs {r['reference']}: {r['delta']:+.1f} {_row_span(r)}{spread(r)}" for r in rows if r is not headline]
    if capacity["capacity_control"]:
        parts.append(f"matched-module control {capacity['capacity_control']}: {capacity['accuracy']:.1f}% on the "
                     f"targets (chance 33.3%, p = {capacity['p_value']:.3g})")
    else:
        parts.append(capacity["note"])
    task = headline["task"]
    english = [english_score([r for name in names for r in grids[name].records(task, config.source_language)],
                             task, config, label)
               for label, names in ((headline["model"], headline["runs"]),
                                    (headline["reference"], headline["reference_runs"]))]
    others = "; ".join(parts + [e["note"] for e in english])
    compared = sorted({name for r in decisive for name in (*r["runs"], *r["reference_runs"])}
                      | ({capacity["capacity_control"]} if capacity["capacity_control"] else set()))
    others += _edge_text(compared, edges)
    if verdict == SUPPORTED and not english[0]["learned"]:
        # the neuron-LoRA model itself did not learn: no gain over anything is expected, whatever its
        # learning rate (checked before the grid-edge guard: the more basic of the two reasons)
        verdict = INCONCLUSIVE
        others += f"; model did not learn the task: {english[0]['note']}"
    verdict, guard = _edge_guard(verdict, {
        SUPPORTED: sorted({name for r in decisive for name in r["runs"]}),  # the neuron LoRA that showed no gain
        CONTRADICTED: sorted({name for r in decisive for name in r["reference_runs"]})}, edges)
    others += guard
    seeds_text = f", {len(headline['runs'])} seeds pooled" if headline["seed_deltas"] else ""
    return _too_few(ClaimResult(
        id="neuron-lora", claim="Neuron-specific LoRA does not transfer better than random-neuron LoRA or plain LoRA",
        source="Mondal et al. 2025",
        measure=f"{headline['model']} minus {headline['reference']} on the target languages pooled "
                f"({headline['metric']}{seeds_text}){spread(headline)}; {others}",
        estimate=headline["delta"], ci_low=headline["delta_ci_low"], ci_high=headline["delta_ci_high"],
        unit="points", n=f"{headline['n']} examples ({headline['languages']})", test=headline["test"],
        p_value=headline["p_value"], verdict=verdict,
        rule=f"supported: upper bounds vs random and vs plain LoRA < +{margin:g}, the neuron-LoRA model learned the "
             f"task ({config.source_language} score's interval above chance + {margin:g}) and the "
             "matched-module control (LoRA on every MLP neuron's same weights) learned it too (target-language "
             f"accuracy above chance); contradicted: a lower bound > +{margin:g}; neither where the arm that comes off "
             "worse chose its learning rate at its grid's edge; largest gain excluded: the larger "
             "upper bound (vs random, vs plain LoRA); seeds pooled, paired by (language, seed, example)",
        details=rows + [capacity] + english, power=power, units=min(r["n"] for r in decisive),
        largest_gain_excluded=None if too_few else max(r["delta_ci_high"] for r in decisive),
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


# ---------------------------------------------------------------------------------- subnetwork enhancement

from langneurons.finetune.perplexity_units import (  # noqa: E402,F401 (the subnetwork claim's inputs)
    PERPLEXITY_FILE,
    PERPLEXITY_FORMAT,
    PERPLEXITY_ROLES,
    PerplexityUnits,
)


def load_perplexities(directory) -> dict[str, PerplexityUnits]:
    """Every ``<directory>/<model>/perplexity.json`` by model name (empty when there is none)."""
    directory = Path(directory)
    found = [PerplexityUnits.load(path) for path in sorted(directory.glob(f"*/{PERPLEXITY_FILE}"))]
    by_name = {p.model: p for p in found}
    if len(by_name) != len(found):
        raise LangNeuronsError(f"two perplexity files in {directory} name the same model")
    return by_name


def subnetwork_enhancement(perplexities: dict, config: ClaimsConfig, grids: dict | None = None,
                           edges: dict | None = None) -> ClaimResult | None:
    """Gurgurov et al. 2025 (arXiv 2510.13580): training a language's LAPE neurons' own weights on
    its text lowers its perplexity more than training random rows or LoRA with as many parameters.

    ``perplexities``: model name -> :class:`PerplexityUnits` (one ``baseline``; per target language
    a ``lape-rows`` model and its ``random-rows`` and/or ``lora`` comparators). Per target language
    and comparator C the advantage is NLL/token(C) - NLL/token(LAPE rows) on the target's held-out
    units (> 0: LAPE rows better); the claim pools the mean over target languages, bootstrapped
    over units (resampled per language, the same units for every model). ``grids``: evaluation
    results by model name, for the tuned models' zero-shot XNLI on their target (context). ``edges``:
    tuned models whose learning rate lies at its grid's edge (:func:`learning_rate_edges`), named in
    the measure. With fewer than MIN_RESAMPLING_UNITS units in a target language: no intervals, no verdict."""
    from langneurons.evaluate.metrics import resampling_interval

    baselines = [p for p in perplexities.values() if p.role == "baseline"]
    lape = {p.target_language: p for p in perplexities.values() if p.role == "lape-rows"}
    if len(baselines) != 1 or not lape:
        return None
    baseline = baselines[0]
    targets = sorted(lape)
    comparators = {role: {p.target_language: p for p in perplexities.values() if p.role == role}
                   for role in ("random-rows", "lora")}
    comparators = {role: by_target for role, by_target in comparators.items() if set(targets) <= set(by_target)}
    if not comparators:
        return None
    generator = torch.Generator().manual_seed(config.seed)
    resamples = config.bootstrap_resamples
    rates, resampled, units, tokens = {}, {}, 0, 0  # (model, language) -> NLL/token: point, [resamples]
    fewest = None  # the fewest units of a target language
    for language in targets:
        if language not in baseline.languages:
            raise LangNeuronsError(f"the baseline {baseline.model} has no held-out {language} units")
        ids = [str(u["id"]) for u in baseline.languages[language]]
        index = torch.randint(len(ids), (resamples, len(ids)), generator=generator)
        models = [baseline, lape[language]] + [by_target[language] for by_target in comparators.values()]
        for model in models:
            nll, count = model.arrays(language, ids)
            rates[(model.model, language)] = float(nll.sum() / count.sum())
            resampled[(model.model, language)] = nll[index].sum(1) / count[index].sum(1)
        units += len(ids)
        fewest = len(ids) if fewest is None else min(fewest, len(ids))
        tokens += int(baseline.arrays(language, ids)[1].sum())

    def pooled(first: dict, second: dict) -> dict:
        """Mean over target languages of NLL/token(first) - NLL/token(second) with its interval."""
        point = sum(rates[(first[l].model, l)] - rates[(second[l].model, l)] for l in targets) / len(targets)
        samples = torch.stack([resampled[(first[l].model, l)] - resampled[(second[l].model, l)]
                               for l in targets]).mean(0)
        interval = resampling_interval(samples, fewest, 1 - config.alpha)
        low, high = interval or (None, None)
        return {"estimate": point, "ci_low": low, "ci_high": high,
                "p_value": float((samples <= 0).double().mean()) if interval else None,
                "per_language": {l: rates[(first[l].model, l)] - rates[(second[l].model, l)] for l in targets}}

    untuned = {l: baseline for l in targets}
    advantages = {role: pooled(by_target, lape) for role, by_target in comparators.items()}
    gains = {"lape-rows": pooled(untuned, lape), **{role: pooled(untuned, by_target)
                                                    for role, by_target in comparators.items()}}
    margin = config.practical_nats
    too_few = any(entry["ci_low"] is None for entry in [*advantages.values(), *gains.values()])
    learned = not too_few and gains["lape-rows"]["ci_low"] > 0
    verdict = (INCONCLUSIVE if too_few else SUPPORTED if all(a["ci_low"] > margin for a in advantages.values())
               else CONTRADICTED if learned and any(a["ci_high"] < margin for a in advantages.values())
               else INCONCLUSIVE)
    role = "random-rows" if "random-rows" in advantages else "lora"
    headline = advantages[role]
    parameters = {"lape-rows": {l: lape[l].trainable_parameters for l in targets},
                  **{r: {l: by_target[l].trainable_parameters for l in targets}
                     for r, by_target in comparators.items()}}
    counts = [v for by_language in parameters.values() for v in by_language.values() if v]
    unequal = bool(counts) and max(counts) > 1.05 * min(counts)

    def interval(entry) -> str:
        bounds = None if entry["ci_low"] is None else (entry["ci_low"], entry["ci_high"])
        return f"{entry['estimate']:+.3f} {_span(bounds, fewest)}"

    others = "; ".join(f"vs {r}: {interval(a)}" for r, a in advantages.items() if r != role)
    tuned = "; ".join(f"{r} {interval(g)}" for r, g in gains.items())
    params_text = ", ".join(f"{r} {'/'.join(str(v) for v in by_language.values())}"
                            for r, by_language in parameters.items())
    details = [{"comparison": f"{r} - lape-rows", "kind": "advantage", **a} for r, a in advantages.items()]
    details += [{"comparison": f"untuned - {r}", "kind": "gain over the untuned model", **g} for r, g in gains.items()]
    details.append({"kind": "trainable parameters", **parameters})
    xnli_text = ""
    if grids:
        xnli = _zero_shot_xnli(grids, baseline, {"lape-rows": lape, **comparators}, targets, config)
        details += xnli
        if xnli:
            xnli_text = "; zero-shot XNLI minus the untuned model: " + ", ".join(
                f"{x['role']} {x['delta']:+.1f} {_row_span(x)}" for x in xnli)
    learn_text = ("" if learned or too_few
                  else "LAPE rows did not learn (no significant perplexity gain over the untuned model); ")
    arms = sorted(p.model for p in perplexities.values() if p.role != "baseline")
    verdict, guard = _edge_guard(verdict, {
        SUPPORTED: sorted(by_target[l].model for by_target in comparators.values() for l in targets),
        CONTRADICTED: sorted(lape[l].model for l in targets)}, edges)
    return _too_few(ClaimResult(
        id="subnetwork", claim="Training a language's LAPE neurons' own weights on its text improves that language "
                               "more than training random rows or LoRA with as many trainable parameters",
        source="Gurgurov et al. 2025 (arXiv 2510.13580)",
        measure=f"{learn_text}target-language NLL (nats/token) on held-out text, {role} minus LAPE rows "
                f"(> 0: LAPE rows better), mean over {', '.join(targets)}; {others + '; ' if others else ''}"
                f"gain over the untuned model: {tuned}; trainable parameters: {params_text}"
                f"{' (unequal)' if unequal else ''}{xnli_text}{_edge_text(arms, edges)}{guard}",
        estimate=headline["estimate"], ci_low=headline["ci_low"], ci_high=headline["ci_high"], unit="nats/token",
        n=f"{len(targets)} languages x {units} held-out units ({tokens} tokens)",
        test="paired bootstrap over held-out units (every model on the same resampled units)",
        p_value=headline["p_value"], verdict=verdict,
        rule=f"supported: the LAPE-rows advantage over random rows and over LoRA both have lower bound > "
             f"+{margin:g} nats/token; contradicted: one has upper bound < +{margin:g} while LAPE rows did learn "
             "(gain over the untuned model > 0); neither where the arm that comes off worse chose its learning rate "
             "at its grid's edge; largest gain excluded: the smaller upper bound",
        details=details, units=fewest,
        largest_gain_excluded=None if too_few else min(a["ci_high"] for a in advantages.values()),
    ))


def _zero_shot_xnli(grids: dict, baseline, arms: dict, targets: Sequence[str], config: ClaimsConfig) -> list[dict]:
    """Each arm's XNLI accuracy on the targets it was tuned for, minus the untuned model's, pooled
    (McNemar, Tango's paired score CI); arms or a baseline without evaluation results are left out."""
    if baseline.model not in grids:
        return []
    rows = []
    for role, by_target in arms.items():
        pairs = [(l, grids[baseline.model].records("xnli", l), grids[by_target[l].model].records("xnli", l))
                 for l in targets if by_target[l].model in grids]
        pairs = [p for p in pairs if p[1] and p[2]]
        if pairs:
            row = _comparison("xnli", pairs, config)[0]
            rows.append({"kind": "zero-shot xnli", "role": role, "languages": ",".join(p[0] for p in pairs), **row})
    return rows


# ---------------------------------------------------------------------------------- a run


def learning_rate_edges(run_dir) -> dict[str, str]:
    """The fine-tuning runs of ``run_dir`` whose learning rate was chosen at the edge of its search
    grid: run name -> ``"largest"`` / ``"smallest"`` (:func:`~langneurons.finetune.selection.learning_rate_edge`)."""
    from langneurons.finetune.selection import learning_rate_edge

    edges = {}
    for path in sorted((Path(run_dir) / "finetune").glob("*/langneurons_finetune.json")):
        edge = learning_rate_edge(json.loads(path.read_text(encoding="utf-8")))
        if edge is not None:
            edges[path.parent.name] = edge
    return edges


def _at_edge(names: Sequence[str], edges: dict | None) -> list[str]:
    """``names`` whose learning rate lies at its grid's edge, each as ``name (largest|smallest)``."""
    return [f"{name} ({edges[name]})" for name in names if edges and name in edges]


def _edge_text(names: Sequence[str], edges: dict | None) -> str:
    """The measure's note on ``names`` whose learning rate lies at its grid's edge ('' when none)."""
    chosen = _at_edge(names, edges)
    return ("; learning rate at its grid's edge, a better one may lie beyond: " + ", ".join(chosen)) if chosen else ""


def _edge_guard(verdict: str, losing: dict[str, Sequence[str]], edges: dict | None) -> tuple[str, str]:
    """``verdict`` unless the arm it goes against (``losing``: verdict -> the runs that come off
    worse under it) chose a learning rate at its grid's edge; then :data:`AT_GRID_EDGE` and why."""
    at_edge = _at_edge(losing.get(verdict, ()), edges)
    if not at_edge:
        return verdict, ""
    return AT_GRID_EDGE, (f"; not called {verdict}: the losing arm's learning rate lies at its grid's edge "
                          f"({', '.join(at_edge)}), so better tuned it might not lose (widen the grid)")


def load_grids(run_dir, models: Sequence[str]) -> dict:
    """The evaluation grids ``evaluate/<model>`` of ``models`` that the run has, by model name."""
    from langneurons.evaluate.evaluation import GridResult

    return {name: GridResult.load(Path(run_dir) / "evaluate" / name) for name in models
            if (Path(run_dir) / "evaluate" / name / "scores.json").exists()}


def evaluate_claims(run_dir, config: ClaimsConfig, finetune_runs: dict | None = None,
                    models: Sequence[str] = (), reference_model=None, seeds: dict | None = None,
                    available: dict | None = None, grids: dict | None = None) -> list[ClaimResult]:
    """Every claim the run directory has artefacts for (see the module docstring).

    finetune_runs: run name -> (task, neuron mode); models: the evaluated models (``evaluate/<model>``);
    reference_model: the fine-tuned model(s) that learned the task, on which the test-time claim is
    decided (the evaluation's ``reference``); seeds: run name -> (base name, seed) for seed
    replicates (names ``<base>@<seed>`` are recognised without it); available: task -> test
    examples per language for the power table (default :data:`TEST_POOL_PER_LANGUAGE`).
    ``lm_eval_ppl/<model>/perplexity.json`` (:class:`PerplexityUnits`) feed the subnetwork claim.
    grids: the evaluation grids of ``models`` when the caller has loaded them (:func:`load_grids`)."""
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
    grids = load_grids(run_dir, models) if grids is None else grids
    claims.append(interventions(grids, config, reference_model, available) if grids else None)
    edges = learning_rate_edges(run_dir)
    claims.append(neuron_lora(grids, finetune_runs or {}, config, seeds, available, edges) if grids else None)
    perplexities = load_perplexities(run_dir / "lm_eval_ppl")
    if perplexities:
        scored = {**grids, **{name: GridResult.load(run_dir / "evaluate" / name) for name in perplexities
                              if name not in grids and (run_dir / "evaluate" / name / "scores.json").exists()}}
        claims.append(subnetwork_enhancement(perplexities, config, scored, edges))
    own = ppxc(config.own_set)
    if own is not None:
        claims.append(own_threshold(own, ppxc(config.pooled_set), config))
    claims.append(steering(run_dir / "steering", config))
    claims.append(direction_steering(run_dir / "steering", config))
    direction_path = run_dir / "direction_ppxc" / config.direction_set / "ppxc.json"
    if direction_path.exists():
        directional = PPXCResult.load(direction_path)
        directional.resampling = (config.bootstrap_resamples, 1 - config.alpha, config.seed)
        claims.append(direction_ppxc_specificity(directional, lape_ppxc, config))
    return [claim for claim in claims if claim is not None]


CLAIM_FIELDS = ("id", "claim", "source", "measure", "estimate", "ci_low", "ci_high", "largest_gain_excluded", "unit",
                "n", "test", "p_value", "verdict", "rule", "units")
POWER_FIELDS = ("claim", "comparison", "contrast", "decisive", "task", "metric", "languages", "n", "n_per_language",
                "p01", "p10", "sd", "margin", "achieved_half_width", "required_n", "required_n_per_language",
                "required_n_alone", "available_per_language", "reached", "reachable")


def claims_markdown(claims: Sequence[ClaimResult]) -> str:
    """The claims table (Markdown): claim, what was measured (estimate, interval, n), verdict."""

    def number(value) -> str:
        if value is None:
            return "–"
        return f"{value:+.3f}" if abs(value) < 10 else f"{value:+.1f}"

    lines = ["| claim (source) | measured | estimate [95% CI] | largest gain excluded | n | p | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in claims:
        interval = f" [{number(c.ci_low)}, {number(c.ci_high)}]" if c.ci_low is not None else ""
        if c.verdict == TOO_FEW_UNITS:
            from langneurons.evaluate.metrics import unavailable

            interval = f" [{unavailable(c.units)}]"
        p = "–" if c.p_value is None else ("< 0.001" if c.p_value < 0.001 else f"{c.p_value:.3f}")
        excluded = "–" if c.largest_gain_excluded is None else f"{number(c.largest_gain_excluded)} {c.unit}"
        lines.append(f"| {c.claim} ({c.source}) | {c.measure} | {number(c.estimate)}{interval} {c.unit} | {excluded} | "
                     f"{c.n} | {p} | **{c.verdict}** |")
    return "\n".join(lines) + "\n"


def write_claims(claims: Sequence[ClaimResult], directory) -> list[Path]:
    """``claims.json`` (everything, with details), ``claims.csv`` and ``claims.md`` in ``directory``;
    and the power table of the headline comparisons (``power.json`` / ``power.csv``, fields
    :data:`POWER_FIELDS`: the n now, the half-width it achieves, the n a ±margin interval needs)."""
    from langneurons.artefacts import write_json, write_text
    from langneurons.tables import rows_to_csv

    directory = Path(directory)
    data = [c.to_dict() for c in claims]
    power = [row for c in claims for row in c.power]
    return [write_json(directory / "claims.json", json.loads(json.dumps(data, default=float))),
            write_text(directory / "claims.csv", rows_to_csv(data, CLAIM_FIELDS)),
            write_text(directory / "claims.md", claims_markdown(claims)),
            write_json(directory / "power.json", json.loads(json.dumps(power, default=float))),
            write_text(directory / "power.csv", rows_to_csv(power, POWER_FIELDS))]
