"""Test-time interventions on neuron activations.

An :class:`Intervention` changes the activation-function output (the tensor hooked by
:func:`langneurons.hooks.activation_hooks`, the one activation statistics are recorded on) of
chosen neurons. Kinds:

* ``zero``: set to 0;
* ``constant``: set to one finite value;
* ``stat``: set each neuron to a per-neuron statistic (e.g. the mean or P90 of a language);
* ``add``: add a per-neuron offset (steering: strength x (mean of target - mean of source));
* ``scale``: multiply by a factor.

Each affected layer costs ONE out-of-place tensor operation on the activation (``torch.where``
with a dense [neurons] mask, or an add / multiply with a dense [neurons] vector), whatever the
number of neurons; the dense vectors are built once per (layer, device, dtype) and cached, so a
model split over devices (``device_map``) works. Out-of-place ops keep autograd intact:
gradients flow to the other neurons, a set neuron gets zero gradient through the activation.

Position scope (``intervene(..., positions=...)``):

* ``"all"``: every token of every forward pass.
* ``"prompt"``: only tokens whose absolute position ``p`` (0-based, counting padding and the
  KV cache) is below the prompt length. The prompt length is ``prompt_lengths[b]`` per example
  when given (for left-padded batches: padding included, i.e. the padded prompt width), else
  the total length (cache + new tokens) of the first forward pass inside the ``with`` block,
  i.e. the prefill of a ``generate()`` call. So with or without KV cache, generated tokens are
  never intervened. Use one ``with`` block per ``generate()`` call.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from langneurons.artefacts import stable_hash
from langneurons.errors import LangNeuronsError
from langneurons.hooks import activation_hooks, residual_hooks
from langneurons.models.architectures import ModelAdapter, unwrap, adapter_for

KINDS = ("zero", "constant", "stat", "add", "scale")
Kind = Literal["zero", "constant", "stat", "add", "scale"]
_OPERATION = {"zero": "set", "constant": "set", "stat": "set", "add": "add", "scale": "scale"}
Positions = Literal["all", "prompt"]


@dataclass
class Intervention:
    """A resolved intervention: per layer, which neurons and which value (or factor).

    Attributes:
        kind: one of :data:`KINDS`.
        num_layers, neurons_per_layer: the model's neuron grid.
        neurons: layer -> int64 [k] neuron indices (sorted, unique; only non-empty layers).
        values: layer -> float32 [k]: the value written (zero/constant/stat), the offset added
            (add) or the factor (scale), aligned with ``neurons[layer]``.
        label: human-readable description (figure titles, logs).
    """

    kind: str
    num_layers: int
    neurons_per_layer: int
    neurons: dict[int, torch.Tensor]
    values: dict[int, torch.Tensor]
    label: str = ""
    _dense: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise LangNeuronsError(f"unknown intervention kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if set(self.neurons) != set(self.values):
            raise LangNeuronsError("intervention neurons and values must cover the same layers")
        neurons, values = {}, {}
        for layer in sorted(self.neurons):
            idx = torch.as_tensor(self.neurons[layer], dtype=torch.int64).cpu().reshape(-1)
            val = torch.as_tensor(self.values[layer], dtype=torch.float32).cpu().reshape(-1)
            if not 0 <= layer < self.num_layers:
                raise LangNeuronsError(f"intervention layer {layer} outside the model's {self.num_layers} layers")
            if idx.shape != val.shape:
                raise LangNeuronsError(f"layer {layer}: {len(idx)} neurons but {len(val)} values")
            if len(idx) == 0:
                continue
            if idx.min() < 0 or idx.max() >= self.neurons_per_layer:
                raise LangNeuronsError(f"layer {layer}: neuron index outside 0..{self.neurons_per_layer - 1}")
            if len(idx.unique()) != len(idx):
                raise LangNeuronsError(f"layer {layer}: duplicate neuron indices")
            if not torch.isfinite(val).all():
                raise LangNeuronsError(f"{self.kind} intervention value is not finite (layer {layer})")
            order = idx.argsort()
            neurons[layer], values[layer] = idx[order], val[order]
        self.neurons, self.values = neurons, values

    @property
    def operation(self) -> str:
        """``set``, ``add`` or ``scale``."""
        return _OPERATION[self.kind]

    @property
    def layers(self) -> list[int]:
        return list(self.neurons)

    @property
    def num_neurons(self) -> int:
        return sum(len(idx) for idx in self.neurons.values())

    def key(self) -> str:
        """Stable hash of what the intervention does (cache keys)."""
        parts = [(layer, self.neurons[layer], self.values[layer]) for layer in self.layers]
        return stable_hash(self.kind, self.num_layers, self.neurons_per_layer,
                           *[p for layer, idx, val in parts for p in (layer, idx, val)])

    def dense(self, layer: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask bool [N], vector [N]) for one layer on ``device``: the vector holds the set value,
        the offset (0 elsewhere) or the factor (1 elsewhere). Cached per (layer, device, dtype)."""
        cache_key = (layer, str(device), dtype)
        cached = self._dense.get(cache_key)
        if cached is None:
            n = self.neurons_per_layer
            fill = 1.0 if self.operation == "scale" else 0.0
            vector = torch.full((n,), fill, dtype=torch.float32)
            vector[self.neurons[layer]] = self.values[layer]
            mask = torch.zeros(n, dtype=torch.bool)
            mask[self.neurons[layer]] = True
            cached = (mask.to(device), vector.to(device=device, dtype=dtype))
            self._dense[cache_key] = cached
        return cached

    def apply(self, layer: int, activation: torch.Tensor) -> torch.Tensor:
        """The intervened activation [..., N] (out of place, one tensor op)."""
        mask, vector = self.dense(layer, activation.device, activation.dtype)
        if self.operation == "set":
            return torch.where(mask, vector, activation)
        if self.operation == "add":
            return activation + vector
        return activation * vector


