"""Stage API: statistics -> NeuronSet + figures (what ``langneurons identify`` calls)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from langneurons.activations.api import load_replicates_dir, load_statistics_dir
from langneurons.bounds import MAX_RESAMPLES, check_count, check_seed
from langneurons.errors import LangNeuronsError, brief
from langneurons.identify.act_prob import THRESHOLDS, act_prob
from langneurons.identify.average_precision import average_precision
from langneurons.identify.inputs import check_rate
from langneurons.identify.lape import lape
from langneurons.identify.neuron_set import NeuronSet
from langneurons.identify.random_control import random_control
from langneurons.identify.stability import (
    RESAMPLED_METHODS,
    StabilityOptions,
    StabilityResult,
    stability,
    stable_set,
)

METHODS = ("lape", "act-prob", "ap", "random")


@dataclass(frozen=True)
class IdentifyOptions:
    """Options of all methods; each method reads the ones it uses.

    top_rate: LAPE keeps this fraction of all neurons (default 0.01); act-prob and ap keep this
    fraction per language (default 0.00125 when None). filter_rate: LAPE's probability bar.
    percentile/threshold: act-prob. like/seed/exclude_selected: random control of ``like``.
    min_frequency (LAPE, act-prob): keep only the neurons that ``resamples`` bootstrap resamples
    (seeded with ``seed``) select at least this often (:mod:`.stability`; needs statistics
    collected with ``--replicates``); the set then records each neuron's frequency.
    """

    method: str = "lape"
    languages: tuple[str, ...] | None = None
    top_rate: float | None = None
    filter_rate: float = 0.95
    percentile: float = 90.0
    threshold: str = "pooled"
    like: str | None = None
    seed: int = 0
    exclude_selected: bool = False
    min_frequency: float | None = None
    resamples: int = 100

    def __post_init__(self):
        check_identify_options(self)


ADDED_OPTIONS = {"min_frequency": None, "resamples": 100}
"""Fields added to :class:`IdentifyOptions` after its first release, with their defaults; at the
default they are left out of :func:`options_dict` (the runner's cache keys stay the same)."""


def options_dict(options: IdentifyOptions) -> dict:
    """``asdict(options)`` without the added fields that hold their default value."""
    data = asdict(options)
    for name, default in ADDED_OPTIONS.items():
        if data.get(name) == default:
            data.pop(name, None)
    return data


def check_identify_options(options: IdentifyOptions) -> None:
    """Refuse values no method accepts (checked when the options are made: by the CLI and by
    ``load_config``, before any statistics are read). ``top_rate`` None means the method's default;
    0 is refused like 1.5."""
    if options.method not in METHODS:
        raise LangNeuronsError(f"unknown method {brief(options.method)}; choose one of {', '.join(METHODS)}")
    if options.top_rate is not None:
        check_rate("top_rate", options.top_rate)
    check_rate("filter_rate", options.filter_rate)
    if isinstance(options.percentile, bool) or not isinstance(options.percentile, (int, float)) \
            or not 0.0 < options.percentile < 100.0:
        raise LangNeuronsError(f"percentile must be in (0, 100), got {brief(options.percentile)}")
    if options.threshold not in THRESHOLDS:
        raise LangNeuronsError(f"unknown threshold source {brief(options.threshold)}; use one of {', '.join(THRESHOLDS)}")
    check_seed(options.seed)
    check_count(options.resamples, "resamples", 1, MAX_RESAMPLES)


def _default(value: float | None, default: float) -> float:
    return default if value is None else value


@dataclass
class IdentifyResult:
    neuron_set: NeuronSet
    entropy: torch.Tensor | None = None
    files: list[Path] = field(default_factory=list)


def identify(statistics_dir, options: IdentifyOptions, output=None, figures: bool = True,
             venn_languages=None) -> IdentifyResult:
    """Run one identification method; with ``output`` (.json or .safetensors) save the set,
    the LAPE entropies and the figures (in ``<output stem>_figures/``)."""
    if options.method not in METHODS:
        raise LangNeuronsError(f"unknown method {options.method!r}; choose one of {', '.join(METHODS)}")
    if options.min_frequency is not None:
        if options.method not in RESAMPLED_METHODS:
            raise LangNeuronsError(f"--min-frequency works with {', '.join(RESAMPLED_METHODS)}, not {options.method}")
        if not 0.0 < options.min_frequency <= 1.0:
            raise LangNeuronsError(f"--min-frequency must be in (0, 1], got {options.min_frequency}")
        if options.resamples < 1:
            raise LangNeuronsError(f"--resamples must be at least 1, got {options.resamples}")
    entropy, lape_result = None, None
    if options.method == "random":
        if not options.like:
            raise LangNeuronsError("--method random needs --like NEURONSET (the set whose layer counts to match)")
        neuron_set = random_control(NeuronSet.load(options.like), seed=options.seed,
                                    exclude_selected=options.exclude_selected)
    elif options.min_frequency is not None:
        result = _stability(statistics_dir, options, StabilityOptions(resamples=options.resamples, splits=0,
                                                                      seed=options.seed))
        neuron_set = stable_set(result, options.min_frequency)
    else:
        statistics = load_statistics_dir(statistics_dir, options.languages)
        if options.method == "lape":
            lape_result = lape(statistics, top_rate=_default(options.top_rate, 0.01), filter_rate=options.filter_rate)
            neuron_set, entropy = lape_result.neuron_set, lape_result.entropy
        elif options.method == "ap":
            neuron_set = average_precision(statistics, top_rate=options.top_rate or 0.00125)
        else:
            neuron_set = act_prob(statistics, percentile=options.percentile, top_rate=_default(options.top_rate, 0.00125),
                                  threshold=options.threshold)
    out = IdentifyResult(neuron_set, entropy)
    if output is not None:
        output = Path(output)
        if output.suffix not in (".json", ".safetensors"):
            raise LangNeuronsError(f"neuron set output must end in .json or .safetensors, got {output.name}")
        out.files.append(neuron_set.save(output))
        if lape_result is not None:
            out.files.append(lape_result.save_entropy(output.with_name(output.stem + ".entropy.safetensors")))
        if figures:
            from langneurons.identify.figures import write_neuron_figures

            out.files += write_neuron_figures(neuron_set, output.with_name(output.stem + "_figures"), entropy=entropy,
                                              venn_languages=venn_languages)
    return out


def _stability(statistics_dir, options: IdentifyOptions, stability_options: StabilityOptions) -> StabilityResult:
    statistics = load_statistics_dir(statistics_dir, options.languages)
    replicates = load_replicates_dir(statistics_dir, list(statistics), statistics)
    method_options = {"top_rate": options.top_rate, "filter_rate": options.filter_rate,
                      "percentile": options.percentile, "threshold": options.threshold}
    return stability(statistics, replicates, options.method, stability_options, **method_options)


def stability_of(statistics_dir, options: IdentifyOptions, stability_options: StabilityOptions = StabilityOptions(),
                 out_dir=None, figures: bool = True, min_frequency: float = 0.8) -> tuple[StabilityResult, list[Path]]:
    """Resampling stability of the set ``options`` identifies on ``statistics_dir`` (collected with
    ``--replicates``); with ``out_dir``, write the table, frequencies, the full set, the
    ``min_frequency``-stable set (``stable.json``) and the figures there (what ``langneurons
    stability`` calls)."""
    if options.method not in RESAMPLED_METHODS:
        raise LangNeuronsError(f"stability resamples {', '.join(RESAMPLED_METHODS)}, not {options.method!r}")
    if not 0.0 < min_frequency <= 1.0:
        raise LangNeuronsError(f"min_frequency must be in (0, 1], got {min_frequency}")
    stability_options.check()
    result = _stability(statistics_dir, options, stability_options)
    files: list[Path] = []
    if out_dir is not None:
        out_dir = Path(out_dir)
        files += result.save(out_dir, min_frequency)
        files.append(stable_set(result, min_frequency).save(out_dir / "stable.json"))
        if figures:
            from langneurons.identify.stability_figures import write_stability_figures

            files += write_stability_figures(result, out_dir)
    return result, files
