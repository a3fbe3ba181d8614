"""DirectionSet: per-language directions in the residual stream of one model, with provenance.

A direction set of K languages on a model with L decoder blocks and residual width H holds

* ``directions`` float32 [K, L, H]: language k's direction at the residual stream after block l
  (units: those of the hidden state; for DiffMean a difference of mean hidden states),
* ``means`` float32 [K, L, H] (optional): each language's mean hidden state (steering uses
  ``means[target] - means[source]``),
* ``subspace`` float32 [L, r, H] (optional): per layer an orthonormal basis (rows) of the rank-r
  language subspace,
* ``spread`` float32 [L, H] (optional): per-dimension standard deviation of the stream over all
  languages' tokens pooled (for a random control shaped like the stream),

plus ``languages``, ``method`` (``diffmean``, ``random``), ``parameters`` and ``source``
(``model_id``, ``revision``, ``architecture``, ``num_layers``, ``neurons_per_layer``,
``weights_fingerprint``, ``hidden_size``, ``token_counts``, ``corpus_fingerprints``, the statistics
pass's ``statistics_config``).

One safetensors file; everything but the tensors is in its metadata (``format``, ``languages``,
``method``, ``parameters``, ``source`` as JSON).

**DiffMean** (:func:`diffmean`): with mu_k [L, H] the mean hidden state of language k (token
mean over its counted tokens), ``d_k = mu_k - (1 / (K - 1)) sum_{j != k} mu_j``: the language's
mean minus the *mean of the other languages' means*. Not the mean of the other languages'
tokens pooled: pooling weights each language by its token count, which depends on the corpus
budget and on how finely the tokenizer cuts each script, not on the language; the mean of
means weighs every language equally and makes ``d_k = K / (K - 1) (mu_k - mu_bar)`` with
``mu_bar`` the mean of all K means, i.e. proportional to the centred mean. With equal token
counts the two definitions agree.

**Subspace** (``rank`` r >= 1): per layer, the top-r right singular vectors of the centred
means ``[mu_k - mu_bar]_k`` [K, H] (r <= K - 1): the span in which the languages' means differ most.

**Random control** (:meth:`DirectionSet.random_control`): per (language, layer) a Gaussian direction,
isotropic or scaled per dimension by ``spread`` (``weighting="spread"``), rescaled to exactly
the norm of the language's direction there; a random orthonormal basis per layer for the
subspace. Seeded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from langneurons.artefacts import atomic_save_safetensors
from langneurons.errors import LangNeuronsError, brief

FORMAT = "langneurons.direction-set/1"
WEIGHTINGS = ("isotropic", "spread")
_OPTIONAL = ("means", "subspace", "spread")


@dataclass(eq=False)
class DirectionSet:
    """Directions per language and layer of one model (all tensors float32, on the CPU)."""

    directions: torch.Tensor
    languages: list[str]
    method: str
    parameters: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)
    means: torch.Tensor | None = None
    subspace: torch.Tensor | None = None
    spread: torch.Tensor | None = None

    def __post_init__(self):
        self.directions = torch.as_tensor(self.directions).detach().float().cpu().contiguous()
        self.languages = [str(language) for language in self.languages]
        if self.directions.dim() != 3 or 0 in self.directions.shape:
            raise LangNeuronsError(f"directions must be a non-empty [languages, layers, hidden] tensor, "
                                   f"got {tuple(self.directions.shape)}")
        if len(self.languages) != self.directions.shape[0] or len(set(self.languages)) != len(self.languages):
            raise LangNeuronsError(f"{len(self.languages)} languages {self.languages} for {self.directions.shape[0]} "
                                   "direction rows (one unique language per row)")
        if not torch.isfinite(self.directions).all():
            raise LangNeuronsError("directions are not finite")
        expected = {"means": tuple(self.directions.shape), "spread": tuple(self.directions.shape[1:])}
        for name in _OPTIONAL:
            tensor = getattr(self, name)
            if tensor is None:
                continue
            tensor = torch.as_tensor(tensor).detach().float().cpu().contiguous()
            setattr(self, name, tensor)
            shape = tuple(tensor.shape)
            if name == "subspace":
                ok = tensor.dim() == 3 and shape[0] == self.num_layers and shape[2] == self.hidden_size and shape[1] >= 1
            else:
                ok = shape == expected[name]
            if not ok or not torch.isfinite(tensor).all():
                raise LangNeuronsError(f"{name} has shape {shape} or non-finite values; the directions are "
                                       f"{tuple(self.directions.shape)}")

    # ------------------------------------------------------------------ views
    @property
    def num_layers(self) -> int:
        return int(self.directions.shape[1])

    @property
    def hidden_size(self) -> int:
        return int(self.directions.shape[2])

    @property
    def rank(self) -> int:
        """Dimension of the stored language subspace (0: none)."""
        return 0 if self.subspace is None else int(self.subspace.shape[1])

    def index(self, language: str) -> int:
        if language not in self.languages:
            raise LangNeuronsError(f"language {language!r} is not in this direction set (it has {self.languages})")
        return self.languages.index(language)

    def direction(self, language: str) -> torch.Tensor:
        """Language's directions, float32 [L, H]."""
        return self.directions[self.index(language)]

    def norms(self) -> torch.Tensor:
        """L2 norm of every direction, float32 [K, L]."""
        return torch.linalg.vector_norm(self.directions, dim=-1)

    def steering_vector(self, source: str, target: str) -> torch.Tensor:
        """``means[target] - means[source]`` [L, H] (needs the means; a DiffMean set has them)."""
        if self.means is None:
            raise LangNeuronsError(f"this {self.method} direction set has no per-language means; steer with a "
                                   "DiffMean set, or with one language's direction")
        return self.means[self.index(target)] - self.means[self.index(source)]

    def check_model(self, loaded) -> None:
        """Raise unless ``loaded`` (a LoadedModel) has this set's layers, width and weights fingerprint."""
        info, hidden = loaded.info, loaded.adapter.hidden_size
        if (info.num_layers, hidden) != (self.num_layers, self.hidden_size):
            raise LangNeuronsError(f"direction set is for a model with {self.num_layers} layers of width "
                                   f"{self.hidden_size}; {info.model_id} has {info.num_layers} of width {hidden}")
        expected = self.source.get("weights_fingerprint")
        if expected and expected != info.weights_fingerprint:
            raise LangNeuronsError(f"direction set was made on weights {expected} ({self.source.get('model_id')}), "
                                   f"not on {info.model_id} (weights {info.weights_fingerprint})")

    def summary_rows(self) -> list[dict]:
        """One row per language: token count and the direction norm at first, middle and last layer."""
        norms = self.norms()
        counts = self.source.get("token_counts", {})
        picks = sorted({0, self.num_layers // 2, self.num_layers - 1})
        return [{"language": language, "tokens": counts.get(language, ""),
                 **{f"norm L{layer}": f"{float(norms[k, layer]):.3g}" for layer in picks}}
                for k, language in enumerate(self.languages)]

    # ------------------------------------------------------------------ controls
    def random_control(self, seed: int = 0, weighting: str = "isotropic") -> "DirectionSet":
        """A random direction set: the same languages, layers and per-(language, layer) norms
        (and a random orthonormal basis of the same rank per layer); see the module docstring."""
        if weighting not in WEIGHTINGS:
            raise LangNeuronsError(f"unknown random weighting {brief(weighting)}; use one of {', '.join(WEIGHTINGS)}")
        if weighting == "spread" and self.spread is None:
            raise LangNeuronsError("weighting 'spread' needs the per-dimension spread of the stream (a DiffMean set)")
        generator = torch.Generator().manual_seed(int(seed))
        noise = torch.randn(self.directions.shape, generator=generator, dtype=torch.float64)
        if weighting == "spread":
            noise = noise * self.spread.double()[None]
        unit = noise / torch.linalg.vector_norm(noise, dim=-1, keepdim=True).clamp_min(1e-300)
        directions = unit * torch.linalg.vector_norm(self.directions.double(), dim=-1, keepdim=True)
        subspace = None
        if self.subspace is not None:
            gaussian = torch.randn((self.num_layers, self.hidden_size, self.rank), generator=generator, dtype=torch.float64)
            subspace = torch.linalg.qr(gaussian).Q.transpose(1, 2)  # [L, r, H], orthonormal rows
        parameters = {"like": self.method, "seed": int(seed), "weighting": weighting, "like_parameters": self.parameters}
        return DirectionSet(directions.float(), list(self.languages), "random", parameters, dict(self.source),
                            subspace=subspace, spread=self.spread)

    # ------------------------------------------------------------------ files
    def save(self, path) -> Path:
        path = Path(path)
        if path.suffix != ".safetensors":
            raise LangNeuronsError(f"a direction set is saved as .safetensors, got {path.name}")
        tensors = {"directions": self.directions}
        tensors.update({name: getattr(self, name) for name in _OPTIONAL if getattr(self, name) is not None})
        metadata = {"format": FORMAT, "languages": json.dumps(self.languages), "method": self.method,
                    "parameters": json.dumps(self.parameters, sort_keys=True),
                    "source": json.dumps(self.source, sort_keys=True), "model_id": str(self.source.get("model_id", ""))}
        return atomic_save_safetensors(tensors, path, metadata)

    @classmethod
    def load(cls, path) -> "DirectionSet":
        path = Path(path)
        if not path.exists():
            raise LangNeuronsError(f"direction set not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise LangNeuronsError(f"corrupted or truncated direction set {path}: {error}") from error
        if metadata.get("format") != FORMAT:
            raise LangNeuronsError(f"{path} is not a langneurons direction set (format {metadata.get('format')!r})")
        try:
            return cls(tensors["directions"], json.loads(metadata["languages"]), metadata["method"],
                       json.loads(metadata.get("parameters", "{}")), json.loads(metadata.get("source", "{}")),
                       **{name: tensors.get(name) for name in _OPTIONAL})
        except (KeyError, ValueError) as error:
            raise LangNeuronsError(f"{path}: incomplete direction set ({error})") from error


def is_direction_set_file(path) -> bool:
    """Whether ``path`` is a safetensors file in the direction-set format."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.exists():
        return False
    try:
        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("format") == FORMAT
    except (SafetensorError, OSError, ValueError):
        return False


def diffmean(residuals: dict, rank: int = 0) -> DirectionSet:
    """DiffMean directions (module docstring) from per-language
    :class:`~langneurons.activations.residual.ResidualStatistics` of one model (at least two languages);
    with ``rank`` r >= 1 also the rank-r language subspace (r <= K - 1)."""
    languages = list(residuals)
    if len(languages) < 2:
        raise LangNeuronsError(f"DiffMean contrasts languages: it needs at least two, got {languages}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank <= len(languages) - 1:
        raise LangNeuronsError(f"subspace rank must be an integer in 0..{len(languages) - 1} (languages - 1), "
                               f"got {brief(rank)}")
    first = residuals[languages[0]]
    for language in languages[1:]:
        first.check_compatible(residuals[language], same_language=False)
    means = torch.stack([residuals[language].mean for language in languages])  # float64 [K, L, H]
    count = len(languages)
    others = (means.sum(0, keepdim=True) - means) / (count - 1)
    directions = means - others
    subspace = None
    if rank:
        centred = (means - means.mean(0, keepdim=True)).transpose(0, 1)  # [L, K, H]
        subspace = torch.linalg.svd(centred, full_matrices=False).Vh[:, :rank]  # [L, r, H]
    pooled_tokens = sum(residuals[language].token_count for language in languages).double()[:, None]
    pooled_sum = sum(residuals[language].residual_sum for language in languages)
    pooled_sq = sum(residuals[language].residual_sum_sq for language in languages)
    spread = (pooled_sq / pooled_tokens - (pooled_sum / pooled_tokens) ** 2).clamp_min(0.0).sqrt()
    meta = first.meta
    source = {"model_id": meta.model_id, "revision": meta.revision, "architecture": meta.architecture,
              "num_layers": meta.num_layers, "neurons_per_layer": meta.neurons_per_layer,
              "weights_fingerprint": meta.weights_fingerprint, "hidden_size": first.hidden_size,
              "token_counts": {language: residuals[language].tokens for language in languages},
              "corpus_fingerprints": {language: residuals[language].meta.corpus_fingerprint for language in languages},
              "statistics_config": meta.config, "tool_version": meta.tool_version,
              "site": "residual stream after each decoder block"}
    parameters = {"contrast": "mean of the other languages' means", "rank": rank}
    return DirectionSet(directions.float(), languages, "diffmean", parameters, source, means=means.float(),
                        subspace=subspace.float() if subspace is not None else None, spread=spread.float())
