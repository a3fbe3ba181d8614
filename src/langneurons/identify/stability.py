"""How stable is a neuron set? Resampling intervals from the per-chunk counts of one pass.

A statistics folder collected with ``--replicates R`` holds, per language, the counts of R
disjoint interleaved chunks of its token blocks (:mod:`langneurons.activations.replicates`).
A resample gives every chunk a weight and re-runs the *same* identification method with the
same options on the weighted counts:

* **bootstrap**: ``resamples`` times, each language draws R chunks with replacement (weights =
  multiplicities; languages independently, one seeded generator); per language we report the
  Jaccard of each resample's set with the full-data set (median and the central ``confidence``
  interval), the interval of the set size, and each neuron's **selection frequency** (fraction
  of resamples whose set contains it).
* **split-half**: ``splits`` times, each language's chunks are split at random into two
  disjoint halves (R // 2 and R - R // 2 chunks) and the two halves' sets are compared (Jaccard;
  median and interval). No bootstrap assumption, but each half has half the tokens, so it
  understates the stability of a set from all the data.
* **chance**: the expected Jaccard of two random sets with the full set's per-layer counts,
  drawn uniformly and independently within each layer (:func:`expected_random_jaccard`, exact).

What a resample recomputes. LAPE: P(act > 0) per language from the weighted positive and token
counts, then the bar, the entropies and the top neurons as in :func:`~.lape.lape`. act-prob: the
threshold t (pooled or own percentile) is held at its full-data value; P(act > t) comes from
the weighted per-chunk octave histograms (:func:`~langneurons.activations.replicates.resampled_above`).
``ap`` and ``random`` sets are not resampled.

Intervals need units. The chunks are the resampling units of both schemes: with fewer than
:data:`~langneurons.bounds.MIN_RESAMPLING_UNITS` (20) chunks the central intervals
(``*_low`` / ``*_high``) are unavailable (None; "n/a (k units < 20)" in tables) and only the
medians are reported; collect with ``--replicates 20`` or more for intervals.

Deterministic: the same statistics, options and seed give the same result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from langneurons.activations.replicates import ReplicateStatistics, ThresholdSplit
from langneurons.activations.statistics import ActivationStatistics
from langneurons.artefacts import atomic_save_safetensors, write_csv, write_json
from langneurons.bounds import MAX_RESAMPLES, check_count, check_seed, enough_units
from langneurons.errors import LangNeuronsError
from langneurons.identify.act_prob import top_per_language
from langneurons.identify.inputs import check_rate, select_statistics, statistics_source
from langneurons.identify.lape import lape_from_probability
from langneurons.identify.neuron_set import NeuronSet

RESAMPLED_METHODS = ("lape", "act-prob")


@dataclass(frozen=True)
class StabilityOptions:
    """resamples: bootstrap resamples B; splits: random half-splits; seed: of both;
    confidence: the central interval reported (0.95: 2.5th to 97.5th percentile)."""

    resamples: int = 100
    splits: int = 20
    seed: int = 0
    confidence: float = 0.95

    def __post_init__(self):
        self.check()  # when made: by the CLI and the config, before any statistics are read

    def check(self) -> None:
        if self.resamples < 1 or self.splits < 0:
            raise LangNeuronsError(f"need resamples >= 1 and splits >= 0, got {self.resamples} and {self.splits}")
        check_count(self.resamples, "resamples", 1, MAX_RESAMPLES)
        check_count(self.splits, "splits", 0, MAX_RESAMPLES)
        check_seed(self.seed)
        check_rate("confidence", self.confidence)


# ---------------------------------------------------------------------------------- chance


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def intersection_distribution(counts_a: Sequence[int], counts_b: Sequence[int], neurons_per_layer: int) -> torch.Tensor:
    """P(|A ∩ B| = x), float64 [min(|A|, |B|) + 1], for A and B drawn uniformly without replacement
    within each layer (``counts_a[l]`` and ``counts_b[l]`` of the layer's ``neurons_per_layer``),
    independently: the convolution over layers of hypergeometric distributions."""
    total = torch.ones(1, dtype=torch.float64)
    N = neurons_per_layer
    for a, b in zip(counts_a, counts_b):
        a, b = int(a), int(b)
        if a > N or b > N or a < 0 or b < 0:
            raise LangNeuronsError(f"a layer has {N} neurons, cannot draw {a} and {b}")
        if a == 0 or b == 0:
            continue
        low, high = max(0, a + b - N), min(a, b)
        pmf = torch.zeros(high + 1, dtype=torch.float64)
        for x in range(low, high + 1):
            pmf[x] = math.exp(_log_choose(a, x) + _log_choose(N - a, b - x) - _log_choose(N, b))
        total = torch.nn.functional.conv1d(total.view(1, 1, -1), pmf.flip(0).view(1, 1, -1),
                                           padding=pmf.numel() - 1).view(-1)
    return total


def expected_random_jaccard(counts_a: Sequence[int], counts_b: Sequence[int], neurons_per_layer: int) -> float:
    """E[|A ∩ B| / |A ∪ B|] for random layer-matched sets (see :func:`intersection_distribution`);
    0 when both sets are empty."""
    size_a, size_b = int(sum(counts_a)), int(sum(counts_b))
    if size_a + size_b == 0:
        return 0.0
    pmf = intersection_distribution(counts_a, counts_b, neurons_per_layer)
    x = torch.arange(pmf.numel(), dtype=torch.float64)
    return float((pmf * x / (size_a + size_b - x)).sum())


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a ∩ b| / |a ∪ b| of two boolean masks; NaN when both are empty."""
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else math.nan


# ---------------------------------------------------------------------------------- resampling


class Resampler:
    """Re-runs one identification method on chunk-weighted counts of every language.

    ``statistics``/``replicates``: per language (same order), the merged statistics and the
    per-chunk counts; ``method`` and its options as in :class:`~.api.IdentifyOptions`.
    """

    def __init__(self, statistics: Mapping[str, ActivationStatistics], replicates: Mapping[str, ReplicateStatistics],
                 method: str, top_rate: float | None = None, filter_rate: float = 0.95, percentile: float = 90.0,
                 threshold: str = "pooled"):
        if method not in RESAMPLED_METHODS:
            raise LangNeuronsError(f"stability resamples {', '.join(RESAMPLED_METHODS)}, not {method!r}")
        self.statistics = select_statistics(statistics, minimum_languages=2 if method == "lape" else 1)
        self.languages = list(self.statistics)
        missing = [language for language in self.languages if language not in replicates]
        if missing:
            raise LangNeuronsError(f"no replicate statistics for {missing}")
        self.replicates = {language: replicates[language] for language in self.languages}
        counts = {reps.count for reps in self.replicates.values()}
        if len(counts) != 1:
            raise LangNeuronsError(f"languages were collected with different --replicates: {sorted(counts)}")
        self.count = counts.pop()
        empty = [language for language, reps in self.replicates.items() if (reps.token_count == 0).any()]
        if empty:
            raise LangNeuronsError(f"some of the {self.count} chunks of {empty} hold no tokens; collect with fewer "
                                   "--replicates or more tokens")
        for language, reps in self.replicates.items():
            stats = self.statistics[language]
            if not reps.meta.same_model(stats.meta) or reps.meta.corpus_fingerprint != stats.meta.corpus_fingerprint:
                raise LangNeuronsError(f"replicate statistics of {language!r} are not of the same pass as its statistics")
        self.method = method
        self.top_rate = check_rate("top_rate", top_rate if top_rate is not None else
                                   (0.01 if method == "lape" else 0.00125))
        self.filter_rate, self.percentile, self.threshold = check_rate("filter_rate", filter_rate), percentile, threshold
        self.source = statistics_source(self.statistics)
        self._splits: dict[str, ThresholdSplit] = {}
        if method == "act-prob":
            from langneurons.identify.act_prob import activation_thresholds

            thresholds = activation_thresholds(self.statistics, percentile, threshold)
            self._splits = {language: ThresholdSplit(self.statistics[language], thresholds[k])
                            for k, language in enumerate(self.languages)}
            self._per_chunk = {language: split.per_chunk(self.replicates[language])
                               for language, split in self._splits.items()}

    def identify(self, weights: Mapping[str, torch.Tensor]) -> NeuronSet:
        """The method's set on the counts of every language's chunks weighted by ``weights[language]`` [R]."""
        if self.method == "lape":
            probability = []
            for language in self.languages:
                tokens, positive = self.replicates[language].weighted_counts(weights[language])
                if tokens <= 0:
                    raise LangNeuronsError(f"a resample of {language!r} has no tokens")
                probability.append(positive / tokens)
            return lape_from_probability(torch.stack(probability), self.languages, self.top_rate, self.filter_rate,
                                         self.source).neuron_set
        scores = []
        for language in self.languages:
            reps = self.replicates[language]
            tokens, _ = reps.weighted_counts(weights[language])
            if tokens <= 0:
                raise LangNeuronsError(f"a resample of {language!r} has no tokens")
            scores.append(self._splits[language].above_weighted(self._per_chunk[language], weights[language]) / tokens)
        parameters = {"percentile": float(self.percentile), "top_rate": self.top_rate, "threshold": self.threshold}
        return top_per_language(torch.stack(scores), self.languages, self.top_rate, "act-prob", parameters,
                                self.source)

    def full(self) -> NeuronSet:
        """The method on the merged statistics (what ``langneurons identify`` gives)."""
        if self.method == "lape":
            from langneurons.identify.lape import lape

            return lape(self.statistics, top_rate=self.top_rate, filter_rate=self.filter_rate).neuron_set
        from langneurons.identify.act_prob import act_prob

        return act_prob(self.statistics, percentile=self.percentile, top_rate=self.top_rate, threshold=self.threshold)


@dataclass
class StabilityResult:
    """Resampling results of one method; per-language tensors in ``languages`` order.

    neuron_set: the full-data set; frequency: language -> float32 [L, N], fraction of bootstrap
    resamples selecting each neuron; bootstrap_jaccard / bootstrap_size: [B, K]; split_jaccard:
    [S, K]; chance: [K], expected Jaccard of random layer-matched sets of the full set's counts.
    """

    neuron_set: NeuronSet
    frequency: dict[str, torch.Tensor]
    bootstrap_jaccard: torch.Tensor
    bootstrap_size: torch.Tensor
    split_jaccard: torch.Tensor
    chance: torch.Tensor
    options: StabilityOptions
    replicates: int
    method_options: dict = field(default_factory=dict)

    @property
    def languages(self) -> list[str]:
        return self.neuron_set.languages

    def resampling_parameters(self) -> dict:
        """What a NeuronSet records about the resampling behind its frequencies."""
        return {"replicates": self.replicates, "resamples": self.options.resamples, "seed": self.options.seed,
                "scheme": "bootstrap over interleaved block chunks (block b -> chunk b mod replicates)"}

    def table(self, min_frequency: float = 0.8) -> list[dict]:
        """One row per language: sizes, bootstrap and split-half Jaccard (median, interval), chance,
        and the size of the ``min_frequency``-stable subset of the full set. Intervals are None
        with fewer than MIN_RESAMPLING_UNITS chunks (``resampling_units``)."""

        lower, upper = (1 - self.options.confidence) / 2, 1 - (1 - self.options.confidence) / 2
        enough = enough_units(self.replicates)

        def bound(values, q):
            return _quantile(values, q) if enough else None

        rows = []
        for k, language in enumerate(self.languages):
            boot, size, split = self.bootstrap_jaccard[:, k], self.bootstrap_size[:, k].double(), self.split_jaccard[:, k]
            full_mask = self.neuron_set.mask(language)
            stable = int((full_mask & (self.frequency[language] >= min_frequency)).sum())
            rows.append({
                "language": language, "set_size": int(full_mask.sum()),
                "size_median": _quantile(size, 0.5), "size_low": bound(size, lower), "size_high": bound(size, upper),
                "bootstrap_jaccard_median": _quantile(boot, 0.5), "bootstrap_jaccard_low": bound(boot, lower),
                "bootstrap_jaccard_high": bound(boot, upper),
                "split_half_jaccard_median": _quantile(split, 0.5), "split_half_jaccard_low": bound(split, lower),
                "split_half_jaccard_high": bound(split, upper), "resampling_units": self.replicates,
                "chance_jaccard": float(self.chance[k]), f"stable_size_{min_frequency:g}": stable,
            })
        return rows

    def save(self, directory, min_frequency: float = 0.8) -> list[Path]:
        """``stability.csv`` / ``stability.json`` (table, options, raw resample values),
        ``frequency.safetensors`` (per-language float32 [L, N]), ``neurons.json`` (the full set)."""
        directory = Path(directory)
        table = self.table(min_frequency)
        files = [write_csv(directory / "stability.csv", table),
                 write_json(directory / "stability.json", {
                     "method": self.neuron_set.method, "method_options": self.method_options,
                     "options": asdict(self.options), "replicates": self.replicates, "languages": self.languages,
                     "table": table, "bootstrap_jaccard": _plain(self.bootstrap_jaccard),
                     "bootstrap_size": self.bootstrap_size.tolist(), "split_jaccard": _plain(self.split_jaccard)}),
                 atomic_save_safetensors({language: self.frequency[language].contiguous() for language in self.languages},
                                         directory / "frequency.safetensors",
                                         {"format": "langneurons.selection-frequency/1", "method": self.neuron_set.method,
                                          "resampling": _json(self.resampling_parameters())}),
                 self.neuron_set.save(directory / "neurons.json")]
        return files


def _json(value) -> str:
    import json

    return json.dumps(value, sort_keys=True)


def _plain(values: torch.Tensor) -> list:
    return [[None if math.isnan(v) else v for v in row] for row in values.tolist()]


def _quantile(values: torch.Tensor, q: float) -> float | None:
    values = values[~torch.isnan(values)]
    return float(torch.quantile(values.double(), q)) if values.numel() else None


def stability(statistics: Mapping[str, ActivationStatistics], replicates: Mapping[str, ReplicateStatistics],
              method: str = "lape", options: StabilityOptions = StabilityOptions(), **method_options) -> StabilityResult:
    """Bootstrap and split-half resampling of ``method`` (module docstring); ``method_options``
    are the method's options (``top_rate``, ``filter_rate``, ``percentile``, ``threshold``)."""
    options.check()
    resampler = Resampler(statistics, replicates, method, **method_options)
    if resampler.count < 2:
        raise LangNeuronsError(f"resampling needs at least 2 chunks; the statistics have {resampler.count}")
    languages, R = resampler.languages, resampler.count
    full = resampler.full()
    full_masks = {language: full.mask(language) for language in languages}
    generator = torch.Generator().manual_seed(options.seed)
    counts = {language: torch.zeros(full.num_layers, full.neurons_per_layer, dtype=torch.int64) for language in languages}
    boot_jaccard = torch.zeros(options.resamples, len(languages), dtype=torch.float64)
    boot_size = torch.zeros(options.resamples, len(languages), dtype=torch.int64)
    for b in range(options.resamples):
        weights = {language: torch.bincount(torch.randint(R, (R,), generator=generator), minlength=R).double()
                   for language in languages}
        resample = resampler.identify(weights)
        for k, language in enumerate(languages):
            mask = resample.mask(language)
            counts[language] += mask
            boot_jaccard[b, k] = jaccard(mask, full_masks[language])
            boot_size[b, k] = int(mask.sum())
    split_jaccard = torch.zeros(options.splits, len(languages), dtype=torch.float64)
    for s in range(options.splits):
        first = {}
        for language in languages:
            order = torch.randperm(R, generator=generator)
            first[language] = torch.zeros(R, dtype=torch.float64).index_fill_(0, order[: R // 2], 1.0)
        half_a = resampler.identify(first)
        half_b = resampler.identify({language: 1.0 - weights for language, weights in first.items()})
        for k, language in enumerate(languages):
            split_jaccard[s, k] = jaccard(half_a.mask(language), half_b.mask(language))
    per_layer = full.counts_per_layer()
    chance = torch.tensor([expected_random_jaccard(per_layer[k].tolist(), per_layer[k].tolist(), full.neurons_per_layer)
                           for k in range(len(languages))], dtype=torch.float64)
    frequency = {language: (counts[language].double() / options.resamples).float() for language in languages}
    return StabilityResult(full, frequency, boot_jaccard, boot_size, split_jaccard, chance, options, R,
                           {"method": method, **method_options})


def stable_set(result: StabilityResult, min_frequency: float) -> NeuronSet:
    """The full-data set restricted to neurons selected in at least ``min_frequency`` of the
    bootstrap resamples, with each kept neuron's frequency and the resampling parameters."""
    if not 0.0 < min_frequency <= 1.0:
        raise LangNeuronsError(f"min_frequency must be in (0, 1], got {min_frequency!r}")
    full = result.neuron_set
    masks, frequency = {}, {}
    for language in full.languages:
        mask = full.mask(language) & (result.frequency[language] >= min_frequency)
        masks[language] = mask
        frequency[language] = result.frequency[language][mask].double()  # row order of mask.nonzero()
    parameters = {**full.parameters, "min_frequency": float(min_frequency), "resampling": result.resampling_parameters()}
    neurons = {language: mask.nonzero() for language, mask in masks.items()}
    return NeuronSet(neurons, full.num_layers, full.neurons_per_layer, full.method, parameters, dict(full.source),
                     frequency)
