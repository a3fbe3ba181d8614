"""Scratch tensors kept between calls of the statistics pass.

The per-layer statistics update is memory-bound: fresh multi-MB temporaries on every call cost
page faults and cache misses that outweigh the arithmetic. A :class:`ScratchBuffers` keeps one
tensor per name and hands it out again while the shape, dtype and device stay the same.
"""

from __future__ import annotations

import torch


class ScratchBuffers:
    """Named reusable tensors: :meth:`get` returns the same tensor for the same name, shape, dtype
    and device, and replaces it (one tensor per name) when any of them changes."""

    def __init__(self):
        self._held: dict[str, tuple[tuple, torch.Tensor]] = {}

    def get(self, name: str, shape, dtype: torch.dtype = torch.float32, device="cpu",
            fill: float | None = None) -> torch.Tensor:
        """The buffer ``name`` (uninitialised, or set to ``fill`` when it is created)."""
        key = (tuple(shape), dtype, torch.device(device))
        held = self._held.get(name)
        if held is None or held[0] != key:
            tensor = torch.empty(key[0], dtype=dtype, device=device)
            if fill is not None:
                tensor.fill_(fill)
            held = self._held[name] = (key, tensor)
        return held[1]
