"""Cost of neuron-specific LoRA: one training step vs a plain PEFT LoRA step.

Both models get LoRA of the same rank on the same MLP modules and run the same
:func:`langneurons.finetune.train.train_step` (forward, backward, clipping, AdamW) on the same
batch; the only difference is the neuron masks (1% of the neurons of every layer). Target: at
most 1.2x.

    python -m benchmarks.bench_finetune --model gemma3-270m --threads 1   (the suite's options)
    python -m benchmarks.bench_finetune --model tiny --repeats 9
"""

from __future__ import annotations

import sys
import copy

import torch

from benchmarks.common import BenchResult, compare
from langneurons.tasks.prompts import IGNORE_INDEX
from langneurons.finetune.neuron_lora import add_lora
from langneurons.finetune.train import train_step
from langneurons.models.architectures import adapter_for
from langneurons.models.loading import LoadedModel


def _batch(vocab: int, batch_size: int, length: int, answer_tokens: int) -> dict[str, torch.Tensor]:
    """Random token ids; the last ``answer_tokens`` positions carry the loss (a QA-shaped batch)."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, vocab, (batch_size, length), generator=generator)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[:, -answer_tokens:] = input_ids[:, -answer_tokens:]
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


def _stepper(loaded: LoadedModel, neuron_mask: torch.Tensor, targets: tuple[str, ...], r: int, masked: bool, batch):
    model = copy.deepcopy(loaded.model)
    adapter = adapter_for(model)
    mask = neuron_mask if masked else torch.ones_like(neuron_mask)  # all-True mask: plain, unmasked PEFT LoRA
    lora = add_lora(adapter, r=r, alpha=2 * r, dropout=0.0, neuron_mask=mask, mlp_targets=targets)
    assert masked == any(item.mask is not None for item in lora.plan)
    optimizer = torch.optim.AdamW([p for p in lora.model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.01)
    lora.model.train()
    device = next(lora.model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    return lambda: train_step(lora.model, [batch], optimizer)


def run(loaded: LoadedModel, repeats: int = 5, batch_size: int = 2, length: int = 128, answer_tokens: int = 16,
        r: int = 64, fraction: float = 0.01) -> list[BenchResult]:
    """Neuron-specific LoRA step / plain LoRA step, for gate-only and gate+up+down masks."""
    vocab = loaded.model.get_input_embeddings().num_embeddings
    batch = _batch(vocab, batch_size, length, answer_tokens)
    layers, neurons = loaded.info.num_layers, loaded.info.neurons_per_layer
    per_layer = max(1, round(fraction * neurons))
    generator = torch.Generator().manual_seed(0)
    neuron_mask = torch.zeros(layers, neurons, dtype=torch.bool)
    for layer in range(layers):  # every layer has neurons: both models adapt the same modules
        neuron_mask[layer, torch.randperm(neurons, generator=generator)[:per_layer]] = True
    results = []
    for targets in (("gate",), ("gate", "up", "down")):
        plain = _stepper(loaded, neuron_mask, targets, r, masked=False, batch=batch)
        masked = _stepper(loaded, neuron_mask, targets, r, masked=True, batch=batch)
        result = compare(
            f"finetune step, MLP LoRA on {'+'.join(targets)} (r={r}, {per_layer} neurons/layer)",
            "plain PEFT LoRA step", plain, "neuron-specific LoRA step", masked, repeats=repeats, target="<= 1.2x",
        )
        result.extra |= {"model": loaded.info.model_id, "batch": [batch_size, length], "answer_tokens": answer_tokens}
        results.append(result)
    return results


if __name__ == "__main__":
    from benchmarks.run import main

    main(["--only", "finetune", *sys.argv[1:]])
