"""DiffMean directions: d_k = mean of language k minus the mean of the other languages' means, per
layer; the rank-r language subspace; the matched-norm random control; files with provenance."""

import pytest
import torch

from langneurons.directions.direction_set import DirectionSet, diffmean, is_direction_set_file
from langneurons.errors import LangNeuronsError

# per-language means [L=2, H=3]; token counts differ on purpose (the contrast ignores them)
MEANS = {
    "en": [[1.0, 0.0, 0.0], [2.0, 2.0, 0.0]],
    "fr": [[0.0, 1.0, 0.0], [0.0, 2.0, 2.0]],
    "hi": [[0.0, 0.0, 4.0], [2.0, 0.0, 2.0]],
}
TOKENS = {"en": 4, "fr": 10, "hi": 2}


@pytest.fixture
def residuals(make_residual):
    return {language: make_residual(language, means, TOKENS[language]) for language, means in MEANS.items()}


def test_diffmean_is_the_language_mean_minus_the_mean_of_the_other_means(residuals):
    directions = diffmean(residuals)
    assert directions.method == "diffmean" and directions.languages == ["en", "fr", "hi"]
    assert tuple(directions.directions.shape) == (3, 2, 3)
    # by hand: en at layer 0 = (1,0,0) - ((0,1,0) + (0,0,4)) / 2 = (1, -0.5, -2)
    assert directions.direction("en")[0].tolist() == [1.0, -0.5, -2.0]
    # fr at layer 1 = (0,2,2) - ((2,2,0) + (2,0,2)) / 2 = (-2, 1, 1)
    assert directions.direction("fr")[1].tolist() == [-2.0, 1.0, 1.0]
    means = torch.tensor([MEANS[l] for l in directions.languages])
    centred = means - means.mean(0, keepdim=True)
    torch.testing.assert_close(directions.directions, 3 / 2 * centred)  # K / (K - 1) (mu_k - mu_bar)
    torch.testing.assert_close(directions.means, means)
    torch.testing.assert_close(directions.steering_vector("en", "fr"), means[1] - means[0])
    assert directions.source["token_counts"] == TOKENS
    assert directions.source["hidden_size"] == 3 and directions.source["weights_fingerprint"] == "w"


def test_the_spread_is_the_pooled_per_dimension_standard_deviation(residuals):
    directions = diffmean(residuals)
    # every token of a hand-made language equals its mean: the pooled spread is that of the token-weighted means
    means = torch.tensor([MEANS[l] for l in directions.languages], dtype=torch.float64)
    weights = torch.tensor([TOKENS[l] for l in directions.languages], dtype=torch.float64)[:, None, None]
    pooled = (means * weights).sum(0) / weights.sum()
    expected = (((means - pooled) ** 2) * weights).sum(0) / weights.sum()
    torch.testing.assert_close(directions.spread, expected.sqrt().float())


def test_the_subspace_is_orthonormal_and_spans_the_centred_means(residuals):
    directions = diffmean(residuals, rank=2)
    assert directions.rank == 2 and tuple(directions.subspace.shape) == (2, 2, 3)
    means = torch.tensor([MEANS[l] for l in directions.languages])
    centred = means - means.mean(0, keepdim=True)
    for layer in range(2):
        basis = directions.subspace[layer]
        torch.testing.assert_close(basis @ basis.T, torch.eye(2), atol=1e-6, rtol=0)
        rows = centred[:, layer]
        torch.testing.assert_close((rows @ basis.T) @ basis, rows, atol=1e-5, rtol=0)  # K - 1 = 2: all of it


def test_rank_one_subspace_is_the_top_singular_direction(make_residual):
    # two languages differ only along dimension 1: the rank-1 subspace is +-e1
    residuals = {"en": make_residual("en", [[0.0, 3.0, 1.0]]), "fr": make_residual("fr", [[0.0, -3.0, 1.0]])}
    directions = diffmean(residuals, rank=1)
    torch.testing.assert_close(directions.subspace[0, 0].abs(), torch.tensor([0.0, 1.0, 0.0]))


