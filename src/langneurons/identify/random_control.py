"""Random control neurons: per language, as many random neurons in each layer as a given set has.

Drawing layer by layer keeps the layer profile, so an intervention on the control touches the
same depth of the network as one on the real set. One ``torch.Generator`` seeded with ``seed``
draws every language in set order and every layer in order: the same seed gives the same set.
"""

from __future__ import annotations

import torch

from langneurons.errors import LangNeuronsError
from langneurons.identify.neuron_set import NeuronSet


def random_control(neuron_set: NeuronSet, seed: int = 0, exclude_selected: bool = False) -> NeuronSet:
    """A control NeuronSet with ``neuron_set``'s per-language, per-layer counts, drawn uniformly
    without replacement within each layer. With ``exclude_selected``, no control neuron is a
    neuron of ``neuron_set`` (of any language)."""
    generator = torch.Generator().manual_seed(seed)
    forbidden = torch.zeros(neuron_set.num_layers, neuron_set.neurons_per_layer, dtype=torch.bool)
    if exclude_selected:
        for language in neuron_set.languages:
            forbidden |= neuron_set.mask(language)
    counts = neuron_set.counts_per_layer()
    neurons = {}
    for language, per_layer in zip(neuron_set.languages, counts.tolist()):
        rows = []
        for layer, count in enumerate(per_layer):
            if count == 0:
                continue
            allowed = (~forbidden[layer]).nonzero().squeeze(1)
            if count > len(allowed):
                raise LangNeuronsError(
                    f"layer {layer} has only {len(allowed)} neurons outside the set, {language!r} needs {count}"
                )
            chosen = allowed[torch.randperm(len(allowed), generator=generator)[:count]]
            rows.append(torch.stack([torch.full_like(chosen, layer), chosen], dim=1))
        neurons[language] = torch.cat(rows) if rows else torch.zeros(0, 2, dtype=torch.int64)
    parameters = {"seed": seed, "exclude_selected": exclude_selected, "matched_method": neuron_set.method,
                  "matched_parameters": neuron_set.parameters}
    return NeuronSet(neurons, neuron_set.num_layers, neuron_set.neurons_per_layer, "random", parameters,
                     dict(neuron_set.source))
