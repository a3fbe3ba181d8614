"""XNLI (natural language inference, 3 classes) loading, validation and parallel subsampling.

Sources, chosen by ``source``:

* ``"hub"``: ``datasets.load_dataset("facebook/xnli", language, split=split)``.
* ``"builtin"``: the small sample shipped in ``langneurons/data/xnli`` (``<lang>.jsonl`` is the
  test split, ``train_en.jsonl`` the English training split).
* a local path, either a file or a folder. Files: JSON lines with ``premise``, ``hypothesis``,
  ``label``; the original XNLI 1.0 TSVs (``xnli.test.tsv`` / ``xnli.dev.tsv``: columns
  ``language``, ``gold_label`` (a word), ``sentence1``, ``sentence2``, ...; rows are filtered by
  language); MultiNLI-style TSVs (``premise``, ``hypo``, ``label``, as in XNLI-MT
  ``multinli.train.<lang>.tsv``). Folders are searched for ``<split>/<lang>.jsonl`` (the
  layout of ``shared/data/xnli``), ``<lang>.jsonl``, ``xnli.<test|dev>.tsv`` and
  ``multinli.train.<lang>.tsv``.

Ids are ``<lang>-<split>-<row>`` where ``row`` is the 0-based row of the language in its source,
so row ``i`` is the same (translated) pair in every language. Subsampling draws row indices
from ``range(n)`` with a seeded generator and keeps them in source order, so the same seed
selects the same parallel rows in every language.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

import torch

from langneurons.errors import LangNeuronsError
from langneurons.languages import check_language

LABELS = ("entailment", "neutral", "contradiction")
# Label words found in XNLI/MultiNLI files; XNLI-MT writes "contradictory".
LABEL_WORDS = {"entailment": 0, "neutral": 1, "contradiction": 2, "contradictory": 2}
SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"dev": "validation", "valid": "validation"}

T = TypeVar("T")


@dataclass(frozen=True)
class NLIExample:
    """One premise/hypothesis pair; ``label`` indexes :data:`LABELS`."""

    id: str
    premise: str
    hypothesis: str
    label: int


# --------------------------------------------------------------------------------------------
# seeded subsampling shared by the task loaders


def sample_indices(n: int, limit: int | None, seed: int = 0) -> list[int]:
    """Sorted indices of ``limit`` of ``n`` rows drawn without replacement (all rows if ``limit``
    is None or >= n). Depends only on ``(n, limit, seed)``: parallel data sets stay parallel."""
    if limit is None or limit >= n:
        return list(range(n))
    if limit < 1:
        raise LangNeuronsError(f"limit must be a positive number of examples, got {limit}")
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=generator)[:limit].tolist())


def subsample(items: Sequence[T], limit: int | None, seed: int = 0) -> list[T]:
    """``limit`` items chosen by :func:`sample_indices`, in their original order."""
    return [items[i] for i in sample_indices(len(items), limit, seed)]


def balanced_indices(labels: Sequence[int], limit: int, seed: int = 0, num_classes: int = 3) -> list[int]:
    """Sorted indices of ``limit`` rows with classes as equal as possible (the first
    ``limit % num_classes`` classes get one more). Depends only on labels and seed, so rows
    that are parallel (same labels in every language) are selected identically."""
    if limit < num_classes:
        raise LangNeuronsError(f"a balanced sample needs at least {num_classes} examples, got limit={limit}")
    label_tensor = torch.as_tensor(list(labels), dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    chosen: list[torch.Tensor] = []
    for label in range(num_classes):
        quota = limit // num_classes + (1 if label < limit % num_classes else 0)
        members = torch.nonzero(label_tensor == label).flatten()
        if len(members) < quota:
            raise LangNeuronsError(
                f"balanced sample of {limit} needs {quota} {LABELS[label]!r} examples, only {len(members)} exist"
            )
        chosen.append(members[torch.randperm(len(members), generator=generator)[:quota]])
    return sorted(torch.cat(chosen).tolist())


# --------------------------------------------------------------------------------------------
# loading


def load_xnli(
    source: str | Path,
    language: str,
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    balanced: bool = False,
) -> list[NLIExample]:
    """Load one language and split of XNLI, validate the labels and optionally subsample.

    Args:
        source: ``"hub"``, ``"builtin"`` or a local file/folder (see the module docstring).
        split: ``train``, ``validation`` (alias ``dev``) or ``test``.
        limit: keep this many examples (seeded, parallel across languages); None keeps all.
        balanced: with ``limit``, take (almost) equally many examples of each class.
    """
    check_language(language)
    split = _SPLIT_ALIASES.get(split, split)
    if split not in SPLITS:
        raise LangNeuronsError(f"unknown XNLI split {split!r}; use one of {', '.join(SPLITS)}")
    rows, origin = _read_rows(source, language, split)
    examples = [_to_example(row, i, language, split, origin) for i, row in enumerate(rows)]
    check_label_coverage(examples, origin)
    if balanced and limit is not None and limit < len(examples):
        return [examples[i] for i in balanced_indices([e.label for e in examples], limit, seed)]
    return subsample(examples, limit, seed)


def check_label_coverage(examples: Sequence[NLIExample], origin: str = "XNLI data") -> None:
    """Raise unless the examples are non-empty and contain every one of the three labels."""
    if not examples:
        raise LangNeuronsError(f"{origin}: no examples")
    present = {e.label for e in examples}
    missing = [LABELS[i] for i in range(len(LABELS)) if i not in present]
    if missing:
        raise LangNeuronsError(f"{origin}: no examples with label(s) {', '.join(missing)}")


def parse_label(value: Any) -> int | None:
    """An integer label 0/1/2 from an int, a digit string or a label word; None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < len(LABELS) else None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in LABEL_WORDS:
            return LABEL_WORDS[text]
        if text.isdigit() and int(text) < len(LABELS):
            return int(text)
    return None


