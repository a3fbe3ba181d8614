"""Residual-stream statistics, recorded in the same statistics pass as the neuron statistics.

For a model with L decoder blocks and a residual stream of width H, one
:class:`ResidualStatistics` of a language holds, for the residual stream *after* each block
(the block module's output, hooked by :func:`langneurons.hooks.residual_hooks`):

* ``token_count`` int64 [L]: counted tokens seen at that layer (the same tokens the neuron
  statistics count: never padding, never the BOS of a block; equal on every layer),
* ``residual_sum`` float64 [L, H]: the sum of the hidden states (each batch summed in float64),
* ``residual_sum_sq`` float64 [L, H]: the per-dimension sum of squares.

From them: the per-language mean [L, H] (what DiffMean directions are made of) and the
per-dimension variance (the spread of the stream, for a random-direction control weighted like
the stream). Two statistics of the same model merge exactly (sums add; float64 addition order is
the only difference), across ``--shard`` files and torchrun ranks alike.

Files: ``<lang>.residual.safetensors`` next to ``<lang>.safetensors`` (:func:`residual_path`),
with the same metadata as the neuron statistics (``meta``: model, language, corpus fingerprint,
config) plus ``hidden_size`` and ``input_hash`` (the inputs of the pass that made it).

The collect integration (:class:`ResidualPass`) is the only piece :mod:`langneurons.activations.collect`
calls; it is switched on by ``CollectConfig.residual`` (``collect --residual``, ``statistics.residual``).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from langneurons.activations.statistics import StatisticsMeta, StatisticsMismatchError
from langneurons.artefacts import atomic_save_safetensors, stable_hash
from langneurons.errors import LangNeuronsError
from langneurons.hooks import residual_hooks

FORMAT = "langneurons.residual-statistics/1"
_TENSORS = ("token_count", "residual_sum", "residual_sum_sq")


def residual_path(statistics_file) -> Path:
    """``<lang>.safetensors`` -> ``<lang>.residual.safetensors`` (shards alike)."""
    path = Path(statistics_file)
    return path.with_name(path.name[: -len(".safetensors")] + ".residual.safetensors")


@dataclass
class ResidualStatistics:
    """Sufficient statistics of one language's residual stream (see the module docstring)."""

    meta: StatisticsMeta
    hidden_size: int
    token_count: torch.Tensor  # int64 [L]
    residual_sum: torch.Tensor  # float64 [L, H]
    residual_sum_sq: torch.Tensor  # float64 [L, H]

    @classmethod
    def empty(cls, meta: StatisticsMeta, hidden_size: int, device="cpu") -> "ResidualStatistics":
        shape = (meta.num_layers, hidden_size)
        return cls(meta, int(hidden_size), torch.zeros(meta.num_layers, dtype=torch.int64, device=device),
                   torch.zeros(shape, dtype=torch.float64, device=device),
                   torch.zeros(shape, dtype=torch.float64, device=device))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.meta.num_layers, self.hidden_size)

    def to(self, device) -> "ResidualStatistics":
        return replace(self, **{name: getattr(self, name).to(device) for name in _TENSORS})

    @property
    def tokens(self) -> int:
        """Counted tokens (the same on every layer)."""
        return int(self.token_count.max()) if self.token_count.numel() else 0

    def _require_tokens(self) -> None:
        if bool((self.token_count <= 0).any()):
            raise LangNeuronsError(f"residual statistics for {self.meta.language!r} contain no tokens")

    @property
    def mean(self) -> torch.Tensor:
        """Mean hidden state per layer, float64 [L, H]."""
        self._require_tokens()
        return self.residual_sum / self.token_count[:, None].double()

    @property
    def variance(self) -> torch.Tensor:
        """Per-dimension population variance per layer, float64 [L, H]."""
        mean = self.mean
        return (self.residual_sum_sq / self.token_count[:, None].double() - mean * mean).clamp_min(0.0)

    # ------------------------------------------------------------------ merging
    def check_compatible(self, other: "ResidualStatistics", same_language: bool = True) -> None:
        if not self.meta.same_model(other.meta) or self.hidden_size != other.hidden_size:
            raise StatisticsMismatchError(
                f"residual statistics come from different models ({self.meta.model_id} vs {other.meta.model_id})")
        if same_language and self.meta.language != other.meta.language:
            raise StatisticsMismatchError(
                f"residual statistics are for different languages ({self.meta.language} vs {other.meta.language})")

    def merge(self, other: "ResidualStatistics", same_language: bool = True) -> "ResidualStatistics":
        """Exact sum of two statistics of the same model (and language, unless pooling)."""
        self.check_compatible(other, same_language)
        meta = self.meta
        if meta.corpus_fingerprint != other.meta.corpus_fingerprint:
            fingerprints = sorted([meta.corpus_fingerprint, other.meta.corpus_fingerprint])
            meta = replace(meta, corpus_fingerprint=stable_hash("merged", fingerprints))
        return replace(self, meta=meta, **{name: getattr(self, name) + getattr(other, name) for name in _TENSORS})

    # ------------------------------------------------------------------ files
    def save(self, path, input_hash: str = "", extra_metadata: dict[str, str] | None = None) -> Path:
        tensors = {name: getattr(self, name).contiguous().cpu() for name in _TENSORS}
        metadata = {"format": FORMAT, "meta": json.dumps(asdict(self.meta), sort_keys=True),
                    "hidden_size": str(self.hidden_size), "language": self.meta.language,
                    "model_id": self.meta.model_id, "token_count": str(self.tokens), "input_hash": input_hash,
                    **(extra_metadata or {})}
        return atomic_save_safetensors(tensors, path, metadata)

    @classmethod
    def load(cls, path, expected: StatisticsMeta | None = None) -> "ResidualStatistics":
        path = Path(path)
        if not path.exists():
            raise LangNeuronsError(f"residual statistics file not found: {path}; collect with --residual")
        metadata = read_metadata(path)
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise LangNeuronsError(f"corrupted or truncated residual statistics file {path}: {error}") from error
        try:
            stats = cls(StatisticsMeta(**json.loads(metadata["meta"])), int(metadata["hidden_size"]),
                        **{name: tensors[name] for name in _TENSORS})
        except (KeyError, TypeError, ValueError) as error:
            raise LangNeuronsError(f"{path}: incomplete residual statistics ({error})") from error
        if tuple(stats.residual_sum.shape) != stats.shape or tuple(stats.token_count.shape) != (stats.shape[0],):
            raise LangNeuronsError(f"{path}: tensor shapes do not match its metadata")
        if expected is not None and not stats.meta.same_model(expected):
            raise StatisticsMismatchError(f"{path} was recorded on {stats.meta.model_id} (weights "
                                          f"{stats.meta.weights_fingerprint}), not on {expected.model_id}")
        return stats


