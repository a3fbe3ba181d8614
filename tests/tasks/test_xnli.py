import json
from collections import Counter
from importlib.resources import files

import pytest

from langneurons.errors import LangNeuronsError
from langneurons.tasks import LABELS, NLIExample, load_xnli, sample_indices
from langneurons.tasks.xnli import parse_label

# Tiny handmade rows: (premise, hypothesis, label); 12 rows, 4 per class, same labels per language.
LABEL_CYCLE = [0, 1, 2, 2, 1, 0, 1, 0, 2, 0, 2, 1]


def rows(language: str) -> list[dict]:
    return [
        {"premise": f"{language} premise {i}", "hypothesis": f"{language} hypothesis {i}", "label": label}
        for i, label in enumerate(LABEL_CYCLE)
    ]


def write_jsonl(path, items) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")


XNLI_COLUMNS = [
    "language", "gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
    "sentence2_parse", "sentence1", "sentence2", "promptID", "pairID", "genre",
]  # fmt: skip


def write_xnli_tsv(path, languages=("en", "fr")) -> None:
    """XNLI 1.0 layout: one block of rows per language, gold labels as words; sentences contain
    unbalanced double quotes, which a default csv reader would swallow."""
    lines = ["\t".join(XNLI_COLUMNS)]
    for language in languages:
        for i, label in enumerate(LABEL_CYCLE):
            sentence1 = f'{language} "quoted premise {i}'
            sentence2 = f"{language} hypothesis {i}"
            parses = ["(", "(", "(", "("]
            lines.append("\t".join([language, LABELS[label], *parses, sentence1, sentence2, str(i), str(i), "g"]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_jsonl_file_gives_examples_with_row_ids(tmp_path):
    write_jsonl(tmp_path / "en.jsonl", rows("en"))
    examples = load_xnli(tmp_path / "en.jsonl", "en")
    assert len(examples) == 12
    assert examples[3] == NLIExample(id="en-test-3", premise="en premise 3", hypothesis="en hypothesis 3", label=2)


def test_folder_with_split_subfolders_is_read_like_shared_data(tmp_path):
    write_jsonl(tmp_path / "test" / "fr.jsonl", rows("fr"))
    write_jsonl(tmp_path / "train" / "en.jsonl", rows("en")[:6])
    assert [e.premise for e in load_xnli(tmp_path, "fr")][:2] == ["fr premise 0", "fr premise 1"]
    train = load_xnli(tmp_path, "en", split="train")
    assert [e.id for e in train] == [f"en-train-{i}" for i in range(6)]


def test_folder_with_flat_language_files(tmp_path):
    write_jsonl(tmp_path / "de.jsonl", rows("de"))
    assert load_xnli(tmp_path, "de")[-1].id == "de-test-11"


def test_xnli_tsv_is_filtered_by_language_and_label_words_are_mapped(tmp_path):
    write_xnli_tsv(tmp_path / "xnli.test.tsv")
    french = load_xnli(tmp_path / "xnli.test.tsv", "fr")
    assert [e.label for e in french] == LABEL_CYCLE
    expected = NLIExample(id="fr-test-5", premise='fr "quoted premise 5', hypothesis="fr hypothesis 5", label=0)
    assert french[5] == expected
    # ids count rows within the language, so they are parallel across the language blocks
    assert [e.id.split("-")[-1] for e in french] == [e.id.split("-")[-1] for e in load_xnli(tmp_path, "en")]


def test_dev_split_reads_the_xnli_dev_tsv(tmp_path):
    write_xnli_tsv(tmp_path / "xnli.dev.tsv", languages=("en",))
    examples = load_xnli(tmp_path, "en", split="dev")
    assert examples[0].id == "en-validation-0" and len(examples) == 12


def test_multinli_style_tsv_maps_contradictory_to_contradiction(tmp_path):
    words = {0: "entailment", 1: "neutral", 2: "contradictory"}
    lines = ["premise\thypo\tlabel"] + [f"p{i}\th{i}\t{words[label]}" for i, label in enumerate(LABEL_CYCLE)]
    (tmp_path / "multinli.train.es.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    examples = load_xnli(tmp_path, "es", split="train")
    assert [e.label for e in examples] == LABEL_CYCLE
    assert examples[2].hypothesis == "h2"


@pytest.mark.parametrize(
    "value, expected",
    [(0, 0), (2, 2), ("1", 1), ("Neutral", 1), ("contradictory", 2), (3, None), (-1, None), (None, None), (True, None)],
)
def test_parse_label_accepts_ids_and_words_only(value, expected):
    assert parse_label(value) == expected


def test_label_outside_range_is_an_error_naming_the_row(tmp_path):
    items = rows("en")
    items[7]["label"] = 3
    write_jsonl(tmp_path / "en.jsonl", items)
    with pytest.raises(LangNeuronsError, match="row 7"):
        load_xnli(tmp_path, "en")


def test_missing_label_is_an_error_naming_the_row(tmp_path):
    items = rows("en")
    del items[4]["label"]
    write_jsonl(tmp_path / "en.jsonl", items)
    with pytest.raises(LangNeuronsError, match="row 4"):
        load_xnli(tmp_path, "en")


def test_split_without_a_class_is_an_error_naming_the_missing_labels(tmp_path):
    write_jsonl(tmp_path / "en.jsonl", [r for r in rows("en") if r["label"] == 0])
    with pytest.raises(LangNeuronsError, match="neutral, contradiction"):
        load_xnli(tmp_path, "en")


def test_missing_language_file_or_path_is_an_error(tmp_path):
    write_jsonl(tmp_path / "en.jsonl", rows("en"))
    with pytest.raises(LangNeuronsError, match="'fr'"):
        load_xnli(tmp_path, "fr")
    with pytest.raises(LangNeuronsError, match="not found"):
        load_xnli(tmp_path / "nowhere", "en")
    with pytest.raises(LangNeuronsError, match="unknown language"):
        load_xnli(tmp_path, "english")
    write_xnli_tsv(tmp_path / "xnli.test.tsv", languages=("en",))
    with pytest.raises(LangNeuronsError, match="no rows for language 'de'"):
        load_xnli(tmp_path / "xnli.test.tsv", "de")


def test_subsample_selects_the_same_parallel_rows_in_every_language(tmp_path):
    for language in ("en", "fr"):
        write_jsonl(tmp_path / f"{language}.jsonl", rows(language))
    english = load_xnli(tmp_path, "en", limit=5, seed=7)
    french = load_xnli(tmp_path, "fr", limit=5, seed=7)
    rows_en = [int(e.id.split("-")[-1]) for e in english]
    assert len(english) == 5
    assert rows_en == sorted(rows_en)  # original order kept
    assert rows_en == [int(e.id.split("-")[-1]) for e in french]
    assert [e.premise for e in french] == [f"fr premise {i}" for i in rows_en]
    assert rows_en == sample_indices(12, 5, seed=7)


def test_sample_indices_depends_on_seed_and_keeps_everything_without_limit():
    assert sample_indices(10, None) == list(range(10))
    assert sample_indices(10, 50) == list(range(10))
    assert sample_indices(1000, 10, seed=0) != sample_indices(1000, 10, seed=1)
    assert len(set(sample_indices(1000, 10, seed=0))) == 10
    with pytest.raises(LangNeuronsError):
        sample_indices(10, 0)


def test_balanced_subsample_has_equal_classes_and_is_parallel(tmp_path):
    for language in ("en", "fr"):
        write_jsonl(tmp_path / f"{language}.jsonl", rows(language))
    english = load_xnli(tmp_path, "en", limit=7, seed=3, balanced=True)
    french = load_xnli(tmp_path, "fr", limit=7, seed=3, balanced=True)
    assert Counter(e.label for e in english) == {0: 3, 1: 2, 2: 2}
    assert [e.id[3:] for e in english] == [e.id[3:] for e in french]


def test_balanced_subsample_fails_when_a_class_is_too_small(tmp_path):
    skewed = [r for r in rows("en") if r["label"] != 2] + [{"premise": "p", "hypothesis": "h", "label": 2}]
    write_jsonl(tmp_path / "en.jsonl", skewed)
    with pytest.raises(LangNeuronsError, match="needs 2 'contradiction' examples, only 1 exist"):
        load_xnli(tmp_path, "en", limit=6, balanced=True)


def test_hub_source_asks_datasets_for_facebook_xnli(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config, split):
        calls.append((name, config, split))
        return rows("fr")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    examples = load_xnli("hub", "fr", split="validation")
    assert calls == [("facebook/xnli", "fr", "validation")]
    assert examples[1].id == "fr-validation-1" and examples[1].label == 1


def test_hub_failure_becomes_a_one_line_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network\nlong traceback text")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(LangNeuronsError, match="no network$"):
        load_xnli("hub", "en")


def builtin_file(name: str):
    """The shipped file ``name`` of the built-in XNLI sample; a missing one fails the test (a
    packaging regression), it does not skip it."""
    resource = files("langneurons.data").joinpath("xnli").joinpath(name)
    assert resource.is_file(), f"the built-in XNLI file {name} is not shipped (package data missing)"
    return resource


def test_builtin_test_split_is_valid_and_parallel_across_languages():
    builtin_file("en.jsonl")
    english = load_xnli("builtin", "en")
    folder = files("langneurons.data").joinpath("xnli")
    others = sorted(p.name[:-6] for p in folder.iterdir() if p.name.endswith(".jsonl") and len(p.name) == 8)
    for language in others:
        examples = load_xnli("builtin", language)
        assert len(examples) == len(english), language
        assert [e.label for e in examples] == [e.label for e in english], language


def test_builtin_english_train_split_is_valid():
    builtin_file("train_en.jsonl")
    examples = load_xnli("builtin", "en", split="train")
    assert {e.label for e in examples} == {0, 1, 2}
    with pytest.raises(LangNeuronsError, match="English train split"):
        load_xnli("builtin", "fr", split="train")


def test_a_missing_shipped_file_fails_the_test_instead_of_skipping_it():
    with pytest.raises(AssertionError, match="not shipped"):
        builtin_file("xx.jsonl")
