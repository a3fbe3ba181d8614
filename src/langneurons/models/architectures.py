"""The one declarative table of supported architectures.

Each entry says, for one ``config.model_type``, where the decoder layers live, which module's
*output* is "the neuron activation" (the activation-function output, one value per
intermediate neuron), and the names of the MLP projections. Nothing else in the package looks
at model names: everything goes through :func:`adapter_for`.

Sizes (number of layers, neurons per layer) are read from the modules themselves, never from
name-based guesses such as ``4 * hidden_size``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from langneurons.errors import LangNeuronsError


@dataclass(frozen=True)
class ArchitectureSpec:
    """Where one model family keeps its MLP neurons.

    Attributes:
        layers: dotted paths (tried in order) from the loaded model to the list of decoder layers.
        mlp: dotted path from a decoder layer to the module holding the MLP projections
            ("" when they sit directly on the layer, as in OPT).
        activation: path from ``mlp`` to the activation-function module whose output is the
            neuron activation (``act_fn(gate_proj x)`` for gated MLPs).
        gate: path from ``mlp`` to the gate projection (None for non-gated MLPs).
        up: path from ``mlp`` to the up projection (for non-gated MLPs: the first projection).
        down: path from ``mlp`` to the down projection (its input columns are the neurons).
        fused_gate_up: the gate and up projections are one Linear, gate rows first (Phi-3).
        weight_layout: ``linear`` (weight [out, in]) or ``conv1d`` (GPT-2 Conv1D, weight [in, out]).
        attention: paths from a decoder layer to its attention projections (q/k/v/o, fused where
            the family fuses them); used as LoRA targets.
    """

    family: str
    layers: tuple[str, ...]
    mlp: str
    activation: str
    gate: str | None
    up: str
    down: str
    fused_gate_up: bool = False
    weight_layout: Literal["linear", "conv1d"] = "linear"
    attention: tuple[str, ...] = ()

    @property
    def gated(self) -> bool:
        return self.gate is not None


_LLAMA_ATTENTION = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
_GATED_LLAMA_LIKE = dict(
    mlp="mlp", activation="act_fn", gate="gate_proj", up="up_proj", down="down_proj", attention=_LLAMA_ATTENTION
)

ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "llama": ArchitectureSpec("llama", ("model.layers",), **_GATED_LLAMA_LIKE),
    "mistral": ArchitectureSpec("mistral", ("model.layers",), **_GATED_LLAMA_LIKE),
    "qwen2": ArchitectureSpec("qwen2", ("model.layers",), **_GATED_LLAMA_LIKE),
    "qwen3": ArchitectureSpec("qwen3", ("model.layers",), **_GATED_LLAMA_LIKE),
    "gemma": ArchitectureSpec("gemma", ("model.layers",), **_GATED_LLAMA_LIKE),
    "gemma2": ArchitectureSpec("gemma2", ("model.layers",), **_GATED_LLAMA_LIKE),
    "gemma3_text": ArchitectureSpec("gemma3_text", ("model.layers",), **_GATED_LLAMA_LIKE),
    "cohere": ArchitectureSpec("cohere", ("model.layers",), **_GATED_LLAMA_LIKE),  # Aya-Expanse, Command R
    "cohere2": ArchitectureSpec("cohere2", ("model.layers",), **_GATED_LLAMA_LIKE),  # Aya-Expanse 2, Command R7B
    "olmo2": ArchitectureSpec("olmo2", ("model.layers",), **_GATED_LLAMA_LIKE),
    "gemma3": ArchitectureSpec(
        "gemma3", ("model.language_model.layers", "language_model.model.layers", "model.layers"), **_GATED_LLAMA_LIKE
    ),
    "phi3": ArchitectureSpec(
        "phi3", ("model.layers",), mlp="mlp", activation="activation_fn", gate="gate_up_proj",
        up="gate_up_proj", down="down_proj", fused_gate_up=True, attention=("self_attn.qkv_proj", "self_attn.o_proj"),
    ),
    "gpt2": ArchitectureSpec(
        "gpt2", ("transformer.h",), mlp="mlp", activation="act", gate=None, up="c_fc", down="c_proj",
        weight_layout="conv1d", attention=("attn.c_attn", "attn.c_proj"),
    ),
    "bloom": ArchitectureSpec(
        "bloom", ("transformer.h",), mlp="mlp", activation="gelu_impl", gate=None, up="dense_h_to_4h",
        down="dense_4h_to_h", attention=("self_attention.query_key_value", "self_attention.dense"),
    ),
    "opt": ArchitectureSpec(
        "opt", ("model.decoder.layers",), mlp="", activation="activation_fn", gate=None, up="fc1", down="fc2",
        attention=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"),
    ),
    "xglm": ArchitectureSpec(
        "xglm", ("model.layers",), mlp="", activation="activation_fn", gate=None, up="fc1", down="fc2",
        attention=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"),
    ),
}


class UnsupportedArchitectureError(LangNeuronsError):
    pass


def _get(root: nn.Module, path: str) -> nn.Module:
    module = root
    for part in filter(None, path.split(".")):
        module = getattr(module, part)
    return module


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under a PEFT wrapper (``PeftModel.get_base_model()``)."""
    if hasattr(model, "peft_config") and hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


