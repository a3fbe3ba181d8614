"""Per-chunk sufficient statistics for resampling, kept in the same single statistics pass.

With ``--replicates R`` the identification blocks of a language are dealt into R disjoint,
interleaved chunks: block ``b`` (its index in the language's whole block set, whatever the
sharding) belongs to chunk ``b mod R``. Besides the merged statistics (unchanged, in
``<lang>.safetensors``) the pass keeps, per chunk:

* ``token_count`` int64 [R]: counted tokens,
* ``positive_count`` int64 [R, L, N]: tokens with activation > 0 (all LAPE needs),
* ``histogram`` int32 [L, N, R, C]: a *coarse* histogram, one bin per octave (the sketch's
  exponent range with 0 mantissa bits: C = 2 (max_exponent - min_exponent) + 2 = 38 bins with
  the defaults, against 290 fine bins).

They sum exactly to the merged statistics: token and positive counts equal, and the coarse
histograms sum to the fine histogram with its bins grouped per octave (every coarse edge is a
fine edge).

Why coarse bins for act-prob. act-prob needs P(act > t) with t the pooled 90th percentile of
all languages, which is known only after every language's pass, so per-chunk counts above t
would need a second pass. Fine histograms per chunk would cost R x the fine histogram (10 x 532
MB per language for an 8B model). The coarse histogram costs R x C / B of it (10 x 38 / 290 =
1.3 x). A resample's count above t is then its coarse counts in the octaves above t's octave
plus its count in t's octave times the fraction of the *full data's* fine counts in that octave
that lie above t (:func:`resampled_above`). Summed over all chunks this equals the full-data
estimate exactly; for a resample it ignores how the within-octave shape varies between chunks,
and the threshold t is held at its full-data value (a pooled percentile over all languages
varies far less than one language's counts). Memory per language: 8 R + L N R (8 + 4 C) bytes.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from langneurons.activations.scratch import ScratchBuffers
from langneurons.activations.sketch import SketchConfig, _lookup_table, histogram_probability_above
from langneurons.activations.statistics import ActivationStatistics, StatisticsMeta
from langneurons.artefacts import atomic_save_safetensors
from langneurons.errors import LangNeuronsError

FORMAT = "langneurons.replicate-statistics/1"


def coarse_sketch(sketch: SketchConfig) -> SketchConfig:
    """The per-chunk bin layout: the same exponent range with one bin per octave."""
    return replace(sketch, mantissa_bits=0)


@functools.lru_cache(maxsize=16)
def fine_to_coarse(sketch: SketchConfig) -> torch.Tensor:
    """int64 [sketch.num_bins]: the coarse bin (:func:`coarse_sketch`) holding each fine bin."""
    m = sketch.mantissa_bits
    fine = _lookup_table(sketch).long()  # indexed by the top 9 + m bits of a float32
    coarse = _lookup_table(coarse_sketch(sketch)).long()[torch.arange(fine.numel()) >> m]
    mapping = torch.full((sketch.num_bins,), -1, dtype=torch.int64)
    mapping[fine] = coarse
    if (mapping < 0).any():
        raise AssertionError("every fine bin is reached by some float32")
    return mapping


def replicates_path(statistics_file) -> Path:
    """``<lang>.safetensors`` -> ``<lang>.replicates.safetensors`` (shards alike)."""
    path = Path(statistics_file)
    return path.with_name(path.name[: -len(".safetensors")] + ".replicates.safetensors")


def chunk_of_blocks(block_ids: torch.Tensor, count: int) -> torch.Tensor:
    """Chunk of each block (int64): block index modulo the number of chunks."""
    return block_ids.long() % count


@dataclass
class ReplicateStatistics:
    """Per-chunk counts of one language (see module docstring for shapes)."""

    meta: StatisticsMeta
    sketch: SketchConfig  # the fine sketch of the merged statistics
    token_count: torch.Tensor
    positive_count: torch.Tensor
    histogram: torch.Tensor

    @classmethod
    def empty(cls, meta: StatisticsMeta, sketch: SketchConfig, count: int, device="cpu") -> "ReplicateStatistics":
        if count < 1:
            raise LangNeuronsError(f"replicates must be at least 1, got {count}")
        L, N, C = meta.num_layers, meta.neurons_per_layer, coarse_sketch(sketch).num_bins
        return cls(meta, sketch, torch.zeros(count, dtype=torch.int64, device=device),
                   torch.zeros(count, L, N, dtype=torch.int64, device=device),
                   torch.zeros(L, N, count, C, dtype=torch.int32, device=device))

    @property
    def count(self) -> int:
        return int(self.token_count.numel())

    @property
    def coarse(self) -> SketchConfig:
        return coarse_sketch(self.sketch)

    def to(self, device) -> "ReplicateStatistics":
        return replace(self, token_count=self.token_count.to(device), positive_count=self.positive_count.to(device),
                       histogram=self.histogram.to(device))

    def add(self, other: "ReplicateStatistics") -> "ReplicateStatistics":
        """Chunk-wise sum (e.g. of shards, which hold different blocks of the same chunks)."""
        if other.count != self.count or other.sketch != self.sketch or not self.meta.same_model(other.meta):
            raise LangNeuronsError("replicate statistics differ in chunks, bins or model; cannot add them")
        return replace(self, token_count=self.token_count + other.token_count,
                       positive_count=self.positive_count + other.positive_count,
                       histogram=(self.histogram.long() + other.histogram.long()).to(torch.int32))

    def weighted_counts(self, weights: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Token count and positive counts float64 [L, N] of the chunks weighted by ``weights`` [R]
        (e.g. bootstrap multiplicities)."""
        w = weights.to(torch.float64)
        tokens = float((self.token_count.double() * w).sum())
        return tokens, torch.einsum("r,rln->ln", w, self.positive_count.double())

    def weighted_histogram(self, weights: torch.Tensor) -> torch.Tensor:
        """Coarse histogram float64 [L, N, C] of the chunks weighted by ``weights`` [R]."""
        return torch.einsum("r,lnrc->lnc", weights.to(torch.float64), self.histogram.double())

    # ------------------------------------------------------------------ files
    def save(self, path, input_hash: str, extra_metadata: dict[str, str] | None = None) -> Path:
        tensors = {"token_count": self.token_count.cpu().contiguous(),
                   "positive_count": self.positive_count.cpu().contiguous(),
                   "histogram": self.histogram.cpu().contiguous()}
        metadata = {"format": FORMAT, "meta": json.dumps(asdict(self.meta), sort_keys=True),
                    "sketch": json.dumps(self.sketch.to_dict(), sort_keys=True),
                    "coarse_sketch": json.dumps(self.coarse.to_dict(), sort_keys=True),
                    "replicates": str(self.count), "chunking": "block b -> chunk b mod replicates",
                    "language": self.meta.language, "input_hash": input_hash, **(extra_metadata or {})}
        return atomic_save_safetensors(tensors, path, metadata)

    @classmethod
    def load(cls, path) -> "ReplicateStatistics":
        path = Path(path)
        if not path.exists():
            raise LangNeuronsError(f"replicate statistics not found: {path} (collect with --replicates R)")
        try:
            metadata = read_metadata(path)
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise LangNeuronsError(f"corrupted or truncated replicate statistics {path}: {error}") from error
        if metadata.get("format") != FORMAT:
            raise LangNeuronsError(f"{path} is not a langneurons replicate-statistics file")
        missing = [name for name in ("token_count", "positive_count", "histogram") if name not in tensors]
        if missing:
            raise LangNeuronsError(f"damaged replicate statistics {path}: no {', '.join(missing)} tensor")
        try:
            meta = StatisticsMeta(**json.loads(metadata["meta"]))
            sketch = SketchConfig(**json.loads(metadata["sketch"]))
        except (KeyError, TypeError, ValueError) as error:
            raise LangNeuronsError(f"damaged replicate statistics {path}: unreadable meta or sketch metadata "
                                   f"({type(error).__name__}: {error})") from None
        replicates = cls(meta, sketch, tensors["token_count"], tensors["positive_count"], tensors["histogram"])
        problem = replicates.problem()
        if problem:
            raise LangNeuronsError(f"damaged replicate statistics {path}: {problem}")
        return replicates

    def problem(self) -> str | None:
        """What is inconsistent in these counts (shapes against the metadata, negative counts,
        more positive tokens than tokens in a chunk), or None."""
        R = self.token_count.numel()
        L, N, C = self.meta.num_layers, self.meta.neurons_per_layer, self.coarse.num_bins
        shapes = {"token_count": ((R,), self.token_count), "positive_count": ((R, L, N), self.positive_count),
                  "histogram": ((L, N, R, C), self.histogram)}
        for name, (shape, tensor) in shapes.items():
            if tuple(tensor.shape) != shape:
                return f"{name} has shape {list(tensor.shape)}, expected {list(shape)} ({L} layers x {N} neurons, " \
                       f"{R} chunks, {C} coarse bins)"
            if tensor.is_floating_point() or tensor.dtype == torch.bool:
                return f"{name} holds {tensor.dtype}, not integer counts"
        if R < 1 or (self.token_count < 0).any() or (self.positive_count < 0).any() or (self.histogram < 0).any():
            return "negative counts or no chunks"
        over = self.positive_count > self.token_count.view(R, 1, 1)
        if over.any():
            chunk = int(over.nonzero()[0, 0])
            return f"chunk {chunk} counts more positive activations than its {int(self.token_count[chunk])} tokens"
        return None


