"""A degeneration (loop) test for generated text, the same in every script.

Rule. A continuation is *degenerate* when its repeated character 4-gram share is at least
:data:`THRESHOLD` (0.3)::

    units  = the text case-folded, every run of whitespace collapsed to one space, stripped
    grams  = the len(units) - 3 overlapping character 4-grams of units
    share  = 1 - |distinct grams| / |grams|        (0 when there are fewer than 2 grams)
    degenerate  <=>  share >= 0.3

``share`` is the seq-rep-4 of Welleck et al. 2020 ("Neural text generation with unlikelihood
training"), the fraction of 4-gram positions whose 4-gram already occurred earlier in the text,
computed on characters instead of tokens. Characters, not words, so that one rule serves scripts
written without spaces (zh, ja, th), loops inside one "word" ("केभभभभभभभ") and loops of whole
phrases ("plus plus plus", "खाने के खाने के") alike, and so that it does not depend on a tokenizer
or on knowing the text's language.

Why 4 and 0.3. A loop of period p characters over L characters has share ~ 1 - (p + 3) / (L - 3):
"plus plus plus plus" 0.69, "的的的的的的" 0.67, "केभभभभभभभभभभ" 0.67, a sentence whose second half
loops ~0.4. Ordinary prose repeats a 4-character sequence only through common words and affixes:
the hand-written sentences of the tests (Latin, Devanagari, Bengali, Tamil, Arabic, Cyrillic,
Han, kana, Thai; 11 to 450 characters) score 0 to 0.14 -- the longest English paragraph the
highest, since the share grows slowly with length. 0.3 sits between: at least twice the prose
maximum at 16-64 new tokens and below a half-looped continuation. Shorter n-grams (bigrams) are
not used: with a small alphabet ordinary Latin text repeats half its bigrams at 180 characters,
as much as a loop does. Texts with fewer than 5 characters are never degenerate (too short to
show a repeat). The rule flags loops, not every bad text: a fluent continuation on the wrong
topic, or a single word repeated twice, is not degenerate.
"""

from __future__ import annotations

import re

NGRAM = 4
"""Characters per n-gram of the repeat test."""

THRESHOLD = 0.3
"""Repeated 4-gram share at or above which a continuation is degenerate."""

_WHITESPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Case-folded, whitespace runs collapsed to one space, stripped."""
    return _WHITESPACE.sub(" ", text).strip().casefold()


def repeated_ngram_share(text: str, n: int = NGRAM) -> float:
    """Share (0..1) of the character ``n``-gram positions of :func:`normalise` (``text``) whose n-gram
    already occurred earlier in it; 0 with fewer than two n-grams."""
    units = normalise(text)
    grams = [units[i : i + n] for i in range(len(units) - n + 1)]
    if len(grams) < 2:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def is_degenerate(text: str, threshold: float = THRESHOLD, n: int = NGRAM) -> bool:
    """Whether ``text`` loops: its repeated ``n``-gram share is at least ``threshold`` (module docstring)."""
    return repeated_ngram_share(text, n) >= threshold
