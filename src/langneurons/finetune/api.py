"""Stage API: task data -> fine-tuned adapter (what ``langneurons finetune`` calls)."""

from __future__ import annotations

from dataclasses import dataclass

from langneurons.errors import LangNeuronsError
from langneurons.finetune.train import FinetuneConfig, FinetuneResult, finetune
from langneurons.identify.neuron_set import NeuronSet
from langneurons.languages import check_language
from langneurons.models.loading import LoadedModel
from langneurons.tasks import load_xnli, load_xquad, split_by_article


@dataclass(frozen=True)
class TrainingData:
    """Where the training examples come from.

    data: ``builtin``, ``hub`` or a local path (XNLI folder/JSONL/TSV, XQuAD JSON or folder).
    For XQuAD the file is split by article (``eval_fraction`` held out, same split in every
    language) and only the training articles are used.
    """

    task: str
    language: str = "en"
    data: str = "builtin"
    limit: int | None = None
    eval_fraction: float = 0.5
    seed: int = 0


def training_examples(spec: TrainingData) -> list:
    check_language(spec.language)
    if spec.task == "xnli":
        return load_xnli(spec.data, spec.language, split="train", limit=spec.limit, seed=spec.seed)
    if spec.task == "xquad":
        if spec.data == "builtin":  # the built-in samples ship a separate English training file
            return load_xquad("builtin", spec.language, split="train", limit=spec.limit, seed=spec.seed)
        examples = load_xquad(spec.data, spec.language)
        train, _ = split_by_article(examples, spec.eval_fraction, spec.seed)
        if spec.limit:
            from langneurons.tasks.xnli import subsample

            train = subsample(train, spec.limit, spec.seed)
        return train
    raise LangNeuronsError(f"unknown task {spec.task!r}; choose xnli or xquad")


def finetune_task(loaded: LoadedModel, data: TrainingData, config: FinetuneConfig, output_dir,
                  neuron_set_path=None, progress: bool = True) -> FinetuneResult:
    """Load the training examples and run :func:`~langneurons.finetune.train.finetune`."""
    if data.task != config.task:
        raise LangNeuronsError(f"data task {data.task!r} differs from the training task {config.task!r}")
    neuron_set = NeuronSet.load(neuron_set_path) if neuron_set_path else None
    return finetune(loaded, training_examples(data), config, output_dir, neuron_set=neuron_set, progress=progress)
