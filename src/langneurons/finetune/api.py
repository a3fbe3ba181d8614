"""Stage API: task data -> fine-tuned adapter (what ``langneurons finetune`` calls)."""

from __future__ import annotations

from dataclasses import dataclass

from pathlib import Path

from langneurons.artefacts import write_json
from langneurons.errors import LangNeuronsError
from langneurons.finetune.lm_task import LM_TASK, lm_split
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
    language) and only the training articles are used. ``dev_limit``: development examples from
    the training data that the (``limit``) training sample does not contain.
    Task ``lm``: ``data`` is a statistics folder (its held-out documents) or a corpus folder; its
    ``language`` text is split into train / dev (``lm_dev_fraction``) / eval (``lm_eval_fraction``,
    for the perplexity written next to the adapter) parts (:mod:`.lm_task`).
    """

    task: str
    language: str = "en"
    data: str = "builtin"
    limit: int | None = None
    eval_fraction: float = 0.5
    seed: int = 0
    dev_limit: int | None = None
    lm_eval_fraction: float = 0.2
    lm_dev_fraction: float = 0.1

    def lm_text(self):
        from langneurons.finetune.lm_task import LMText

        return LMText(self.data, self.language, self.lm_eval_fraction, self.lm_dev_fraction, self.seed)


def training_examples(spec: TrainingData) -> list:
    check_language(spec.language)
    if spec.task == LM_TASK:
        return lm_split(spec.lm_text())["train"]
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
    raise LangNeuronsError(f"unknown task {spec.task!r}; choose xnli, xquad or lm")


def development_examples(spec: TrainingData) -> list | None:
    """``spec.dev_limit`` examples of the training data outside the training sample (seeded; None
    without a dev_limit); LM task: the text's dev part. Never a test split."""
    if spec.task == LM_TASK:
        return lm_split(spec.lm_text())["dev"] or None
    if not spec.dev_limit:
        return None
    from dataclasses import replace

    from langneurons.tasks.xnli import subsample

    training = {example.id for example in training_examples(spec)}
    unused = [e for e in training_examples(replace(spec, limit=None)) if e.id not in training]
    if not unused:
        raise LangNeuronsError("no training examples are left for a development sample (lower --limit)")
    return subsample(unused, spec.dev_limit, spec.seed + 1)


def finetune_task(loaded: LoadedModel, data: TrainingData, config: FinetuneConfig, output_dir,
                  neuron_set_path=None, progress: bool = True) -> FinetuneResult:
    """Load the training (and development) examples and run :func:`~langneurons.finetune.train.finetune`;
    task ``lm``: also ``<output_dir>/perplexity.json``, base vs tuned perplexity on the text's eval part."""
    if data.task != config.task:
        raise LangNeuronsError(f"data task {data.task!r} differs from the training task {config.task!r}")
    neuron_set = NeuronSet.load(neuron_set_path) if neuron_set_path else None
    examples, dev = training_examples(data), development_examples(data)
    before = None
    if data.task == LM_TASK:  # the base model's perplexity on the eval part, before the model is wrapped
        from langneurons.finetune.lm_task import lm_blocks
        from langneurons.intervene.perplexity import perplexity

        evaluation = lm_split(data.lm_text())["eval"]
        if evaluation:
            blocks = lm_blocks(loaded.tokenizer, evaluation, data.language, config.resolved().max_length)
            before = perplexity(loaded, blocks, batch_size=config.batch_size, progress=False)
    result = finetune(loaded, examples, config, output_dir, neuron_set=neuron_set, progress=progress,
                      dev_examples=dev, dev_language=data.language)
    if before is not None:
        from langneurons.finetune.lm_task import perplexity_record

        after = perplexity(result.model, blocks, batch_size=config.batch_size, progress=False)
        write_json(Path(output_dir) / "perplexity.json", perplexity_record(blocks, before, after))
    return result
