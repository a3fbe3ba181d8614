"""Interventions on the residual stream after chosen decoder blocks.

A :class:`DirectionIntervention` changes the output h [batch, seq, H] of chosen decoder blocks
(hooked by :func:`langneurons.hooks.residual_hooks`). Kinds:

* ``add``: ``h + v_l`` with a per-layer offset v_l [H] (steering: ``a * d``, or
  ``a * (mean of target - mean of source)``);
* ``ablate``: ``h - (h U_l^T) U_l`` with U_l [r, H] orthonormal rows: the component of h in the
  span of U_l is removed (r = 1: ``h - (h . u) u`` for a unit direction u; r > 1: a subspace).
  The projection is computed in float32 and cast back to h's dtype.
* ``erase`` (LEACE with a diagonal covariance): ``h - ((h - c) . w) d`` with ``w = (d / s²) /
  (d . d / s²)``, s² the per-dimension variance of the stream and c its mean (the mean of the
  languages' means). This is the least-squares concept erasure of Belrose et al. (2023) for the
  concept "language k" when the covariance is taken as diagonal: the edit moves h along d only,
  until its whitened coordinate along d equals the centre's. Orthogonal ablation instead moves h
  along ``u = d / |d|`` by ``h . u``, which in a stream with massive activations (Gemma 3's
  residual norms reach 1e4-1e5 in a few dimensions) couples those dimensions into every other one:
  on Gemma 3 270M removing a *random* unit direction after every block raised the NLL by ~20
  nats/token, so the random control, not the language, decided the result. Erasure of a random
  direction of the same norm changes the NLL by < 0.1 nats/token there.

It is accepted wherever a neuron :class:`~langneurons.intervene.interventions.Intervention` is:
:func:`langneurons.intervene.interventions.intervene` (so ``perplexity``, the PPXC machinery and
generation), with the same ``positions`` (``all`` / ``prompt``) semantics. Each affected layer
costs one out-of-place add (``add``) or two small matrix products (``ablate``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from langneurons.artefacts import stable_hash
from langneurons.errors import LangNeuronsError, brief

DIRECTION_KINDS = ("add", "ablate", "erase")
ORTHONORMAL_TOLERANCE = 1e-4


@dataclass
class DirectionIntervention:
    """A resolved intervention on the residual stream.

    Attributes:
        kind: ``add`` or ``ablate``.
        num_layers, hidden_size: the model's blocks and residual width.
        vectors: layer -> float32 [H] offset (add) or [r, H] orthonormal basis (ablate).
        label: human-readable description.
    """

    kind: str
    num_layers: int
    hidden_size: int
    vectors: dict[int, torch.Tensor]
    label: str = ""
    site = "residual"  # where :func:`~langneurons.intervene.interventions.intervene` hooks it
    _dense: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.kind not in DIRECTION_KINDS:
            raise LangNeuronsError(f"unknown direction intervention {brief(self.kind)}; use one of "
                                   f"{', '.join(DIRECTION_KINDS)}")
        vectors = {}
        for layer in sorted(self.vectors):
            if not 0 <= int(layer) < self.num_layers:
                raise LangNeuronsError(f"direction intervention layer {layer} outside the model's {self.num_layers} layers")
            vector = torch.as_tensor(self.vectors[layer]).detach().float().cpu()
            vector = vector.reshape(1, -1) if self.kind == "ablate" and vector.dim() == 1 else vector
            expected_dim = 1 if self.kind == "add" else 2
            if vector.dim() != expected_dim or vector.shape[-1] != self.hidden_size \
                    or (self.kind == "erase" and len(vector) != 3):
                rows = {"add": "", "ablate": "r, ", "erase": "3, "}[self.kind]
                raise LangNeuronsError(f"layer {layer}: a {self.kind} needs a [{rows}{self.hidden_size}] tensor, "
                                       f"got {tuple(vector.shape)}")
            if not torch.isfinite(vector).all():
                raise LangNeuronsError(f"{self.kind} direction is not finite (layer {layer})")
            if self.kind == "ablate":
                gram = vector.double() @ vector.double().T
                if not torch.allclose(gram, torch.eye(len(vector), dtype=torch.float64), atol=ORTHONORMAL_TOLERANCE):
                    raise LangNeuronsError(f"layer {layer}: an ablation basis must have orthonormal rows "
                                           "(use DirectionIntervention.ablation)")
            vectors[int(layer)] = vector.contiguous()
        self.vectors = vectors

    # ------------------------------------------------------------------ construction
    @classmethod
    def ablation(cls, directions: dict[int, torch.Tensor], num_layers: int, label: str = "") -> "DirectionIntervention":
        """Ablate the span of ``directions[layer]`` ([H] or [r, H], any norm, linearly independent
        rows) at each layer: the rows are orthonormalised (QR in float64)."""
        bases = {}
        for layer, rows in directions.items():
            rows = torch.as_tensor(rows).detach().double().cpu()
            rows = rows.reshape(1, -1) if rows.dim() == 1 else rows
            if rows.dim() != 2 or len(rows) == 0:
                raise LangNeuronsError(f"layer {layer}: ablation directions must be [H] or [r, H]")
            q, r = torch.linalg.qr(rows.T)
            if bool((r.diagonal().abs() <= 1e-12 * max(1.0, float(rows.abs().max()))).any()):
                raise LangNeuronsError(f"layer {layer}: cannot ablate a zero (or linearly dependent) direction")
            bases[layer] = q.T
        hidden = next(iter(bases.values())).shape[1] if bases else 0
        return cls("ablate", num_layers, hidden, bases, label or "ablate")

    @classmethod
    def erasure(cls, directions: dict[int, torch.Tensor], variances: dict[int, torch.Tensor],
                centres: dict[int, torch.Tensor], num_layers: int, label: str = "") -> "DirectionIntervention":
        """Erase ``directions[layer]`` d [H] (any non-zero norm) with the per-dimension variance s² [H]
        and centre c [H] of the stream at that layer (module docstring). Stored per layer as the
        rows (d, w, c) with ``w = (d / s²) / (d . d / s²)``, so that ``w . d = 1``."""
        rows = {}
        for layer, direction in directions.items():
            d = torch.as_tensor(direction).detach().double().cpu().reshape(-1)
            variance = torch.as_tensor(variances[layer]).detach().double().cpu().reshape(-1)
            centre = torch.as_tensor(centres[layer]).detach().double().cpu().reshape(-1)
            if not (len(d) == len(variance) == len(centre)):
                raise LangNeuronsError(f"layer {layer}: direction, variance and centre differ in width "
                                       f"({len(d)}, {len(variance)}, {len(centre)})")
            if not torch.isfinite(variance).all() or bool((variance < 0).any()) or float(variance.max()) <= 0:
                raise LangNeuronsError(f"layer {layer}: the variance of the stream must be finite, >= 0 and not all 0")
            variance = variance.clamp_min(1e-12 * float(variance.max()))  # a constant dimension: near-infinite weight
            weights = d / variance
            scale = float(weights @ d)
            if not scale > 0:
                raise LangNeuronsError(f"layer {layer}: cannot erase a zero direction")
            rows[layer] = torch.stack([d, weights / scale, centre])
        hidden = next(iter(rows.values())).shape[1] if rows else 0
        return cls("erase", num_layers, hidden, rows, label or "erase")

    @classmethod
    def addition(cls, offsets: dict[int, torch.Tensor], num_layers: int, label: str = "") -> "DirectionIntervention":
        """Add ``offsets[layer]`` [H] at each layer."""
        hidden = next(iter(offsets.values())).shape[-1] if offsets else 0
        return cls("add", num_layers, hidden, offsets, label or "add")

    # ------------------------------------------------------------------ views
    @property
    def layers(self) -> list[int]:
        return list(self.vectors)

    @property
    def num_directions(self) -> int:
        """Directions ablated (basis rows summed over layers), or layers with an offset (add) or an
        erased direction (erase)."""
        return sum(len(v) for v in self.vectors.values()) if self.kind == "ablate" else len(self.vectors)

    def key(self) -> str:
        """Stable hash of what the intervention does (cache keys)."""
        return stable_hash("residual", self.kind, self.num_layers, self.hidden_size,
                           *[p for layer in self.layers for p in (layer, self.vectors[layer])])

    def check_adapter(self, adapter) -> None:
        if (self.num_layers, self.hidden_size) != (adapter.num_layers, adapter.hidden_size):
            raise LangNeuronsError(f"direction intervention is for {self.num_layers} layers of width {self.hidden_size}, "
                                   f"this model has {adapter.num_layers} of width {adapter.hidden_size}")

    def _on(self, layer: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        cache_key = (layer, str(device), dtype)
        cached = self._dense.get(cache_key)
        if cached is None:
            cached = self._dense[cache_key] = self.vectors[layer].to(device=device, dtype=dtype)
        return cached

    def apply(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """The intervened hidden state [..., H] (out of place)."""
        if self.kind == "add":
            return hidden + self._on(layer, hidden.device, hidden.dtype)
        if self.kind == "erase":
            direction, weights, centre = self._on(layer, hidden.device, torch.float32)  # each [H]
            values = hidden.float()
            return (values - ((values - centre) @ weights).unsqueeze(-1) * direction).to(hidden.dtype)
        basis = self._on(layer, hidden.device, torch.float32)  # [r, H]
        values = hidden.float()
        return (values - (values @ basis.T) @ basis).to(hidden.dtype)


def _layers(direction_set, layers: Iterable[int] | None) -> list[int]:
    chosen = list(range(direction_set.num_layers)) if layers is None else sorted({int(layer) for layer in layers})
    if not chosen:
        raise LangNeuronsError("choose at least one layer")
    bad = [layer for layer in chosen if not 0 <= layer < direction_set.num_layers]
    if bad:
        raise LangNeuronsError(f"layers {bad} outside the model's 0..{direction_set.num_layers - 1}")
    return chosen


def ablate_direction(direction_set, language: str, layers: Iterable[int] | None = None) -> DirectionIntervention:
    """Remove the component along ``language``'s direction at ``layers`` (default all)."""
    chosen = _layers(direction_set, layers)
    direction = direction_set.direction(language)
    return DirectionIntervention.ablation({layer: direction[layer] for layer in chosen}, direction_set.num_layers,
                                          label=f"ablate {language} ({direction_set.method})")


