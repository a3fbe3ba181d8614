"""Evaluation: KV-cached batched greedy decoding, per-example predictions, the intervention grid."""

import json

import pytest
import torch
from tiny import tiny_model, tiny_tokenizer

from langneurons.errors import LangNeuronsError
from langneurons.evaluate.evaluation import (
    ROW_FIELDS,
    GridResult,
    compare_records,
    evaluate_grid,
    predict,
    prepare_task,
)
from langneurons.evaluate.generation import StopRule, answer_text, greedy_generate, greedy_generate_naive
from langneurons.evaluate.metrics import ACCURACY_TEST, MIN_RESAMPLING_UNITS, squad_scores
from langneurons.identify.neuron_set import NeuronSet
from langneurons.models.loading import describe
from langneurons.tasks import NLIExample, QAExample

NEVER = lambda token: False  # noqa: E731
TEXTS = ["the cat sat", "le chat est sur le tapis et le", "el", "猫在垫子上 the mat", "बिल्ली चटाई"]


def loaded_tiny(family="llama", seed=0, tokenizer=None):
    loaded = describe(tiny_model(family, seed=seed), model_id=f"tiny-{family}")
    loaded.tokenizer = tokenizer or tiny_tokenizer()
    return loaded


def nli_fixture(language):
    pairs = {"en": [("the cat sat on the mat", "the cat sat"), ("the mat", "a cat"), ("a cat and a mat", "no cat")],
             "fr": [("le chat est sur le tapis", "le chat"), ("le tapis", "un chat"), ("un chat", "pas de chat")]}
    return [NLIExample(f"{language}-{i}", *pairs[language][i % 3], label=i % 3) for i in range(6)]


def qa_fixture(language):
    context = {"en": "the cat sat on the mat", "fr": "le chat est sur le tapis"}[language]
    answers = {"en": ("the mat", "the cat"), "fr": ("le tapis", "le chat")}[language]
    return [QAExample(f"{language}-q{i}", 0, "", context, "where" if i % 2 else "who", (answers[i % 2],), (0,))
            for i in range(5)]


def neuron_sets(loaded):
    info = loaded.info
    source = {"model_id": info.model_id, "weights_fingerprint": info.weights_fingerprint}
    every = torch.ones(info.num_layers, info.neurons_per_layer, dtype=torch.bool)
    few = torch.zeros_like(every)
    few[1, [2, 7]] = True
    return {"all": NeuronSet.from_masks({"en": every, "fr": every}, "test", {}, source),
            "few": NeuronSet.from_masks({"en": few, "fr": torch.zeros_like(few)}, "test", {}, source)}


# ---------------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2"])
def test_batched_kv_cached_greedy_equals_batch1_uncached_greedy(family):
    tokenizer = tiny_tokenizer()
    model = tiny_model(family)
    prompts = [tokenizer(text)["input_ids"] for text in TEXTS]  # lengths differ: left padding is exercised
    batched = greedy_generate(model, prompts, pad_id=0, stop=NEVER, max_new_tokens=7, batch_size=3)
    assert batched == greedy_generate_naive(model, prompts, stop=NEVER, max_new_tokens=7)
    assert all(len(tokens) == 7 for tokens in batched)


def test_greedy_decoding_matches_transformers_generate():
    tokenizer = tiny_tokenizer()
    model = tiny_model("llama")
    prompts = [tokenizer(text)["input_ids"] for text in TEXTS]
    ours = greedy_generate(model, prompts, pad_id=0, stop=NEVER, max_new_tokens=6, batch_size=5)
    for prompt, tokens in zip(prompts, ours):
        reference = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False, eos_token_id=None,
                                   pad_token_id=0)
        assert reference[0, len(prompt):].tolist() == tokens


def test_each_row_stops_at_its_first_stop_token_while_the_batch_goes_on():
    tokenizer = tiny_tokenizer()
    model = tiny_model("llama")
    prompts = [tokenizer(text)["input_ids"] for text in TEXTS]
    full = greedy_generate_naive(model, prompts, stop=NEVER, max_new_tokens=8)
    stop_token = full[0][2]
    stopped = greedy_generate(model, prompts, pad_id=0, stop=lambda t: t == stop_token, max_new_tokens=8, batch_size=5)
    for tokens, reference in zip(stopped, full):
        end = reference.index(stop_token) + 1 if stop_token in reference else len(reference)
        assert tokens == reference[:end]
    assert len(stopped[0]) == full[0].index(stop_token) + 1 <= 3


