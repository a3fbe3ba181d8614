"""The runner's side of the direction stages (issue 19): config parsing.

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

Here: parsing of those keys (the runner's part; their cross-checks are in
:func:`langneurons.runner.validation.validate_directions`); the stages themselves are
:mod:`langneurons.directions.stage` (``DIRECTION_SETS``, ``DIRECTION_PPXC`` in the registry) and
:mod:`langneurons.steer.stage`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langneurons.directions.api import DiffMeanOptions
from langneurons.directions.stage import DIFFMEAN, DirectionIdentifyConfig, DirectionPPXCConfig
from langneurons.errors import LangNeuronsError, brief

# ---------------------------------------------------------------------------------- parsing


def split_identification(section: Any) -> tuple[list, list[tuple[int, DirectionIdentifyConfig]]]:
    """``identification`` entries -> (the neuron entries, as written; [(index, direction entry)])
    for ``method: diffmean``."""
    from langneurons.runner.schema import build as _build, convert as _convert

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
    from langneurons.runner.schema import build as _build

    return None if section is None else _build(DirectionPPXCConfig, section, "direction_ppxc")


def to_dict_entries(config) -> dict:
    """The direction parts of ``config.to_dict()``: diffmean entries back into ``identification``,
    ``direction_ppxc`` when set (absent keys keep configs without directions hashing as before)."""
    from langneurons.runner.schema import plain as _plain

    out: dict = {}
    if config.directions:
        out["identification"] = [entry.to_entry() for entry in config.directions]
    if config.direction_ppxc is not None:
        out["direction_ppxc"] = _plain(config.direction_ppxc.as_dict())
    return out
