"""The streaming statistics pass: one forward pass of the decoder body per token block.

Hooks on every layer's activation module (see :mod:`langneurons.hooks`) update an
:class:`~langneurons.activations.statistics.ActivationStatistics` in place; no per-token
activation is kept. Only counted tokens (not padding, not the BOS prepended to each block)
enter the statistics.

The pass is resumable: every ``checkpoint_every`` batches the partial statistics and the
number of blocks done are written atomically to ``<output>.partial``; a restarted run with
the same inputs continues from there without counting any block twice.

Under torchrun (``distributed=`` a :class:`~langneurons.activations.distributed.DistributedContext`)
each rank runs its share of the blocks, the statistics are summed over ranks and rank 0 writes
the file; checkpoints are per rank (``<output>.rank<r>of<N>.partial``), valid for a restart with
the same number of ranks.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from langneurons.activations import distributed as dist_stats
from langneurons.activations.distributed import DistributedContext
from langneurons.activations.replicates import (
    ReplicateAccumulator,
    ReplicateStatistics,
    chunk_of_blocks,
    read_metadata,
    replicates_path,
)
from langneurons.activations.scratch import ScratchBuffers
from langneurons.activations.sketch import SketchConfig, histogram_update
from langneurons.activations.statistics import ActivationStatistics, StatisticsMeta
from langneurons.artefacts import stable_hash
from langneurons.corpus.packing import TokenBlocks
from langneurons.activations.residual import ResidualPass
from langneurons.errors import LangNeuronsError
from langneurons.hooks import activation_hooks
from langneurons.models.loading import LoadedModel
from langneurons.progress import progress_bar


class StatisticsAccumulator:
    """Adds one layer's activations [..., neurons] (counted tokens only) to the statistics.

    Call :meth:`set_counted` before each forward pass to leave tokens out (the BOS of every
    block); by default every token counts.
    """

    def __init__(self, statistics: ActivationStatistics, replicates: ReplicateAccumulator | None = None):
        self.statistics = statistics
        self.replicates = replicates  # per-chunk counts as well (None: only the merged statistics)
        self._rows: torch.Tensor | None = None  # int64 positions of the counted tokens (None: all)
        self._scratch = ScratchBuffers()

    def set_counted(self, mask: torch.Tensor | None) -> None:
        """bool [tokens] flattened over the batch: the tokens the next forward pass counts (None: all)."""
        all_counted = mask is None or bool(mask.all())
        self._rows = None if all_counted else mask.nonzero().squeeze(1).to(self.statistics.positive_count.device)

    def __call__(self, layer: int, activation: torch.Tensor) -> None:
        stats, scratch = self.statistics, self._scratch
        values = activation.detach().reshape(-1, activation.shape[-1])
        if self._rows is not None:  # a row copy into a kept buffer, not a boolean index
            counted = scratch.get("counted", (self._rows.numel(), values.shape[1]), values.dtype, values.device)
            values = torch.index_select(values, 0, self._rows.to(values.device), out=counted)
        device = stats.positive_count.device
        if values.device != device:
            values = values.to(device)
        values = values.float()
        tokens, neurons = values.shape
        if tokens == 0:
            return None
        # one neuron-major copy [neurons, tokens]: every statistic reduces along its contiguous rows
        # (on a CPU several times faster than along dim 0 of [tokens, neurons]), and the histogram
        # sketch then works in it in place
        transposed = scratch.get("transposed", (neurons, tokens), torch.float32, device)
        transposed.copy_(values.T)
        # sums in float32 within a batch, float64 across batches; the sum of squares as a squared
        # 2-norm (one pass, no temporary)
        stats.activation_sum[layer] += transposed.sum(1)
        stats.activation_sum_sq[layer] += torch.linalg.vector_norm(transposed, dim=1).square_()
        low = scratch.get("low", (neurons,), torch.float32, device)
        high = scratch.get("high", (neurons,), torch.float32, device)
        torch.minimum(stats.minimum[layer], torch.amin(transposed, 1, out=low), out=stats.minimum[layer])
        torch.maximum(stats.maximum[layer], torch.amax(transposed, 1, out=high), out=stats.maximum[layer])
        positive = scratch.get("positive", (neurons, tokens), torch.bool, device)
        stats.positive_count[layer] += torch.gt(transposed, 0, out=positive).sum(1)
        fine_index = histogram_update(stats.histogram[layer], values, stats.sketch, scratch, transposed=transposed)
        if self.replicates is not None:
            self.replicates.update(layer, positive, fine_index)
        return None


@dataclass(frozen=True)
class CollectConfig:
    batch_size: int = 4
    sketch: SketchConfig = SketchConfig()
    checkpoint_every: int = 50
    device: str | None = None  # where statistics live (default: the model's first device)
    replicates: int | None = None  # also keep per-chunk counts in this many chunks (activations/replicates.py)
    residual: bool = False  # also keep residual-stream sums in <lang>.residual.safetensors (activations/residual.py)


def statistics_meta(loaded: LoadedModel, language: str, blocks: TokenBlocks, config: CollectConfig) -> StatisticsMeta:
    return StatisticsMeta.for_model(
        loaded.info, language, corpus_fingerprint=blocks.fingerprint(),
        config={"block_length": blocks.input_ids.shape[1], "blocks": blocks.num_blocks, "sketch": config.sketch.to_dict()},
    )


def _input_hash(meta: StatisticsMeta) -> str:
    return stable_hash(meta.weights_fingerprint, meta.language, meta.corpus_fingerprint, meta.config, meta.tool_version)


def _read_checkpoint(path: Path, key: str) -> tuple[ActivationStatistics, int] | None:
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            extra = json.loads((handle.metadata() or {}).get("checkpoint", "{}"))
        if extra.get("input_hash") != key:
            return None  # a checkpoint of other inputs: start over
        return ActivationStatistics.load(path), int(extra["blocks_done"])
    except (LangNeuronsError, KeyError, ValueError, OSError):
        return None


def _write_checkpoint(path: Path, stats: ActivationStatistics, blocks_done: int, key: str) -> None:
    checkpoint = json.dumps({"input_hash": key, "blocks_done": blocks_done})
    stats.save(path, extra_metadata={"checkpoint": checkpoint})


def collect_statistics(
    loaded: LoadedModel,
    blocks: TokenBlocks,
    config: CollectConfig = CollectConfig(),
    output: str | Path | None = None,
    progress: bool = True,
    stop_after_batches: int | None = None,
    distributed: DistributedContext | None = None,
) -> ActivationStatistics:
    """Run the statistics pass over ``blocks`` of one language.

    With ``output``, the result is saved there (atomic), partial progress is checkpointed next
    to it, and an existing complete file made from the same inputs is returned at once.
    ``stop_after_batches`` ends the pass early (for tests of resumption) without writing output.
    With ``distributed``, this rank runs blocks ``rank, rank + N, ...``; every rank returns the
    statistics of all blocks and only rank 0 writes ``output``. With ``config.replicates`` the
    per-chunk counts go to :func:`~langneurons.activations.replicates.replicates_path` of
    ``output`` (see :func:`collect_with_replicates`).
    """
    return collect_with_replicates(loaded, blocks, config, output, progress, stop_after_batches, distributed)[0]


def _replicates_key(key: str, count: int) -> str:
    return stable_hash(key, "replicates", count)


def _read_replicates(path: Path | None, key: str, blocks_done: int | None = None) -> ReplicateStatistics | None:
    """The replicate file at ``path`` if it was made from inputs ``key`` (and, for a checkpoint,
    after ``blocks_done`` blocks), else None."""
    if path is None or not path.exists():
        return None
    try:
        metadata = read_metadata(path)
        if metadata.get("input_hash") != key:
            return None
        if blocks_done is not None and json.loads(metadata.get("checkpoint", "{}")).get("blocks_done") != blocks_done:
            return None
        return ReplicateStatistics.load(path)
    except (LangNeuronsError, ValueError, OSError):
        return None


def collect_with_replicates(
    loaded: LoadedModel,
    blocks: TokenBlocks,
    config: CollectConfig = CollectConfig(),
    output: str | Path | None = None,
    progress: bool = True,
    stop_after_batches: int | None = None,
    distributed: DistributedContext | None = None,
    block_ids: torch.Tensor | None = None,
) -> tuple[ActivationStatistics, ReplicateStatistics | None]:
    """:func:`collect_statistics`, also returning the per-chunk counts when ``config.replicates``
    is set (None otherwise, and on ranks other than 0 when a finished file is reused).

    ``block_ids`` int64 [blocks]: each block's index in the language's whole block set (default
    0, 1, ...; give it for a ``--shard`` selection) — block ``b`` goes to chunk ``b mod R``.
    The merged statistics are exactly those of a pass without replicates.
    """
    if blocks.num_blocks == 0 or blocks.token_count == 0:
        raise LangNeuronsError(f"no tokens to collect statistics on for {blocks.language!r}")
    if isinstance(config.batch_size, bool) or not isinstance(config.batch_size, int) or config.batch_size < 1:
        raise LangNeuronsError(f"batch size must be an integer >= 1, got {config.batch_size!r}")
    count = config.replicates
    if count is not None and count < 1:
        raise LangNeuronsError(f"replicates must be at least 1, got {count}")
    block_ids = torch.arange(blocks.num_blocks) if block_ids is None else block_ids.long()
    if block_ids.shape != (blocks.num_blocks,):
        raise LangNeuronsError(f"block_ids must have one id per block ({blocks.num_blocks}), got {tuple(block_ids.shape)}")
    meta = statistics_meta(loaded, blocks.language, blocks, config)  # of the whole block set, also under torchrun
    output = Path(output) if output else None
    key, suffix = _input_hash(meta), ".partial"
    replicate_key = _replicates_key(key, count) if count is not None else None
    if replicate_key is not None:
        key = replicate_key  # a checkpoint without per-chunk counts cannot resume a pass with them
    if config.residual:
        key = stable_hash(key, "residual")  # nor one without residual sums a pass with them
    if distributed is not None:
        key = stable_hash(key, distributed.rank, distributed.world_size)
        suffix = f".rank{distributed.rank}of{distributed.world_size}.partial"
        progress = progress and distributed.is_main
    partial = output.with_name(output.name + suffix) if output else None
    replicate_output = replicates_path(output) if output is not None and count is not None else None
    replicate_partial = replicate_output.with_name(replicate_output.name + suffix) if replicate_output else None
    existing, existing_replicates = None, None
    if output is not None and output.exists() and (distributed is None or distributed.is_main):
        try:
            existing = ActivationStatistics.load(output)
            # a file of other inputs, or without tokens (never complete), is recomputed and replaced
            complete = _input_hash(existing.meta) == _input_hash(meta) and existing.token_count > 0
            existing = existing if complete else None
        except LangNeuronsError:
            existing = None  # unreadable: recompute and replace
        if existing is not None and count is not None:
            existing_replicates = _read_replicates(replicate_output, replicate_key)
            existing = existing if existing_replicates is not None else None
        if existing is not None and config.residual and not ResidualPass.complete(output, _input_hash(meta)):
            existing = None
    if distributed is not None:
        existing = dist_stats.share_from_main(existing, meta, config.sketch, distributed)
    if existing is not None:
        return existing, existing_replicates
    if distributed is not None:
        blocks = distributed.shard(blocks)
        block_ids = block_ids[distributed.rank::distributed.world_size]
    device = torch.device(config.device) if config.device else loaded.device
    stats, start = ActivationStatistics.empty(meta, config.sketch, device=device), 0
    replicates = ReplicateStatistics.empty(meta, config.sketch, count, device=device) if count is not None else None
    residual = ResidualPass(loaded, meta, output, suffix, device) if config.residual else None
    if partial is not None and (resumed := _read_checkpoint(partial, key)) is not None:
        resumed_replicates = _read_replicates(replicate_partial, key, resumed[1]) if count is not None else None
        if (count is None or resumed_replicates is not None) and (residual is None or residual.resume(key, resumed[1])):
            stats, start = resumed[0].to(device), resumed[1]
            replicates = resumed_replicates.to(device) if resumed_replicates is not None else None
    replicate_accumulator = ReplicateAccumulator(replicates) if replicates is not None else None
    accumulator = StatisticsAccumulator(stats, replicate_accumulator)

    def checkpoint(done: int) -> None:
        _write_checkpoint(partial, stats, done, key)
        if replicates is not None:
            replicates.save(replicate_partial, key, {"checkpoint": json.dumps({"blocks_done": done})})
        if residual is not None:
            residual.checkpoint(key, done)

    body = loaded.adapter.body()
    model_device = loaded.device
    batch_size = config.batch_size
    starts = list(range(start, blocks.num_blocks, batch_size))
    batches_run = 0
    residual_context = residual.hooks(loaded.adapter) if residual is not None else nullcontext()
    with activation_hooks(loaded.adapter, accumulator), residual_context, torch.inference_mode():
        for batch_start in progress_bar(starts, description=f"statistics {blocks.language}", enabled=progress,
                                        total_done=start // batch_size, total=-(-blocks.num_blocks // batch_size)):
            rows = slice(batch_start, batch_start + batch_size)
            input_ids = blocks.input_ids[rows].to(model_device)
            counted = blocks.counted[rows]
            accumulator.set_counted(counted.reshape(-1))
            if residual is not None:
                residual.set_counted(counted.reshape(-1))
            if replicate_accumulator is not None:
                chunks = chunk_of_blocks(block_ids[rows], count).repeat_interleave(counted.sum(1))
                replicate_accumulator.set_chunks(chunks)
            body(input_ids=input_ids, use_cache=False)
            stats.token_count += int(counted.sum())
            batches_run += 1
            if distributed is not None:
                dist_stats.inject_fault(distributed, batches_run)
            done = min(batch_start + batch_size, blocks.num_blocks)
            if partial is not None and batches_run % config.checkpoint_every == 0 and done < blocks.num_blocks:
                checkpoint(done)
            if stop_after_batches is not None and batches_run >= stop_after_batches:
                if partial is not None:
                    checkpoint(done)
                return stats, replicates
    if distributed is not None:
        stats = dist_stats.all_reduce_statistics(stats, distributed)
        if replicates is not None:
            replicates = dist_stats.all_reduce_replicates(replicates, distributed)
    stats = stats.to("cpu")
    if stats.token_count <= 0:  # never written: a zero-token file would look complete to a later run
        raise LangNeuronsError(f"the statistics pass over {blocks.language!r} counted no tokens")
    replicates = replicates.to("cpu") if replicates is not None else None
    if residual is not None:  # written before the statistics file, which marks the pass complete
        residual.finish(distributed, _input_hash(meta), write=distributed is None or distributed.is_main)
    if output is not None and (distributed is None or distributed.is_main):
        if replicates is not None:
            replicates.save(replicate_output, replicate_key)
        stats.save(output)
    if distributed is not None:
        dist_stats.barrier(distributed)  # the file is in place before any rank drops its checkpoint
    for path in (partial, replicate_partial, residual.partial if residual is not None else None):
        if path is not None and path.exists():
            path.unlink()
    return stats, replicates
