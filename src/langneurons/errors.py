"""Errors the CLI turns into a one-line message and a non-zero exit."""


class LangNeuronsError(Exception):
    """Bad input or an inconsistent artefact; the message is shown to the user as one line."""
