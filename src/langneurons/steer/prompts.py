"""Steering prompts: the first words of sentences in the source language, no instruction.

* ``builtin``: sentences of the project's own built-in samples (``langneurons/data/corpus``),
  split at sentence ends, in file order;
* a corpus folder (``<lang>.txt``, one sentence or document per line, e.g. FLORES devtest),
  read with :func:`langneurons.corpus.sources.load_corpus`; ``from_end`` takes the *last*
  lines, which a statistics pass with a token budget smaller than the file never reads;
* ``heldout``: the documents a statistics pass held out (:func:`heldout_prompts`, same corpus,
  fraction and seed as the pass), which it never used for identification.

A prompt is the sentence's first ``words`` whitespace-separated words; for text written without
spaces (zh, ja, th) its first ``2 x words`` characters.
"""

from __future__ import annotations

import re

from collections.abc import Mapping

from langneurons.corpus.packing import split_documents
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


HELDOUT = "heldout"


def load_prompts(source: str, language: str, count: int, words: int = 8, from_end: bool = False) -> list[str]:
    """``count`` distinct prompts in ``language`` from ``source`` (``builtin`` or a corpus folder)."""
    if source == HELDOUT:
        raise LangNeuronsError("prompts 'heldout' come from a statistics pass: give its folder (--statistics)")
    documents = load_corpus(source, [language])[language]
    if from_end:
        documents = documents[::-1]
    return _prompts_of(documents, language, count, words, split_sentences=source == "builtin", source=source)


def heldout_prompts(statistics_options: Mapping, language: str, count: int, words: int = 8,
                    from_end: bool = False) -> list[str]:
    """``count`` prompts from the documents that the statistics pass with ``statistics_options``
    (``corpus``, ``corpus_path``, ``max_documents``, ``heldout_fraction``, ``seed``: the options of
    its manifest) held out, so never used to identify neurons."""
    heldout = heldout_documents(statistics_options, language, "prompts 'heldout'")
    if from_end:
        heldout = heldout[::-1]
    return _prompts_of(heldout, language, count, words, split_sentences=False,
                       source=f"the held-out part of {statistics_options['corpus']}")


def heldout_documents(statistics_options: Mapping, language: str, user: str = "held-out text") -> list[str]:
    """The documents of ``language`` that the statistics pass with ``statistics_options`` held out
    (same corpus, document cap, fraction and seed), in corpus order."""
    fraction = float(statistics_options.get("heldout_fraction") or 0.0)
    if fraction <= 0.0:
        raise LangNeuronsError(f"{user} need statistics collected with a held-out fraction > 0")
    documents = load_corpus(statistics_options["corpus"], [language], max_documents=statistics_options.get("max_documents"),
                            local_path=statistics_options.get("corpus_path"))[language]
    return split_documents(documents, fraction, int(statistics_options.get("seed") or 0))[1]


def _prompts_of(documents: list[str], language: str, count: int, words: int, split_sentences: bool,
                source: str) -> list[str]:
    if count < 1:
        raise LangNeuronsError(f"prompt count must be >= 1, got {count}")
    prompts: list[str] = []
    for document in documents:
        parts = sentences(document) if split_sentences else [document.strip()]
        for sentence in parts:
            prompt = first_words(sentence, words)
            # a prompt must stop before its sentence does, or there is nothing left to continue
            if prompt and prompt != sentence and prompt not in prompts:
                prompts.append(prompt)
            if len(prompts) == count:
                return prompts
    raise LangNeuronsError(f"{source} has only {len(prompts)} {language!r} sentences longer than {words} words; "
                           f"asked for {count} prompts")