def test_bad_requests_are_refused(make_residual, residuals):
    with pytest.raises(LangNeuronsError, match="at least two"):
        diffmean({"en": residuals["en"]})
    with pytest.raises(LangNeuronsError, match="rank"):
        diffmean(residuals, rank=3)
    with pytest.raises(LangNeuronsError, match="different models"):
        diffmean({**residuals, "ur": make_residual("ur", MEANS["en"], weights_fingerprint="other")})


def test_the_random_control_matches_every_norm_and_is_seeded(residuals):
    directions = diffmean(residuals, rank=2)
    random = directions.random_control(seed=3)
    assert random.method == "random" and random.languages == directions.languages
    assert random.parameters["seed"] == 3 and random.parameters["like"] == "diffmean"
    torch.testing.assert_close(random.norms(), directions.norms())
    assert not torch.allclose(random.directions, directions.directions)
    assert torch.equal(directions.random_control(seed=3).directions, random.directions)
    assert not torch.equal(directions.random_control(seed=4).directions, random.directions)
    for layer in range(2):
        torch.testing.assert_close(random.subspace[layer] @ random.subspace[layer].T, torch.eye(2), atol=1e-6, rtol=0)


def test_a_spread_weighted_random_direction_lies_where_the_stream_varies(make_residual):
    # the stream never varies along dimension 2: a spread-weighted random direction has no component there
    residuals = {"en": make_residual("en", [[1.0, 2.0, 5.0]]), "fr": make_residual("fr", [[-1.0, 0.0, 5.0]])}
    directions = diffmean(residuals)
    random = directions.random_control(seed=0, weighting="spread")
    assert torch.all(random.directions[..., 2] == 0)
    torch.testing.assert_close(random.norms(), directions.norms())
    with pytest.raises(LangNeuronsError, match="weighting"):
        directions.random_control(weighting="gaussian")


def test_files_keep_tensors_and_provenance(residuals, tmp_path):
    directions = diffmean(residuals, rank=1)
    path = directions.save(tmp_path / "diffmean.safetensors")
    assert is_direction_set_file(path)
    loaded = DirectionSet.load(path)
    assert loaded.languages == directions.languages and loaded.method == "diffmean"
    assert loaded.source == directions.source and loaded.parameters == directions.parameters
    for name in ("directions", "means", "subspace", "spread"):
        assert torch.equal(getattr(loaded, name), getattr(directions, name)), name
    with pytest.raises(LangNeuronsError, match=".safetensors"):
        directions.save(tmp_path / "diffmean.json")
    (tmp_path / "other.safetensors").write_bytes(b"junk")
    assert not is_direction_set_file(tmp_path / "other.safetensors")
    with pytest.raises(LangNeuronsError, match="corrupted"):
        DirectionSet.load(tmp_path / "other.safetensors")
    with pytest.raises(LangNeuronsError, match="not found"):
        DirectionSet.load(tmp_path / "missing.safetensors")


def test_malformed_sets_are_refused():
    with pytest.raises(LangNeuronsError, match="languages"):
        DirectionSet(torch.zeros(2, 1, 3), ["en"], "diffmean")
    with pytest.raises(LangNeuronsError, match="finite"):
        DirectionSet(torch.full((1, 1, 3), float("nan")), ["en"], "diffmean")
    with pytest.raises(LangNeuronsError, match="means"):
        DirectionSet(torch.zeros(1, 1, 3), ["en"], "diffmean", means=torch.zeros(1, 2, 3))


def test_check_model_refuses_another_model(make_loaded, residuals):
    loaded = make_loaded("llama")
    with pytest.raises(LangNeuronsError, match="width"):
        diffmean(residuals).check_model(loaded)  # 2 layers of width 3, the model's are of width 32
    directions = DirectionSet(torch.ones(1, 2, 32), ["en"], "diffmean", source={"weights_fingerprint": "other"})
    with pytest.raises(LangNeuronsError, match="weights"):
        directions.check_model(loaded)
