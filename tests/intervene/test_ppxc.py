"""The PPXC matrix: cells are perplexity runs under each row language's intervention; empty sets
change nothing; specificity follows its definition; results are cached and resumable."""

import csv
import json
import math

import pytest
import torch

import langneurons.intervene.ppxc as ppxc_module
from langneurons.corpus.packing import TokenBlocks
from langneurons.errors import LangNeuronsError
from langneurons.identify.random_control import random_control
from langneurons.intervene import PerplexityResult, PPXCResult, build_intervention, perplexity, ppxc_matrix, write_ppxc
from langneurons.intervene.ppxc import within_budget
from langneurons.intervene.figures import write_ppxc_figure

NEURONS = {"en": [[0, 1], [0, 2], [1, 5], [1, 6], [1, 7]], "fr": [[0, 10], [1, 11], [1, 12]], "hi": [[0, 20], [1, 21]]}


@pytest.fixture
def neurons(llama, make_neuron_set):
    return make_neuron_set(llama, NEURONS, method="lape")


def _every_cell(result, set_name):
    return [result.intervened[set_name][r][c] for r in result.languages for c in result.languages]


def test_an_empty_neuron_set_gives_exactly_zero_change(llama, heldout, make_neuron_set):
    empty = make_neuron_set(llama, {"en": [], "fr": [], "hi": []})
    result = ppxc_matrix(llama, empty, heldout, progress=False)
    for name in ("language-specific", "random"):
        assert torch.equal(result.matrix("delta_nll", name), torch.zeros(3, 3))
        assert result.neuron_counts[name] == {"en": 0, "fr": 0, "hi": 0}


def test_an_identity_intervention_through_the_hooks_gives_exactly_zero_change(llama, heldout, neurons):
    result = ppxc_matrix(llama, neurons, heldout, intervention_kind="scale=1", random_control=False, progress=False)
    assert result.neuron_counts["language-specific"] == {"en": 5, "fr": 3, "hi": 2}
    assert torch.equal(result.matrix("delta_ppl"), torch.zeros(3, 3))


def test_cells_are_perplexity_runs_with_the_row_languages_neurons_zeroed(llama, heldout, neurons):
    result = ppxc_matrix(llama, neurons, heldout, languages=["en", "fr"], seed=5, progress=False)
    info = llama.info
    control = random_control(neurons, seed=5)
    for name, chosen in (("language-specific", neurons), ("random", control)):
        zero_fr = build_intervention("zero", chosen.indices("fr"), info.num_layers, info.neurons_per_layer)
        assert result.intervened[name]["fr"]["en"] == perplexity(llama, heldout["en"], intervention=zero_fr,
                                                                 progress=False)
    assert result.baseline["fr"] == perplexity(llama, heldout["fr"], progress=False)
    assert result.neuron_counts["random"] == result.neuron_counts["language-specific"] == {"en": 5, "fr": 3}
    assert not torch.equal(result.matrix("delta_nll"), torch.zeros(2, 2))
    base, new = result.baseline["en"], result.intervened["language-specific"]["fr"]["en"]
    assert result.matrix("relative_delta_ppl")[1, 0] == pytest.approx((new.perplexity - base.perplexity) / base.perplexity)


def _hand_result(nll):
    """A 3x3 result whose baseline NLL is 1 everywhere and intervened NLL is ``nll[i][j]``."""
    languages = ["en", "fr", "hi"]
    cell = lambda mean: PerplexityResult.from_sum(mean * 10, 10)
    return PPXCResult(languages, {l: cell(1.0) for l in languages},
                      {"language-specific": {r: {c: cell(nll[i][j]) for j, c in enumerate(languages)}
                                             for i, r in enumerate(languages)}},
                      {"language-specific": {l: 1 for l in languages}}, {"model_id": "m"}, "lape", "zero")


def test_specificity_is_diagonal_minus_mean_off_diagonal_change_and_their_ratio():
    result = _hand_result([[3.0, 1.5, 1.0], [1.0, 1.0, 1.0], [1.2, 1.4, 1.1]])
    spec = result.specificity()
    assert spec["en"]["difference"] == pytest.approx(2.0 - 0.25) and spec["en"]["ratio"] == pytest.approx(8.0)
    assert spec["fr"]["difference"] == 0.0 and math.isnan(spec["fr"]["ratio"])
    assert spec["hi"]["difference"] == pytest.approx(0.1 - 0.3) and spec["hi"]["ratio"] == pytest.approx(1 / 3)


