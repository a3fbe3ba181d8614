"""The neurons whose MLP weights a fine-tuning run may change (from its neuron mode and set)."""

from __future__ import annotations

import torch

from langneurons.errors import LangNeuronsError
from langneurons.finetune.options import FinetuneConfig
from langneurons.identify.neuron_set import NeuronSet
from langneurons.models.loading import ModelInfo


def training_neurons(
    config: FinetuneConfig, info: ModelInfo, neuron_set: NeuronSet | None
) -> tuple[torch.Tensor | None, NeuronSet | None]:
    """(bool [layers, neurons] mask of the neurons whose MLP weights may change, or None for
    attention-only; the NeuronSet it came from (languages/random modes))."""
    if config.neurons == "none":
        return None, None
    if config.neurons == "all":
        return torch.ones(info.num_layers, info.neurons_per_layer, dtype=torch.bool), None
    if neuron_set is None:
        if not config.neuron_set_path:
            raise LangNeuronsError(f"neuron mode {config.neurons!r} needs a neuron set (--neurons-file)")
        neuron_set = NeuronSet.load(config.neuron_set_path)
    neuron_set.check_model(info)
    union = torch.zeros(neuron_set.num_layers, neuron_set.neurons_per_layer, dtype=torch.bool)
    for language in config.languages:
        union |= neuron_set.mask(language)
    if not union.any():
        raise LangNeuronsError(f"the neuron set has no neurons for {', '.join(config.languages)}")
    chosen = NeuronSet.from_masks({"+".join(config.languages): union}, neuron_set.method,
                                  neuron_set.parameters, neuron_set.source)
    if config.neurons == "random":
        from langneurons.identify.random_control import random_control

        chosen = random_control(chosen, seed=config.seed)
    return chosen.mask(chosen.languages[0]), chosen
