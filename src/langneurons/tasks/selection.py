"""The examples of a task that a stage reads: the evaluation sample, the training sample and a
development sample disjoint from it, as a config's ``tasks:`` section selects them."""

from __future__ import annotations

from dataclasses import replace

from langneurons.errors import LangNeuronsError


def task_examples(tasks, task: str, language: str, split: str) -> list:
    """Examples of ``task`` in ``language`` for ``split`` as configured in ``tasks`` (a
    :class:`langneurons.runner.config.TasksConfig`): ``eval``, ``train``, or ``dev`` (``dev_limit``
    examples of the training data that the ``train`` sample does not contain)."""
    from langneurons.tasks import load_xnli, load_xquad, split_by_article, subsample

    options = getattr(tasks, task)
    if options is None:
        raise LangNeuronsError(f"task {task!r} has no data section under tasks")
    if split == "dev":
        every = task_examples(replace(tasks, **{task: replace(options, train_limit=None)}), task, language, "train")
        training = {example.id for example in task_examples(tasks, task, language, "train")}
        unused = [example for example in every if example.id not in training]
        if not unused:
            raise LangNeuronsError(f"{task}: no training examples are left for a development sample "
                                   f"(lower train_limit or drop dev_limit)")
        return subsample(unused, options.dev_limit, options.seed + 1)
    if task == "xnli":
        if split == "train":
            return load_xnli(options.train_source or options.source, language, "train", options.train_limit,
                             options.seed, options.balanced)
        return load_xnli(options.source, language, "test", options.eval_limit, options.seed, options.balanced)
    if options.train == "by_article":
        source = (options.train_source or options.source) if split == "train" else options.source
        train, held_out = split_by_article(load_xquad(source, language), options.eval_fraction, options.seed)
        chosen = train if split == "train" else held_out
        return subsample(chosen, options.train_limit if split == "train" else options.eval_limit, options.seed)
    if split == "train":
        return load_xquad(options.train_source or options.source, language, options.train_limit, options.seed, "train")
    return load_xquad(options.source, language, options.eval_limit, options.seed)
