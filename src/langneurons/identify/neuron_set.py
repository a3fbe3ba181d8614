"""NeuronSet: the language-specific neurons of one model, per language, with provenance.

A neuron is a pair (layer, index) into the MLP activations [num_layers, neurons_per_layer].
Every language maps to an int64 tensor [k, 2] of such pairs, sorted and unique; a language
that received no neurons keeps an empty [0, 2] tensor (it is still listed).

Files: ``.json`` (readable, neurons as [layer, neuron] lists) or ``.safetensors`` (one int64
tensor per language, provenance in the metadata); :meth:`NeuronSet.export_lape` writes the
LAPE authors' release format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from langneurons.artefacts import atomic_save_safetensors, atomic_torch_save, write_json
from langneurons.errors import LangNeuronsError, brief, warn

FORMAT = "langneurons.neuron-set/1"


@dataclass(eq=False)
class NeuronSet:
    """Neurons per language of one model (all tensors on the CPU).

    ``neurons``: language -> int64 [k, 2] (layer, neuron) rows, normalised to sorted and unique;
    ``method``/``parameters``: how they were chosen; ``source``: model and statistics provenance
    (``model_id``, ``weights_fingerprint``, ``languages``, per-language statistics);
    ``frequency`` (optional): language -> float64 [k], each neuron's selection frequency over
    resamples (:mod:`.stability`), kept aligned with the rows (the resampling parameters are in
    ``parameters["resampling"]``). Files without frequencies load with ``frequency=None``."""

    neurons: dict[str, torch.Tensor]
    num_layers: int
    neurons_per_layer: int
    method: str
    parameters: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)
    frequency: dict[str, torch.Tensor] | None = None

    def __post_init__(self):
        if self.num_layers < 1 or self.neurons_per_layer < 1:
            raise LangNeuronsError(f"invalid neuron-set sizes {self.num_layers}x{self.neurons_per_layer}")
        if not self.neurons:
            raise LangNeuronsError("a neuron set needs at least one language")
        if self.frequency is not None and set(self.frequency) != set(self.neurons):
            raise LangNeuronsError("selection frequencies must be given for exactly the set's languages")
        normalised, frequency = {}, {}
        for language, rows in self.neurons.items():
            given = None if self.frequency is None else self.frequency[language]
            normalised[language], frequency[language] = self._normalise(language, rows, given)
        self.neurons = normalised
        self.frequency = frequency if self.frequency is not None else None

    def _normalise(self, language: str, rows, frequency=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Validate (layer, neuron) rows and return them as a sorted, unique int64 [k, 2] tensor
        (and ``frequency`` [k], one per given row, in the same order as float64)."""
        rows = neuron_rows(language, rows)
        layer, neuron = rows[:, 0], rows[:, 1]
        if ((layer < 0) | (layer >= self.num_layers) | (neuron < 0) | (neuron >= self.neurons_per_layer)).any():
            raise LangNeuronsError(
                f"neurons of {language!r} lie outside the model's {self.num_layers}x{self.neurons_per_layer} neurons"
            )
        flat, first = torch.unique(layer * self.neurons_per_layer + neuron, return_inverse=True)  # sorted
        rows = torch.stack([flat // self.neurons_per_layer, flat % self.neurons_per_layer], dim=1)
        if frequency is None:
            return rows, None
        frequency = torch.as_tensor(frequency, dtype=torch.float64).cpu().reshape(-1)
        if frequency.numel() != len(first) or len(flat) != len(first):
            raise LangNeuronsError(f"{language!r}: one selection frequency per (unique) neuron is needed")
        return rows, torch.zeros(len(flat), dtype=torch.float64).index_copy_(0, first, frequency)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_masks(cls, masks: dict[str, torch.Tensor], method: str, parameters: dict, source: dict) -> "NeuronSet":
        """From boolean masks [num_layers, neurons_per_layer] per language (all the same shape)."""
        if not masks:
            raise LangNeuronsError("a neuron set needs at least one language")
        shapes = {tuple(mask.shape) for mask in masks.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise LangNeuronsError(f"neuron masks must share one [layers, neurons] shape, got {sorted(shapes)}")
        num_layers, neurons_per_layer = next(iter(shapes))
        neurons = {language: mask.bool().nonzero() for language, mask in masks.items()}
        return cls(neurons, num_layers, neurons_per_layer, method, dict(parameters), dict(source))

    # ------------------------------------------------------------------ views
    @property
    def languages(self) -> list[str]:
        return list(self.neurons)

    def indices(self, language: str) -> torch.Tensor:
        """The (layer, neuron) rows of one language, int64 [k, 2]."""
        if language not in self.neurons:
            raise LangNeuronsError(f"language {language!r} is not in this neuron set (it has {self.languages})")
        return self.neurons[language]

    def by_layer(self, language: str) -> dict[int, torch.Tensor]:
        """Layer -> int64 neuron indices of one language, for the layers that have any."""
        rows = self.indices(language)
        layers = rows[:, 0].unique().tolist()
        return {layer: rows[rows[:, 0] == layer, 1] for layer in layers}

    def mask(self, language: str) -> torch.Tensor:
        """Bool [num_layers, neurons_per_layer], True at the language's neurons."""
        rows = self.indices(language)
        mask = torch.zeros(self.num_layers, self.neurons_per_layer, dtype=torch.bool)
        mask[rows[:, 0], rows[:, 1]] = True
        return mask

    def union(self, languages: list[str] | None = None) -> torch.Tensor:
        """Neurons of any of ``languages`` (default: all), int64 [k, 2], sorted."""
        languages = self.languages if languages is None else languages
        mask = torch.zeros(self.num_layers, self.neurons_per_layer, dtype=torch.bool)
        for language in languages:
            mask |= self.mask(language)
        return mask.nonzero()

    def counts_per_layer(self) -> torch.Tensor:
        """Neurons per language and layer, int64 [len(languages), num_layers]."""
        return torch.stack(
            [torch.bincount(self.neurons[language][:, 0], minlength=self.num_layers) for language in self.languages]
        )

    def check_model(self, info) -> None:
        """Raise unless ``info`` (a ModelInfo) has this set's sizes and weights fingerprint."""
        if (info.num_layers, info.neurons_per_layer) != (self.num_layers, self.neurons_per_layer):
            raise LangNeuronsError(
                f"neuron set is for a {self.num_layers}x{self.neurons_per_layer} model, "
                f"{info.model_id} has {info.num_layers}x{info.neurons_per_layer} neurons"
            )
        expected = self.source.get("weights_fingerprint")
        if not expected:
            warn(f"the neuron set records no source.weights_fingerprint: cannot check it was identified on "
                 f"{info.model_id} (only its {self.num_layers}x{self.neurons_per_layer} size was checked)")
        elif expected != info.weights_fingerprint:
            raise LangNeuronsError(
                f"neuron set was identified on {self.source.get('model_id')} (weights {expected}), "
                f"not on {info.model_id} (weights {info.weights_fingerprint})"
            )

    # ------------------------------------------------------------------ files
    def _header(self) -> dict:
        return {
            "format": FORMAT,
            "method": self.method,
            "parameters": self.parameters,
            "source": self.source,
            "num_layers": self.num_layers,
            "neurons_per_layer": self.neurons_per_layer,
            "languages": self.languages,
        }

    def save(self, path) -> Path:
        """Write ``.json`` or ``.safetensors`` (chosen by suffix), atomically."""
        path = Path(path)
        if path.suffix == ".json":
            neurons = {language: rows.tolist() for language, rows in self.neurons.items()}
            extra = {"frequency": {language: values.tolist() for language, values in self.frequency.items()}} \
                if self.frequency is not None else {}
            return write_json(path, {**self._header(), "neurons": neurons, **extra})
        if path.suffix == ".safetensors":
            header = self._header()
            metadata = {key: value if isinstance(value, str) else json.dumps(value, sort_keys=True)
                        for key, value in header.items()}
            tensors = {language: rows.contiguous() for language, rows in self.neurons.items()}
            if self.frequency is not None:
                tensors.update({f"frequency.{language}": values.contiguous() for language, values in self.frequency.items()})
            return atomic_save_safetensors(tensors, path, metadata)
        raise LangNeuronsError(f"neuron sets are saved as .json or .safetensors, not {path.name!r}")

    @classmethod
    def load(cls, path) -> "NeuronSet":
        """Read a file written by :meth:`save`; a corrupted or foreign file raises LangNeuronsError."""
        path = Path(path)
        if not path.exists():
            raise LangNeuronsError(f"neuron-set file not found: {path}")
        if path.suffix not in (".json", ".safetensors"):
            raise LangNeuronsError(f"neuron sets are .json or .safetensors files, not {path.name!r}")
        try:
            header, neurons, frequency = _read_json(path) if path.suffix == ".json" else _read_safetensors(path)
            sizes = {key: header[key] for key in ("num_layers", "neurons_per_layer")}
            for key, value in sizes.items():
                if isinstance(value, bool) or not isinstance(value, int):
                    raise LangNeuronsError(f"{key} must be an integer, got {brief(value)}")
            return cls(neurons, sizes["num_layers"], sizes["neurons_per_layer"], header["method"],
                       dict(header["parameters"]), dict(header["source"]), frequency)
        except LangNeuronsError as error:
            raise LangNeuronsError(f"neuron-set file {path}: {error}") from None
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as error:
            raise LangNeuronsError(f"corrupted or truncated neuron-set file {path}: {brief(str(error), 200)}") from error

    def export_lape(self, path) -> Path:
        """torch.save a List[List[LongTensor]]: [language][layer] -> neuron indices (LAPE release format).

        Languages in this set's order; every layer present (empty tensors where a language has none)."""
        exported = []
        for language in self.languages:
            rows = self.neurons[language]
            exported.append([rows[rows[:, 0] == layer, 1].clone() for layer in range(self.num_layers)])
        return atomic_torch_save(exported, path)


def as_neuron_set(value) -> NeuronSet:
    """``value`` itself if it is a :class:`NeuronSet`, else the set read from that file path: every
    API that takes a neuron set takes either."""
    return value if isinstance(value, NeuronSet) else NeuronSet.load(value)


def content_sha256(neuron_set: NeuronSet) -> str:
    """SHA-256 of the set's content (its JSON form: header and neurons, sorted keys), for the
    provenance of a set passed as an object rather than a file."""
    import hashlib

    header = neuron_set._header()
    neurons = {language: rows.tolist() for language, rows in neuron_set.neurons.items()}
    return hashlib.sha256(json.dumps({**header, "neurons": neurons}, sort_keys=True).encode()).hexdigest()


def neuron_rows(language: str, rows) -> torch.Tensor:
    """(layer, neuron) rows as an int64 [k, 2] tensor: an integer tensor, or a list of
    ``[layer, neuron]`` pairs of integers (JSON). Floats and booleans are refused, never
    truncated or read as 0/1 (``3.7`` is not neuron 3, ``true`` is not layer 1)."""
    if isinstance(rows, torch.Tensor):
        if rows.dtype == torch.bool or rows.dtype.is_floating_point or rows.dtype.is_complex:
            raise LangNeuronsError(f"neurons of {language!r} must be integers, got a {rows.dtype} tensor")
        tensor = rows.to(torch.int64).cpu()
        if tensor.numel() == 0:
            tensor = tensor.reshape(0, 2)
    else:
        if not isinstance(rows, (list, tuple)):
            raise LangNeuronsError(f"neurons of {language!r} must be a list of [layer, neuron] pairs, got {brief(rows)}")
        for i, row in enumerate(rows):
            if not isinstance(row, (list, tuple)) or len(row) != 2 or any(
                    isinstance(x, bool) or not isinstance(x, int) for x in row):
                raise LangNeuronsError(f"neurons of {language!r}, entry {i}: (layer, neuron) rows must be two "
                                       f"integers, got {brief(row)}")
        tensor = torch.tensor(list(rows), dtype=torch.int64) if rows else torch.zeros(0, 2, dtype=torch.int64)
    if tensor.ndim != 2 or tensor.shape[1] != 2:
        raise LangNeuronsError(f"neurons of {language!r} must be (layer, neuron) rows, got {tuple(tensor.shape)}")
    return tensor


def _check_format(path: Path, header: dict) -> None:
    if header.get("format") != FORMAT:
        raise LangNeuronsError(f"{path} is not a langneurons neuron set (format {header.get('format')!r})")


def _read_json(path: Path) -> tuple[dict, dict, dict | None]:
    header = json.loads(path.read_text(encoding="utf-8"))
    _check_format(path, header)
    frequency = header.get("frequency")
    frequency = {language: frequency[language] for language in header["languages"]} if frequency is not None else None
    return header, {language: header["neurons"][language] for language in header["languages"]}, frequency


def _read_safetensors(path: Path) -> tuple[dict, dict, dict | None]:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        _check_format(path, metadata)
        header = {key: value if key in ("format", "method") else json.loads(value) for key, value in metadata.items()}
        neurons = {language: handle.get_tensor(language) for language in header["languages"]}
        frequency = None
        if f"frequency.{header['languages'][0]}" in handle.keys():
            frequency = {language: handle.get_tensor(f"frequency.{language}") for language in header["languages"]}
        return header, neurons, frequency


def layer_ranges(num_layers: int) -> dict[str, range]:
    """The layers split in thirds, named ``early``, ``middle``, ``late`` (empty thirds left out)."""
    parts = torch.tensor_split(torch.arange(num_layers), 3)
    return {name: range(int(part[0]), int(part[-1]) + 1)
            for name, part in zip(("early", "middle", "late"), parts) if len(part)}


def summarize(neuron_set: NeuronSet) -> list[dict]:
    """One row per language: ``language``, ``total`` and a count per layer third,
    keyed ``"early (layers 0-3)"`` etc. so a table header names the layers it counts."""
    counts = neuron_set.counts_per_layer()
    ranges = layer_ranges(neuron_set.num_layers)
    rows = []
    for language, per_layer in zip(neuron_set.languages, counts):
        row = {"language": language, "total": int(per_layer.sum())}
        for name, layers in ranges.items():
            row[f"{name} (layers {layers.start}-{layers.stop - 1})"] = int(per_layer[layers.start:layers.stop].sum())
        rows.append(row)
    return rows


def pairwise_overlap(neuron_set: NeuronSet) -> tuple[torch.Tensor, torch.Tensor]:
    """Shared neurons and Jaccard index for every pair of languages, each [K, K] (K languages).

    Counts are int64 (diagonal: the language's own count); Jaccard is float64, 0 where both
    languages have no neurons."""
    masks = torch.stack([neuron_set.mask(language).flatten() for language in neuron_set.languages]).double()
    shared = masks @ masks.T
    sizes = shared.diagonal()
    union = sizes[:, None] + sizes[None, :] - shared
    jaccard = torch.where(union > 0, shared / union.clamp_min(1.0), torch.zeros_like(shared))
    return shared.round().long(), jaccard
