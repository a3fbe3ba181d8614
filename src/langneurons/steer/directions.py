"""Direction conditions of the steering experiment: residual-stream DiffMean steering beside the
neuron conditions, on the same prompts, with the same dev/test split and scores.

For a pair SOURCE>TARGET and each layer choice L (one layer ``6`` or a range ``4-9``) of the
layer sweep and each strength a of the strength sweep:

* ``<set>:add=a@L``: add ``a x (mean of TARGET - mean of SOURCE)`` (the DiffMean set's per-language
  mean hidden states, :meth:`DirectionSet.steering_vector`) to the residual stream after every
  block in L (:func:`langneurons.directions.interventions.add_direction`);
* with ``ablate``: ``<set>:ablate@L`` removes the component along SOURCE's DiffMean direction
  after every block in L, and ``<set>:ablate+add=a@L`` does both (ablation first, then the add);

each with a random twin ``random-dir:...`` of the same layers and strength: the add uses a seeded
Gaussian vector rescaled per layer to exactly the norm of the steering vector there
(:func:`random_steering_vector`), the ablation removes SOURCE's direction of the set's random
control (:meth:`DirectionSet.random_control`, same seed). Every condition names its random twin
(``random_twin``), stored in the rows; no name is rebuilt from a prefix.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from langneurons.directions.direction_set import WEIGHTINGS, DirectionSet
from langneurons.directions.interventions import DirectionIntervention, ablate_direction, add_direction
from langneurons.errors import LangNeuronsError, brief

RANDOM_DIRECTIONS = "random-dir"
"""Unit name of the random-direction twins."""
DIRECTION_MODES = ("activate", "deactivate", "both")


def parse_layer_choice(text: str) -> tuple[int, ...]:
    """One entry of the layer sweep: ``"6"`` or ``"4-9"`` (inclusive) or ``"2,5"`` -> sorted layers."""
    from langneurons.directions.api import parse_layers

    layers = parse_layers(str(text))
    if layers is None:
        raise LangNeuronsError(f"a direction layer choice names layers ('6', '4-9'), not {brief(text)}")
    return layers


def layer_text(layers: Sequence[int]) -> str:
    """Compact name of a layer choice: ``6``, ``4-9`` (contiguous) or ``2,5,7``."""
    layers = sorted(layers)
    if len(layers) > 1 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(str(layer) for layer in layers)


def check_strength(value) -> float:
    if isinstance(value, bool):
        raise LangNeuronsError(f"a direction strength must be a number, got {brief(value)}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LangNeuronsError(f"a direction strength must be a number, got {brief(value)}") from None
    if not math.isfinite(number):
        raise LangNeuronsError(f"a direction strength must be finite, got {brief(value)}")
    return number


@dataclass(frozen=True)
class DirectionCondition:
    """One direction condition: ``unit`` (the direction set's name or :data:`RANDOM_DIRECTIONS`),
    ``mode`` (activate = add, deactivate = ablate the source direction, both), ``layers`` and the
    add ``strength`` (None for deactivate); ``random_twin``: the twin's name (None for a twin)."""

    unit: str
    mode: str
    layers: tuple[int, ...]
    strength: float | None = None
    random_twin: str | None = None

    @property
    def action(self) -> str:
        add = f"add={self.strength:g}" if self.strength is not None else ""
        return {"activate": add, "deactivate": "ablate", "both": f"ablate+{add}"}[self.mode]

    @property
    def name(self) -> str:
        return f"{self.unit}:{self.action}@{layer_text(self.layers)}"

    @property
    def kind(self) -> str:
        return {"activate": "add", "deactivate": "ablate", "both": "ablate+add"}[self.mode]

    def spec(self, source: str, target: str) -> str:
        """What it does, in the direction-spec grammar (``en>fr:add=4@6``; ``en:ablate@6``)."""
        layers = layer_text(self.layers)
        parts = []
        if self.mode in ("deactivate", "both"):
            parts.append(f"{source}:ablate@{layers}")
        if self.mode in ("activate", "both"):
            parts.append(f"{source}>{target}:add={self.strength:g}@{layers}")
        return " + ".join(parts)


def direction_conditions(set_name: str, layer_choices: Sequence[tuple[int, ...]], strengths: Sequence[float],
                         ablate: bool, random_control: bool) -> list[DirectionCondition]:
    """Per layer choice: the add sweep (and, with ``ablate``, the ablation alone and with each add),
    each followed by its random twin when ``random_control``."""
    out = []
    for layers in layer_choices:
        plans = [("activate", s) for s in strengths]
        if ablate:
            plans = [("deactivate", None)] + [p for s in strengths for p in (("activate", s), ("both", s))]
        for mode, strength in plans:
            twin = DirectionCondition(RANDOM_DIRECTIONS, mode, tuple(layers), strength) if random_control else None
            out.append(DirectionCondition(set_name, mode, tuple(layers), strength, twin.name if twin else None))
            if twin is not None:
                out.append(twin)
    return out


def random_steering_vector(direction_set: DirectionSet, source: str, target: str, seed: int = 0,
                           weighting: str = "isotropic") -> torch.Tensor:
    """float32 [L, H]: per layer a seeded Gaussian vector (isotropic, or scaled per dimension by the
    stream's spread) rescaled to exactly the norm of ``steering_vector(source, target)`` there.
    The generator is seeded by ``seed`` and the pair, so each pair has its own random vector."""
    if weighting not in WEIGHTINGS:
        raise LangNeuronsError(f"unknown random weighting {brief(weighting)}; use one of {', '.join(WEIGHTINGS)}")
    vector = direction_set.steering_vector(source, target).double()
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + zlib.crc32(f"{source}>{target}".encode()))
    noise = torch.randn(vector.shape, generator=generator, dtype=torch.float64)
    if weighting == "spread":
        if direction_set.spread is None:
            raise LangNeuronsError("weighting 'spread' needs the per-dimension spread of the stream (a DiffMean set)")
        noise = noise * direction_set.spread.double()
    unit = noise / torch.linalg.vector_norm(noise, dim=-1, keepdim=True).clamp_min(1e-300)
    return (unit * torch.linalg.vector_norm(vector, dim=-1, keepdim=True)).float()


