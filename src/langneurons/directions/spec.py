"""Direction intervention specs: a compact string (CLI) or a dict (YAML), resolved into a
:class:`~langneurons.directions.interventions.DirectionIntervention`.

String grammar (the neuron specs' shape, :mod:`langneurons.intervene.spec`)::

    spec     ::= directions ":" unit ":" action [":" scope]
    directions ::= path of a DirectionSet file (.safetensors); may itself contain ':'
    unit     ::= lang                 that language's direction
               | src ">" tgt          add only: mean of tgt - mean of src (steering)
               | "subspace"           ablate only: the set's rank-r language subspace
    action   ::= "ablate" ["@" layers] | "add=" number ["@" layers]
    layers   ::= "all" | 5 | 2,5,7 | 4-9  (default all; see directions.api.parse_layers)
    scope    ::= "all" | "prompt"     token positions (default all)

Examples: ``diffmean.safetensors:hi:ablate``, ``diffmean.safetensors:hi:ablate@4-9``,
``diffmean.safetensors:en>fr:add=4@6``, ``diffmean.safetensors:subspace:ablate:prompt``.

Dict form: ``{directions: PATH, unit: hi | en>fr | subspace, kind: ablate | add, value: 4,
layers: "4-9" | [4, 5], positions: prompt}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

from langneurons.directions.api import parse_layers
from langneurons.directions.direction_set import DirectionSet
from langneurons.directions.interventions import (
    DIRECTION_KINDS,
    DirectionIntervention,
    ablate_direction,
    ablate_subspace,
    add_direction,
)
from langneurons.errors import LangNeuronsError, brief
from langneurons.intervene.spec import parse_number
from langneurons.languages import check_language

SCOPES = ("all", "prompt")
SUBSPACE = "subspace"


@dataclass(frozen=True)
class DirectionSpec:
    """An unresolved direction intervention (module docstring). ``value``: the strength of add."""

    directions: str
    unit: str
    kind: str
    value: float | None = None
    layers: tuple[int, ...] | None = None
    positions: str = "all"

    def __post_init__(self):
        if self.kind not in DIRECTION_KINDS:
            raise LangNeuronsError(f"unknown direction action {brief(self.kind)}; use one of {', '.join(DIRECTION_KINDS)}")
        if self.positions not in SCOPES:
            raise LangNeuronsError(f"positions must be one of {SCOPES}, got {brief(self.positions)}")
        source, steer, target = self.unit.partition(">")
        if self.unit == SUBSPACE:
            if self.kind != "ablate":
                raise LangNeuronsError("the language subspace can only be ablated")
        elif steer:
            if self.kind != "add":
                raise LangNeuronsError(f"{self.unit}: a source>target vector is added (add=S), not {self.kind}")
            check_language(source)
            check_language(target)
        else:
            check_language(self.unit)
        if self.kind == "add" and (self.value is None or isinstance(self.value, bool)
                                   or not math.isfinite(float(self.value))):
            raise LangNeuronsError(f"add needs a finite strength, got {brief(self.value)}")
        if self.kind == "ablate" and self.value is not None:
            raise LangNeuronsError("ablate takes no value")

    def to_string(self) -> str:
        action = "ablate" if self.kind == "ablate" else f"add={self.value:g}"
        layers = "" if self.layers is None else "@" + ",".join(str(layer) for layer in self.layers)
        scope = "" if self.positions == "all" else f":{self.positions}"
        return f"{self.directions}:{self.unit}:{action}{layers}{scope}"


def parse_direction_spec(spec: str | Mapping | DirectionSpec) -> DirectionSpec:
    """Parse the string or dict form (module docstring)."""
    if isinstance(spec, DirectionSpec):
        return spec
    if isinstance(spec, Mapping):
        allowed = {f.name for f in fields(DirectionSpec)}
        unknown = sorted(set(spec) - allowed)
        if unknown:
            raise LangNeuronsError(f"unknown direction intervention keys {unknown}; allowed: {sorted(allowed)}")
        missing = [key for key in ("directions", "unit", "kind") if key not in spec]
        if missing:
            raise LangNeuronsError(f"direction intervention is missing {missing}")
        data = dict(spec)
        layers = data.get("layers")
        if isinstance(layers, (list, tuple)):
            layers = ",".join(str(layer) for layer in layers)
        data["layers"] = parse_layers(layers)
        if data.get("value") is not None:
            data["value"] = parse_number(str(data["value"]), "add strength")
        return DirectionSpec(**{**data, "directions": str(data["directions"]), "unit": str(data["unit"])})
    text = str(spec).strip()
    positions = "all"
    head, _, last = text.rpartition(":")
    if last in SCOPES:
        text, positions = head, last
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not all(parts):
        raise LangNeuronsError(f"direction spec must be DIRECTIONS:UNIT:ACTION[:SCOPE], got {brief(spec)}")
    path, unit, action = parts
    action, _, layers = action.partition("@")
    kind, has_value, value = action.partition("=")
    if kind == "ablate" and has_value:
        raise LangNeuronsError(f"ablate takes no value: {action!r}")
    if kind == "add" and not value:
        raise LangNeuronsError(f"add needs a strength: add=S, got {action!r}")
    return DirectionSpec(path, unit.strip(), kind, parse_number(value, "add strength") if kind == "add" else None,
                         parse_layers(layers or None), positions)


def resolve_direction_spec(spec, loaded, direction_set: DirectionSet | None = None) -> DirectionIntervention:
    """A :class:`DirectionIntervention` for ``loaded`` (use it with ``intervene(loaded, it,
    positions=spec.positions)``); ``direction_set`` defaults to ``DirectionSet.load(spec.directions)``."""
    spec = parse_direction_spec(spec)
    direction_set = direction_set if direction_set is not None else DirectionSet.load(spec.directions)
    direction_set.check_model(loaded)
    if spec.unit == SUBSPACE:
        return ablate_subspace(direction_set, spec.layers)
    if spec.kind == "ablate":
        return ablate_direction(direction_set, spec.unit, spec.layers)
    source, steer, target = spec.unit.partition(">")
    if steer:
        return add_direction(direction_set, spec.value, source=source, target=target, layers=spec.layers)
    return add_direction(direction_set, spec.value, language=spec.unit, layers=spec.layers)
