"""XQuAD (extractive QA, SQuAD v1.1 format) loading, validation and the by-article split.

Sources, chosen by ``source``:

* ``"hub"``: ``datasets.load_dataset("google/xquad", f"xquad.{lang}", split="validation")``.
  Its rows carry no title, so articles are recovered from the row order: paragraphs are
  numbered by the first appearance of their context and grouped in blocks of
  :data:`XQUAD_PARAGRAPHS_PER_ARTICLE` (every XQuAD article has exactly 5 paragraphs: 48
  articles, 240 paragraphs), which reproduces the ``data[]`` index of the JSON release. If a
  ``title`` column is present, the article is the order of first appearance of the title.
* ``"builtin"``: ``langneurons/data/xquad/xquad.<lang>.json``; ``split="train"`` reads
  ``train.<lang>.json`` (English only is shipped).
* a local path: a SQuAD v1.1 JSON file, or a folder holding ``xquad.<lang>.json`` (the layout
  of ``shared/data/xquad``; ``train.<lang>.json`` for ``split="train"``).

``QAExample.article`` is the index of the article in ``data[]``; it is identical across the
parallel languages, so :func:`split_by_article` gives the same train/eval articles in every
language and no evaluation context is ever seen in training. Ids are the SQuAD question ids,
which are shared by the parallel languages.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch

from langneurons.errors import LangNeuronsError
from langneurons.languages import check_language
from langneurons.tasks.xnli import subsample

XQUAD_PARAGRAPHS_PER_ARTICLE = 5
SPLITS = ("validation", "train")


@dataclass(frozen=True)
class QAExample:
    """One question; ``answers[i]`` starts at character ``answer_starts[i]`` of ``context``."""

    id: str
    article: int
    title: str
    context: str
    question: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]


def load_xquad(
    source: str | Path,
    language: str,
    limit: int | None = None,
    seed: int = 0,
    split: str = "validation",
) -> list[QAExample]:
    """Load one language of XQuAD (or an SQuAD-format file); warn on answer-span mismatches.

    ``limit`` subsamples questions with a seed over the whole file; to evaluate on held-out
    articles, load everything, call :func:`split_by_article`, then :func:`subsample` the
    evaluation part.
    """
    check_language(language)
    if split not in SPLITS:
        raise LangNeuronsError(f"unknown XQuAD split {split!r}; use one of {', '.join(SPLITS)}")
    if source == "hub":
        examples, origin = _read_hub(language, split)
    elif source == "builtin":
        examples, origin = _read_builtin(language, split)
    else:
        path = Path(source)
        if not path.exists():
            raise LangNeuronsError(f"XQuAD source not found: {path} (use 'hub', 'builtin' or a file/folder)")
        if path.is_dir():
            path = _find_in_folder(path, language, split)
        origin = str(path)
        examples = parse_squad(_load_json(path.read_text(encoding="utf-8"), origin), origin)
    mismatches = count_span_mismatches(examples)
    if mismatches:
        warnings.warn(f"{origin}: {mismatches} answer(s) differ from context[start:start+len(answer)]", stacklevel=2)
    return subsample(examples, limit, seed)


def parse_squad(data: Any, origin: str = "SQuAD data") -> list[QAExample]:
    """Examples from a parsed SQuAD v1.1 JSON object (``{"data": [article, ...]}``)."""
    articles = data.get("data") if isinstance(data, dict) else None
    if not isinstance(articles, list):
        raise LangNeuronsError(f"{origin}: not SQuAD format (expected a top-level 'data' list)")
    examples = []
    for article_index, article in enumerate(articles):
        try:
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    examples.append(_example(qa, article_index, article.get("title", ""), context, origin))
        except (KeyError, TypeError) as error:
            raise LangNeuronsError(f"{origin}: article {article_index} is malformed (missing {error})") from error
    if not examples:
        raise LangNeuronsError(f"{origin}: no questions")
    return examples


def _example(qa: dict, article: int, title: str, context: str, origin: str) -> QAExample:
    answers = qa["answers"]
    if not answers:
        raise LangNeuronsError(f"{origin}: question {qa.get('id')!r} has no answers (SQuAD v1.1 needs at least one)")
    return QAExample(
        id=str(qa["id"]),
        article=article,
        title=title,
        context=context,
        question=qa["question"],
        answers=tuple(a["text"] for a in answers),
        answer_starts=tuple(int(a["answer_start"]) for a in answers),
    )


def count_span_mismatches(examples: Sequence[QAExample]) -> int:
    """Number of gold answers whose text is not ``context[start:start + len(text)]``."""
    return sum(
        e.context[start : start + len(text)] != text
        for e in examples
        for text, start in zip(e.answers, e.answer_starts)
    )


# --------------------------------------------------------------------------------------------
# split by article


def article_split(
    num_articles: int, eval_fraction: float = 0.5, seed: int = 0
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(train articles, eval articles), sorted, from a seeded permutation of ``range(num_articles)``;
    ``round(num_articles * eval_fraction)`` articles (at least one, at most all but one) go to eval."""
    if not 0.0 < eval_fraction < 1.0:
        raise LangNeuronsError(f"eval_fraction must be strictly between 0 and 1, got {eval_fraction}")
    if num_articles < 2:
        raise LangNeuronsError(f"need at least 2 articles to split into train and eval, got {num_articles}")
    num_eval = min(max(round(num_articles * eval_fraction), 1), num_articles - 1)
    order = torch.randperm(num_articles, generator=torch.Generator().manual_seed(seed)).tolist()
    return tuple(sorted(order[num_eval:])), tuple(sorted(order[:num_eval]))