def replicate_bytes(num_layers: int, neurons_per_layer: int, count: int, sketch: SketchConfig = SketchConfig()) -> int:
    """Bytes of one language's per-chunk counts: int64 token and positive counts, int32 octave histograms."""
    return 8 * count + num_layers * neurons_per_layer * count * (8 + 4 * coarse_sketch(sketch).num_bins)


def read_metadata(path) -> dict:
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}


class ReplicateAccumulator:
    """Adds one layer's counted activations to the per-chunk counts (used by the statistics pass).

    Call :meth:`set_chunks` before each forward pass with the chunk of every counted token.
    """

    def __init__(self, replicates: ReplicateStatistics):
        self.replicates = replicates
        self._scratch = ScratchBuffers()
        self._one_hot_t: torch.Tensor | None = None
        self._offset: torch.Tensor | None = None
        self._fine_to_coarse = fine_to_coarse(replicates.sketch).to(replicates.histogram.device)

    def set_chunks(self, chunks: torch.Tensor) -> None:
        """int64 [counted tokens]: the chunk of each counted token of the next forward pass."""
        reps = self.replicates
        device = reps.histogram.device
        chunks = chunks.to(device)
        self._one_hot_t = torch.nn.functional.one_hot(chunks, reps.count).to(torch.float32)  # [T, R]
        self._offset = (chunks * reps.coarse.num_bins).unsqueeze(0)  # [1, T]
        reps.token_count += torch.bincount(chunks, minlength=reps.count)

    def update(self, layer: int, positive: torch.Tensor, fine_index: torch.Tensor) -> None:
        """positive bool [N, T] (values > 0, neuron-major); fine_index int64 [N, T]: fine bins."""
        reps, scratch = self.replicates, self._scratch
        neurons, tokens = positive.shape
        as_float = scratch.get("positive", (neurons, tokens), torch.float32, positive.device)
        as_float.copy_(positive)
        # [N, T] @ [T, R]: per-chunk positive counts, exact in float32 (fewer than 2^24 tokens per batch)
        reps.positive_count[:, layer] += torch.mm(as_float, self._one_hot_t).round_().long().T
        coarse = scratch.get("coarse", (neurons, tokens), torch.int64, positive.device)
        torch.index_select(self._fine_to_coarse, 0, fine_index.reshape(-1), out=coarse.view(-1))
        coarse.add_(self._offset)
        ones = torch.ones((), dtype=reps.histogram.dtype, device=positive.device).expand(neurons, tokens)
        reps.histogram[layer].view(neurons, -1).scatter_add_(1, coarse, ones)


