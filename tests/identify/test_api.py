"""The identification stage API: options are checked when made; a top rate of 0 is refused like
1.5 (it used to fall back silently to the default); None means the method's default."""

import pytest

from langneurons.activations.statistics import ActivationStatistics
from langneurons.errors import LangNeuronsError
from langneurons.identify.api import IdentifyOptions, identify


@pytest.mark.parametrize("value", [0, 0.0, -0.01, 1, 1.5])
def test_a_top_rate_outside_0_1_is_refused(value):
    with pytest.raises(LangNeuronsError, match="top_rate must be a fraction in \\(0, 1\\)"):
        IdentifyOptions(method="lape", top_rate=value)


@pytest.mark.parametrize("field, value, message", [
    ("method", "magic", "unknown method 'magic'"), ("filter_rate", 0, "filter_rate must be a fraction"),
    ("percentile", 100, "percentile must be in \\(0, 100\\)"), ("threshold", "mine", "unknown threshold source"),
])
def test_other_bad_options_are_refused(field, value, message):
    with pytest.raises(LangNeuronsError, match=message):
        IdentifyOptions(**{field: value})


def test_no_top_rate_means_the_methods_default(tmp_path, stats_from_counts):
    import torch

    counts = torch.arange(3 * 40, dtype=torch.int64).reshape(3, 40) % 7
    for language, shift in (("en", 0), ("fr", 3)):
        stats_from_counts(language, (counts + shift) % 9, 10).save(tmp_path / f"{language}.safetensors")
    default = identify(tmp_path, IdentifyOptions(method="lape", filter_rate=0.5)).neuron_set
    explicit = identify(tmp_path, IdentifyOptions(method="lape", top_rate=0.01, filter_rate=0.5)).neuron_set
    assert default.parameters["top_rate"] == 0.01 == explicit.parameters["top_rate"]
    assert all(torch.equal(default.indices(l), explicit.indices(l)) for l in ("en", "fr"))
