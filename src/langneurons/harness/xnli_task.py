"""A harness multiple-choice copy of langneurons' own XNLI evaluation, written as local task files.

langneurons scores XNLI as a verbaliser classifier (:mod:`langneurons.evaluate.evaluation`): the
prompt :func:`~langneurons.tasks.prompts.nli_prompt` (premise cut to fit ``max_length``
exactly as :func:`~langneurons.tasks.prompts.fit_nli_prompt` cuts it), and the class whose
label word's *first token* (``" entailment"``, ``" neutral"``, ``" contradiction"``) has the
highest logit at the last prompt token. :func:`write_xnli_tasks` writes the same examples as a
harness ``multiple_choice`` task whose choices are exactly those first tokens (decoded), with an
empty target delimiter: the harness's log-likelihood of each choice is then the log-softmax of
the same logit, so its ``acc`` must equal langneurons' accuracy example by example. Each choice is
checked to tokenise back to its single token after the prompt; a tokenizer that merges across
the boundary is refused.

The files (``<name>_<lang>.jsonl`` and ``.yaml``) hold the data's text: write them under ``runs/``,
never into the repository.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from langneurons.artefacts import write_text
from langneurons.errors import LangNeuronsError
from langneurons.tasks.prompts import DEFAULT_MAX_LENGTH, fit_nli_prompt, nli_label_token_ids

_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: {choices}
doc_to_target: label
target_delimiter: ""
metric_list:
  - metric: acc
"""


def verbaliser_choices(tokenizer) -> list[str]:
    """The decoded first tokens of the label words, as harness choices (continuations of the prompt)."""
    return [tokenizer.decode([int(token)]) for token in nli_label_token_ids(tokenizer)]


def write_xnli_tasks(folder, tokenizer, examples_by_language: Mapping[str, Sequence], name: str = "langneurons_xnli",
                     max_length: int | None = None) -> dict[str, str]:
    """Write one harness task per language into ``folder``; return language -> task name.

    ``examples_by_language``: NLIExamples (as langneurons evaluates them); examples whose prompt
    does not fit ``max_length`` are left out, as langneurons skips them. Document ``i`` of a task
    is the ``i``-th kept example (``id`` is stored with it).
    """
    folder = Path(folder)
    max_length = max_length or DEFAULT_MAX_LENGTH["xnli"]
    choices = verbaliser_choices(tokenizer)
    label_ids = [int(t) for t in nli_label_token_ids(tokenizer)]
    tasks = {}
    for language, examples in examples_by_language.items():
        lines = []
        for example in examples:
            fitted = fit_nli_prompt(tokenizer, example, max_length)
            if fitted is None:
                continue
            prompt = fitted[0]
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            for choice, token in zip(choices, label_ids):
                whole = tokenizer(prompt + choice, add_special_tokens=False)["input_ids"]
                if list(whole) != list(prompt_ids) + [token]:
                    raise LangNeuronsError(f"choice {choice!r} does not tokenise to its one verbaliser token after "
                                           f"the prompt of {example.id}; the harness copy would score other tokens")
            lines.append(json.dumps({"id": example.id, "prompt": prompt, "label": example.label}, ensure_ascii=False))
        if not lines:
            raise LangNeuronsError(f"no XNLI prompt for {language!r} fits in max_length={max_length} tokens")
        task = f"{name}_{language}"
        data = write_text(folder / f"{task}.jsonl", "\n".join(lines) + "\n")
        write_text(folder / f"{task}.yaml", _YAML.format(task=task, data=data.resolve(),
                                                          choices=json.dumps(choices, ensure_ascii=False)))
        tasks[language] = task
    return tasks