def build_intervention(
    kind: str,
    neurons: torch.Tensor,
    num_layers: int,
    neurons_per_layer: int,
    value: float | torch.Tensor | None = None,
    label: str = "",
) -> Intervention:
    """Build an :class:`Intervention` on ``neurons`` (int64 [k, 2] rows (layer, neuron)).

    ``value``: ignored-or-0 for ``zero``; a float for ``constant`` (the value) and ``scale``
    (the factor); a [num_layers, neurons_per_layer] table for ``stat`` (values written) and
    ``add`` (offsets added), read at the chosen neurons.
    """
    if kind not in KINDS:
        raise LangNeuronsError(f"unknown intervention kind {kind!r}; use one of {', '.join(KINDS)}")
    neurons = torch.as_tensor(neurons, dtype=torch.int64).reshape(-1, 2)
    table_kinds = ("stat", "add")
    if kind in table_kinds:
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (num_layers, neurons_per_layer):
            raise LangNeuronsError(f"{kind} needs a [{num_layers}, {neurons_per_layer}] table of per-neuron values")
        table = value.detach().float().cpu()
    elif kind == "zero":
        if value is not None and (isinstance(value, torch.Tensor) or float(value) != 0.0):
            raise LangNeuronsError(f"zero takes no value, got {value!r}")
        table = None
    else:
        if value is None or isinstance(value, torch.Tensor) or not math.isfinite(float(value)):
            raise LangNeuronsError(f"{kind} needs a finite number, got {value!r}")
        table = None
    per_layer_neurons, per_layer_values = {}, {}
    for layer in neurons[:, 0].unique().tolist():
        idx = neurons[neurons[:, 0] == layer, 1]
        if table is not None:
            vals = table[layer, idx]
        else:
            vals = torch.full((len(idx),), 0.0 if kind == "zero" else float(value))
        per_layer_neurons[layer], per_layer_values[layer] = idx, vals
    return Intervention(kind, num_layers, neurons_per_layer, per_layer_neurons, per_layer_values, label or kind)


# ---------------------------------------------------------------------------------- position scope
def _past_length(kwargs: dict) -> int:
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    if cache is None:
        return 0
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    return int(cache[0][0].shape[-2])  # legacy tuple cache: [layer][key/value] -> [b, heads, past, d]


