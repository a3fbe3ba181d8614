"""LoRA on attention projections and neuron-specific LoRA on MLP projections (through PEFT).

With LoRA the weight change of a projection is ``delta W = scaling * B A`` (B: [out, r],
A: [r, in], in the module's logical orientation; PEFT keeps this orientation for GPT-2 Conv1D too
and transposes only when merging). Neuron ``n`` of a layer owns

* row ``n`` of the gate projection (for non-gated MLPs: of the first projection, ``up`` in the
  architecture table; for Phi-3's fused ``gate_up_proj``: row ``n``, and row ``N + n`` for up),
* row ``n`` of the up projection, and
* column ``n`` of the down projection.

**Exactness by construction.** Masking gradients is not enough: AdamW's decoupled weight decay
moves every non-zero entry whatever its gradient, so a masked B row is only safe if it starts at
zero and stays there -- a property of one optimiser, not of the model (and a masked *column* of
A starts non-zero: PEFT initialises A randomly). Instead the masked LoRA factor is
re-parametrised with :mod:`torch.nn.utils.parametrize`: the module's ``weight`` *is*
``original.masked_fill(~mask, 0)``. The forward pass, the gradients, PEFT's merge
(``get_delta_weight``) and the saved adapter all see the masked factor, so every other neuron's
rows (columns) of ``B A`` are exactly zero whatever the optimiser does to ``original``.

Only layers with at least one chosen neuron get an MLP adapter; a projection whose every row
(column) is chosen gets a plain, unmasked adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils import parametrize

from langneurons.errors import LangNeuronsError
from langneurons.models.architectures import ModelAdapter, UnsupportedArchitectureError, unwrap

MLP_ROLES = ("gate", "up", "down")
ADAPTER_NAME = "default"


@dataclass(frozen=True)
class MaskedModule:
    """One MLP projection that gets a LoRA adapter.

    ``kind`` says which LoRA factor carries the mask: ``rows`` of B (output features: gate/up
    neurons) or ``columns`` of A (input features: down-projection neurons). ``mask`` is bool over
    those features; None when every feature may change.
    """

    name: str
    layer: int
    kind: Literal["rows", "columns"]
    mask: torch.Tensor | None


def check_mlp_targets(mlp_targets: Sequence[str]) -> tuple[str, ...]:
    targets = tuple(mlp_targets)
    unknown = [t for t in targets if t not in MLP_ROLES]
    if unknown or not targets or len(set(targets)) != len(targets):
        raise LangNeuronsError(f"mlp targets must be distinct names among {', '.join(MLP_ROLES)}, got {list(targets)}")
    return targets


def _module_names(model: nn.Module) -> dict[int, str]:
    return {id(module): name for name, module in unwrap(model).named_modules()}


def attention_module_names(adapter: ModelAdapter, targets: Sequence[str] | None = None) -> list[str]:
    """Full module names of the attention projections of every layer (paths from the table's
    ``attention`` field; ``targets`` selects a subset of those paths)."""
    spec = adapter.spec
    chosen = tuple(spec.attention) if targets is None else tuple(targets)
    unknown = [t for t in chosen if t not in spec.attention]
    if unknown or not chosen:
        raise LangNeuronsError(
            f"attention targets {list(chosen)} are not among {spec.family}'s projections {list(spec.attention)}"
        )
    names = _module_names(adapter.model)
    existing = set(names.values())
    suffix = ".".join(filter(None, (spec.mlp, spec.down)))
    result = []
    for layer in adapter.layers:
        layer_name = names[id(layer.down)].removesuffix("." + suffix)
        for path in chosen:
            full = f"{layer_name}.{path}"
            if full not in existing:
                raise UnsupportedArchitectureError(f"{spec.family}: attention module {full} does not exist")
            result.append(full)
    return result


def neuron_lora_plan(
    adapter: ModelAdapter, neuron_mask: torch.Tensor, mlp_targets: Sequence[str] = ("gate",)
) -> list[MaskedModule]:
    """The MLP projections to adapt and their feature masks, for chosen neurons ``neuron_mask``
    (bool [num_layers, neurons_per_layer])."""
    targets = check_mlp_targets(mlp_targets)
    spec, n = adapter.spec, adapter.neurons_per_layer
    if tuple(neuron_mask.shape) != (adapter.num_layers, n):
        raise LangNeuronsError(
            f"neuron mask is {tuple(neuron_mask.shape)}, the model has {adapter.num_layers}x{n} neurons"
        )
    names = _module_names(adapter.model)
    plan: list[MaskedModule] = []
    for layer, chosen in zip(adapter.layers, neuron_mask.bool().cpu()):
        if not chosen.any():
            continue
        rows: dict[int, tuple[nn.Module, torch.Tensor]] = {}  # module id -> (module, output-feature mask)
        for role in targets:
            if role == "down":
                continue
            module = layer.gate if role == "gate" and spec.gated else layer.up
            width = 2 * n if spec.fused_gate_up else n
            offset = n if spec.fused_gate_up and role == "up" else 0
            _, mask = rows.setdefault(id(module), (module, torch.zeros(width, dtype=torch.bool)))
            mask[offset : offset + n] |= chosen
        for module, mask in rows.values():
            plan.append(MaskedModule(names[id(module)], layer.index, "rows", None if mask.all() else mask))
        if "down" in targets:
            mask = None if chosen.all() else chosen.clone()
            plan.append(MaskedModule(names[id(layer.down)], layer.index, "columns", mask))
    return plan


class FeatureMask(nn.Module):
    """Parametrisation ``weight -> weight`` with the unchosen rows (``dim=0``) or columns
    (``dim=1``) set to exactly zero."""

    def __init__(self, mask: torch.Tensor, dim: int):
        super().__init__()
        self.dim = dim
        self.register_buffer("keep", mask.bool().unsqueeze(1 - dim), persistent=False)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.masked_fill(~self.keep, 0)


def lora_config(target_modules: Sequence[str], r: int, alpha: float, dropout: float, conv1d: bool):
    from peft import LoraConfig

    if r < 1:
        raise LangNeuronsError(f"LoRA rank must be at least 1, got {r}")
    if not 0.0 <= dropout < 1.0:
        raise LangNeuronsError(f"LoRA dropout must be in [0, 1), got {dropout}")
    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
        fan_in_fan_out=conv1d, bias="none",
    )


def sort_target_modules(config) -> None:
    """PEFT keeps ``target_modules`` as a set and writes it to adapter_config.json in set order,
    which follows string hashing (PYTHONHASHSEED): store it sorted so the file is the same in
    every process. (Injection is done by then; a list loads back like the set.)"""
    if isinstance(config.target_modules, (set, frozenset)):
        config.target_modules = sorted(config.target_modules)


def apply_feature_masks(peft_model: nn.Module, plan: Sequence[MaskedModule]) -> None:
    """Register :class:`FeatureMask` on the LoRA factor named by each planned module's ``kind``."""
    modules = dict(unwrap(peft_model).named_modules())
    for item in plan:
        if item.mask is None:
            continue
        lora_module = modules[item.name]
        factor = lora_module.lora_B[ADAPTER_NAME] if item.kind == "rows" else lora_module.lora_A[ADAPTER_NAME]
        expected = factor.weight.shape[0 if item.kind == "rows" else 1]
        if expected != len(item.mask):
            raise UnsupportedArchitectureError(
                f"{item.name}: LoRA factor has {expected} features, the mask {len(item.mask)}"
            )
        mask = item.mask.to(factor.weight.device)
        parametrize.register_parametrization(factor, "weight", FeatureMask(mask, 0 if item.kind == "rows" else 1))


