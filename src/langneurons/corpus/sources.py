"""Corpus sources. A corpus is a mapping language -> list of texts (documents or sentences).

* :func:`load_folder`: ``<dir>/<lang>.txt`` with one document per line (also the layout of
  ``shared/data/flores200/devtest``); FLORES' own ``<code>.devtest`` names are accepted too, and
  XNLI-style ``<lang>.jsonl`` (e.g. ``shared/data/xnli/test``): its distinct premises and
  hypotheses, one document each.
* :func:`load_hf`: Hugging Face datasets (``wikimedia/wikipedia``, ``openlanguagedata/flores_plus``)
  from the hub or from a local copy with the same layout.
* :func:`builtin_corpus`: the small sample corpus shipped with the package (for the demo).
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

from langneurons.errors import LangNeuronsError
from langneurons.languages import check_languages, flores_code

Corpus = dict[str, list[str]]

BUILTIN_LANGUAGES = ("en", "fr", "es", "zh", "hi", "bn", "ta", "ur")


def _read_lines(path: Path, max_documents: int | None) -> list[str]:
    """Non-empty stripped lines of a UTF-8 text file; anything else is a one-line error naming the file."""
    if not path.is_file():
        raise LangNeuronsError(f"corpus file {path} is not a file")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise LangNeuronsError(f"cannot read corpus file {path}: {error.strerror or error}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise LangNeuronsError(f"corpus file {path} is not UTF-8 text (invalid byte at offset {error.start})") from None
    if "\x00" in text:
        raise LangNeuronsError(f"corpus file {path} holds binary data (NUL bytes at offset {text.index(chr(0))}), "
                               "not text")
    texts = [line.strip() for line in text.splitlines()]
    texts = [t for t in texts if t]
    return texts[:max_documents] if max_documents else texts


def _read_nli_texts(path: Path, max_documents: int | None) -> list[str]:
    """The premises and hypotheses of an XNLI-style ``<lang>.jsonl`` as documents, each distinct
    text once, in file order (XNLI repeats every premise for its three hypotheses)."""
    texts: dict[str, None] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pair = (str(row["premise"]).strip(), str(row["hypothesis"]).strip())
        except (ValueError, KeyError, TypeError) as error:
            raise LangNeuronsError(f"{path}:{number}: not an NLI row with premise and hypothesis ({error})") from None
        texts.update({text: None for text in pair if text})
    texts_list = list(texts)
    return texts_list[:max_documents] if max_documents else texts_list


def folder_file(directory, language: str) -> Path | None:
    """The file :func:`load_folder` reads for ``language`` in ``directory`` (None: there is none)."""
    directory = Path(directory)
    candidates = [directory / f"{language}.txt"] + [
        directory / f"{flores_code(language)}{suffix}" for suffix in (".devtest", ".dev", ".txt")
    ] + [directory / f"{language}.jsonl"]
    return next((c for c in candidates if c.exists()), None)


def corpus_files(source: str, languages) -> dict[str, Path]:
    """Language -> the local file :func:`load_corpus` reads for ``source`` (``builtin`` or a folder;
    empty for hub datasets, which are many files of their own format)."""
    if source in HF_SOURCES:
        return {}
    folder = Path(str(files("langneurons").joinpath("data", "corpus"))) if source == "builtin" else Path(source)
    found = {language: folder_file(folder, language) for language in languages}
    return {language: path for language, path in found.items() if path is not None}


def load_folder(directory, languages, max_documents: int | None = None) -> Corpus:
    """Read ``<directory>/<lang>.txt`` (or FLORES ``<lang_Script>.devtest``/``.dev``, or the
    premises and hypotheses of an XNLI-style ``<lang>.jsonl``) per language."""
    directory = Path(directory)
    if not directory.is_dir():
        raise LangNeuronsError(f"corpus folder not found: {directory}")
    corpus: Corpus = {}
    for language in check_languages(languages):
        path = folder_file(directory, language)
        if path is None:
            raise LangNeuronsError(f"no text for language {language!r} in {directory} (expected {language}.txt)")
        corpus[language] = (_read_nli_texts(path, max_documents) if path.suffix == ".jsonl"
                            else _read_lines(path, max_documents))
        if not corpus[language]:
            raise LangNeuronsError(f"corpus file {path} is empty")
    return corpus


HF_SOURCES = {
    # dataset -> (config for a language, text column, default split)
    "wikimedia/wikipedia": (lambda lang: f"20231101.{lang}", "text", "train"),
    "openlanguagedata/flores_plus": (lambda lang: flores_code(lang).replace("zho_Hans", "cmn_Hans"), "text", "devtest"),
}


def load_hf(
    dataset: str,
    languages,
    max_documents: int | None = 1000,
    split: str | None = None,
    local_path: str | None = None,
    streaming: bool = True,
) -> Corpus:
    """Load a corpus through ``datasets``.

    Args:
        dataset: ``wikimedia/wikipedia`` or ``openlanguagedata/flores_plus``.
        local_path: a local copy with the hub's layout (one sub-folder per config, holding
            parquet/json files); when given the hub is not contacted.
        max_documents: documents per language (the first ones of the split).
    """
    import datasets

    if dataset not in HF_SOURCES:
        raise LangNeuronsError(f"unsupported dataset {dataset!r}; supported: {', '.join(HF_SOURCES)}")
    config_for, column, default_split = HF_SOURCES[dataset]
    split = split or default_split
    corpus: Corpus = {}
    for language in check_languages(languages):
        config = config_for(language)
        try:
            if local_path is not None:
                folder = Path(local_path) / config
                if not folder.is_dir():
                    raise LangNeuronsError(f"no folder {folder} for language {language!r}")
                data_files = sorted(str(p) for p in folder.rglob("*") if p.suffix in (".parquet", ".json", ".jsonl"))
                data_files = [f for f in data_files if split in Path(f).name or split in Path(f).parent.name] or data_files
                builder = "parquet" if data_files and data_files[0].endswith(".parquet") else "json"
                rows = datasets.load_dataset(builder, data_files=data_files, split="train", streaming=streaming)
            else:
                rows = datasets.load_dataset(dataset, config, split=split, streaming=streaming)
        except (FileNotFoundError, ValueError, ConnectionError) as error:
            raise LangNeuronsError(f"cannot load {dataset} for {language!r}: {str(error).splitlines()[0]}") from error
        texts: list[str] = []
        for row in rows:
            text = (row.get(column) or "").strip()
            if text:
                texts.append(text.replace("\n", " "))
            if max_documents and len(texts) >= max_documents:
                break
        if not texts:
            raise LangNeuronsError(f"{dataset} gave no text for {language!r}")
        corpus[language] = texts
    return corpus


def builtin_corpus(languages=BUILTIN_LANGUAGES) -> Corpus:
    """The sample corpus shipped with the package (original text written for this project)."""
    folder = Path(str(files("langneurons").joinpath("data", "corpus")))
    missing = [lang for lang in languages if not (folder / f"{lang}.txt").exists()]
    if missing:
        raise LangNeuronsError(
            f"the built-in corpus has no text for {missing}; it covers {', '.join(BUILTIN_LANGUAGES)}"
        )
    return load_folder(folder, languages)


def load_corpus(source: str, languages, max_documents: int | None = None, local_path: str | None = None) -> Corpus:
    """One entry point: ``builtin``, a folder path, or a supported HF dataset id (optionally
    read from ``local_path``, a local copy with the hub's layout)."""
    if source == "builtin":
        corpus = builtin_corpus(check_languages(languages))
        return {k: v[:max_documents] if max_documents else v for k, v in corpus.items()}
    if source in HF_SOURCES:
        return load_hf(source, languages, max_documents=max_documents or 1000, local_path=local_path)
    return load_folder(source, languages, max_documents=max_documents)