def read_metadata(path) -> dict:
    """The safetensors metadata of a residual statistics file (format checked)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise LangNeuronsError(f"corrupted or truncated residual statistics file {path}: {error}") from error
    if metadata.get("format") != FORMAT:
        raise LangNeuronsError(f"{path} is not a langneurons residual statistics file (format {metadata.get('format')!r})")
    return metadata


class ResidualAccumulator:
    """Adds one layer's block output [..., H] (counted tokens only) to :class:`ResidualStatistics`."""

    def __init__(self, statistics: ResidualStatistics):
        self.statistics = statistics
        self._rows: torch.Tensor | None = None

    def set_counted(self, mask: torch.Tensor | None) -> None:
        """bool [tokens] flattened over the batch: the tokens the next forward pass counts (None: all)."""
        self._rows = None if mask is None or bool(mask.all()) else mask.nonzero().squeeze(1)

    def __call__(self, layer: int, hidden: torch.Tensor) -> None:
        stats = self.statistics
        values = hidden.detach().reshape(-1, hidden.shape[-1])
        if self._rows is not None:
            values = values.index_select(0, self._rows.to(values.device))
        values = values.to(device=stats.residual_sum.device, dtype=torch.float64)
        stats.residual_sum[layer] += values.sum(0)
        stats.residual_sum_sq[layer] += values.square().sum(0)
        stats.token_count[layer] += values.shape[0]
        return None


def all_reduce_residual(statistics: ResidualStatistics, context) -> ResidualStatistics:
    """The statistics of all torchrun ranks together (SUM), on every rank."""
    import torch.distributed as dist

    reduced = {}
    for name in _TENSORS:
        tensor = getattr(statistics, name).to(context.device).contiguous()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        reduced[name] = tensor.to(statistics.residual_sum.device)
    return replace(statistics, **reduced)