def split_by_article(
    examples: Sequence[QAExample], eval_fraction: float = 0.5, seed: int = 0
) -> tuple[list[QAExample], list[QAExample]]:
    """(train, eval) examples, split by article, never by question; order kept.

    The split depends only on ``max(article) + 1`` and the seed, so the parallel languages
    are split identically.
    """
    if not examples:
        raise LangNeuronsError("no examples to split")
    _, eval_articles = article_split(max(e.article for e in examples) + 1, eval_fraction, seed)
    held_out = set(eval_articles)
    return [e for e in examples if e.article not in held_out], [e for e in examples if e.article in held_out]


# --------------------------------------------------------------------------------------------
# sources


def _read_hub(language: str, split: str) -> tuple[list[QAExample], str]:
    import datasets

    if split != "validation":
        raise LangNeuronsError("google/xquad has only a validation split; use split_by_article for training data")
    origin = f"google/xquad xquad.{language}"
    try:
        dataset = datasets.load_dataset("google/xquad", f"xquad.{language}", split="validation")
    except Exception as error:  # network, unknown config, ...: one line for the CLI
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LangNeuronsError(f"could not load {origin} from the hub: {first_line}") from error
    return examples_from_rows([dict(row) for row in dataset], origin), origin


def examples_from_rows(rows: Sequence[dict], origin: str = "rows") -> list[QAExample]:
    """Examples from flat hub-style rows (id, context, question, answers{text, answer_start},
    optional title); articles numbered as described in the module docstring."""
    if not rows:
        raise LangNeuronsError(f"{origin}: no questions")
    by_title = "title" in rows[0]
    key_order: dict[str, int] = {}
    examples = []
    for row in rows:
        key = row["title"] if by_title else row["context"]
        index = key_order.setdefault(key, len(key_order))
        answers = row["answers"]
        if not answers["text"]:
            raise LangNeuronsError(f"{origin}: question {row['id']!r} has no answers")
        examples.append(
            QAExample(
                id=str(row["id"]),
                article=index if by_title else index // XQUAD_PARAGRAPHS_PER_ARTICLE,
                title=row.get("title", ""),
                context=row["context"],
                question=row["question"],
                answers=tuple(answers["text"]),
                answer_starts=tuple(int(s) for s in answers["answer_start"]),
            )
        )
    return examples


def _read_builtin(language: str, split: str) -> tuple[list[QAExample], str]:
    folder = files("langneurons.data").joinpath("xquad")
    name = f"train.{language}.json" if split == "train" else f"xquad.{language}.json"
    resource = folder.joinpath(name)
    if not resource.is_file():
        available = sorted(p.name for p in folder.iterdir() if p.name.endswith(".json")) if folder.is_dir() else []
        raise LangNeuronsError(f"no builtin XQuAD file {name}; available: {', '.join(available) or 'none'}")
    origin = f"builtin xquad/{name}"
    return parse_squad(_load_json(resource.read_text(encoding="utf-8"), origin), origin), origin


def _find_in_folder(folder: Path, language: str, split: str) -> Path:
    names = [f"train.{language}.json"] if split == "train" else [f"xquad.{language}.json", f"{language}.json"]
    found = next((folder / n for n in names if (folder / n).is_file()), None)
    if found is None:
        raise LangNeuronsError(f"no XQuAD {split} file for {language!r} in {folder} (looked for {', '.join(names)})")
    return found


def _load_json(text: str, origin: str) -> Any:
    if not text.strip():
        raise LangNeuronsError(f"{origin}: empty file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise LangNeuronsError(f"{origin}: not valid JSON ({error.msg} at line {error.lineno})") from error
