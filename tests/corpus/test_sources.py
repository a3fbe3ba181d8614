"""Corpus sources: folders of <lang>.txt, FLORES names, HF datasets from a local copy, built-in."""

import json

import pytest

from langneurons.corpus.sources import BUILTIN_LANGUAGES, builtin_corpus, load_corpus, load_folder, load_hf
from langneurons.errors import LangNeuronsError


def test_folder_with_one_file_per_language(tmp_path):
    (tmp_path / "en.txt").write_text("one\n\ntwo\n", encoding="utf-8")
    (tmp_path / "hin_Deva.devtest").write_text("एक\nदो\n", encoding="utf-8")
    corpus = load_folder(tmp_path, ["en", "hi"])
    assert corpus == {"en": ["one", "two"], "hi": ["एक", "दो"]}


def test_missing_language_file_and_unknown_code_are_clear_errors(tmp_path):
    (tmp_path / "en.txt").write_text("one\n", encoding="utf-8")
    with pytest.raises(LangNeuronsError, match="no text for language 'fr'"):
        load_folder(tmp_path, ["fr"])
    with pytest.raises(LangNeuronsError, match="unknown language code 'xx'"):
        load_folder(tmp_path, ["xx"])
    with pytest.raises(LangNeuronsError, match="not found"):
        load_folder(tmp_path / "nope", ["en"])


def test_wikipedia_layout_through_datasets_from_a_local_copy(tmp_path):
    folder = tmp_path / "20231101.fr"
    folder.mkdir()
    rows = [{"id": str(i), "title": "t", "text": f"texte {i}\nsuite"} for i in range(5)]
    (folder / "train-00000.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    corpus = load_hf("wikimedia/wikipedia", ["fr"], max_documents=3, local_path=str(tmp_path))
    assert corpus == {"fr": ["texte 0 suite", "texte 1 suite", "texte 2 suite"]}


def test_flores_plus_layout_through_datasets_from_a_local_copy(tmp_path):
    folder = tmp_path / "hin_Deva"
    folder.mkdir()
    (folder / "devtest.jsonl").write_text(json.dumps({"text": "नमस्ते"}) + "\n", encoding="utf-8")
    assert load_corpus("openlanguagedata/flores_plus", ["hi"], local_path=str(tmp_path)) == {"hi": ["नमस्ते"]}


def test_builtin_corpus_covers_eight_languages_and_several_scripts():
    corpus = builtin_corpus()
    assert list(corpus) == list(BUILTIN_LANGUAGES)
    assert all(len(texts) >= 50 for texts in corpus.values())


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"one\n\xff\xfetwo\n"), "is not UTF-8 text \\(invalid byte at offset 4\\)"),
    (lambda p: p.write_bytes(b"one\x00\x01\x02two\n"), "holds binary data"),
    (lambda p: p.mkdir(), "is not a file"),
])
def test_unreadable_corpus_files_are_clear_errors_naming_the_file(tmp_path, make, message):
    make(tmp_path / "en.txt")
    with pytest.raises(LangNeuronsError, match=f"corpus file {tmp_path / 'en.txt'} {message}"):
        load_folder(tmp_path, ["en"])


def test_xnli_jsonl_gives_its_distinct_premises_and_hypotheses(tmp_path):
    rows = [{"premise": "the cat sleeps", "hypothesis": "a cat", "label": 0},
            {"premise": "the cat sleeps", "hypothesis": "no cat", "label": 2},
            {"premise": "a dog runs", "hypothesis": "a cat", "label": 1}]
    (tmp_path / "en.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    assert load_folder(tmp_path, ["en"])["en"] == ["the cat sleeps", "a cat", "no cat", "a dog runs"]
    assert load_folder(tmp_path, ["en"], max_documents=2)["en"] == ["the cat sleeps", "a cat"]
    (tmp_path / "fr.jsonl").write_text('{"premise": "le chat"}\n', encoding="utf-8")
    with pytest.raises(LangNeuronsError, match="fr.jsonl:1: not an NLI row"):
        load_folder(tmp_path, ["fr"])