class DirectionInterventions:
    """Builds (and caches) the interventions of direction conditions for one direction set."""

    def __init__(self, direction_set: DirectionSet, seed: int = 0, weighting: str = "isotropic"):
        self.direction_set, self.seed, self.weighting = direction_set, seed, weighting
        self._random_set: DirectionSet | None = None
        self._random_vectors: dict[tuple[str, str], torch.Tensor] = {}

    @property
    def random_set(self) -> DirectionSet:
        if self._random_set is None:
            self._random_set = self.direction_set.random_control(seed=self.seed, weighting=self.weighting)
        return self._random_set

    def random_vector(self, source: str, target: str) -> torch.Tensor:
        if (source, target) not in self._random_vectors:
            self._random_vectors[(source, target)] = random_steering_vector(self.direction_set, source, target,
                                                                            self.seed, self.weighting)
        return self._random_vectors[(source, target)]

    def __call__(self, condition: DirectionCondition, source: str, target: str) -> list[DirectionIntervention]:
        """Ablation first, then the add (the order their hooks run in)."""
        random = condition.unit == RANDOM_DIRECTIONS
        chosen = self.random_set if random else self.direction_set
        out = []
        if condition.mode in ("deactivate", "both"):
            out.append(ablate_direction(chosen, source, condition.layers))
        if condition.mode in ("activate", "both"):
            if random:
                vector = self.random_vector(source, target)
                out.append(DirectionIntervention.addition(
                    {layer: float(condition.strength) * vector[layer] for layer in condition.layers},
                    self.direction_set.num_layers, label=f"add {condition.strength:g} x random ({target} - {source})"))
            else:
                out.append(add_direction(self.direction_set, float(condition.strength), source=source, target=target,
                                         layers=condition.layers))
        return out
