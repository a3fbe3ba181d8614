"""Subnetwork fine-tuning: train the chosen neurons' own weights, no LoRA (``--adapter rows``).

Gurgurov et al. 2025 ("language subnetwork enhancement", arXiv 2510.13580) fine-tune the weights
of a language's neurons directly. Neuron ``n`` of a layer owns row ``n`` of the gate and up
projections and column ``n`` of the down projection (:mod:`.neuron_lora` explains the layout,
including Phi-3's fused gate/up and GPT-2's Conv1D).

**Exactness by construction.** Every base parameter is frozen (``requires_grad`` off, never
given to the optimiser). Each adapted projection is re-parametrised with
:mod:`torch.nn.utils.parametrize`: ``weight = original.index_add(dim, index, delta)``, where
``delta`` (the only trainable tensor; zeros at the start) holds the chosen rows (columns).
``index_add`` copies every other row (column) of ``original`` unchanged, so no optimiser --
AdamW's decoupled weight decay included, which acts on ``delta`` alone -- can move a weight
outside the chosen neurons.

Saved as ``neuron_rows.safetensors``: per module ``<name>.delta`` (the stored weight's
orientation) and ``<name>.index`` (int64 feature indices), with the dimension of each in the
file's metadata. :func:`apply_saved_rows` adds the deltas to a base model's weights in place.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from langneurons.artefacts import atomic_save_safetensors
from langneurons.errors import LangNeuronsError
from langneurons.finetune.neuron_lora import MaskedModule, neuron_lora_plan
from langneurons.models.architectures import ModelAdapter, unwrap

ROWS_FILE = "neuron_rows.safetensors"
ROWS_FORMAT = "langneurons.neuron-rows/1"
ADAPTERS = ("lora", "rows")


class RowDelta(nn.Module):
    """Parametrisation ``original -> original.index_add(dim, index, delta)``: a trainable
    ``delta`` for the features ``index`` along ``dim``, every other entry passed through."""

    def __init__(self, original: torch.Tensor, index: torch.Tensor, dim: int):
        super().__init__()
        self.dim = dim
        self.register_buffer("index", index.to(device=original.device, dtype=torch.long), persistent=False)
        shape = list(original.shape)
        shape[dim] = len(index)
        # at least float32: AdamW's small steps would vanish in a bfloat16 delta; cast in forward
        dtype = torch.promote_types(original.dtype, torch.float32)
        self.delta = nn.Parameter(torch.zeros(shape, dtype=dtype, device=original.device))

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return original.index_add(self.dim, self.index, self.delta.to(original.dtype))


def _feature_dim(kind: str, layout: str) -> int:
    """Dimension of the stored weight that indexes output features (``rows``) or input features
    (``columns``): [out, in] for Linear, [in, out] for GPT-2 Conv1D."""
    output_dim = 1 if layout == "conv1d" else 0
    return output_dim if kind == "rows" else 1 - output_dim


@dataclass
class RowsModel:
    """A model whose chosen neurons' rows/columns are trainable deltas (same fields as
    :class:`~langneurons.finetune.neuron_lora.LoraModel`, so the training loop serves both)."""

    model: nn.Module
    plan: list[MaskedModule]
    target_modules: list[str]

    def deltas(self) -> dict[str, RowDelta]:
        """Module name -> its :class:`RowDelta`."""
        modules = dict(unwrap(self.model).named_modules())
        return {name: modules[name].parametrizations.weight[0] for name in self.target_modules}

    def save(self, folder: Path) -> None:
        """Write ``neuron_rows.safetensors`` (deltas + indices only) into ``folder``."""
        tensors, dims = {}, {}
        for name, delta in self.deltas().items():
            tensors[f"{name}.delta"] = delta.delta.detach().cpu().contiguous()
            tensors[f"{name}.index"] = delta.index.cpu().contiguous()
            dims[name] = delta.dim
        atomic_save_safetensors(tensors, Path(folder) / ROWS_FILE, {"format": ROWS_FORMAT, "dims": json.dumps(dims)})


def add_rows(adapter: ModelAdapter, neuron_mask: torch.Tensor, mlp_targets: Sequence[str] = ("gate", "up", "down"),
             ) -> RowsModel:
    """Freeze ``adapter.model`` and make the rows (gate/up) and columns (down) of the neurons in
    ``neuron_mask`` (bool [layers, neurons]) trainable deltas, in place."""
    if neuron_mask is None or not bool(neuron_mask.any()):
        raise LangNeuronsError("adapter 'rows' needs chosen neurons (neurons languages, random or all)")
    plan = neuron_lora_plan(adapter, neuron_mask, mlp_targets)
    model = adapter.model
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    modules = dict(unwrap(model).named_modules())
    for item in plan:
        module = modules[item.name]
        weight = module.weight
        dim = _feature_dim(item.kind, adapter.spec.weight_layout)
        width = weight.shape[dim]
        mask = torch.ones(width, dtype=torch.bool) if item.mask is None else item.mask
        if len(mask) != width:
            raise LangNeuronsError(f"{item.name}: {width} features, the neuron mask {len(mask)}")
        parametrize.register_parametrization(module, "weight", RowDelta(weight, mask.nonzero()[:, 0], dim))
        module.parametrizations.weight.original.requires_grad_(False)
    return RowsModel(model, plan, [item.name for item in plan])


def rows_parameter_count(adapter: ModelAdapter, neuron_mask: torch.Tensor,
                         mlp_targets: Sequence[str] = ("gate", "up", "down")) -> int:
    """Trainable entries of :func:`add_rows` for ``neuron_mask`` (computed from the plan, nothing
    is changed): per chosen feature, the length of its row (column)."""
    modules = dict(unwrap(adapter.model).named_modules())
    total = 0
    for item in neuron_lora_plan(adapter, neuron_mask, mlp_targets):
        weight = modules[item.name].weight
        dim = _feature_dim(item.kind, adapter.spec.weight_layout)
        chosen = weight.shape[dim] if item.mask is None else int(item.mask.sum())
        total += chosen * weight.shape[1 - dim]
    return total


def read_rows(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """(tensors, module name -> dim) of a saved ``neuron_rows.safetensors``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    file = Path(path) / ROWS_FILE
    if not file.is_file():
        raise LangNeuronsError(f"{path} lacks {ROWS_FILE}")
    with safe_open(str(file), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != ROWS_FORMAT:
        raise LangNeuronsError(f"{file} is not a langneurons neuron-rows file")
    return load_file(str(file)), {k: int(v) for k, v in json.loads(metadata["dims"]).items()}


def apply_saved_rows(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """Add the saved deltas of ``path`` to ``model``'s weights in place (every module and
    tensor must match; never a partial load). Returns the saved tensors."""
    tensors, dims = read_rows(path)
    modules = dict(unwrap(model).named_modules())
    expected = {f"{name}.{part}" for name in dims for part in ("delta", "index")}
    if set(tensors) != expected:
        odd = sorted(set(tensors) ^ expected)[:3]
        raise LangNeuronsError(f"{path / ROWS_FILE} is incomplete or has unexpected tensors: {odd}")
    with torch.no_grad():
        for name, dim in dims.items():
            module = modules.get(name)
            delta, index = tensors[f"{name}.delta"], tensors[f"{name}.index"]
            if module is None or getattr(module, "weight", None) is None:
                raise LangNeuronsError(f"{path}: the model has no module {name}")
            weight = module.weight
            shape = list(weight.shape)
            shape[dim] = len(index)
            if list(delta.shape) != shape or (len(index) and int(index.max()) >= weight.shape[dim]):
                raise LangNeuronsError(f"{path}: {name} deltas {list(delta.shape)} do not fit weight "
                                       f"{list(weight.shape)}")
            weight.copy_(weight.index_add(dim, index.to(weight.device), delta.to(weight.device, weight.dtype)))
    return tensors


def lora_parameters_per_rank(adapter: ModelAdapter, module_names: Sequence[str]) -> int:
    """Trainable LoRA entries per unit of rank on ``module_names``: sum of (in + out) features."""
    modules = dict(unwrap(adapter.model).named_modules())
    total = 0
    for name in module_names:
        if name not in modules or getattr(modules[name], "weight", None) is None:
            raise LangNeuronsError(f"the model has no projection {name}")
        total += sum(modules[name].weight.shape)
    return total


@dataclass(frozen=True)
class EqualParameters:
    """Sizes that match a rows-set's trainable parameters (``target``): the LoRA ``rank`` on the
    given modules with the nearest count (``lora_parameters``), and the number of random neurons
    (``random_neurons``, whole neurons of ``per_neuron`` entries each) with the nearest count."""

    target: int
    rank: int
    lora_parameters: int
    random_neurons: int
    per_neuron: int


def equal_parameters(adapter: ModelAdapter, neuron_mask: torch.Tensor, lora_modules: Sequence[str],
                     mlp_targets: Sequence[str] = ("gate", "up", "down")) -> EqualParameters:
    """The LoRA rank on ``lora_modules`` (e.g. :func:`~langneurons.finetune.neuron_lora.attention_module_names`)
    and the random-neuron count whose trainable parameters are nearest to those of training the
    rows of ``neuron_mask`` (ties: the smaller)."""
    target = rows_parameter_count(adapter, neuron_mask, mlp_targets)
    per_rank = lora_parameters_per_rank(adapter, lora_modules)
    rank = max(1, min((target // per_rank, target // per_rank + 1), key=lambda r: (abs(r * per_rank - target), r)))
    one = torch.zeros_like(neuron_mask, dtype=torch.bool)
    one[0, 0] = True
    per_neuron = rows_parameter_count(adapter, one, mlp_targets)
    neurons = max(1, min((target // per_neuron, target // per_neuron + 1),
                         key=lambda n: (abs(n * per_neuron - target), n)))
    return EqualParameters(target, rank, rank * per_rank, neurons, per_neuron)


def lora_targets(adapter: ModelAdapter, config, neuron_mask: torch.Tensor | None) -> list[str]:
    """The module names :func:`~langneurons.finetune.neuron_lora.add_lora` adapts for a resolved
    :class:`~langneurons.finetune.train.FinetuneConfig` and its neuron mask (nothing is changed)."""
    from langneurons.finetune.neuron_lora import attention_module_names

    names = [] if neuron_mask is None else [item.name for item in neuron_lora_plan(adapter, neuron_mask,
                                                                                     config.mlp_targets)]
    if config.attention_lora:
        names += attention_module_names(adapter, config.attention_targets)
    return names