def erase_direction(direction_set, language: str, layers: Iterable[int] | None = None,
                    stream=None) -> DirectionIntervention:
    """Erase ``language``'s direction at ``layers`` (default all), LEACE-style (module docstring),
    with the stream's per-dimension variance (``spread²``) and centre (mean of the languages' means)
    taken from ``stream`` (a DiffMean set; default ``direction_set`` itself, which then needs them:
    a random control set has the spread but no means, so pass the set it was made like)."""
    stream = direction_set if stream is None else stream
    if stream.spread is None or stream.means is None:
        raise LangNeuronsError("erasure needs the stream's per-dimension spread and the languages' means "
                               "(a DiffMean direction set); use ablation 'orthogonal' otherwise")
    if (stream.num_layers, stream.hidden_size) != (direction_set.num_layers, direction_set.hidden_size):
        raise LangNeuronsError("the stream statistics are for another model shape than the directions")
    chosen = _layers(direction_set, layers)
    direction = direction_set.direction(language)
    variance, centre = stream.spread.double().square(), stream.means.double().mean(0)
    return DirectionIntervention.erasure({layer: direction[layer] for layer in chosen},
                                         {layer: variance[layer] for layer in chosen},
                                         {layer: centre[layer] for layer in chosen}, direction_set.num_layers,
                                         label=f"erase {language} ({direction_set.method})")


