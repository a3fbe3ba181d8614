"""Steering prompts: the first words of sentences in the source language, no instruction.

* ``builtin``: sentences of the project's own built-in samples (``langneurons/data/corpus``),
  split at sentence ends, in file order;
* a corpus folder (``<lang>.txt``, one sentence or document per line, e.g. FLORES devtest),
  read with :func:`langneurons.corpus.sources.load_corpus`; ``from_end`` takes the *last*
  lines, which a statistics pass with a token budget smaller than the file never reads.

A prompt is the sentence's first ``words`` whitespace-separated words; for text written without
spaces (zh, ja, th) its first ``2 x words`` characters.
"""

from __future__ import annotations

import re

from langneurons.corpus.sources import load_corpus
from langneurons.errors import LangNeuronsError

_SENTENCE_END = re.compile(r"(?<=[.!?。！？।۔])\s*")


def sentences(text: str) -> list[str]:
    """Sentences of one line of text (split after . ! ? 。 ！ ？ । ۔)."""
    return [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]


def first_words(sentence: str, words: int) -> str:
    """The first ``words`` words of ``sentence`` (characters for unspaced scripts)."""
    if words < 1:
        raise LangNeuronsError(f"prompt words must be >= 1, got {words}")
    tokens = sentence.split()
    if len(tokens) >= max(2, min(words, 3)):
        return " ".join(tokens[:words])
    return sentence[: 2 * words]


def load_prompts(source: str, language: str, count: int, words: int = 8, from_end: bool = False) -> list[str]:
    """``count`` distinct prompts in ``language`` from ``source`` (``builtin`` or a corpus folder)."""
    if count < 1:
        raise LangNeuronsError(f"prompt count must be >= 1, got {count}")
    documents = load_corpus(source, [language])[language]
    if from_end:
        documents = documents[::-1]
    prompts: list[str] = []
    for document in documents:
        parts = sentences(document) if source == "builtin" else [document.strip()]
        for sentence in parts:
            prompt = first_words(sentence, words)
            # a prompt must stop before its sentence does, or there is nothing left to continue
            if prompt and prompt != sentence and prompt not in prompts:
                prompts.append(prompt)
            if len(prompts) == count:
                return prompts
    raise LangNeuronsError(f"{source} has only {len(prompts)} {language!r} sentences longer than {words} words; "
                           f"asked for {count} prompts")