def test_a_rerun_with_the_same_inputs_is_read_from_the_cache(llama, heldout, neurons, tmp_path, monkeypatch):
    first = ppxc_matrix(llama, neurons, heldout, cache_dir=tmp_path, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == [f"ppxc-{first.key}.json"]

    def no_model_calls(*args, **kwargs):
        raise AssertionError("recomputed a cached PPXC matrix")

    monkeypatch.setattr(ppxc_module, "perplexity", no_model_calls)
    again = ppxc_matrix(llama, neurons, heldout, cache_dir=tmp_path, progress=False)
    assert again.to_dict() == first.to_dict()
    with pytest.raises(AssertionError, match="recomputed"):  # another seed is another input
        ppxc_matrix(llama, neurons, heldout, cache_dir=tmp_path, seed=1, progress=False)


def test_an_interrupted_run_resumes_from_its_finished_cells(llama, heldout, neurons, tmp_path, monkeypatch):
    calls = []

    def failing_after_four(*args, **kwargs):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(1)
        return perplexity(*args, **kwargs)

    monkeypatch.setattr(ppxc_module, "perplexity", failing_after_four)
    with pytest.raises(KeyboardInterrupt):
        ppxc_matrix(llama, neurons, heldout, random_control=False, cache_dir=tmp_path, progress=False)
    assert len(json.loads(next(tmp_path.glob("*.partial.json")).read_text())) == 4
    calls.clear()
    monkeypatch.setattr(ppxc_module, "perplexity", lambda *a, **k: calls.append(1) or perplexity(*a, **k))
    resumed = ppxc_matrix(llama, neurons, heldout, random_control=False, cache_dir=tmp_path, progress=False)
    assert len(calls) == 3 + 9 - 4
    monkeypatch.setattr(ppxc_module, "perplexity", perplexity)
    fresh = ppxc_matrix(llama, neurons, heldout, random_control=False, progress=False)
    assert resumed.rows() == fresh.rows()
    assert not list(tmp_path.glob("*.partial.json"))


def test_bad_inputs_are_refused(llama, heldout, neurons, make_loaded):
    with pytest.raises(LangNeuronsError, match="not in the neuron set"):
        ppxc_matrix(llama, neurons, heldout, languages=["en", "zh"], progress=False)
    with pytest.raises(LangNeuronsError, match="no held-out text"):
        ppxc_matrix(llama, neurons, {"en": heldout["en"]}, languages=["en", "fr"], progress=False)
    empty = TokenBlocks("fr", torch.zeros(0, 10, dtype=torch.long), torch.zeros(0, 10, dtype=torch.bool))
    with pytest.raises(LangNeuronsError, match="held-out text for 'fr' is empty"):
        ppxc_matrix(llama, neurons, {**heldout, "fr": empty}, progress=False)
    with pytest.raises(LangNeuronsError, match="weights"):
        ppxc_matrix(make_loaded("llama", seed=3), neurons, heldout, progress=False)


def test_token_budget_keeps_the_fewest_leading_blocks_that_reach_it(heldout):
    blocks = heldout["en"]
    per_block = int(blocks.counted[0, 1:].sum())
    assert within_budget(blocks, per_block).num_blocks == 1
    assert within_budget(blocks, per_block + 1).num_blocks == 2
    assert within_budget(blocks, 10**9).num_blocks == blocks.num_blocks
    assert within_budget(blocks, None) is blocks


def test_tables_and_figures_are_written(llama, heldout, neurons, tmp_path):
    result = ppxc_matrix(llama, neurons, heldout, progress=False)
    paths = write_ppxc(result, tmp_path)
    with open(paths["csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 3 * 3
    assert {r["set"] for r in rows} == {"language-specific", "random"}
    row = next(r for r in rows if r["set"] == "random" and r["intervened_language"] == "hi" and r["evaluated_language"] == "en")
    assert float(row["intervened_ppl"]) == pytest.approx(result.intervened["random"]["hi"]["en"].perplexity)
    assert PPXCResult.load(paths["json"]).rows() == result.rows()
    with open(paths["specificity_csv"], newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 2 * 3
    figures = write_ppxc_figure(result, tmp_path)
    assert sorted(p.suffix for p in figures) == [".png", ".svg"]
    assert all(p.stat().st_size > 1000 for p in figures)
    assert "tiny-llama" in figures[1].read_text()  # the title names the model


def _blocked(block_nll, block_tokens):
    return PerplexityResult.from_sum(sum(block_nll), sum(block_tokens), block_nll, block_tokens)


def _blocked_result(baseline_blocks, shift, resampling=(400, 0.95, 0), repeat=5):
    """en/fr with 4 blocks of 10 tokens each, the 4 repeated ``repeat`` times (20 blocks: enough
    units for an interval); intervened = baseline + ``shift[i][j]`` nats per token in every block
    (a constant paired difference) except where a list of per-block shifts is given."""
    languages = ["en", "fr"]
    tokens = [10] * 4 * repeat
    base = {l: _blocked([10 * v for v in baseline_blocks[l] * repeat], tokens) for l in languages}

    def cell(i, j):
        per_block = shift[i][j] if isinstance(shift[i][j], list) else [shift[i][j]] * 4
        col = languages[j]
        return _blocked([10 * (v + d) for v, d in zip(baseline_blocks[col] * repeat, per_block * repeat)], tokens)

    intervened = {"language-specific": {r: {c: cell(i, j) for j, c in enumerate(languages)}
                                        for i, r in enumerate(languages)}}
    return PPXCResult(languages, base, intervened, {"language-specific": {"en": 1, "fr": 1}}, {"model_id": "m"},
                      "lape", "zero", resampling=resampling)


def test_intervals_are_of_the_paired_difference_a_constant_shift_has_a_point_interval():
    # baselines vary a lot between blocks; the intervention adds exactly 0.5 nats to every token
    result = _blocked_result({"en": [1.0, 3.0, 0.2, 6.0], "fr": [2.0, 2.5, 9.0, 0.1]}, [[0.5, 0.0], [0.0, 0.5]])
    intervals = result.intervals()
    assert intervals["delta_nll"]["language-specific"]["en"]["en"] == pytest.approx((0.5, 0.5))
    assert intervals["delta_nll"]["language-specific"]["en"]["fr"] == pytest.approx((0.0, 0.0), abs=1e-12)
    assert intervals["difference"]["language-specific"]["fr"] == pytest.approx((0.5, 0.5))
    row = next(r for r in result.rows() if r["intervened_language"] == "en" and r["evaluated_language"] == "en")
    assert row["relative_delta_ppl_ci_low"] == pytest.approx(math.expm1(0.5))
    assert row["blocks"] == 20 and row["resampling_units"] == 20


def test_intervals_cover_the_point_estimate_and_narrow_with_agreeing_blocks():
    base = {"en": [1.0, 1.0, 1.0, 1.0], "fr": [1.0, 1.0, 1.0, 1.0]}
    spread = _blocked_result(base, [[[0.0, 0.2, 0.4, 1.4], 0.0], [0.0, 0.0]])
    low, high = spread.intervals()["delta_nll"]["language-specific"]["en"]["en"]
    assert low < 0.5 < high  # the point estimate is the mean shift, 0.5
    assert low >= 0.0 and high <= 1.4  # a bootstrap mean lies between the smallest and largest block
    narrow = _blocked_result(base, [[[0.45, 0.5, 0.5, 0.55], 0.0], [0.0, 0.0]])
    n_low, n_high = narrow.intervals()["delta_nll"]["language-specific"]["en"]["en"]
    assert n_high - n_low < (high - low) / 5


def test_intervals_are_seeded_and_survive_a_round_trip_through_json(tmp_path):
    base = {"en": [1.0, 2.0, 1.5, 1.0], "fr": [1.0, 1.3, 1.1, 1.0]}
    make = lambda seed: _blocked_result(base, [[[0.0, 0.2, 0.4, 1.4], 0.1], [0.3, [0.1, 0.0, 0.9, 0.2]]],
                                        resampling=(300, 0.9, seed))
    assert make(3).intervals() == make(3).intervals() != make(4).intervals()
    result = make(3)
    write_ppxc(result, tmp_path)
    loaded = PPXCResult.load(tmp_path / "ppxc.json")
    assert loaded.resampling == (300, 0.9, 3) and loaded.intervals() == result.intervals()
    with open(tmp_path / "ppxc_specificity.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {"difference_ci_low", "difference_ci_high"} <= set(rows[0])


def test_results_without_per_block_sums_have_no_intervals():
    result = _hand_result([[3.0, 1.5, 1.0], [1.0, 1.0, 1.0], [1.2, 1.4, 1.1]])
    assert result.intervals() is None
    assert result.rows()[0]["delta_nll_ci_low"] is None


def test_held_out_blocks_of_another_tokenizer_are_refused(llama, heldout, neurons):
    from dataclasses import replace

    foreign = dict(heldout, fr=replace(heldout["fr"], tokenizer_fingerprint="0123456789abcdef"))
    with pytest.raises(LangNeuronsError, match="held-out blocks of 'fr' were tokenized by another tokenizer"):
        ppxc_matrix(llama, neurons, foreign, ["en", "fr"], random_control=False, progress=False)


def test_held_out_blocks_without_a_fingerprint_warn_and_ids_past_the_vocabulary_are_refused(llama, heldout, neurons):
    from dataclasses import replace

    from langneurons.errors import LangNeuronsWarning

    old = {language: replace(blocks, tokenizer_fingerprint=None) for language, blocks in heldout.items()}
    with pytest.warns(LangNeuronsWarning, match="record no tokenizer fingerprint"):
        result = ppxc_matrix(llama, neurons, old, ["en", "fr"], random_control=False, progress=False)
    assert result.matrix().shape == (2, 2)
    ids = old["fr"].input_ids.clone()
    ids[0, 1] = len(llama.tokenizer) + 5
    with pytest.raises(LangNeuronsError, match="beyond the tokenizer's"), pytest.warns(LangNeuronsWarning):
        ppxc_matrix(llama, neurons, dict(old, fr=replace(old["fr"], input_ids=ids)), ["en", "fr"],
                    random_control=False, progress=False)


# ------------------------------------------------------------------ resampling units


def _documents(nll_per_token, tokens):
    """A PerplexityResult with per-document sums (and one block holding all of them)."""
    sums = [v * t for v, t in zip(nll_per_token, tokens)]
    return PerplexityResult.from_sum(sum(sums), sum(tokens), [sum(sums)], [sum(tokens)], sums, tokens)


def _document_result(baseline, shift, tokens=None, resampling=(400, 0.95, 0)):
    """en/fr; ``baseline[l]``: NLL per token of each held-out document; the intervened cell adds
    ``shift[i][j]`` nats to every token of every document."""
    languages = ["en", "fr"]
    tokens = tokens or {l: [3 + (k % 5) for k in range(len(baseline[l]))] for l in languages}
    base = {l: _documents(baseline[l], tokens[l]) for l in languages}
    intervened = {"language-specific": {
        r: {c: _documents([v + shift[i][j] for v in baseline[c]], tokens[c]) for j, c in enumerate(languages)}
        for i, r in enumerate(languages)}}
    return PPXCResult(languages, base, intervened, {"language-specific": {"en": 1, "fr": 1}}, {"model_id": "m"},
                      "lape", "zero", resampling=resampling)


def test_documents_are_the_resampling_unit_and_baseline_and_intervened_share_the_picks():
    generator = torch.Generator().manual_seed(0)
    baseline = {l: (0.1 + 8 * torch.rand(30, generator=generator)).tolist() for l in ("en", "fr")}
    result = _document_result(baseline, [[0.5, 0.0], [0.0, 0.5]])
    assert result.unit == "documents" and result.units() == {"en": 30, "fr": 30}
    # the baselines vary by up to 8 nats/token between documents; only shared picks leave the
    # constant shift of 0.5 with a point interval
    intervals = result.intervals()
    assert intervals["delta_nll"]["language-specific"]["en"]["en"] == pytest.approx((0.5, 0.5))
    assert intervals["unit"] == "held-out documents" and intervals["units"] == {"en": 30, "fr": 30}
    data = result.to_dict()["resampling"]
    assert (data["unit"], data["units"], data["min_units"]) == ("held-out documents", {"en": 30, "fr": 30}, 20)
    row = result.rows()[0]
    assert (row["documents"], row["blocks"], row["resampling_units"]) == (30, 1, 30)
    # the picks are one draw per evaluated language, reproducible
    assert torch.equal(result.resample_picks(1, 30), result.resample_picks(1, 30))
    assert result.resample_picks(1, 30).shape == (400, 30)


def test_the_document_bootstrap_is_the_token_weighted_mean_over_the_picked_documents():
    baseline = {l: [1.0 + 0.1 * k for k in range(25)] for l in ("en", "fr")}
    result = _document_result(baseline, [[0.0, 0.0], [0.0, 0.0]], resampling=(50, 0.95, 2))
    shifted = _document_result(baseline, [[0.0, 0.0], [0.0, 0.0]], resampling=(50, 0.95, 2))
    tokens = torch.tensor(result.baseline["en"].document_tokens, dtype=torch.float64)
    nll = torch.tensor(result.baseline["en"].document_nll, dtype=torch.float64)
    picks = result.resample_picks(0, 25)
    # make the intervened en cell differ by document: +1 nat/token on document 0 only
    cell = result.intervened["language-specific"]["en"]["en"]
    new_sums = list(cell.document_nll)
    new_sums[0] += tokens[0].item()
    shifted.intervened["language-specific"]["en"]["en"] = PerplexityResult.from_sum(
        sum(new_sums), cell.token_count, cell.block_nll, cell.block_tokens, new_sums, cell.document_tokens)
    expected = (torch.tensor(new_sums, dtype=torch.float64)[picks].sum(1) - nll[picks].sum(1)) / tokens[picks].sum(1)
    assert torch.allclose(shifted.resampled_delta_nll()["language-specific"]["en"]["en"], expected)


def test_one_document_per_language_gives_no_interval():
    result = _document_result({"en": [2.0], "fr": [3.0]}, [[0.5, 0.1], [0.2, 0.4]])
    assert result.units() == {"en": 1, "fr": 1}
    intervals = result.intervals()
    assert intervals["delta_nll"]["language-specific"]["en"]["en"] is None
    assert intervals["difference"]["language-specific"]["en"] is None
    row = result.rows()[0]
    assert row["delta_nll"] == pytest.approx(0.5)  # the point estimate stands
    assert row["delta_nll_ci_low"] is None and row["relative_delta_ppl_ci_high"] is None
    assert result.specificity_rows()[0]["difference_ci_low"] is None


def test_nineteen_documents_are_too_few_twenty_are_enough():
    def interval(n):
        baseline = {l: [1.0 + (k % 7) for k in range(n)] for l in ("en", "fr")}
        return _document_result(baseline, [[0.5, 0.0], [0.0, 0.5]]).intervals()["delta_nll"]["language-specific"]

    assert interval(19)["en"]["en"] is None
    assert interval(20)["en"]["en"] == pytest.approx((0.5, 0.5))


def test_results_without_documents_fall_back_to_blocks_with_a_warning(tmp_path):
    from langneurons.errors import LangNeuronsWarning

    result = _blocked_result({"en": [1.0, 3.0, 0.2, 6.0], "fr": [2.0, 2.5, 9.0, 0.1]}, [[0.5, 0.0], [0.0, 0.5]])
    assert result.unit == "blocks" and result.units() == {"en": 20, "fr": 20}
    with pytest.warns(LangNeuronsWarning, match="resample packed held-out blocks"):
        assert result.to_dict()["resampling"]["unit"] == "held-out blocks"


def test_a_ppxc_run_on_packed_blocks_resamples_their_documents(llama, heldout, neurons, tmp_path):
    result = ppxc_matrix(llama, neurons, heldout, ["en", "fr"], random_control=False, progress=False)
    documents = {l: int(heldout[l].document_ids[heldout[l].counted].unique().numel()) for l in ("en", "fr")}
    assert result.unit == "documents" and result.units() == documents
    assert all(n < 20 for n in documents.values())  # 18 short lines per language: too few for an interval
    assert all(r["delta_nll_ci_low"] is None for r in result.rows())
    paths = write_ppxc(result, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["resampling"]["unit"] == "held-out documents" and data["resampling"]["units"] == documents
    with open(paths["csv"], newline="") as handle:
        assert {r["resampling_units"] for r in csv.DictReader(handle)} == {str(n) for n in documents.values()}
