"""Output-language identification of generated text with ``lingua-language-detector``.

lingua (PyPI ``lingua-language-detector``) is an offline n-gram identifier that ships its models
in the wheel and is accurate on short text, which is what a steering experiment generates.

Coverage. lingua 2.1 knows 75 languages; of the langneurons language table
(:mod:`langneurons.languages`) it lacks 18: am, as, gl, ha, ig, jv, km, kn, ky, lo, ml, my,
ne, or, ps, si, tg, uz (:func:`uncovered_languages` computes the list from the installed
lingua). Norwegian ``no`` (FLORES ``nob_Latn``) is lingua's Bokmål ``nb``. Every built-in
sample language (en, fr, es, zh, hi, bn, ta, ur) is covered.

A generation is *identified* as lingua's ``detect_language_of`` answer among the candidate
languages (default: every covered langneurons language, so text in a third language counts as
"other", not as the closest of source and target), with its confidence (lingua's relative
confidence of that language, in [0, 1]; it sums to 1 over the candidates). It is
*undetermined* (``language`` None) when lingua gives no answer (no letters, e.g. digits or
punctuation only, or empty text) or when the confidence is below ``min_confidence``.
A language lingua knows but langneurons does not (e.g. Latin) is reported by its ISO 639-1
code when it is a candidate; by default it never is.

Limits: closely related languages in one script (hi/mr, ru/uk, da/no, id/ms, es/ca) are less
reliable on a dozen words; romanised Hindi or Urdu is Latin
script and is *not* identified as hi/ur (lingua models the native scripts); code-switched text
gets one label.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from langneurons.errors import LangNeuronsError
from langneurons.languages import LANGUAGES, check_language, language_name

_ALIASES = {"no": "nb"}
"""langneurons code -> lingua ISO 639-1 code where they differ."""


@dataclass(frozen=True)
class Identification:
    """The identified language of one text: a langneurons code (None = undetermined) and the
    identifier's confidence in it (in [0, 1]; 0 when undetermined)."""

    language: str | None
    confidence: float


class Identifier(Protocol):
    """What the steering experiment needs of a language identifier."""

    name: str

    def covers(self, code: str) -> bool:
        """Whether the identifier can recognise langneurons language ``code``."""

    def identify(self, texts: Sequence[str]) -> list[Identification]:
        """One :class:`Identification` per text."""


def _lingua_code(code: str) -> str:
    return _ALIASES.get(code, code)


@functools.lru_cache(maxsize=1)
def _lingua_codes() -> frozenset[str]:
    from lingua import Language

    return frozenset(language.iso_code_639_1.name.lower() for language in Language.all())


def covered_languages() -> tuple[str, ...]:
    """langneurons language codes lingua identifies (sorted)."""
    return tuple(sorted(code for code in LANGUAGES if _lingua_code(code) in _lingua_codes()))


def uncovered_languages() -> tuple[str, ...]:
    """langneurons language codes lingua cannot identify (sorted)."""
    covered = set(covered_languages())
    return tuple(sorted(code for code in LANGUAGES if code not in covered))


def check_covered(code: str) -> str:
    """``code`` if lingua covers it, else a one-line error naming the uncovered languages."""
    check_language(code)
    if code not in covered_languages():
        raise LangNeuronsError(
            f"the language identifier (lingua) does not cover {code!r} ({language_name(code)}); "
            f"uncovered: {', '.join(uncovered_languages())}")
    return code


@functools.lru_cache(maxsize=4)
def _detector(codes: tuple[str, ...], low_accuracy: bool):
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    builder = LanguageDetectorBuilder.from_iso_codes_639_1(
        *(getattr(IsoCode639_1, _lingua_code(code).upper()) for code in codes))
    if low_accuracy:
        builder = builder.with_low_accuracy_mode()
    return builder.build()


class LinguaIdentifier:
    """:class:`Identifier` backed by lingua.

    Args:
        languages: candidate langneurons codes (default: every covered language); at least two.
        min_confidence: below this confidence a text is undetermined (default 0: only lingua's
            own "no answer" is undetermined).
        low_accuracy: lingua's low-accuracy mode (trigrams only: faster, less memory, worse on
            short text).

    The detector is built once per (languages, mode) in this process (about 15 s and 1 GB for
    all languages in high-accuracy mode; models are loaded lazily per script).
    """

    name = "lingua"

    def __init__(self, languages: Sequence[str] | None = None, min_confidence: float = 0.0, low_accuracy: bool = False):
        codes = tuple(sorted(set(check_covered(code) for code in languages))) if languages else covered_languages()
        if len(codes) < 2:
            raise LangNeuronsError("the language identifier needs at least two candidate languages")
        if not 0.0 <= min_confidence <= 1.0:
            raise LangNeuronsError(f"min_confidence must be in [0, 1], got {min_confidence}")
        self.languages, self.min_confidence, self.low_accuracy = codes, float(min_confidence), low_accuracy
        self._back = {_lingua_code(code): code for code in codes}

    def covers(self, code: str) -> bool:
        return code in self.languages

    def identify(self, texts: Sequence[str]) -> list[Identification]:
        detector = _detector(self.languages, self.low_accuracy)
        results = []
        for text in texts:
            language = detector.detect_language_of(text) if text.strip() else None
            if language is None:
                results.append(Identification(None, 0.0))
                continue
            confidence = float(detector.compute_language_confidence(text, language))
            code = language.iso_code_639_1.name.lower()
            if confidence < self.min_confidence:
                results.append(Identification(None, confidence))
            else:
                results.append(Identification(self._back.get(code, code), confidence))
        return results

    def describe(self) -> dict:
        """Provenance for result files: identifier, version, candidates, options."""
        from importlib.metadata import version

        return {"identifier": "lingua-language-detector", "version": version("lingua-language-detector"),
                "languages": list(self.languages), "min_confidence": self.min_confidence,
                "low_accuracy": self.low_accuracy}