class _PromptScope:
    """Tracks (batch, absolute positions) of the current forward pass from pre-hooks on the LM
    and its body (both may fire for one pass; the update is idempotent)."""

    def __init__(self, prompt_lengths: Sequence[int] | torch.Tensor | None):
        self.lengths = None if prompt_lengths is None else torch.as_tensor(prompt_lengths, dtype=torch.int64).reshape(-1)
        self.first_length: int | None = None
        self.position_mask: torch.Tensor | None = None  # bool [batch, seq] on CPU
        self._on_device: dict[str, torch.Tensor] = {}

    def pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        tokens = kwargs.get("input_ids", args[0] if args else None)
        if tokens is None:
            tokens = kwargs["inputs_embeds"]
        batch, seq = tokens.shape[0], tokens.shape[1]
        past = _past_length(kwargs)
        if self.first_length is None:
            self.first_length = past + seq
        lengths = self.lengths if self.lengths is not None else torch.tensor([self.first_length])
        if self.lengths is not None and len(lengths) != batch:
            raise LangNeuronsError(f"prompt_lengths has {len(lengths)} entries, the batch has {batch} examples")
        positions = past + torch.arange(seq)
        self.position_mask = (positions[None, :] < lengths[:, None]).expand(batch, seq)
        self.covers_all, self.covers_none = bool(self.position_mask.all()), not bool(self.position_mask.any())
        self._on_device = {}

    def mask_for(self, activation: torch.Tensor) -> torch.Tensor | bool:
        """True (all tokens), False (none) or a bool mask broadcastable to ``activation``."""
        mask = self.position_mask
        if mask is None:
            raise LangNeuronsError("positions='prompt' needs the forward pass to go through the model body")
        if self.covers_all:
            return True
        if self.covers_none:
            return False
        key = str(activation.device)
        if key not in self._on_device:
            self._on_device[key] = mask.to(activation.device)
        mask = self._on_device[key]
        if activation.dim() == 2:  # flattened [batch * seq, N] (OPT)
            if activation.shape[0] != mask.numel():
                raise LangNeuronsError(f"cannot map {activation.shape[0]} flattened tokens to a {tuple(mask.shape)} batch")
            return mask.reshape(-1, 1)
        return mask.reshape(*mask.shape, *([1] * (activation.dim() - 2)))


@contextmanager
def _pre_hook(module: nn.Module, fn) -> Iterator[None]:
    handle = module.register_forward_pre_hook(fn, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _adapter(target) -> ModelAdapter:
    adapter = getattr(target, "adapter", None)
    return adapter if isinstance(adapter, ModelAdapter) else adapter_for(target)


@contextmanager
def intervene(
    target,
    intervention: Intervention,
    positions: Positions = "all",
    prompt_lengths: Sequence[int] | torch.Tensor | None = None,
) -> Iterator[Intervention]:
    """Apply ``intervention`` to every forward pass of ``target`` (a LoadedModel or a
    transformers model) inside the ``with`` block; hooks are removed on exit, also on errors.

    ``positions`` and ``prompt_lengths``: see the module docstring. ``intervention`` may also be a
    :class:`~langneurons.directions.interventions.DirectionIntervention` (``site == "residual"``):
    it is then applied to the decoder blocks' outputs instead of the neuron activations.
    """
    adapter = _adapter(target)
    on_residual = getattr(intervention, "site", "neurons") == "residual"
    if on_residual:
        intervention.check_adapter(adapter)
    elif (intervention.num_layers, intervention.neurons_per_layer) != (adapter.num_layers, adapter.neurons_per_layer):
        raise LangNeuronsError(
            f"intervention is for a {intervention.num_layers}x{intervention.neurons_per_layer} model, "
            f"this model has {adapter.num_layers}x{adapter.neurons_per_layer} neurons"
        )
    if positions not in ("all", "prompt"):
        raise LangNeuronsError(f"positions must be 'all' or 'prompt', got {positions!r}")
    if prompt_lengths is not None and positions != "prompt":
        raise LangNeuronsError("prompt_lengths only applies with positions='prompt'")
    scope = _PromptScope(prompt_lengths) if positions == "prompt" else None

    def fn(layer: int, activation: torch.Tensor) -> torch.Tensor | None:
        if scope is None:
            return intervention.apply(layer, activation)
        mask = scope.mask_for(activation)
        if mask is False:
            return None
        changed = intervention.apply(layer, activation)
        return changed if mask is True else torch.where(mask, changed, activation)

    with ExitStack() as stack:
        if intervention.layers:
            if scope is not None:  # the LM (generate, OPT's LM skips its body) and the body (direct calls)
                entry_points = {id(m): m for m in (unwrap(adapter.model), adapter.body())}
                for module in entry_points.values():
                    stack.enter_context(_pre_hook(module, scope.pre_hook))
            attach = residual_hooks if on_residual else activation_hooks
            stack.enter_context(attach(adapter, fn, layers=intervention.layers))
        yield intervention