def adapter_state_dict(peft_model: nn.Module) -> dict[str, torch.Tensor]:
    """The PEFT model's state dict with each masked LoRA factor under its plain ``.weight`` name
    and value (masked), so ``save_pretrained(state_dict=...)`` writes a standard adapter."""
    state = {k: v for k, v in peft_model.state_dict().items() if ".parametrizations." not in k}
    for name, module in peft_model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            state[f"{name}.weight"] = module.weight.detach().clone()
    return state


@dataclass(frozen=True)
class ParameterCounts:
    """``trainable``: entries the optimiser holds; ``unmasked``: those that can affect the model
    (masked-out rows/columns of masked factors excluded)."""

    trainable: int
    unmasked: int


def count_parameters(peft_model: nn.Module) -> ParameterCounts:
    masked_originals: dict[int, int] = {}
    for module in peft_model.modules():
        if parametrize.is_parametrized(module, "weight") and isinstance(module.parametrizations.weight[0], FeatureMask):
            original = module.parametrizations.weight.original
            keep = module.parametrizations.weight[0].keep
            masked_originals[id(original)] = int(keep.sum()) * original.shape[1 - module.parametrizations.weight[0].dim]
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    return ParameterCounts(
        trainable=sum(p.numel() for p in trainable),
        unmasked=sum(masked_originals.get(id(p), p.numel()) for p in trainable),
    )


@dataclass
class LoraModel:
    """A PEFT-wrapped model with its MLP mask plan and all LoRA target module names."""

    model: nn.Module
    plan: list[MaskedModule]
    target_modules: list[str]


def add_lora(
    adapter: ModelAdapter,
    *,
    r: int,
    alpha: float,
    dropout: float = 0.0,
    neuron_mask: torch.Tensor | None = None,
    mlp_targets: Sequence[str] = ("gate",),
    attention_lora: bool = False,
    attention_targets: Sequence[str] | None = None,
) -> LoraModel:
    """Wrap ``adapter.model`` (in place) with LoRA adapters and install the neuron masks.

    ``neuron_mask`` (bool [layers, neurons]) chooses the neurons whose MLP weights may change
    (None: no MLP adapters); ``attention_lora`` adds plain LoRA on the attention projections.
    """
    from peft import get_peft_model

    plan = [] if neuron_mask is None else neuron_lora_plan(adapter, neuron_mask, mlp_targets)
    if neuron_mask is not None and not plan:
        raise LangNeuronsError("the neuron selection is empty: no MLP weight could change")
    targets = [item.name for item in plan]
    if attention_lora:
        targets += attention_module_names(adapter, attention_targets)
    if not targets:
        raise LangNeuronsError("nothing to fine-tune: no neurons chosen and attention LoRA is off")
    config = lora_config(targets, r, alpha, dropout, conv1d=adapter.spec.weight_layout == "conv1d")
    peft_model = get_peft_model(adapter.model, config, adapter_name=ADAPTER_NAME)
    sort_target_modules(peft_model.peft_config[ADAPTER_NAME])
    apply_feature_masks(peft_model, plan)
    return LoraModel(peft_model, plan, targets)