# ---------------------------------------------------------------------------------- the collect integration
class ResidualPass:
    """The residual part of one statistics pass (:func:`langneurons.activations.collect.collect_with_replicates`):
    its accumulator and hooks, its checkpoint (``<residual file><suffix>``, resumed only together
    with the neuron checkpoint of the same inputs and block count) and its file."""

    def __init__(self, loaded, meta: StatisticsMeta, output: Path | None, suffix: str, device):
        self.output = residual_path(output) if output is not None else None
        self.partial = self.output.with_name(self.output.name + suffix) if self.output is not None else None
        self.accumulator = ResidualAccumulator(ResidualStatistics.empty(meta, loaded.adapter.hidden_size, device))

    @property
    def statistics(self) -> ResidualStatistics:
        return self.accumulator.statistics

    @staticmethod
    def complete(statistics_output: Path, input_hash: str) -> bool:
        """Whether the residual file next to ``statistics_output`` was made from inputs ``input_hash``."""
        path = residual_path(statistics_output)
        try:
            return path.exists() and read_metadata(path).get("input_hash") == input_hash
        except LangNeuronsError:
            return False

    def resume(self, key: str, blocks_done: int) -> bool:
        """Load the checkpoint of inputs ``key`` after ``blocks_done`` blocks; False (state unchanged) if none."""
        if self.partial is None or not self.partial.exists():
            return False
        try:
            metadata = read_metadata(self.partial)
            if metadata.get("input_hash") != key or json.loads(metadata.get("checkpoint", "{}")).get("blocks_done") != blocks_done:
                return False
            loaded = ResidualStatistics.load(self.partial)
        except (LangNeuronsError, ValueError):
            return False
        self.accumulator.statistics = loaded.to(self.statistics.residual_sum.device)
        return True

    def checkpoint(self, key: str, blocks_done: int) -> None:
        self.statistics.to("cpu").save(self.partial, key, {"checkpoint": json.dumps({"blocks_done": blocks_done})})

    def set_counted(self, mask: torch.Tensor | None) -> None:
        self.accumulator.set_counted(mask)

    @contextmanager
    def hooks(self, adapter):
        with residual_hooks(adapter, self.accumulator) as handles:
            yield handles

    def finish(self, distributed, input_hash: str, write: bool) -> ResidualStatistics:
        """Sum over ranks (under torchrun), move to the CPU and, with ``write``, save the file."""
        statistics = self.statistics
        if distributed is not None:
            statistics = all_reduce_residual(statistics, distributed)
        statistics = statistics.to("cpu")
        self.accumulator.statistics = statistics
        if write and self.output is not None:
            statistics.save(self.output, input_hash)
        return statistics


# ---------------------------------------------------------------------------------- folders
def load_residual_dir(directory, languages=None, expected: StatisticsMeta | None = None) -> dict[str, ResidualStatistics]:
    """Residual statistics of a folder collected with ``--residual`` (all languages, or the chosen ones)."""
    from langneurons.languages import check_languages

    directory = Path(directory)
    if not directory.is_dir():
        raise LangNeuronsError(f"statistics folder not found: {directory}")
    suffix = ".residual.safetensors"
    available = sorted(p.name[: -len(suffix)] for p in directory.glob("*" + suffix) if "." not in p.name[: -len(suffix)])
    chosen = list(check_languages(languages)) if languages else available
    missing = [language for language in chosen if language not in available]
    if missing or not chosen:
        raise LangNeuronsError(f"no residual statistics for {missing or 'any language'} in {directory} "
                               f"(available: {', '.join(available) or 'none'}); collect them with --residual")
    return {language: ResidualStatistics.load(directory / f"{language}{suffix}", expected) for language in chosen}


def merge_residual_files(paths, output) -> ResidualStatistics | None:
    """Add the residual files next to statistics files ``paths`` (shards) into the one next to
    ``output``; nothing when no shard has one, an error when only some have."""
    present = [residual_path(path).exists() for path in paths]
    if not any(present):
        return None
    if not all(present):
        raise LangNeuronsError("some shards have residual statistics and some do not; collect all with --residual")
    total = ResidualStatistics.load(residual_path(paths[0]))
    for path in paths[1:]:
        total = total.merge(ResidualStatistics.load(residual_path(path)))
    total.save(residual_path(output), input_hash="merged")
    return total
