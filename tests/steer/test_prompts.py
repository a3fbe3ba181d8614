"""Steering prompts from the built-in samples and from a corpus folder."""

import pytest

from langneurons.errors import LangNeuronsError
from langneurons.steer.prompts import first_words, load_prompts, sentences


def test_sentences_and_first_words():
    assert sentences("One two. Three four! Five?") == ["One two.", "Three four!", "Five?"]
    assert sentences("第一句。第二句！") == ["第一句。", "第二句！"]
    assert first_words("a b c d e", 3) == "a b c"
    assert first_words("今天早上雾很大站在楼下", 2) == "今天早上"  # no spaces: 2 x words characters


def test_builtin_prompts_are_prefixes_of_builtin_sentences():
    from langneurons.corpus.sources import builtin_corpus

    text = " ".join(builtin_corpus(["en"])["en"])
    prompts = load_prompts("builtin", "en", 5, words=6)
    assert len(prompts) == len(set(prompts)) == 5
    assert all(len(p.split()) == 6 and p in text for p in prompts)
    assert len(load_prompts("builtin", "zh", 3, words=4)[0]) == 8


def test_folder_prompts_from_the_end(tmp_path):
    (tmp_path / "en.txt").write_text("first line has five words\nsecond line has five words\nshort\n"
                                     "last line has five words\n", encoding="utf-8")
    assert load_prompts(str(tmp_path), "en", 2, words=3) == ["first line has", "second line has"]
    # "short" is shorter than the prompt and is skipped
    assert load_prompts(str(tmp_path), "en", 2, words=3, from_end=True) == ["last line has", "second line has"]
    with pytest.raises(LangNeuronsError, match="only 3 'en' sentences"):
        load_prompts(str(tmp_path), "en", 4, words=3)
    with pytest.raises(LangNeuronsError, match="no text for language 'fr'"):
        load_prompts(str(tmp_path), "fr", 1)


def test_heldout_prompts_come_only_from_the_documents_the_statistics_pass_held_out(tmp_path):
    from langneurons.corpus.packing import split_documents
    from langneurons.steer.prompts import heldout_prompts

    lines = [f"line {i} of the corpus has eight words" for i in range(40)]
    (tmp_path / "en.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    options = {"corpus": str(tmp_path), "corpus_path": None, "max_documents": None, "heldout_fraction": 0.25,
               "seed": 3}
    identification, heldout = split_documents(lines, 0.25, 3)
    prompts = heldout_prompts(options, "en", 10, words=3)
    assert prompts == [" ".join(line.split()[:3]) for line in heldout]  # every held-out line, in order
    assert not {" ".join(line.split()[:3]) for line in identification} & set(prompts)
    assert heldout_prompts(options, "en", 2, words=3, from_end=True) == prompts[::-1][:2]
    with pytest.raises(LangNeuronsError, match="only 10 'en' sentences"):
        heldout_prompts(options, "en", 11, words=3)
    with pytest.raises(LangNeuronsError, match="held-out fraction > 0"):
        heldout_prompts({**options, "heldout_fraction": 0.0}, "en", 1)
    with pytest.raises(LangNeuronsError, match="come from a statistics pass"):
        load_prompts("heldout", "en", 1)
