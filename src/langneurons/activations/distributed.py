"""The statistics pass over several processes (``torchrun``, one node or many) with torch.distributed.

When ``WORLD_SIZE > 1`` (set by torchrun), :func:`distributed_session` joins the process group
(``env://`` rendezvous: ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``; ``LOCAL_RANK``
picks the CUDA device). For every language, rank ``r`` of ``N`` runs blocks ``r, r + N, r + 2N, ...``
of the *whole* block set (the same split on every rank, so the corpus fingerprint is the
single-process one), then :func:`all_reduce_statistics` combines the sufficient statistics:
token count, positive counts, sums, sums of squares and histograms with SUM, minimum/maximum
with MIN/MAX. Rank 0 writes the file. Counts, histograms, minima and maxima equal those of one
process exactly; float64 sums differ only by summation order.

A rank that fails makes the run fail: the launcher (torchrun) stops the other ranks, and without
a launcher the peers' collectives fail when the connection drops or after the process-group
timeout (``LANGNEURONS_DIST_TIMEOUT_S``, default 1800 s). Nothing is written before the final
all_reduce has succeeded, so no partial result is ever renamed into place.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta

import torch
import torch.distributed as dist

from langneurons.activations.sketch import SketchConfig
from langneurons.activations.statistics import ActivationStatistics, StatisticsMeta
from langneurons.corpus.packing import TokenBlocks
from langneurons.errors import LangNeuronsError
from langneurons.launch import default_backend, move_to_process_device, world_size_from_env

ENV_TIMEOUT = "LANGNEURONS_DIST_TIMEOUT_S"
"""Seconds a collective waits for the other ranks before failing (default 1800)."""
ENV_FAULT = "LANGNEURONS_TEST_FAULT"
"""Fault injection for tests only: ``"RANK:BATCHES"`` makes that rank raise after that many batches."""

_SUMMED = ("positive_count", "activation_sum", "activation_sum_sq", "histogram")


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the process group."""

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """Device of this rank's model and collectives: ``cuda:LOCAL_RANK`` with nccl, else the CPU."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def shard(self, blocks: TokenBlocks) -> TokenBlocks:
        """This rank's blocks: ``rank, rank + world_size, ...`` (may be empty)."""
        return blocks.select(slice(self.rank, None, self.world_size))


@contextmanager
def distributed_session(
    backend: str | None = None, timeout_s: float | None = None
) -> Iterator[DistributedContext | None]:
    """Join the process group described by torchrun's environment; yield None when ``WORLD_SIZE <= 1``.

    Initialises torch.distributed unless it already is (and then destroys it on exit).
    """
    if world_size_from_env() <= 1:
        yield None
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        yield DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend())
        return
    backend = backend or default_backend()
    if backend not in ("gloo", "nccl"):
        raise LangNeuronsError(f"unknown distributed backend {backend!r}; use gloo (CPU) or nccl (GPU)")
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise LangNeuronsError("backend nccl needs CUDA GPUs; use gloo on CPU")
        torch.cuda.set_device(local_rank)
    timeout = timedelta(seconds=timeout_s if timeout_s is not None else float(os.environ.get(ENV_TIMEOUT, "1800")))
    dist.init_process_group(backend, timeout=timeout)
    try:
        yield DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, backend)
    finally:
        dist.destroy_process_group()


def place_model(loaded, context: DistributedContext) -> None:
    """Move a model that sits on one device onto this rank's GPU (nccl); leave CPU runs and
    models split over several devices (``--device-map``) alone."""
    if context.device.type == "cuda":
        move_to_process_device(loaded.model, context.device, context.rank)


def all_reduce_statistics(stats: ActivationStatistics, context: DistributedContext) -> ActivationStatistics:
    """Statistics of all ranks together (every rank gets the total). ``stats``' tensors are reused."""
    device = context.device
    token_count = torch.tensor([stats.token_count], dtype=torch.int64, device=device)
    dist.all_reduce(token_count, op=dist.ReduceOp.SUM)
    total = int(token_count.item())
    if total > torch.iinfo(torch.int32).max:  # a histogram bin holds at most ``total`` counts
        raise LangNeuronsError("more than 2^31-1 tokens in one statistics file would overflow int32 histograms")
    home = stats.positive_count.device
    reduced = {}
    for name in (*_SUMMED, "minimum", "maximum"):
        op = {"minimum": dist.ReduceOp.MIN, "maximum": dist.ReduceOp.MAX}.get(name, dist.ReduceOp.SUM)
        tensor = getattr(stats, name).to(device).contiguous()
        dist.all_reduce(tensor, op=op)
        reduced[name] = tensor.to(home)
    return replace(stats, token_count=total, **reduced)


def all_reduce_replicates(replicates, context: DistributedContext):
    """Per-chunk counts (:class:`~langneurons.activations.replicates.ReplicateStatistics`) of all
    ranks together: every rank holds different blocks of the same chunks, so the counts add."""
    device, home = context.device, replicates.token_count.device
    reduced = {}
    for name in ("token_count", "positive_count", "histogram"):
        tensor = getattr(replicates, name).to(device).contiguous()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        reduced[name] = tensor.to(home)
    return replace(replicates, **reduced)


def share_from_main(
    stats: ActivationStatistics | None, meta: StatisticsMeta, sketch: SketchConfig, context: DistributedContext
) -> ActivationStatistics | None:
    """Rank 0's ``stats`` (or its None) on every rank: used when rank 0 already has the result."""
    device = context.device
    present = torch.tensor([int(stats is not None)], dtype=torch.int64, device=device)
    dist.broadcast(present, src=0)
    if not present.item():
        return None
    if stats is None:
        stats = ActivationStatistics.empty(meta, sketch)
    token_count = torch.tensor([stats.token_count], dtype=torch.int64, device=device)
    dist.broadcast(token_count, src=0)
    tensors = {}
    for name in (*_SUMMED, "minimum", "maximum"):
        tensor = getattr(stats, name).to(device).contiguous()
        dist.broadcast(tensor, src=0)
        tensors[name] = tensor.cpu()
    return replace(stats, token_count=int(token_count.item()), **tensors)


def barrier(context: DistributedContext) -> None:
    if context.backend == "nccl":
        dist.barrier(device_ids=[context.local_rank])
    else:
        dist.barrier()


def inject_fault(context: DistributedContext, batches_done: int) -> None:
    """Tests only: raise on the rank named by ``LANGNEURONS_TEST_FAULT=RANK:BATCHES``."""
    spec = os.environ.get(ENV_FAULT)
    if not spec:
        return
    rank, after = (int(part) for part in spec.split(":"))
    if context.rank == rank and batches_done >= after:
        raise RuntimeError(f"injected fault on rank {rank} after {batches_done} batch(es) ({ENV_FAULT})")


def statistics_bytes(num_layers: int, neurons_per_layer: int, sketch: SketchConfig = SketchConfig()) -> int:
    """Bytes of one language's statistics: int32 histogram plus 32 bytes of other state per neuron
    (int64 positive count, two float64 sums, float32 min and max)."""
    per_neuron = 4 * sketch.num_bins + 8 + 8 + 8 + 4 + 4
    return num_layers * neurons_per_layer * per_neuron


__all__ = [
    "DistributedContext", "all_reduce_replicates", "all_reduce_statistics", "barrier", "distributed_session",
    "inject_fault", "place_model", "share_from_main", "statistics_bytes",
]
