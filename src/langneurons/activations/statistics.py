"""Per-language activation statistics: sufficient statistics of every neuron's activation.

For a model with L layers and N neurons per layer, one :class:`ActivationStatistics` holds

* ``token_count``: number of real (non-padding) tokens seen,
* ``positive_count`` [L, N] int64: tokens with activation > 0,
* ``activation_sum`` / ``activation_sum_sq`` [L, N] float64: sums of a and a^2 (float32 within a
  batch, float64 across batches),
* ``minimum`` / ``maximum`` [L, N] float32,
* ``histogram`` [L, N, B] int32: the percentile sketch of :mod:`.sketch`.

Memory is O(L x N x B) whatever the corpus size. Two statistics of the same model merge
exactly (:meth:`ActivationStatistics.merge`): counts and histograms add, sums add.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from langneurons import __version__
from langneurons.activations.sketch import (
    SketchConfig,
    histogram_probability_above,
    histogram_quantile,
)
from langneurons.artefacts import atomic_save_safetensors
from langneurons.errors import LangNeuronsError
from langneurons.models.loading import ModelInfo

PERCENTILES: tuple[int, ...] = (5, 10, 25, 50, 75, 90, 95)
"""Percentiles reported for every neuron (the paper's P5 ... P95)."""

FORMAT = "langneurons.activation-statistics/1"


NAMED_STATISTICS = ("mean", "std", "min", "max")


class StatisticsMismatchError(LangNeuronsError):
    pass


def check_statistic_name(name) -> str:
    """``name`` if it names a per-neuron statistic (``mean``, ``std``, ``min``, ``max`` or ``pNN``
    with 0 <= NN <= 100, e.g. ``p90``, ``p2.5``), else a LangNeuronsError. Shared by the
    statistics themselves, the intervention parser, the CLI and the config loader."""
    text = name if isinstance(name, str) else ""
    number = text[1:]
    is_percentile = text[:1] == "p" and number.replace(".", "", 1).isdigit() and 0 <= float(number) <= 100
    if text not in NAMED_STATISTICS and not is_percentile:
        from langneurons.errors import brief

        raise LangNeuronsError(f"unknown statistic {brief(name)}; use mean, std, min, max or p0..p100 (e.g. p90)")
    return text


@dataclass(frozen=True)
class StatisticsMeta(ModelInfo):
    """Where a statistics object comes from: the model (the fields of
    :class:`~langneurons.models.loading.ModelInfo`, inherited, so they are declared once) and the
    language, corpus, tool version and options; stored flat as safetensors metadata."""

    language: str
    corpus_fingerprint: str = ""
    tool_version: str = __version__
    config: dict = field(default_factory=dict)

    @classmethod
    def for_model(cls, info, language: str, **fields) -> "StatisticsMeta":
        """Metadata of statistics recorded on the model described by ``info`` (a
        :class:`~langneurons.models.loading.ModelInfo`): its identifying fields, copied."""
        return cls(**info.to_dict(), language=language, **fields)

    def same_model(self, other: "StatisticsMeta") -> bool:
        return (
            self.architecture == other.architecture
            and self.num_layers == other.num_layers
            and self.neurons_per_layer == other.neurons_per_layer
            and self.weights_fingerprint == other.weights_fingerprint
        )


@dataclass
class ActivationStatistics:
    meta: StatisticsMeta
    sketch: SketchConfig
    token_count: int
    positive_count: torch.Tensor
    activation_sum: torch.Tensor
    activation_sum_sq: torch.Tensor
    minimum: torch.Tensor
    maximum: torch.Tensor
    histogram: torch.Tensor

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls, meta: StatisticsMeta, sketch: SketchConfig | None = None, device="cpu") -> "ActivationStatistics":
        sketch = sketch or SketchConfig()
        shape = (meta.num_layers, meta.neurons_per_layer)
        return cls(
            meta=meta,
            sketch=sketch,
            token_count=0,
            positive_count=torch.zeros(shape, dtype=torch.int64, device=device),
            activation_sum=torch.zeros(shape, dtype=torch.float64, device=device),
            activation_sum_sq=torch.zeros(shape, dtype=torch.float64, device=device),
            minimum=torch.full(shape, math.inf, dtype=torch.float32, device=device),
            maximum=torch.full(shape, -math.inf, dtype=torch.float32, device=device),
            histogram=torch.zeros((*shape, sketch.num_bins), dtype=torch.int32, device=device),
        )

    @property
    def shape(self) -> tuple[int, int]:
        return (self.meta.num_layers, self.meta.neurons_per_layer)

    def to(self, device) -> "ActivationStatistics":
        tensors = {name: getattr(self, name).to(device) for name in _TENSORS}
        return replace(self, **tensors)

    # ------------------------------------------------------------------ derived statistics
    def _require_tokens(self) -> None:
        if self.token_count <= 0:
            raise LangNeuronsError(f"statistics for {self.meta.language!r} contain no tokens")

    @property
    def activation_probability(self) -> torch.Tensor:
        """P(activation > 0) per neuron, float64 [L, N]."""
        self._require_tokens()
        return self.positive_count.double() / self.token_count

    @property
    def mean(self) -> torch.Tensor:
        """Mean activation per neuron, float64 [L, N]."""
        self._require_tokens()
        return self.activation_sum / self.token_count

    @property
    def std(self) -> torch.Tensor:
        """Population standard deviation per neuron, float64 [L, N]."""
        mean = self.mean
        variance = (self.activation_sum_sq / self.token_count - mean * mean).clamp_min(0.0)
        return variance.sqrt()

    def quantile(self, q: float) -> torch.Tensor:
        """Estimated q-quantile (0..1) per neuron, float32 [L, N]; error bound in :mod:`.sketch`."""
        self._require_tokens()
        return torch.stack(
            [
                histogram_quantile(self.histogram[layer], q, self.sketch, self.minimum[layer], self.maximum[layer])
                for layer in range(self.meta.num_layers)
            ]
        )

    def percentile(self, p: float) -> torch.Tensor:
        """Estimated p-th percentile (0..100) per neuron, float32 [L, N]."""
        return self.quantile(p / 100.0)

    def percentiles(self) -> dict[str, torch.Tensor]:
        return {f"p{p}": self.percentile(p) for p in PERCENTILES}

    def statistic(self, name: str) -> torch.Tensor:
        """A named per-neuron statistic [L, N]: ``mean``, ``std``, ``min``, ``max``, or ``pNN``."""
        check_statistic_name(name)
        if name == "mean":
            return self.mean.float()
        if name == "std":
            return self.std.float()
        if name == "min":
            return self.minimum.clone()
        if name == "max":
            return self.maximum.clone()
        return self.percentile(float(name[1:]))

    def probability_above(self, threshold: torch.Tensor) -> torch.Tensor:
        """Estimated P(activation > threshold[l, n]) per neuron, float64 [L, N]."""
        self._require_tokens()
        if threshold.shape != self.shape:
            raise LangNeuronsError(f"threshold shape {tuple(threshold.shape)} != statistics shape {self.shape}")
        return torch.stack(
            [
                histogram_probability_above(self.histogram[layer], threshold[layer], self.sketch)
                for layer in range(self.meta.num_layers)
            ]
        )

    # ------------------------------------------------------------------ merging
    def check_compatible(self, other: "ActivationStatistics", same_language: bool = True) -> None:
        if not self.meta.same_model(other.meta):
            raise StatisticsMismatchError(
                f"statistics come from different models ({self.meta.model_id} vs {other.meta.model_id})"
            )
        if self.sketch != other.sketch:
            raise StatisticsMismatchError(f"histogram bins differ: {self.sketch} vs {other.sketch}")
        if same_language and self.meta.language != other.meta.language:
            raise StatisticsMismatchError(
                f"statistics are for different languages ({self.meta.language} vs {other.meta.language})"
            )

    def merge(self, other: "ActivationStatistics", same_language: bool = True) -> "ActivationStatistics":
        """Exact sum of two statistics of the same model (and language, unless pooling)."""
        self.check_compatible(other, same_language=same_language)
        histogram = self.histogram.to(torch.int64) + other.histogram.to(torch.int64)
        if histogram.max() > torch.iinfo(torch.int32).max:
            raise LangNeuronsError("histogram counts overflow int32; merge fewer tokens per file")
        meta = self.meta
        if meta.corpus_fingerprint != other.meta.corpus_fingerprint:
            from langneurons.artefacts import stable_hash

            fingerprints = sorted([meta.corpus_fingerprint, other.meta.corpus_fingerprint])
            meta = replace(meta, corpus_fingerprint=stable_hash("merged", fingerprints))
        return replace(
            self,
            meta=meta,
            token_count=self.token_count + other.token_count,
            positive_count=self.positive_count + other.positive_count,
            activation_sum=self.activation_sum + other.activation_sum,
            activation_sum_sq=self.activation_sum_sq + other.activation_sum_sq,
            minimum=torch.minimum(self.minimum, other.minimum),
            maximum=torch.maximum(self.maximum, other.maximum),
            histogram=histogram.to(torch.int32),
        )

    @classmethod
    def pooled(cls, statistics: list["ActivationStatistics"]) -> "ActivationStatistics":
        """All languages together (sum of statistics), language ``+``-joined."""
        if not statistics:
            raise LangNeuronsError("no statistics to pool")
        result = statistics[0]
        for other in statistics[1:]:
            result = result.merge(other, same_language=False)
        languages = "+".join(s.meta.language for s in statistics)
        return replace(result, meta=replace(result.meta, language=languages))

    # ------------------------------------------------------------------ files
    def save(self, path, extra_metadata: dict[str, str] | None = None) -> None:
        """Write one safetensors file (atomic) with all tensors and the metadata."""
        tensors = {name: getattr(self, name).contiguous().cpu() for name in _TENSORS}
        metadata = {
            "format": FORMAT,
            "meta": json.dumps(asdict(self.meta), sort_keys=True),
            "sketch": json.dumps(self.sketch.to_dict(), sort_keys=True),
            "token_count": str(self.token_count),
            "language": self.meta.language,
            "model_id": self.meta.model_id,
            **(extra_metadata or {}),
        }
        atomic_save_safetensors(tensors, path, metadata)

    @classmethod
    def load(cls, path, expected: StatisticsMeta | None = None) -> "ActivationStatistics":
        """Read a statistics file; with ``expected``, check it was made with that model."""
        from pathlib import Path

        path = Path(path)
        if not path.exists():
            raise LangNeuronsError(f"statistics file not found: {path}")
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise LangNeuronsError(f"corrupted or truncated statistics file {path}: {error}") from error
        if metadata.get("format") != FORMAT:
            raise LangNeuronsError(f"{path} is not a langneurons statistics file (format {metadata.get('format')!r})")
        meta = StatisticsMeta(**json.loads(metadata["meta"]))
        stats = cls(
            meta=meta,
            sketch=SketchConfig(**json.loads(metadata["sketch"])),
            token_count=int(metadata["token_count"]),
            **{name: tensors[name] for name in _TENSORS},
        )
        if tuple(stats.positive_count.shape) != stats.shape:
            raise LangNeuronsError(f"{path}: tensor shapes do not match its metadata")
        if stats.token_count < 0 or (stats.positive_count < 0).any() \
                or (stats.positive_count > stats.token_count).any():
            raise LangNeuronsError(f"damaged statistics {path}: positive counts outside [0, {stats.token_count}] "
                                   "(its token count)")
        if expected is not None and not meta.same_model(expected):
            raise StatisticsMismatchError(
                f"{path} was recorded on {meta.model_id} ({meta.num_layers}x{meta.neurons_per_layer}, "
                f"weights {meta.weights_fingerprint}), not on {expected.model_id} "
                f"({expected.num_layers}x{expected.neurons_per_layer}, weights {expected.weights_fingerprint})"
            )
        return stats


_TENSORS = ("positive_count", "activation_sum", "activation_sum_sq", "minimum", "maximum", "histogram")
