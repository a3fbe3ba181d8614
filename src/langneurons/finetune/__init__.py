"""Fine-tuning with plain LoRA, neuron-specific LoRA or the neurons' own rows, on XNLI, XQuAD or text.

:mod:`~langneurons.tasks.prompts` holds the prompt formats and scoring shared with
evaluation, :mod:`~langneurons.finetune.neuron_lora` the exact neuron masks,
:mod:`~langneurons.finetune.rows` the exact neuron-row training (``adapter rows``),
:mod:`~langneurons.finetune.lm_task` the language-modelling task, :mod:`~langneurons.finetune.selection`
the learning-rate choice and early stopping on the dev split, and
:mod:`~langneurons.finetune.train` the training loop (:mod:`~langneurons.finetune.checkpoints` the run
folder, checkpoints and adapter loading).
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
from langneurons.finetune.lm_task import LMText, encode_lm, finetuned_perplexity, lm_split, perplexity_change
from langneurons.finetune.neuron_lora import (
    MLP_ROLES,
    MaskedModule,
    ParameterCounts,
    add_lora,
    attention_module_names,
    count_parameters,
    neuron_lora_plan,
)
from langneurons.finetune.rows import EqualParameters, RowsModel, add_rows, equal_parameters, rows_parameter_count
from langneurons.finetune.selection import EarlyStopping, search_learning_rate
from langneurons.finetune.checkpoints import load_finetuned, read_finetune_metadata
from langneurons.finetune.train import NEURON_MODES, FinetuneConfig, FinetuneResult, finetune, train_step

__all__ = [
    "EarlyStopping",
    "EqualParameters",
    "LMText",
    "RowsModel",
    "add_rows",
    "encode_lm",
    "equal_parameters",
    "finetuned_perplexity",
    "lm_split",
    "perplexity_change",
    "rows_parameter_count",
    "search_learning_rate",
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