def test_stop_rule_stops_at_eos_and_newline_tokens_and_answers_end_at_the_newline():
    tokenizer = tiny_tokenizer()
    newline = tokenizer.convert_tokens_to_ids("Ċ")
    rule = StopRule(tokenizer, {2})
    word = tokenizer("cat", add_special_tokens=False)["input_ids"][0]
    assert rule(2) and rule(newline) and not rule(word)
    assert not StopRule(tokenizer, {2}, stop_at_newline=False)(newline)
    tokens = tokenizer(" the mat\nthe cat", add_special_tokens=False)["input_ids"] + [2]
    assert answer_text(tokenizer, tokens, {2}) == "the mat"


# ---------------------------------------------------------------------------------- predictions


def test_xquad_predictions_carry_ids_and_official_scores():
    loaded = loaded_tiny()
    prepared = prepare_task(loaded.tokenizer, "xquad", "en", qa_fixture("en"), max_length=64, max_new_tokens=5)
    records = predict(loaded, prepared, batch_size=2)
    assert [r["id"] for r in records] == [e.id for e in qa_fixture("en")]
    expected = squad_scores([r["prediction"] for r in records], [r["answers"] for r in records])
    assert [(r["exact_match"], r["f1"]) for r in records] == expected
    # the prediction is the generated text up to the first newline / EOS, special tokens removed
    stop = StopRule(loaded.tokenizer, {2})
    for record, tokens in zip(records, greedy_generate_naive(loaded.model, prepared.prompts, stop, 5)):
        text = loaded.tokenizer.decode([t for t in tokens if t != 2], skip_special_tokens=True)
        assert record["prediction"] == text.split("\n")[0].strip()
        assert record["generated"] == loaded.tokenizer.decode(tokens)


def test_xnli_prediction_is_the_argmax_label_word_at_the_last_prompt_token():
    loaded = loaded_tiny()
    examples = nli_fixture("en")
    prepared = prepare_task(loaded.tokenizer, "xnli", "en", examples)
    records = predict(loaded, prepared, batch_size=4)  # left-padded batches of unequal lengths
    label_ids = [313, 223, 269]  # first tokens of " entailment", " neutral", " contradiction"
    assert label_ids == [loaded.tokenizer(" " + w)["input_ids"][0] for w in ("entailment", "neutral", "contradiction")]
    for example, prompt, record in zip(examples, prepared.prompts, records):
        with torch.no_grad():
            logits = loaded.model(input_ids=torch.tensor([prompt])).logits[0, -1, label_ids]
        assert record["id"] == example.id and record["gold"] == example.label
        assert record["prediction"] == int(logits.argmax())
        assert record["correct"] == (record["prediction"] == example.label)
        torch.testing.assert_close(torch.tensor(record["label_logits"]), logits, atol=1e-4, rtol=0)


def test_prompts_that_cannot_fit_are_listed_as_skipped_never_silently_dropped():
    loaded = loaded_tiny()
    examples = nli_fixture("en")
    long = NLIExample("en-long", "the cat", " ".join(["mat"] * 80), 0)  # the hypothesis is never cut
    longest = max(len(p) for p in prepare_task(loaded.tokenizer, "xnli", "en", examples).prompts)
    prepared = prepare_task(loaded.tokenizer, "xnli", "en", examples + [long], max_length=longest)
    assert prepared.skipped == ["en-long"] and prepared.ids == [e.id for e in examples]


# ---------------------------------------------------------------------------------- the grid


