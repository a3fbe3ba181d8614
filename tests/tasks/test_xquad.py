import json
from importlib.resources import files

import pytest

from langneurons.errors import LangNeuronsError
from langneurons.tasks import (
    QAExample,
    article_split,
    count_span_mismatches,
    load_xquad,
    parse_squad,
    split_by_article,
    subsample,
)
from langneurons.tasks.xquad import XQUAD_PARAGRAPHS_PER_ARTICLE, examples_from_rows

NUM_ARTICLES = 6


def squad(language: str, paragraphs_per_article: int = 2, questions_per_paragraph: int = 2) -> dict:
    """A parallel SQuAD v1.1 file: the same ids and structure in every language."""
    articles = []
    for a in range(NUM_ARTICLES):
        paragraphs = []
        for p in range(paragraphs_per_article):
            answer = f"{language}-answer-{a}-{p}"
            context = f"{language} context {a}.{p} mentions {answer} here."
            qas = [
                {
                    "id": f"q{a}-{p}-{q}",
                    "question": f"{language} question {a}.{p}.{q}?",
                    "answers": [{"text": answer, "answer_start": context.index(answer)}],
                }
                for q in range(questions_per_paragraph)
            ]
            paragraphs.append({"context": context, "qas": qas})
        articles.append({"title": f"Title_{a}", "paragraphs": paragraphs})
    return {"version": "1.1", "data": articles}


def write(path, data) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.fixture
def xquad_folder(tmp_path):
    for language in ("en", "de"):
        write(tmp_path / f"xquad.{language}.json", squad(language))
    return tmp_path


def test_squad_file_gives_one_example_per_question_with_its_article_index(xquad_folder):
    examples = load_xquad(xquad_folder / "xquad.en.json", "en")
    assert len(examples) == NUM_ARTICLES * 2 * 2
    context = "en context 3.1 mentions en-answer-3-1 here."
    assert examples[14] == QAExample(
        id="q3-1-0",
        article=3,
        title="Title_3",
        context=context,
        question="en question 3.1.0?",
        answers=("en-answer-3-1",),
        answer_starts=(context.index("en-answer-3-1"),),
    )
    assert [e.article for e in examples] == [a for a in range(NUM_ARTICLES) for _ in range(4)]


def test_folder_source_finds_the_language_file(xquad_folder):
    assert load_xquad(xquad_folder, "de")[0].question == "de question 0.0.0?"
    with pytest.raises(LangNeuronsError, match="xquad.fr.json"):
        load_xquad(xquad_folder, "fr")


def test_train_split_reads_train_file_from_a_folder(xquad_folder):
    write(xquad_folder / "train.en.json", squad("en", paragraphs_per_article=1, questions_per_paragraph=1))
    assert len(load_xquad(xquad_folder, "en", split="train")) == NUM_ARTICLES


def test_multiple_gold_answers_are_kept_in_order(tmp_path):
    data = squad("en")
    qa = data["data"][0]["paragraphs"][0]["qas"][0]
    qa["answers"].append({"text": "context", "answer_start": 3})
    write(tmp_path / "x.json", data)
    example = load_xquad(tmp_path / "x.json", "en")[0]
    assert example.answers == ("en-answer-0-0", "context")
    assert example.answer_starts == (example.context.index("en-answer-0-0"), 3)


def test_answer_span_mismatches_are_counted_and_warned_not_fatal(tmp_path):
    data = squad("en")
    data["data"][1]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] += 1
    data["data"][2]["paragraphs"][1]["qas"][0]["answers"][0]["text"] = "not in the context"
    write(tmp_path / "x.json", data)
    with pytest.warns(UserWarning, match="2 answer"):
        examples = load_xquad(tmp_path / "x.json", "en")
    assert count_span_mismatches(examples) == 2
    assert count_span_mismatches(parse_squad(squad("en"))) == 0


def test_empty_or_malformed_files_are_errors(tmp_path):
    (tmp_path / "empty.json").write_text("", encoding="utf-8")
    with pytest.raises(LangNeuronsError, match="empty file"):
        load_xquad(tmp_path / "empty.json", "en")
    write(tmp_path / "nodata.json", {"data": []})
    with pytest.raises(LangNeuronsError, match="no questions"):
        load_xquad(tmp_path / "nodata.json", "en")
    write(tmp_path / "list.json", [1, 2])
    with pytest.raises(LangNeuronsError, match="not SQuAD format"):
        load_xquad(tmp_path / "list.json", "en")
    broken = squad("en")
    del broken["data"][4]["paragraphs"][0]["context"]
    write(tmp_path / "broken.json", broken)
    with pytest.raises(LangNeuronsError, match="article 4"):
        load_xquad(tmp_path / "broken.json", "en")
    unanswered = squad("en")
    unanswered["data"][0]["paragraphs"][0]["qas"][0]["answers"] = []
    with pytest.raises(LangNeuronsError, match="no answers"):
        parse_squad(unanswered)
    with pytest.raises(LangNeuronsError, match="not found"):
        load_xquad(tmp_path / "missing.json", "en")


def test_article_split_partitions_articles_deterministically():
    train, held_out = article_split(48, eval_fraction=0.25, seed=3)
    assert len(held_out) == 12 and len(train) == 36
    assert set(train).isdisjoint(held_out) and set(train) | set(held_out) == set(range(48))
    assert list(train) == sorted(train) and list(held_out) == sorted(held_out)
    assert article_split(48, 0.25, seed=3) == (train, held_out)
    assert article_split(48, 0.25, seed=4) != (train, held_out)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, 1.5])
