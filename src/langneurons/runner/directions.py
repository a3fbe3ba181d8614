"""The runner's direction stages (issue 19), kept apart from the neuron stages.

Config (parsed into :class:`~langneurons.runner.config.ExperimentConfig`)::

    statistics: {residual: true, ...}         # residual-stream sums in the same pass
    identification:
      - {name: lape, method: lape}
      - {name: diffmean, method: diffmean, rank: 0}   # -> ExperimentConfig.directions
    direction_ppxc:                            # directional PPXC (DirectionPPXCConfig)
      direction_sets: [diffmean]
      layers: "4-9"                            # where the directions are removed (default all)
    steering:
      neuron_set: lape                         # may be null when directions is set
      directions: diffmean                     # a diffmean entry of identification
      direction_layers: ["6", "4-9"]           # and the other SteeringOptions direction_* keys

Stages: ``identify/<name>`` writes ``directions.safetensors``
(:func:`langneurons.directions.api.identify_directions`); ``direction_ppxc/<name>`` writes the
PPXC tables and heatmap (:func:`langneurons.directions.api.direction_ppl_matrix`); the steering
stage reads the direction set when ``steering.directions`` names one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from langneurons.directions.api import DiffMeanOptions, DirectionPPXCOptions, parse_layers
from langneurons.errors import LangNeuronsError, brief

DIFFMEAN = "diffmean"
DIRECTIONS_FILE = "directions.safetensors"
DIRECTION_STEERING_KEYS = ("direction_layers", "direction_strengths", "direction_ablate", "direction_weighting")
"""SteeringOptions fields that only matter with ``steering.directions``."""
ADDED_STEERING_KEYS = ("neuron_modes",)
"""SteeringOptions fields added with issue 19, left out of a config's dict and stage inputs at their
defaults (so runs without them keep their cache keys)."""


def steering_keys(options: dict, directions: bool) -> dict:
    """``asdict(SteeringOptions)`` without the direction keys (no ``steering.directions``) and the
    added keys at their defaults: what a config without them wrote and hashed."""
    from langneurons.steer.experiment import SteeringOptions

    defaults = SteeringOptions()
    return {k: v for k, v in options.items()
            if (directions or k not in DIRECTION_STEERING_KEYS)
            and not (k in ADDED_STEERING_KEYS and tuple(v) == getattr(defaults, k))}


@dataclass(frozen=True)
class DirectionIdentifyConfig:
    """One direction set of ``identification`` (``method: diffmean``): its name and options
    (``languages``: default the experiment's; ``rank``: the language subspace's)."""

    name: str
    options: DiffMeanOptions = field(default_factory=DiffMeanOptions)

    @property
    def method(self) -> str:
        return DIFFMEAN

    def to_entry(self) -> dict:
        """The ``identification`` entry this was read from."""
        languages = list(self.options.languages) if self.options.languages is not None else None
        entry = {"name": self.name, "method": DIFFMEAN, "rank": self.options.rank}
        return entry if languages is None else {**entry, "languages": languages}


@dataclass(frozen=True)
class DirectionPPXCConfig:
    """Directional PPXC of ``direction_sets`` (names of diffmean entries) on ``languages``
    (default all); ``layers``: where the directions are removed (``"4-9"``, ``"2,5"``; None: all).
    The rest as in :class:`langneurons.directions.api.DirectionPPXCOptions`."""

    direction_sets: tuple[str, ...] = (DIFFMEAN,)
    languages: tuple[str, ...] | None = None
    layers: str | None = None
    random_control: bool = True
    seed: int = 0
    weighting: str = "isotropic"
    token_budget: int | None = None
    batch_size: int = 8

    def options(self, languages) -> DirectionPPXCOptions:
        return DirectionPPXCOptions(languages=tuple(languages), layers=parse_layers(self.layers),
                                    random_control=self.random_control, seed=self.seed, weighting=self.weighting,
                                    token_budget=self.token_budget, batch_size=self.batch_size)


# ---------------------------------------------------------------------------------- parsing


def split_identification(section: Any) -> tuple[list, list[tuple[int, DirectionIdentifyConfig]]]:
    """``identification`` entries -> (the neuron entries, as written; [(index, direction entry)])
    for ``method: diffmean``."""
    from langneurons.runner.config import _build, _convert

    if not isinstance(section, list):
        return section, []
    neurons, directions = [], []
    for i, entry in enumerate(section):
        if not (isinstance(entry, Mapping) and entry.get("method") == DIFFMEAN):
            neurons.append(entry)
            continue
        path = f"identification[{i}]"
        if "name" not in entry:
            raise LangNeuronsError(f"missing key {path}.name")
        options = {k: v for k, v in entry.items() if k not in ("name", "method")}
        directions.append((i, DirectionIdentifyConfig(
            name=_convert(str, entry["name"], f"{path}.name"),
            options=_build(DiffMeanOptions, options, path, extra=("name", "method")))))
    return neurons, directions


def parse_direction_ppxc(section: Any) -> DirectionPPXCConfig | None:
    from langneurons.runner.config import _build

    return None if section is None else _build(DirectionPPXCConfig, section, "direction_ppxc")


def to_dict_entries(config) -> dict:
    """The direction parts of ``config.to_dict()``: diffmean entries back into ``identification``,
    ``direction_ppxc`` when set (absent keys keep configs without directions hashing as before)."""
    from langneurons.runner.config import _plain

    out: dict = {}
    if config.directions:
        out["identification"] = [entry.to_entry() for entry in config.directions]
    if config.direction_ppxc is not None:
        out["direction_ppxc"] = _plain(asdict(config.direction_ppxc))
    return out


# ---------------------------------------------------------------------------------- validation


def validate_directions(config, neuron_sets: list[str]) -> None:
    """Direction entries need ``statistics.residual: true``; names are unique among all sets;
    ``direction_ppxc`` and ``steering.directions`` name diffmean entries; languages are the
    experiment's. One-line errors."""
    from langneurons.runner.config import _languages, _names

    names = [entry.name for entry in config.directions]
    for i, entry in enumerate(config.directions):
        path = f"identification ({entry.name})"
        if not config.statistics.residual:
            raise LangNeuronsError(f"{path}: method diffmean needs statistics.residual: true (residual-stream sums)")
        if entry.name in neuron_sets or names.count(entry.name) > 1:
            raise LangNeuronsError(f"{path}.name: set {brief(entry.name)} is defined twice")
        languages = entry.options.languages or config.languages
        if entry.options.languages is not None:
            _languages(entry.options.languages, f"{path}.languages", config.languages)
        if len(languages) < 2 or entry.options.rank > len(languages) - 1:
            raise LangNeuronsError(f"{path}: diffmean needs >= 2 languages and rank <= languages - 1 "
                                   f"(got {len(languages)} languages, rank {entry.options.rank})")
    section = config.direction_ppxc
    if section is not None:
        _names(section.direction_sets, "direction_ppxc.direction_sets", names, "diffmean direction set")
        if section.languages is not None:
            _languages(section.languages, "direction_ppxc.languages", config.languages)
        try:
            section.options(section.languages or config.languages)
        except LangNeuronsError as error:
            raise LangNeuronsError(f"direction_ppxc: {error}") from None
    steering = config.steering
    if steering is not None and steering.directions is not None:
        _names([steering.directions], "steering.directions", names, "diffmean direction set")
        if not steering.options.direction_layers:
            raise LangNeuronsError("steering.direction_layers: direction steering needs a layer sweep (e.g. ['6'])")
        entry = next(e for e in config.directions if e.name == steering.directions)
        have = entry.options.languages or config.languages
        for language in steering.options.languages:
            if language not in have:
                raise LangNeuronsError(f"steering.directions: {entry.name!r} has no direction for {language!r}")