class CountingTokenizer:
    """Forwards everything to a tokenizer and counts encode calls."""

    def __init__(self, tokenizer):
        self._tokenizer, self.calls = tokenizer, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self._tokenizer(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def _grid(loaded, sets, actions):
    tasks = {"xnli": {l: nli_fixture(l) for l in ("en", "fr")}, "xquad": {l: qa_fixture(l) for l in ("en", "fr")}}
    return evaluate_grid(loaded, tasks, neuron_sets=sets, actions=actions, max_length=120, max_new_tokens=4,
                         n_resamples=200, batch_size=4, progress=False)


def test_grid_tokenises_each_task_and_language_once_whatever_the_number_of_cells():
    loaded = loaded_tiny()
    counting = CountingTokenizer(loaded.tokenizer)
    loaded.tokenizer = counting
    _grid(loaded, {}, ())
    baseline_calls = counting.calls
    counting.calls = 0
    result = _grid(loaded, neuron_sets(loaded), ("zero", "scale=2"))
    assert counting.calls == baseline_calls > 0  # 5 conditions instead of 1, not one encode more
    assert len({(r["task"], r["language"], r["condition"]) for r in result.rows}) == 2 * 2 * 5


def test_grid_gives_one_row_per_cell_and_metric_with_ci_delta_and_p_value(tmp_path):
    loaded = loaded_tiny()
    result = _grid(loaded, neuron_sets(loaded), ("zero",))
    conditions = ["baseline", "all:zero", "few:zero"]
    assert len(result.rows) == 2 * len(conditions) * (1 + 2)  # languages x conditions x (accuracy + EM + F1)
    for row in result.rows:
        assert set(row) == set(ROW_FIELDS)
        enough = row["n"] >= MIN_RESAMPLING_UNITS
        if enough:
            assert row["ci_low"] <= row["score"] <= row["ci_high"]
        else:  # too few examples for a bootstrap: no interval
            assert row["ci_low"] is None and row["ci_high"] is None
        if row["condition"] == "baseline":
            assert row["delta"] is None and row["p_value"] is None
        else:
            # 0/100 metrics (accuracy, exact match; F1 when every example scores 0 or 100): McNemar and
            # Tango's interval; F1 otherwise: the paired bootstrap
            if row["metric"] in ("accuracy", "exact_match"):
                assert row["test"] == ACCURACY_TEST
            else:
                assert row["test"] in (ACCURACY_TEST, "paired bootstrap",
                                       "paired bootstrap (constant differences: Wilson bound)")
            if enough:
                assert 0.0 <= row["p_value"] <= 1.0 and row["delta_ci_low"] <= row["delta"] <= row["delta_ci_high"]
            else:  # McNemar is exact at any n; a bootstrap p-value needs the units
                assert row["delta_ci_low"] is None and row["delta_ci_high"] is None
                assert (row["p_value"] is not None) == (row["test"] == ACCURACY_TEST)
    # zeroing every neuron changes what the model computes; fr has no "few" neurons: exactly the baseline
    def outcomes(language, condition="baseline"):
        return [r["label_logits"] for r in result.records("xnli", language, condition)]

    assert outcomes("en", "all:zero") != outcomes("en")
    assert outcomes("fr", "few:zero") == outcomes("fr")
    few_fr = [r for r in result.rows if r["condition"] == "few:zero" and r["language"] == "fr"]
    assert all(r["neurons"] == 0 and r["delta"] == 0.0 for r in few_fr)
    assert {r["neurons"] for r in result.rows if r["condition"] == "all:zero"} == {2 * 48}
    # a score is the mean of the per-example values in the predictions file
    files = result.write(tmp_path)
    lines = [json.loads(line) for line in files["predictions"].read_text().splitlines()]
    for row in result.rows:
        cell = (row["task"], row["language"], row["condition"])
        records = [p for p in lines if (p["task"], p["language"], p["condition"]) == cell]
        values = [100.0 * p["correct"] if row["metric"] == "accuracy" else p[row["metric"]] for p in records]
        assert row["n"] == len(records) and row["score"] == pytest.approx(sum(values) / len(values))
        assert all(p["id"] for p in records)
    assert GridResult.load(tmp_path).rows == json.loads(json.dumps(result.rows))


def test_the_same_intervention_gives_the_same_predictions_as_the_intervene_context():
    from langneurons.intervene import build_intervention, intervene

    loaded = loaded_tiny()
    sets = neuron_sets(loaded)
    result = _grid(loaded, {"few": sets["few"]}, ("zero",))
    prepared = prepare_task(loaded.tokenizer, "xquad", "en", qa_fixture("en"), max_length=120, max_new_tokens=4)
    intervention = build_intervention("zero", sets["few"].indices("en"), 2, 48)
    with intervene(loaded, intervention):
        expected = greedy_generate_naive(loaded.model, prepared.prompts, StopRule(loaded.tokenizer, {2}), 4)
    got = result.records("xquad", "en", "few:zero")
    assert [r["generated"] for r in got] == [loaded.tokenizer.decode(tokens) for tokens in expected]


def test_unknown_language_of_a_neuron_set_is_a_clear_error():
    loaded = loaded_tiny()
    sets = neuron_sets(loaded)
    with pytest.raises(LangNeuronsError, match="no neurons for evaluation language 'hi'"):
        evaluate_grid(loaded, {"xnli": {"hi": nli_fixture("en")}}, neuron_sets=sets, progress=False)


def test_neuron_sets_of_another_model_are_refused():
    loaded = loaded_tiny()
    other = loaded_tiny(seed=1)
    with pytest.raises(LangNeuronsError, match="was identified on"):
        evaluate_grid(loaded, {"xnli": {"en": nli_fixture("en")}}, neuron_sets=neuron_sets(other), progress=False)


def test_comparison_pairs_examples_by_id_and_uses_mcnemar_for_accuracy():
    reference = [{"id": i, "correct": c} for i, c in zip("abcd", [True, True, False, False])]
    other = [{"id": i, "correct": c} for i, c in zip("dcba", [True, True, False, True])]  # b wrong, c and d right
    result = compare_records("xnli", reference, other, n_resamples=200)["accuracy"]
    assert result["delta"] == pytest.approx(25.0) and result["test"] == ACCURACY_TEST
    assert result["p_value"] == pytest.approx(1.0)  # 2 vs 1 discordant pairs
    with pytest.raises(LangNeuronsError, match="different examples"):
        compare_records("xnli", reference, other[:3])
