"""The perplexity-change (PPXC) matrix: intervene on language i's neurons, score language j.

For every intervened (row) language i and evaluated (column) language j, the perplexity of the
held-out blocks of j is measured without intervention (baseline) and with i's neurons
intervened (default: zeroed). Changes (intervened - baseline):

* ``delta_nll`` (nats/token) = NLL_int - NLL_base = log(PPL_int / PPL_base),
* ``delta_ppl`` = PPL_int - PPL_base,
* ``relative_delta_nll`` = delta_nll / NLL_base, ``relative_delta_ppl`` = delta_ppl / PPL_base.

With ``random_control``, a second set of rows intervenes on a random NeuronSet with the same
number of neurons per language and layer (:func:`langneurons.identify.random_control`).

Specificity of row language i (per set), with K languages and off-diagonal mean over j != i:

* ``difference_i = delta_nll(i, i) - mean_{j != i} delta_nll(i, j)`` (nats/token; > 0 when i's
  neurons matter more for i than for the other languages; equals the log of
  (PPL ratio on i) / (geometric mean of the PPL ratios on the others)),
* ``ratio_i = delta_nll(i, i) / mean_{j != i} delta_nll(i, j)`` (NaN when the denominator is 0
  or K = 1).

Intervals (:meth:`PPXCResult.intervals`): a percentile bootstrap over the held-out *documents*
(corpus lines; FLORES sentences) of each evaluated language, or over its packed held-out blocks
for held-out files written before documents were recorded (with a warning; ``ppxc.json`` names
the unit). Baseline and intervened perplexities of a cell use the same resampled documents, so
the interval is that of the paired difference ``delta_nll``. The interval of
``relative_delta_ppl`` is ``exp(interval of delta_nll) - 1`` (a monotone map). Specificity
intervals take each language's resamples independently. An interval needs at least
:data:`~langneurons.evaluate.metrics.MIN_RESAMPLING_UNITS` (20) units in every language it
involves; with fewer it is unavailable (None / empty), never a zero-width or too-narrow one.

Results are cached in ``cache_dir`` under a hash of every input (model weights fingerprint,
the interventions, which cover the neuron sets and values, held-out block fingerprints, token
budget, seed); finished cells are checkpointed, so an interrupted run resumes.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from langneurons.artefacts import stable_hash, write_json, write_text
from langneurons.corpus.packing import TokenBlocks
from langneurons.errors import LangNeuronsError, warn
from langneurons.intervene.interventions import Intervention
from langneurons.intervene.perplexity import PerplexityResult, perplexity, target_count
from langneurons.intervene.spec import InterventionFactory, intervention_factory
from langneurons.progress import progress_bar

LANGUAGE_SPECIFIC = "language-specific"
RANDOM = "random"
MEASURES = ("delta_nll", "delta_ppl", "relative_delta_nll", "relative_delta_ppl")
FORMAT = "langneurons.ppxc/1"


def change(baseline: PerplexityResult, intervened: PerplexityResult) -> dict[str, float]:
    """All change measures of one cell (see the module docstring)."""
    delta_nll = intervened.mean_nll - baseline.mean_nll
    delta_ppl = intervened.perplexity - baseline.perplexity
    return {
        "delta_nll": delta_nll,
        "delta_ppl": delta_ppl,
        "relative_delta_nll": delta_nll / baseline.mean_nll if baseline.mean_nll else math.nan,
        "relative_delta_ppl": delta_ppl / baseline.perplexity,
    }


@dataclass
class PPXCResult:
    """A PPXC matrix per neuron set.

    Attributes:
        languages: row (intervened) and column (evaluated) languages, in order.
        baseline: evaluated language -> perplexity without intervention.
        intervened: set name -> intervened language -> evaluated language -> perplexity.
        neuron_counts: set name -> intervened language -> number of neurons intervened.
        model: ModelInfo as a dict; method: the neuron set's method; intervention: its label.
    """

    languages: list[str]
    baseline: dict[str, PerplexityResult]
    intervened: dict[str, dict[str, dict[str, PerplexityResult]]]
    neuron_counts: dict[str, dict[str, int]]
    model: dict
    method: str
    intervention: str
    key: str = ""
    config: dict = field(default_factory=dict)
    resampling: tuple[int, float, int] = (1000, 0.95, 0)
    """(bootstrap resamples, confidence, seed) of :meth:`intervals`."""

    @property
    def sets(self) -> list[str]:
        return list(self.intervened)

    def _cells(self) -> list[PerplexityResult]:
        cells = [self.baseline[c] for c in self.languages]
        return cells + [v for rows in self.intervened.values() for cols in rows.values() for v in cols.values()]

    @property
    def unit(self) -> str:
        """What the intervals resample: ``documents`` when every cell has per-document NLLs, else
        ``blocks`` (held-out files of older versions), or ``none`` without either."""
        cells = self._cells()
        if all(cell.document_nll is not None for cell in cells):
            return "documents"
        return "blocks" if all(cell.block_nll is not None for cell in cells) else "none"

    @property
    def unit_name(self) -> str:
        return {"documents": "held-out documents", "blocks": "held-out blocks"}.get(self.unit, "none")

    def units(self) -> dict[str, int]:
        """Evaluated language -> number of resampling units (documents or blocks; 0 without either)."""
        unit = self.unit
        if unit == "none":
            return {language: 0 for language in self.languages}
        return {language: len(getattr(self.baseline[language], f"{unit[:-1]}_tokens")) for language in self.languages}

    def intervals(self) -> dict | None:
        """Bootstrap intervals over held-out documents (module docstring), or None when a cell
        lacks per-document and per-block NLLs (results of older versions). An interval is None
        when a language it involves has fewer than MIN_RESAMPLING_UNITS units.

        Returns ``{"delta_nll": {set: {row: {col: (low, high) | None}}}, "difference": {set: {row:
        (low, high) | None}}, "unit": ..., "units": {language: n}}`` (nats/token).
        """
        # not at import: the evaluation stack is heavy
        from langneurons.evaluate.metrics import resampling_interval

        resampled = self.resampled_delta_nll()
        if resampled is None:
            return None
        confidence = self.resampling[1]
        units = self.units()
        result: dict = {"delta_nll": {}, "difference": {}, "unit": self.unit_name, "units": units}
        for set_name, rows in resampled.items():
            result["delta_nll"][set_name] = {
                r: {c: resampling_interval(d, units[c], confidence) for c, d in cols.items()} for r, cols in rows.items()}
            result["difference"][set_name] = {}
            for row, cols in rows.items():
                others = [cols[c] for c in self.languages if c != row]
                if others:
                    difference = cols[row] - torch.stack(others).mean(0)
                    result["difference"][set_name][row] = resampling_interval(difference, min(units.values()),
                                                                              confidence)
        return result

    def resampled_delta_nll(self) -> dict[str, dict[str, dict[str, torch.Tensor]]] | None:
        """set -> row -> col -> float64 [n_resamples]: ``delta_nll`` of the cell on each bootstrap
        resample of col's held-out documents (blocks for older held-out files; the same resamples
        for every row and set, so any statistic of several cells can be bootstrapped from these).
        None without per-document or per-block NLLs. Whether there are enough units for an
        interval is the caller's check (:meth:`units`, ``resampling_interval``)."""
        cached = getattr(self, "_resampled", None)
        if cached is None or cached[0] != self.resampling:
            self._resampled = (self.resampling, self._bootstrap())
        return self._resampled[1]

    def _bootstrap(self) -> dict | None:
        n_resamples, _, seed = self.resampling
        unit = self.unit
        if n_resamples < 1 or unit == "none":
            return None
        if unit == "blocks":
            warn("PPXC: the held-out files record no documents (written by an older langneurons); intervals "
                 "resample packed held-out blocks instead")
        nll, count = f"{unit[:-1]}_nll", f"{unit[:-1]}_tokens"
        deltas: dict[str, dict[str, dict[str, torch.Tensor]]] = {s: {r: {} for r in self.languages} for s in self.sets}
        for index, col in enumerate(self.languages):
            base = self.baseline[col]
            tokens = torch.tensor(getattr(base, count), dtype=torch.float64)
            picks = self.resample_picks(index, len(tokens))
            denominator = tokens[picks].sum(1)
            base_mean = torch.tensor(getattr(base, nll), dtype=torch.float64)[picks].sum(1) / denominator
            for set_name, rows in self.intervened.items():
                for row, cols in rows.items():
                    cell = cols[col]
                    if getattr(cell, count) != getattr(base, count):
                        raise LangNeuronsError(f"PPXC cell {set_name}/{row}/{col} scored other {unit} than its "
                                               "baseline")
                    mean = torch.tensor(getattr(cell, nll), dtype=torch.float64)[picks].sum(1) / denominator
                    deltas[set_name][row][col] = mean - base_mean
        return deltas

    def resample_picks(self, index: int, units: int) -> torch.Tensor:
        """int64 [n_resamples, units]: the units drawn (with replacement) for the ``index``-th
        evaluated language; the baseline and every intervened cell of that column use these."""
        n_resamples, _, seed = self.resampling
        generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
        return torch.randint(units, (n_resamples, units), generator=generator)

    def matrix(self, measure: str = "delta_nll", set_name: str = LANGUAGE_SPECIFIC) -> torch.Tensor:
        """float64 [K, K]: rows intervened language, columns evaluated language. ``measure`` is one
        of :data:`MEASURES` or ``baseline_ppl`` / ``intervened_ppl`` / ``intervened_nll``."""
        if set_name not in self.intervened:
            raise LangNeuronsError(f"no {set_name!r} rows in this PPXC result (it has {self.sets})")
        rows = []
        for row in self.languages:
            values = []
            for col in self.languages:
                base, new = self.baseline[col], self.intervened[set_name][row][col]
                extra = {"baseline_ppl": base.perplexity, "intervened_ppl": new.perplexity,
                         "intervened_nll": new.mean_nll}
                cell = {**change(base, new), **extra}
                if measure not in cell:
                    raise LangNeuronsError(f"unknown PPXC measure {measure!r}; use one of {sorted(cell)}")
                values.append(cell[measure])
            rows.append(values)
        return torch.tensor(rows, dtype=torch.float64)

    def specificity(self, set_name: str = LANGUAGE_SPECIFIC) -> dict[str, dict[str, float]]:
        """Row language -> {"difference", "ratio"} (definitions in the module docstring)."""
        delta = self.matrix("delta_nll", set_name)
        result = {}
        for i, language in enumerate(self.languages):
            others = torch.cat([delta[i, :i], delta[i, i + 1 :]])
            off = float(others.mean()) if len(others) else math.nan
            diagonal = float(delta[i, i])
            ratio = diagonal / off if len(others) and off != 0 else math.nan
            result[language] = {"difference": diagonal - off, "ratio": ratio}
        return result

    def rows(self) -> list[dict]:
        """One table row per (set, intervened language, evaluated language)."""
        table = []
        intervals = self.intervals()
        units = self.units()
        for set_name, by_row in self.intervened.items():
            for row in self.languages:
                for col in self.languages:
                    base, new = self.baseline[col], by_row[row][col]
                    low, high = (intervals["delta_nll"][set_name][row][col] if intervals else None) or (None, None)
                    table.append({
                        "set": set_name, "intervened_language": row, "evaluated_language": col,
                        "neurons": self.neuron_counts[set_name][row], "tokens": base.token_count,
                        "blocks": len(base.block_tokens) if base.block_tokens else None,
                        "documents": len(base.document_tokens) if base.document_tokens else None,
                        "resampling_units": units[col],
                        "baseline_nll": base.mean_nll, "baseline_ppl": base.perplexity,
                        "intervened_nll": new.mean_nll, "intervened_ppl": new.perplexity,
                        **change(base, new),
                        "delta_nll_ci_low": low, "delta_nll_ci_high": high,
                        "relative_delta_ppl_ci_low": None if low is None else math.expm1(low),
                        "relative_delta_ppl_ci_high": None if high is None else math.expm1(high),
                    })
        return table

    def specificity_rows(self) -> list[dict]:
        """One table row per (set, row language): specificity with the interval of ``difference``."""
        intervals = self.intervals()
        units = min(self.units().values())
        table = []
        for set_name in self.sets:
            for language, values in self.specificity(set_name).items():
                low, high = (intervals["difference"][set_name].get(language) if intervals else None) or (None, None)
                table.append({"set": set_name, "language": language, "neurons": self.neuron_counts[set_name][language],
                              **values, "difference_ci_low": low, "difference_ci_high": high,
                              "resampling_units": units})
        return table

    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "key": self.key, "model": self.model, "method": self.method,
            "intervention": self.intervention, "languages": self.languages, "config": self.config,
            "neuron_counts": self.neuron_counts,
            "baseline": {language: result.to_dict() for language, result in self.baseline.items()},
            "intervened": {s: {r: {c: v.to_dict() for c, v in cols.items()} for r, cols in rows.items()}
                           for s, rows in self.intervened.items()},
            "specificity": {s: {l: {k: _finite_or_none(v) for k, v in d.items()} for l, d in self.specificity(s).items()}
                            for s in self.sets},
            "resampling": {"n_resamples": self.resampling[0], "confidence": self.resampling[1],
                           "seed": self.resampling[2], "unit": self.unit_name, "units": self.units(),
                           "min_units": _min_units()},
            "intervals": self.intervals(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "PPXCResult":
        if data.get("format") != FORMAT:
            raise LangNeuronsError(f"not a PPXC result (format {data.get('format')!r})")
        return cls(
            languages=list(data["languages"]),
            baseline={l: PerplexityResult.from_dict(v) for l, v in data["baseline"].items()},
            intervened={s: {r: {c: PerplexityResult.from_dict(v) for c, v in cols.items()} for r, cols in rows.items()}
                        for s, rows in data["intervened"].items()},
            neuron_counts=data["neuron_counts"], model=data["model"], method=data["method"],
            intervention=data["intervention"], key=data.get("key", ""), config=data.get("config", {}),
            resampling=tuple(data["resampling"][k] for k in ("n_resamples", "confidence", "seed"))
            if "resampling" in data else (1000, 0.95, 0),
        )

    @classmethod
    def load(cls, path) -> "PPXCResult":
        path = Path(path)
        if not path.exists():
            raise LangNeuronsError(f"PPXC result not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise LangNeuronsError(f"corrupted PPXC result {path}: {error}") from error
        return cls.from_dict(data)


def _min_units() -> int:
    from langneurons.evaluate.metrics import MIN_RESAMPLING_UNITS

    return MIN_RESAMPLING_UNITS


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def within_budget(blocks: TokenBlocks, token_budget: int | None) -> TokenBlocks:
    """The fewest leading blocks holding at least ``token_budget`` target tokens (all if None)."""
    if token_budget is None:
        return blocks
    if token_budget < 1:
        raise LangNeuronsError(f"token budget must be >= 1, got {token_budget}")
    cumulative = blocks.counted[:, 1:].sum(1).cumsum(0)
    keep = int((cumulative < token_budget).sum()) + 1
    return blocks.select(slice(0, min(keep, blocks.num_blocks)))


def _check_inputs(neuron_set, heldout: Mapping[str, TokenBlocks], languages: Sequence[str]) -> None:
    if not languages:
        raise LangNeuronsError("the PPXC matrix needs at least one language")
    if len(set(languages)) != len(languages):
        raise LangNeuronsError(f"duplicate languages in {list(languages)}")
    for language in languages:
        if language not in neuron_set.languages:
            raise LangNeuronsError(f"language {language!r} is not in the neuron set (it has {neuron_set.languages})")
        if language not in heldout:
            raise LangNeuronsError(f"no held-out text for {language!r} (have {sorted(heldout)})")
        if heldout[language].num_blocks == 0 or target_count(heldout[language]) == 0:
            raise LangNeuronsError(f"the held-out text for {language!r} is empty")


def ppxc_matrix(
    loaded,
    neuron_set,
    heldout: Mapping[str, TokenBlocks],
    languages: Sequence[str] | None = None,
    intervention_kind: str | InterventionFactory = "zero",
    random_control: bool = True,
    seed: int = 0,
    token_budget: int | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    batch_size: int = 8,
    statistics_by_language: Mapping | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
) -> PPXCResult:
    """Compute the PPXC matrix of ``neuron_set`` on ``loaded`` (a LoadedModel).

    Args:
        heldout: language -> held-out TokenBlocks (never the identification text).
        languages: rows and columns (default: the set's languages that have held-out blocks).
        intervention_kind: an action string without language (``zero``, ``scale=0.5``,
            ``stat=p10``: each row's own statistic; see :mod:`.spec`) or a factory
            ``(language, neurons [k, 2]) -> Intervention``.
        random_control: add rows intervening on a layer-matched random set drawn with ``seed``.
        token_budget: score about this many target tokens per language (whole leading blocks).
        statistics_by_language: ActivationStatistics for ``stat`` / ``add`` actions.
        n_resamples, confidence: document (or block) bootstrap of the intervals (seeded with
            ``seed``; 0: none); fewer than MIN_RESAMPLING_UNITS units per language: no interval.
    """
    from langneurons.identify.random_control import random_control as draw_random_control

    languages = list(languages) if languages is not None else [l for l in neuron_set.languages if l in heldout]
    _check_inputs(neuron_set, heldout, languages)
    neuron_set.check_model(loaded.info)
    for language in languages:  # ids of another tokenizer would score other tokens (or index past the embedding)
        heldout[language].check_tokenizer(loaded.tokenizer)
    blocks = {language: within_budget(heldout[language], token_budget) for language in languages}
    factory = intervention_factory(intervention_kind, loaded, statistics_by_language)
    sets = {LANGUAGE_SPECIFIC: neuron_set}
    if random_control:
        sets[RANDOM] = draw_random_control(neuron_set, seed=seed)
    interventions: dict[str, dict[str, Intervention]] = {
        name: {row: factory(row, chosen.indices(row)) for row in languages} for name, chosen in sets.items()
    }
    config = {"token_budget": token_budget, "seed": seed, "random_control": random_control,
              "heldout": {l: {"fingerprint": b.fingerprint(), "tokens": target_count(b),
                              "documents": b.document_ids is not None} for l, b in blocks.items()}}
    counts = {name: {row: iv.num_neurons for row, iv in rows.items()} for name, rows in interventions.items()}
    return ppxc_from_interventions(loaded, blocks, languages, interventions, counts, neuron_set.method, config,
                                   cache_dir, progress, batch_size, (n_resamples, confidence, seed))


def ppxc_from_interventions(
    loaded,
    blocks: Mapping[str, TokenBlocks],
    languages: list[str],
    interventions: Mapping[str, Mapping[str, object]],
    counts: Mapping[str, Mapping[str, int]],
    method: str,
    config: dict,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    batch_size: int = 8,
    resampling: tuple[int, float, int] = (1000, 0.95, 0),
) -> PPXCResult:
    """The PPXC cells of given interventions: set name -> row language -> an intervention
    :func:`~langneurons.intervene.interventions.intervene` accepts (neurons or residual
    directions), scored on ``blocks`` (already within the token budget). ``counts``: units
    intervened per set and row (0: the row is the baseline). ``config`` and ``method`` enter the
    cache key; ``resampling`` is (bootstrap resamples, confidence, seed) of the intervals."""
    n_resamples, confidence, seed = resampling
    label = next(iter(interventions[LANGUAGE_SPECIFIC].values())).label
    key = stable_hash(FORMAT, loaded.info.to_dict(), method, languages, config,
                      {name: {row: iv.key() for row, iv in rows.items()} for name, rows in interventions.items()})
    final = partial = None
    cells: dict[str, dict] = {}
    if cache_dir is not None:
        final = Path(cache_dir) / f"ppxc-{key}.json"
        partial = Path(cache_dir) / f"ppxc-{key}.partial.json"
        if final.exists():
            try:
                cached = PPXCResult.load(final)
                cached.resampling = (n_resamples, confidence, seed)
                return cached
            except (LangNeuronsError, KeyError, TypeError):
                pass  # unreadable: recompute and replace
        if partial.exists():
            try:
                cells = json.loads(partial.read_text(encoding="utf-8"))
            except ValueError:
                cells = {}

    jobs = [("baseline", None, col) for col in languages]
    jobs += [(name, row, col) for name, rows in interventions.items() for row in languages
             if counts[name][row] > 0 for col in languages]
    for name, row, col in progress_bar(jobs, "PPXC cells", enabled=progress):
        cell = f"{name}/{row}/{col}"
        if cell in cells:
            continue
        intervention = interventions[name][row] if row is not None else None
        result = perplexity(loaded, blocks[col], batch_size=batch_size, intervention=intervention, progress=False)
        cells[cell] = result.to_dict()
        if partial is not None:
            write_json(partial, cells)

    baseline = {col: PerplexityResult.from_dict(cells[f"baseline/None/{col}"]) for col in languages}
    intervened = {
        name: {row: {col: (PerplexityResult.from_dict(cells[f"{name}/{row}/{col}"]) if counts[name][row]
                           else baseline[col])  # nothing intervened: exactly the baseline
                     for col in languages} for row in languages}
        for name in interventions
    }
    counts = {name: dict(rows) for name, rows in counts.items()}
    result = PPXCResult(languages, baseline, intervened, counts, loaded.info.to_dict(), method, label,
                        key, config, (n_resamples, confidence, seed))
    if final is not None:
        write_json(final, result.to_dict())
        partial.unlink(missing_ok=True)
    return result


def write_ppxc(result: PPXCResult, directory: str | Path, stem: str = "ppxc") -> dict[str, Path]:
    """Write ``<stem>.csv`` (one row per set x intervened x evaluated language), ``<stem>.json``
    (everything, with specificity) and ``<stem>_specificity.csv``; all atomic."""
    directory = Path(directory)
    table = result.rows()
    specificity = result.specificity_rows()
    return {
        "csv": write_text(directory / f"{stem}.csv", _csv(table)),
        "json": write_json(directory / f"{stem}.json", result.to_dict()),
        "specificity_csv": write_text(directory / f"{stem}_specificity.csv", _csv(specificity)),
    }


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
