"""The one hook abstraction: forward hooks with guaranteed removal.

Recording, interventions and training all attach to the same modules (the activation-function
modules named in :mod:`langneurons.models.architectures`) through :func:`hooks` or
:func:`activation_hooks`; the residual stream after each decoder block (the block module's
output) through :func:`residual_hooks`. Handles are removed when the ``with`` block ends, also when the
forward pass raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from langneurons.models.architectures import ModelAdapter

ForwardHook = Callable[[nn.Module, tuple, torch.Tensor], torch.Tensor | None]
ActivationFn = Callable[[int, torch.Tensor], torch.Tensor | None]
"""``fn(layer_index, activation)``: activation is [..., neurons] (the activation-function
output); return a tensor of the same shape to replace it, or None to leave it unchanged."""


@contextmanager
def hooks(pairs: Iterable[tuple[nn.Module, ForwardHook]]) -> Iterator[list[RemovableHandle]]:
    """Register ``module.register_forward_hook(fn)`` for each pair; remove all on exit."""
    handles: list[RemovableHandle] = []
    try:
        for module, fn in pairs:
            handles.append(module.register_forward_hook(fn))
        yield handles
    finally:
        for handle in handles:
            handle.remove()


def _layer_hook(layer_index: int, fn: ActivationFn) -> ForwardHook:
    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        return fn(layer_index, output)

    return hook


@contextmanager
def activation_hooks(
    adapter: ModelAdapter, fn: ActivationFn, layers: Sequence[int] | None = None
) -> Iterator[list[RemovableHandle]]:
    """Call ``fn(layer, activation)`` on the neuron activations of the chosen layers (default all)."""
    chosen = range(adapter.num_layers) if layers is None else layers
    with hooks((adapter.layers[i].activation, _layer_hook(i, fn)) for i in chosen) as handles:
        yield handles


ResidualFn = Callable[[int, torch.Tensor], torch.Tensor | None]
"""``fn(layer_index, hidden)``: hidden is [batch, seq, hidden] (the decoder block's output, the
residual stream after the block); return a tensor of the same shape to replace it, or None."""


def _block_hook(layer_index: int, fn: ResidualFn) -> ForwardHook:
    def hook(module: nn.Module, inputs: tuple, output):
        is_tuple = isinstance(output, tuple)  # Bloom's blocks return (hidden, ...)
        changed = fn(layer_index, output[0] if is_tuple else output)
        if changed is None:
            return None
        return (changed, *output[1:]) if is_tuple else changed

    return hook


@contextmanager
def residual_hooks(
    adapter: ModelAdapter, fn: ResidualFn, layers: Sequence[int] | None = None
) -> Iterator[list[RemovableHandle]]:
    """Call ``fn(layer, hidden)`` on the residual stream after each chosen decoder block (default all)."""
    chosen = range(adapter.num_layers) if layers is None else layers
    with hooks((adapter.blocks[i], _block_hook(i, fn)) for i in chosen) as handles:
        yield handles
