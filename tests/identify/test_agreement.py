"""Agreement of two neuron sets: Jaccard per language and its chance level; refusals."""

import pytest
import torch

from langneurons.errors import LangNeuronsError
from langneurons.identify import NeuronSet
from langneurons.identify.agreement import agreement, write_agreement
from langneurons.identify.stability import expected_random_jaccard


def _set(neurons, fingerprint="w0", shape=(2, 10)):
    return NeuronSet(neurons, *shape, "lape", {}, {"weights_fingerprint": fingerprint})


def test_jaccard_and_chance_per_language(tmp_path):
    first = _set({"en": [[0, 1], [0, 2], [1, 3]], "fr": [[1, 1]], "hi": []})
    second = _set({"fr": [[1, 1], [1, 2]], "en": [[0, 1], [1, 4]]})
    rows = {row["language"]: row for row in agreement(first, second)}
    assert list(rows) == ["en", "fr"]  # languages of both sets, first set's order
    assert rows["en"]["shared"] == 1 and rows["en"]["jaccard"] == pytest.approx(1 / 4)
    assert rows["fr"]["jaccard"] == pytest.approx(1 / 2)
    assert rows["en"]["chance_jaccard"] == pytest.approx(expected_random_jaccard([2, 1], [1, 1], 10))
    files = write_agreement(list(rows.values()), tmp_path, ("a", "b"))
    assert {path.name for path in files} == {"agreement.csv", "agreement.json", "agreement.png", "agreement.svg"}


def test_sets_of_other_models_or_languages_are_refused():
    first = _set({"en": [[0, 1]]})
    with pytest.raises(LangNeuronsError, match="different weights"):
        agreement(first, _set({"en": [[0, 1]]}, fingerprint="w1"))
    with pytest.raises(LangNeuronsError, match="different models"):
        agreement(first, _set({"en": [[0, 1]]}, shape=(3, 10)))
    with pytest.raises(LangNeuronsError, match="not in both sets"):
        agreement(first, _set({"en": [[0, 1]]}), ["fr"])


@pytest.mark.parametrize("name", ["../escaped", "..", "", "sub/name", "ABSOLUTE", "a\\b"])
def test_a_name_that_is_not_one_plain_file_stem_is_refused_and_nothing_is_written(name, tmp_path):
    """Issue 21, item 6: the files stay inside the output folder."""
    out = tmp_path / "out"
    rows = agreement(_set({"en": [[0, 1]]}), _set({"en": [[0, 1]]}))
    name = str(tmp_path / "abs" / "x") if name == "ABSOLUTE" else name
    with pytest.raises(LangNeuronsError, match="must be one plain name"):
        write_agreement(rows, out, ("a", "b"), name=name)
    assert list(tmp_path.rglob("*")) == []