def merged_check(replicates: ReplicateStatistics, statistics: ActivationStatistics) -> bool:
    """True when the chunks sum exactly to ``statistics`` (token and positive counts, histogram
    grouped per octave)."""
    coarse = torch.zeros(*statistics.shape, replicates.coarse.num_bins, dtype=torch.int64)
    coarse.index_add_(2, fine_to_coarse(statistics.sketch), statistics.histogram.long())
    return (int(replicates.token_count.sum()) == statistics.token_count
            and torch.equal(replicates.positive_count.sum(0), statistics.positive_count)
            and torch.equal(replicates.histogram.long().sum(2), coarse))


class ThresholdSplit:
    """A threshold [L, N] against one language's full data, prepared for many resamples: the
    threshold's octave, the octaves above it, and the fraction of the full data's fine counts in
    the threshold's octave estimated above the threshold (linear within the fine bin, as
    :func:`~langneurons.activations.sketch.histogram_probability_above`)."""

    def __init__(self, statistics: ActivationStatistics, threshold: torch.Tensor):
        sketch = statistics.sketch
        mapping = fine_to_coarse(sketch)
        num_coarse = coarse_sketch(sketch).num_bins
        edges = sketch.edges()
        octaves, above, fractions = [], [], []
        for layer in range(statistics.meta.num_layers):
            fine = statistics.histogram[layer].double()  # [N, B]
            t = threshold[layer].double()
            full_above = histogram_probability_above(statistics.histogram[layer], t, sketch) * fine.sum(-1).clamp_min(1.0)
            t_fine = (torch.searchsorted(edges, t.unsqueeze(-1).contiguous(), right=True) - 1).clamp(0, fine.shape[-1] - 1)
            t_coarse = mapping[t_fine]  # [N, 1]
            full_coarse = torch.zeros(fine.shape[0], num_coarse, dtype=torch.float64).index_add_(1, mapping, fine)
            above_octave = torch.arange(num_coarse).unsqueeze(0) > t_coarse  # [N, C]
            in_octave = full_coarse.gather(1, t_coarse).squeeze(1)
            above_in_octave = full_above - (full_coarse * above_octave).sum(1)
            fraction = torch.where(in_octave > 0, above_in_octave / in_octave.clamp_min(1.0), torch.zeros_like(in_octave))
            octaves.append(t_coarse)
            above.append(above_octave)
            fractions.append(fraction.clamp(0.0, 1.0))
        self.octave = torch.stack(octaves)  # int64 [L, N, 1]
        self.above_octave = torch.stack(above)  # bool [L, N, C]
        self.fraction = torch.stack(fractions)  # float64 [L, N]

    def per_chunk(self, replicates: "ReplicateStatistics") -> tuple[torch.Tensor, torch.Tensor]:
        """Per chunk, the counts in the octaves above the threshold's and in its octave, float64
        [R, L, N] each; a resample's estimate is then ``w @ above + (w @ in_octave) * fraction``
        (:meth:`above_weighted`), without touching the histograms again."""
        above, in_octave = [], []
        for layer in range(replicates.histogram.shape[0]):
            histogram = replicates.histogram[layer].double()  # [N, R, C]
            above.append((histogram * self.above_octave[layer].unsqueeze(1)).sum(-1).T)
            octave = self.octave[layer].unsqueeze(1).expand(-1, histogram.shape[1], 1)
            in_octave.append(histogram.gather(-1, octave).squeeze(-1).T)
        return torch.stack(above, 1), torch.stack(in_octave, 1)

    def above_weighted(self, per_chunk: tuple[torch.Tensor, torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
        """Estimated count above the threshold, float64 [L, N], of the chunks weighted by ``weights`` [R]."""
        above, in_octave = per_chunk
        w = weights.to(torch.float64)
        return torch.einsum("r,rln->ln", w, above) + torch.einsum("r,rln->ln", w, in_octave) * self.fraction

    def above(self, coarse_histogram: torch.Tensor) -> torch.Tensor:
        """Estimated count above the threshold, float64 [L, N], of a resample's coarse histogram [L, N, C]."""
        whole = (coarse_histogram * self.above_octave).sum(-1)
        return whole + coarse_histogram.gather(-1, self.octave).squeeze(-1) * self.fraction


def resampled_above(statistics: ActivationStatistics, coarse_histogram: torch.Tensor,
                    threshold: torch.Tensor) -> torch.Tensor:
    """Estimated count of a resample's activations above ``threshold`` [L, N], float64 [L, N].

    ``coarse_histogram`` float64 [L, N, C] is the resample's (weighted) coarse histogram,
    ``statistics`` the language's full data. Octaves above the threshold's count whole; the
    threshold's own octave contributes its resample count times the fraction of the full data's
    fine counts in that octave estimated above the threshold. With all chunks at weight 1 this
    is the full-data estimate ``statistics.probability_above(threshold) * tokens``.
    """
    return ThresholdSplit(statistics, threshold).above(coarse_histogram)


__all__ = [
    "ReplicateAccumulator", "ReplicateStatistics", "chunk_of_blocks", "coarse_sketch", "fine_to_coarse",
    "ThresholdSplit", "merged_check", "replicate_bytes", "replicates_path", "resampled_above",
]