@dataclass(frozen=True)
class LayerModules:
    """The modules of one decoder layer's MLP."""

    index: int
    activation: nn.Module
    gate: nn.Module | None
    up: nn.Module
    down: nn.Module


class ModelAdapter:
    """Resolved view of one loaded model through its :class:`ArchitectureSpec`."""

    def __init__(self, model: nn.Module, spec: ArchitectureSpec):
        self.model = model
        self.spec = spec
        inner = unwrap(model)
        layers = None
        for path in spec.layers:
            try:
                layers = _get(inner, path)
                break
            except AttributeError:
                continue
        if layers is None:
            raise UnsupportedArchitectureError(
                f"{spec.family}: none of the layer paths {list(spec.layers)} exist on {type(inner).__name__}"
            )
        self.blocks: list[nn.Module] = list(layers)  # the decoder blocks; their output is the residual stream
        self.layers: list[LayerModules] = []
        for index, layer in enumerate(layers):
            mlp = _get(layer, spec.mlp)
            self.layers.append(
                LayerModules(
                    index=index,
                    activation=_get(mlp, spec.activation),
                    gate=_get(mlp, spec.gate) if spec.gate else None,
                    up=_get(mlp, spec.up),
                    down=_get(mlp, spec.down),
                )
            )
        if len({id(layer.activation) for layer in self.layers}) != len(self.layers):
            raise UnsupportedArchitectureError(
                f"{spec.family}: the activation module is shared between layers; hooks could not tell layers apart"
            )

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def neurons_per_layer(self) -> int:
        """Intermediate size, read from the down projection's input dimension."""
        sizes = {self.down_input_size(layer.down) for layer in self.layers}
        if len(sizes) != 1:
            raise UnsupportedArchitectureError(f"{self.spec.family}: layers have different MLP widths {sorted(sizes)}")
        return sizes.pop()

    @property
    def hidden_size(self) -> int:
        """Width of the residual stream, read from the down projection's output dimension."""
        return int(self.down_neuron_weight(0).shape[1])

    def down_input_size(self, down: nn.Module) -> int:
        weight = down.weight
        return weight.shape[0] if self.spec.weight_layout == "conv1d" else weight.shape[1]

    def down_neuron_weight(self, layer: int) -> torch.Tensor:
        """Down-projection weight viewed as [neurons, hidden]: row n is what neuron n writes."""
        weight = self.layers[layer].down.weight
        return weight if self.spec.weight_layout == "conv1d" else weight.T

    def input_neuron_weight(self, layer: int, which: Literal["gate", "up"]) -> torch.Tensor:
        """Gate or up projection weight viewed as [neurons, hidden] (row n feeds neuron n)."""
        modules = self.layers[layer]
        n = self.neurons_per_layer
        if which == "gate" and not self.spec.gated:
            raise UnsupportedArchitectureError(f"{self.spec.family} has no gate projection")
        module = modules.gate if which == "gate" else modules.up
        weight = module.weight
        weight = weight.T if self.spec.weight_layout == "conv1d" else weight
        if self.spec.fused_gate_up:
            weight = weight[:n] if which == "gate" else weight[n:]
        return weight

    def body(self) -> nn.Module:
        """The decoder without LM head (``model.base_model`` in transformers terms)."""
        inner = unwrap(self.model)
        return getattr(inner, "base_model", inner)


def supported_families() -> list[str]:
    return sorted(ARCHITECTURES)


def spec_for_model_type(model_type: str) -> ArchitectureSpec:
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise UnsupportedArchitectureError(
            f"unsupported architecture {model_type!r}; supported: {', '.join(supported_families())}"
        ) from None


def adapter_for(model: nn.Module) -> ModelAdapter:
    """Adapter for a loaded transformers (or PEFT-wrapped) model, chosen by ``config.model_type``."""
    config = getattr(unwrap(model), "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} has no config.model_type; supported: {', '.join(supported_families())}"
        )
    return ModelAdapter(model, spec_for_model_type(model_type))