def _to_example(row: dict, index: int, language: str, split: str, origin: str) -> NLIExample:
    label = parse_label(row.get("label"))
    if label is None:
        raise LangNeuronsError(
            f"{origin}: row {index} has label {row.get('label')!r}; expected 0/1/2 or one of {', '.join(LABELS)}"
        )
    premise, hypothesis = row.get("premise"), row.get("hypothesis")
    if not isinstance(premise, str) or not isinstance(hypothesis, str):
        raise LangNeuronsError(f"{origin}: row {index} lacks a premise or hypothesis string")
    return NLIExample(id=f"{language}-{split}-{index}", premise=premise, hypothesis=hypothesis, label=label)


def _read_rows(source: str | Path, language: str, split: str) -> tuple[list[dict], str]:
    """Rows as dicts with keys premise, hypothesis, label (raw), and a name for messages."""
    if source == "hub":
        return _read_hub(language, split)
    if source == "builtin":
        return _read_builtin(language, split)
    path = Path(source)
    if not path.exists():
        raise LangNeuronsError(f"XNLI source not found: {path} (use 'hub', 'builtin' or a file/folder)")
    if path.is_dir():
        path = _find_in_folder(path, language, split)
    return _read_file(path, language), str(path)


def _read_hub(language: str, split: str) -> tuple[list[dict], str]:
    import datasets

    origin = f"facebook/xnli {language} {split}"
    try:
        dataset = datasets.load_dataset("facebook/xnli", language, split=split)
    except Exception as error:  # network, unknown config, ...: one line for the CLI
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LangNeuronsError(f"could not load {origin} from the hub: {first_line}") from error
    return [dict(row) for row in dataset], origin


def _read_builtin(language: str, split: str) -> tuple[list[dict], str]:
    folder = files("langneurons.data").joinpath("xnli")
    if split == "test":
        name = f"{language}.jsonl"
    elif split == "train" and language == "en":
        name = "train_en.jsonl"
    else:
        raise LangNeuronsError(
            f"builtin XNLI has a test split per language and an English train split, not {language} {split}"
        )
    resource = folder.joinpath(name)
    if not resource.is_file():
        available = sorted(p.name for p in folder.iterdir() if p.name.endswith(".jsonl")) if folder.is_dir() else []
        raise LangNeuronsError(f"no builtin XNLI file {name}; available: {', '.join(available) or 'none'}")
    origin = f"builtin xnli/{name}"
    return _parse_jsonl(resource.read_text(encoding="utf-8"), origin), origin


def _find_in_folder(folder: Path, language: str, split: str) -> Path:
    split_dirs = {"validation": ("validation", "dev")}.get(split, (split,))
    tsv_split = {"validation": "dev"}.get(split, split)
    candidates = [folder / d / f"{language}.jsonl" for d in split_dirs] + [
        folder / f"{language}.jsonl",
        folder / f"xnli.{tsv_split}.tsv",
        folder / f"multinli.{tsv_split}.{language}.tsv",
    ]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise LangNeuronsError(
            f"no XNLI {split} data for {language!r} in {folder} "
            f"(looked for {', '.join(str(c.relative_to(folder)) for c in candidates)})"
        )
    return found


def _read_file(path: Path, language: str) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".tsv":
        return _parse_tsv(text, language, str(path))
    if path.suffix in (".jsonl", ".json"):
        return _parse_jsonl(text, str(path))
    raise LangNeuronsError(f"unsupported XNLI file type {path.suffix!r}: {path} (use .jsonl or .tsv)")


def _parse_jsonl(text: str, origin: str) -> list[dict]:
    rows = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise LangNeuronsError(f"{origin}: line {line_number} is not valid JSON ({error.msg})") from error
        if not isinstance(row, dict):
            raise LangNeuronsError(f"{origin}: line {line_number} is not a JSON object")
        rows.append(row)
    return rows


def _parse_tsv(text: str, language: str, origin: str) -> list[dict]:
    # XNLI TSVs contain unbalanced quotes inside sentences: read them with quoting disabled.
    reader = csv.DictReader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE)
    fields = set(reader.fieldnames or ())
    if {"language", "gold_label", "sentence1", "sentence2"} <= fields:  # XNLI 1.0 test/dev
        rows = [
            {"premise": r["sentence1"], "hypothesis": r["sentence2"], "label": r["gold_label"]}
            for r in reader
            if r["language"] == language
        ]
        if not rows:
            raise LangNeuronsError(f"{origin}: no rows for language {language!r}")
        return rows
    if {"premise", "hypo", "label"} <= fields:  # MultiNLI-style (XNLI-MT) training file
        return [{"premise": r["premise"], "hypothesis": r["hypo"], "label": r["label"]} for r in reader]
    raise LangNeuronsError(
        f"{origin}: unrecognised TSV columns {sorted(fields)}; expected XNLI "
        "(language, gold_label, sentence1, sentence2) or MultiNLI (premise, hypo, label)"
    )
