"""Stage API: statistics -> NeuronSet + figures (what ``langneurons identify`` calls)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from langneurons.activations.api import load_statistics_dir
from langneurons.errors import LangNeuronsError, brief
from langneurons.identify.act_prob import THRESHOLDS, act_prob
from langneurons.identify.inputs import check_rate
from langneurons.identify.lape import lape
from langneurons.identify.neuron_set import NeuronSet
from langneurons.identify.random_control import random_control

METHODS = ("lape", "act-prob", "random")


@dataclass(frozen=True)
class IdentifyOptions:
    """Options of all methods; each method reads the ones it uses.

    top_rate: LAPE keeps this fraction of all neurons (default 0.01); act-prob keeps this
    fraction per language (default 0.00125 when None). filter_rate: LAPE's probability bar.
    percentile/threshold: act-prob. like/seed/exclude_selected: random control of ``like``.
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

    def __post_init__(self):
        check_identify_options(self)


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
    entropy, lape_result = None, None
    if options.method == "random":
        if not options.like:
            raise LangNeuronsError("--method random needs --like NEURONSET (the set whose layer counts to match)")
        neuron_set = random_control(NeuronSet.load(options.like), seed=options.seed,
                                    exclude_selected=options.exclude_selected)
    else:
        statistics = load_statistics_dir(statistics_dir, options.languages)
        if options.method == "lape":
            lape_result = lape(statistics, top_rate=_default(options.top_rate, 0.01), filter_rate=options.filter_rate)
            neuron_set, entropy = lape_result.neuron_set, lape_result.entropy
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
            from langneurons.report.neuron_figures import write_neuron_figures

            out.files += write_neuron_figures(neuron_set, output.with_name(output.stem + "_figures"), entropy=entropy,
                                              venn_languages=venn_languages)
    return out
