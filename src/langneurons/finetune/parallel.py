"""Data-parallel fine-tuning under ``accelerate launch`` (or ``torchrun``) with accelerate.

When the launcher starts ``N > 1`` processes (``WORLD_SIZE``), :func:`data_parallel` creates the
:class:`accelerate.Accelerator` (nccl on GPUs, one per process; gloo on CPUs). Every process
holds the whole model and the whole, identically ordered training data; of every micro-batch,
process ``r`` runs examples ``r, r + N, ...``. Each process divides its summed loss by the number
of target tokens of the *whole* optimizer step (known to every process, no communication), so
after one ``all_reduce`` (SUM) of the flattened LoRA gradients per optimizer step every process
holds exactly the gradient one process would compute; clipping, AdamW and the schedule then run
identically everywhere. The trained adapter therefore does not depend on the number of processes
(up to float summation order; LoRA dropout masks are drawn per process). ``batch_size`` stays the
global micro-batch: each process sees ``batch_size / N`` examples of it.

Only the main process writes checkpoints and the final adapter; the others wait for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from langneurons.launch import move_to_process_device, world_size_from_env
from langneurons.errors import LangNeuronsError


@dataclass
class DataParallel:
    """This process's part in a data-parallel run (wraps an :class:`accelerate.Accelerator`)."""

    accelerator: object

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world_size(self) -> int:
        return self.accelerator.num_processes

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def share(self, examples: Sequence) -> list:
        """This process's examples of one micro-batch: ``rank, rank + world_size, ...`` (may be empty)."""
        return list(examples[self.rank :: self.world_size])

    def sum_gradients(self, parameters: Sequence[torch.nn.Parameter]) -> None:
        """Replace every parameter's gradient by its sum over the processes (one all_reduce).

        A parameter without a gradient (this process had no examples) contributes zeros.
        """
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = torch.cat([g.reshape(-1) for g in grads]).to(self.device)
        flat = self.accelerator.reduce(flat, reduction="sum")
        offset = 0
        for parameter, grad in zip(parameters, grads):
            size = grad.numel()
            parameter.grad = flat[offset : offset + size].view_as(parameter).to(parameter.device)
            offset += size

    def sum(self, value: float) -> float:
        """A float summed over the processes."""
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        return float(self.accelerator.reduce(tensor, reduction="sum").item())

    def gather(self, value) -> list:
        """One object per process (sent between the processes of this job only), in rank order (every process gets the list)."""
        from accelerate.utils import gather_object

        return gather_object([value])

    def wait(self) -> None:
        self.accelerator.wait_for_everyone()


def data_parallel(model: torch.nn.Module) -> DataParallel | None:
    """The data-parallel context of this process, or None without a multi-process launcher.

    Moves a model that sits on one device onto this process's device (``cuda:LOCAL_RANK`` with
    GPUs). A model split over several devices (``--device-map auto``) or a quantised model on
    another device cannot be replicated per process: a clear error says so.
    """
    if world_size_from_env() <= 1:
        return None
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    parallel = DataParallel(accelerator)
    devices = {p.device for p in model.parameters()}
    if len(devices) > 1:
        raise LangNeuronsError(
            "data-parallel fine-tuning needs the whole model in every process; drop --device-map "
            f"(the model is split over {', '.join(sorted(map(str, devices)))})"
        )
    move_to_process_device(model, parallel.device, parallel.rank)
    return parallel
