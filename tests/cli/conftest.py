"""Fixtures of the command-line tests: the real entry point run in-process, and a workspace
with a tiny random Llama saved to a folder and a three-language corpus."""

import sys
from dataclasses import dataclass

import pytest
from tiny import tiny_model, tiny_tokenizer


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def langneurons(capsys, monkeypatch):
    """Run ``langneurons ARGS`` in-process through the real entry point (``main``)."""
    from langneurons.cli import main

    def run(*args, cwd=None):
        if cwd is not None:
            monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["langneurons", *map(str, args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = root / "model"
    tiny_model("llama").save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    corpus = root / "corpus"
    corpus.mkdir()
    for lang, text in {"en": "the cat sat on the mat", "fr": "le chat est sur le tapis", "es": "el gato está en la alfombra"}.items():
        (corpus / f"{lang}.txt").write_text("\n".join(f"{text} {i}" for i in range(60)), encoding="utf-8")
    return root