def test_article_split_rejects_fractions_that_leave_a_side_empty(fraction):
    with pytest.raises(LangNeuronsError, match="eval_fraction"):
        article_split(10, fraction)


def test_article_split_keeps_at_least_one_article_on_each_side():
    assert tuple(map(len, article_split(3, eval_fraction=0.01))) == (2, 1)
    assert tuple(map(len, article_split(3, eval_fraction=0.99))) == (1, 2)


def test_split_by_article_never_shares_a_context_and_is_identical_across_languages(xquad_folder):
    english, german = load_xquad(xquad_folder, "en"), load_xquad(xquad_folder, "de")
    train_en, eval_en = split_by_article(english, eval_fraction=0.5, seed=1)
    train_de, eval_de = split_by_article(german, eval_fraction=0.5, seed=1)
    assert {e.article for e in train_en}.isdisjoint({e.article for e in eval_en})
    assert {e.context for e in train_en}.isdisjoint({e.context for e in eval_en})
    assert len({e.article for e in eval_en}) == NUM_ARTICLES // 2
    assert len(train_en) + len(eval_en) == len(english)
    assert [e.id for e in train_en] == [e.id for e in train_de]
    assert [e.id for e in eval_en] == [e.id for e in eval_de]


def test_question_subsample_after_the_split_is_parallel_across_languages(xquad_folder):
    _, eval_en = split_by_article(load_xquad(xquad_folder, "en"))
    _, eval_de = split_by_article(load_xquad(xquad_folder, "de"))
    chosen_en, chosen_de = subsample(eval_en, 5, seed=2), subsample(eval_de, 5, seed=2)
    assert len(chosen_en) == 5
    assert [e.id for e in chosen_en] == [e.id for e in chosen_de]
    assert [eval_en.index(e) for e in chosen_en] == sorted(eval_en.index(e) for e in chosen_en)


def test_load_limit_subsamples_questions_with_a_seed(xquad_folder):
    first = load_xquad(xquad_folder, "en", limit=7, seed=5)
    assert len(first) == 7
    assert [e.id for e in first] == [e.id for e in load_xquad(xquad_folder, "de", limit=7, seed=5)]


def flat_rows(data: dict, with_title: bool) -> list[dict]:
    """Hub-style rows (google/xquad has id, context, question, answers; no title)."""
    return [
        {
            "id": qa["id"],
            "context": paragraph["context"],
            "question": qa["question"],
            "answers": {
                "text": [a["text"] for a in qa["answers"]],
                "answer_start": [a["answer_start"] for a in qa["answers"]],
            },
            **({"title": article["title"]} if with_title else {}),
        }
        for article in data["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]


def test_hub_rows_without_titles_group_paragraphs_into_articles_like_the_json_release():
    data = squad("en", paragraphs_per_article=XQUAD_PARAGRAPHS_PER_ARTICLE, questions_per_paragraph=2)
    from_json = parse_squad(data)
    from_rows = examples_from_rows(flat_rows(data, with_title=False))
    assert [e.article for e in from_rows] == [e.article for e in from_json]
    assert [(e.id, e.context, e.answers) for e in from_rows] == [(e.id, e.context, e.answers) for e in from_json]


def test_hub_rows_with_titles_number_articles_by_first_title():
    data = squad("en", paragraphs_per_article=2)
    from_rows = examples_from_rows(flat_rows(data, with_title=True))
    assert [e.article for e in from_rows] == [e.article for e in parse_squad(data)]
    assert from_rows[-1].title == f"Title_{NUM_ARTICLES - 1}"


def test_hub_source_asks_datasets_for_google_xquad(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config, split):
        calls.append((name, config, split))
        return flat_rows(squad("de", paragraphs_per_article=5), with_title=False)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    examples = load_xquad("hub", "de")
    assert calls == [("google/xquad", "xquad.de", "validation")]
    assert len(examples) == NUM_ARTICLES * 5 * 2 and examples[-1].article == NUM_ARTICLES - 1
    with pytest.raises(LangNeuronsError, match="only a validation split"):
        load_xquad("hub", "de", split="train")


def builtin_xquad(name: str) -> None:
    """A missing shipped file of the built-in XQuAD sample fails the test (a packaging regression)."""
    assert files("langneurons.data").joinpath("xquad").joinpath(name).is_file(), (
        f"the built-in XQuAD file {name} is not shipped (package data missing)")


def test_builtin_xquad_languages_are_parallel_and_spans_match():
    builtin_xquad("xquad.en.json")
    english = load_xquad("builtin", "en")
    assert count_span_mismatches(english) == 0
    folder = files("langneurons.data").joinpath("xquad")
    for name in sorted(p.name for p in folder.iterdir() if p.name.startswith("xquad.")):
        examples = load_xquad("builtin", name.split(".")[1])
        assert [(e.id, e.article) for e in examples] == [(e.id, e.article) for e in english], name


def test_builtin_english_train_file_has_no_evaluation_context():
    builtin_xquad("train.en.json")
    train = load_xquad("builtin", "en", split="train")
    assert train and count_span_mismatches(train) == 0
    if files("langneurons.data").joinpath("xquad").joinpath("xquad.en.json").is_file():
        assert {e.context for e in train}.isdisjoint({e.context for e in load_xquad("builtin", "en")})


def test_a_missing_shipped_file_fails_the_test_instead_of_skipping_it():
    with pytest.raises(AssertionError, match="not shipped"):
        builtin_xquad("xquad.xx.json")
