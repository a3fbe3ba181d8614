"""What a multi-process launcher (``torchrun``, ``accelerate launch``) tells this process.

Shared by the stages that scale out: the statistics pass (:mod:`langneurons.activations.distributed`)
and fine-tuning (:mod:`langneurons.finetune.parallel`).
"""

from __future__ import annotations

import os

import torch

from langneurons.errors import LangNeuronsError

ENV_BACKEND = "LANGNEURONS_DIST_BACKEND"
"""Backend when none is given: ``gloo`` (CPU) or ``nccl`` (GPU); default nccl if CUDA is available."""


def world_size_from_env() -> int:
    """Processes started by the launcher (``WORLD_SIZE``; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def default_backend() -> str:
    return os.environ.get(ENV_BACKEND) or ("nccl" if torch.cuda.is_available() else "gloo")


def rank_device_map() -> dict[str, int] | None:
    """``device_map`` that puts the whole model on this process's GPU (``LOCAL_RANK``) under a
    launcher with CUDA, else None.

    Pass it to :func:`~langneurons.models.loading.load_model` (needed for 4-bit models, which
    cannot be moved after loading)."""
    if world_size_from_env() > 1 and default_backend() == "nccl":
        return {"": int(os.environ.get("LOCAL_RANK", "0"))}
    return None


def move_to_process_device(model: torch.nn.Module, device: torch.device, rank: int) -> None:
    """Move a model that sits on one device onto this process's ``device``; a model split over
    several devices (``--device-map``) is left as it is. A quantised model cannot be moved: a
    clear error says to load it onto the right device instead (:func:`rank_device_map`)."""
    devices = {p.device for p in model.parameters()}
    if devices == {device} or len(devices) > 1:
        return
    if getattr(model, "is_quantized", False):
        raise LangNeuronsError(
            f"process {rank}: the quantised model is on {devices.pop()}, not {device}; load it with "
            f"device_map={{'': LOCAL_RANK}} (langneurons.launch.rank_device_map does so)"
        )
    model.to(device)