def ablate_subspace(direction_set, layers: Iterable[int] | None = None) -> DirectionIntervention:
    """Remove the set's rank-r language subspace at ``layers`` (default all)."""
    if direction_set.subspace is None:
        raise LangNeuronsError("this direction set has no language subspace; identify with --rank R")
    chosen = _layers(direction_set, layers)
    return DirectionIntervention.ablation({layer: direction_set.subspace[layer] for layer in chosen},
                                          direction_set.num_layers,
                                          label=f"ablate rank-{direction_set.rank} subspace ({direction_set.method})")


def add_direction(direction_set, strength: float, language: str | None = None, source: str | None = None,
                  target: str | None = None, layers: Iterable[int] | None = None) -> DirectionIntervention:
    """Add ``strength`` x ``language``'s direction, or ``strength`` x (mean of ``target`` - mean
    of ``source``) (:meth:`DirectionSet.steering_vector`), at ``layers`` (default all)."""
    import math

    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
        raise LangNeuronsError(f"strength must be a finite number, got {brief(strength)}")
    if (language is None) == (source is None or target is None):
        raise LangNeuronsError("add one language's direction (language=) or a source>target steering vector, not both")
    chosen = _layers(direction_set, layers)
    if language is not None:
        vector, label = direction_set.direction(language), f"add {strength:g} x {language}"
    else:
        vector, label = direction_set.steering_vector(source, target), f"add {strength:g} x ({target} - {source})"
    return DirectionIntervention.addition({layer: float(strength) * vector[layer] for layer in chosen},
                                          direction_set.num_layers, label=f"{label} ({direction_set.method})")
