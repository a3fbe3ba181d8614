"""Scoring the development split during fine-tuning (learning curve, learning-rate choice, early
stopping): task score for XNLI/XQuAD, perplexity for the LM task."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from langneurons.finetune.lm_task import LM_TASK
from langneurons.finetune.options import FinetuneConfig
from langneurons.models.loading import LoadedModel


def dev_scorer(loaded: LoadedModel, model: nn.Module, config: FinetuneConfig,
                dev_examples: Sequence | None, language: str) -> Callable[[], dict] | None:
    """A function scoring the model being trained on ``dev_examples`` (eval mode, then back to
    train): ``{"dev_metric": ..., "dev_score": percent, "dev_n": n}`` and, for XNLI and LM, ``dev_loss``
    (nats: :func:`label_cross_entropy`, or log perplexity); None when not asked for."""
    if not dev_examples or not config.eval_every:
        return None
    if config.task == LM_TASK:
        return lm_dev_scorer(loaded, model, config, dev_examples, language)
    from langneurons.evaluate.evaluation import predict, prepare_task

    prepared = prepare_task(loaded.tokenizer, config.task, language, dev_examples, config.max_length,
                            32 if config.task == "xquad" else 0)
    current = LoadedModel(model=model, tokenizer=loaded.tokenizer, info=loaded.info, adapter=loaded.adapter)
    metric = "correct" if config.task == "xnli" else "f1"

    def score() -> dict:
        model.eval()
        with torch.no_grad():
            records = predict(current, prepared, batch_size=config.batch_size)
        model.train()
        values = [float(r[metric]) * (100.0 if metric == "correct" else 1.0) for r in records]
        scored = {"dev_metric": "accuracy" if metric == "correct" else "f1", "dev_score": sum(values) / len(values),
                  "dev_n": len(values)}
        return dict(scored, dev_loss=label_cross_entropy(records)) if config.task == "xnli" else scored

    return score


def label_cross_entropy(records: Sequence[dict]) -> float:
    """Mean over XNLI records of -log softmax(label_logits)[gold] (nats): the dev loss, which moves
    while the accuracy of a short run still sits at chance."""
    logits = torch.tensor([r["label_logits"] for r in records], dtype=torch.float64)
    gold = torch.tensor([r["gold"] for r in records])
    return float(torch.nn.functional.cross_entropy(logits, gold))


def lm_dev_scorer(loaded: LoadedModel, model: nn.Module, config: FinetuneConfig, texts: Sequence[str],
                   language: str) -> Callable[[], dict]:
    """Dev perplexity of the LM task on ``texts`` packed like the training text (lower is better)."""
    from langneurons.finetune.lm_task import lm_blocks
    from langneurons.intervene.perplexity import perplexity

    blocks = lm_blocks(loaded.tokenizer, texts, language, config.max_length)
    current = LoadedModel(model=model, tokenizer=loaded.tokenizer, info=loaded.info, adapter=loaded.adapter)

    def score() -> dict:
        model.eval()
        result = perplexity(current, blocks, batch_size=config.batch_size, progress=False)
        model.train()
        return {"dev_metric": "perplexity", "dev_score": result.perplexity, "dev_n": result.token_count,
                "dev_loss": math.log(result.perplexity)}

    return score
