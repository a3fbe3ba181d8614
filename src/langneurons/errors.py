"""Errors the CLI turns into a one-line message and a non-zero exit; warnings it prints as one line."""

from __future__ import annotations

import warnings
from typing import Any

ECHO_LIMIT = 80
"""Most characters of a user-given value an error message repeats (:func:`brief`)."""


class LangNeuronsError(Exception):
    """Bad input or an inconsistent artefact; the message is shown to the user as one line."""


class LangNeuronsWarning(UserWarning):
    """Something the user should know that does not stop the work (printed as ``warning: ...``)."""


def warn(message: str) -> None:
    """Emit a :class:`LangNeuronsWarning` (one ``warning: ...`` line on the command line)."""
    warnings.warn(message, LangNeuronsWarning, stacklevel=2)


def brief(value: Any, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` cut to at most ``limit`` characters, for echoing user input in a message.

    Containers are rendered only as deep as needed, so a huge (e.g. YAML alias-expanded) value
    costs no more than the characters shown."""
    text = _bounded_repr(value, limit + 1)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bounded_repr(value: Any, budget: int) -> str:
    """repr of ``value``, stopping once ``budget`` characters are written (result <= budget chars)."""
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        if isinstance(value, dict):
            opening, closing = "{", "}"
            items = ((_bounded_repr(k, budget) + ": ", v) for k, v in value.items())
        else:
            opening, closing = ("[", "]") if isinstance(value, list) else ("(", ")") if isinstance(value, tuple) \
                else ("{", "}")
            items = (("", v) for v in value)
        text = opening
        if budget <= len(text):
            return text
        for i, (prefix, item) in enumerate(items):
            text += (", " if i else "") + prefix + _bounded_repr(item, max(budget - len(text), 1))
            if len(text) >= budget:
                return text[:budget]
        return text + closing
    if isinstance(value, (str, bytes)):
        value = value[:budget]  # never repr a huge string whole
    return repr(value)[:budget]
