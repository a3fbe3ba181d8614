"""Fine-tuning with plain LoRA and neuron-specific LoRA on XNLI and XQuAD.

:mod:`~langneurons.tasks.prompts` holds the prompt formats and scoring shared with
evaluation, :mod:`~langneurons.finetune.neuron_lora` the exact neuron masks, and
:mod:`~langneurons.finetune.train` the training loop, checkpoints and adapter loading.
"""

from langneurons.tasks.prompts import (
    NLI_LABEL_WORDS,
    TASKS,
    EncodedExample,
    causal_logits,
    collate,
    encode_examples,
    fit_nli_prompt,
    fit_qa_prompt,
    last_token_index,
    nli_label_logits,
    nli_label_token_ids,
    nli_prompt,
    qa_prompt,
    qa_target,
)
from langneurons.finetune.neuron_lora import (
    MLP_ROLES,
    MaskedModule,
    ParameterCounts,
    add_lora,
    attention_module_names,
    count_parameters,
    neuron_lora_plan,
)
from langneurons.finetune.checkpoints import load_finetuned, read_finetune_metadata
from langneurons.finetune.train import NEURON_MODES, FinetuneConfig, FinetuneResult, finetune, train_step

__all__ = [
    "MLP_ROLES",
    "NEURON_MODES",
    "NLI_LABEL_WORDS",
    "TASKS",
    "EncodedExample",
    "FinetuneConfig",
    "FinetuneResult",
    "MaskedModule",
    "ParameterCounts",
    "add_lora",
    "attention_module_names",
    "causal_logits",
    "collate",
    "count_parameters",
    "encode_examples",
    "finetune",
    "fit_nli_prompt",
    "fit_qa_prompt",
    "last_token_index",
    "load_finetuned",
    "neuron_lora_plan",
    "nli_label_logits",
    "nli_label_token_ids",
    "nli_prompt",
    "qa_prompt",
    "qa_target",
    "read_finetune_metadata",
    "train_step",
]