# ---------------------------------------------------------------------------------- stages


def direction_set_path(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / "identify" / name / DIRECTIONS_FILE


def identify_stage(experiment, entry: DirectionIdentifyConfig, statistics):
    """``identify/<name>``: a DiffMean direction set from the statistics pass's residual sums."""
    from langneurons.directions.api import identify_directions

    options = replace(entry.options, languages=tuple(entry.options.languages or experiment.config.languages))

    def compute(directory: Path) -> None:
        identify_directions(experiment.run_dir / "statistics", options, output=directory / DIRECTIONS_FILE)

    inputs = {"method": DIFFMEAN, "options": asdict(options), "statistics": statistics.product}
    return experiment.stage(f"identify/{entry.name}", inputs, compute, product=(DIRECTIONS_FILE,))


def ppxc_stage(experiment, name: str, statistics):
    """``direction_ppxc/<name>``: the directional PPXC matrix (ablate i's direction, perplexity on j)."""
    from langneurons.directions.api import direction_ppl_matrix

    section = experiment.config.direction_ppxc
    languages = list(section.languages or experiment.config.languages)

    def compute(directory: Path) -> None:
        direction_ppl_matrix(experiment.loaded, direction_set_path(experiment.run_dir, name),
                             experiment.run_dir / "statistics", section.options(languages), out_dir=directory,
                             cache_dir=directory / "cells", progress=experiment.progress)

    own = {k: v for k, v in asdict(section).items() if k != "direction_sets"}
    inputs = {"options": own, "languages": languages, "statistics": statistics.product,
              "directions": experiment.records[f"identify/{name}"].product}
    return experiment.stage(f"direction_ppxc/{name}", inputs, compute, product=("ppxc.json",))


def steering_directions(experiment):
    """(the DirectionSet or None, the steering stage's extra inputs) for ``steering.directions``."""
    from langneurons.directions.direction_set import DirectionSet

    name = experiment.config.steering.directions
    if name is None:
        return (lambda: None), {}
    return (lambda: DirectionSet.load(direction_set_path(experiment.run_dir, name))), \
        {"directions": name, "direction_set": experiment.records[f"identify/{name}"].product}
