"""Learning-rate choice and early stopping: decided on the dev split only, recorded in the metadata."""

from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from langneurons.errors import LangNeuronsError
from langneurons.finetune.dev import label_cross_entropy
from langneurons.finetune.selection import LR_SEARCH_DIR, EarlyStopping, choose_candidate
from langneurons.finetune.train import FinetuneConfig, finetune
from langneurons.identify.neuron_set import NeuronSet
from langneurons.tasks import NLIExample

BASE = dict(neurons="all", batch_size=3, lora_r=4, lora_dropout=0.0, warmup_ratio=0.0)


def _dev(count=6):
    pairs = [("the mat", "a cat"), ("le tapis", "un chat"), ("el gato", "the cat")]
    return [NLIExample(f"dev{i}", *pairs[i % 3], label=(i + 1) % 3) for i in range(count)]


def test_each_candidate_is_a_short_run_scored_on_dev_and_the_best_is_trained(tmp_path, make_loaded, nli_data):
    train, dev = nli_data(6), _dev()
    config = FinetuneConfig("xnli", max_steps=4, learning_rate=1.0, learning_rates=(1e-5, 3e-2), lr_search_steps=2,
                            **BASE)
    result = finetune(make_loaded("llama"), train, config, tmp_path / "run", progress=False, dev_examples=dev)
    search = result.metadata["lr_search"]
    assert search["candidates"] == [1e-5, 3e-2] and search["steps"] == 2 and search["dev_n"] == 6
    # every candidate's score is that of an independent 2-step run at that rate, scored on dev
    for rate, score in zip(search["candidates"], search["dev_scores"]):
        alone = finetune(make_loaded("llama"), train, replace(config, learning_rate=rate, learning_rates=(),
                                                              lr_search_steps=0, max_steps=2, eval_every=2),
                         tmp_path / f"alone-{rate}", progress=False, dev_examples=dev)
        assert alone.metadata["curve"][-1]["dev_score"] == pytest.approx(score)
        assert alone.metadata["curve"][0]["dev_score"] == pytest.approx(search["dev_before"])
        assert alone.metadata["curve"][-1]["dev_loss"] == pytest.approx(search["dev_losses"][search["candidates"].index(rate)])
    best = min(range(2), key=lambda i: (-search["dev_scores"][i], search["dev_losses"][i], i))
    assert search["chosen"] == search["candidates"][best] and search["selection"] == "score"
    assert result.metadata["config"]["learning_rate"] == search["chosen"]
    assert not (tmp_path / "run" / LR_SEARCH_DIR).exists()  # sub-runs removed, their scores kept
    # the main run is the plain run at the chosen rate
    plain = finetune(make_loaded("llama"), train, replace(config, learning_rate=search["chosen"], learning_rates=(),
                                                          lr_search_steps=0), tmp_path / "plain", progress=False)
    trained, reference = (load_file(str(p / "adapter_model.safetensors")) for p in (tmp_path / "run", tmp_path / "plain"))
    assert all(torch.equal(trained[k], reference[k]) for k in reference)


def test_the_search_needs_a_dev_split_disjoint_from_training(tmp_path, make_loaded, nli_data):
    config = FinetuneConfig("xnli", max_steps=2, learning_rates=(1e-3,), lr_search_steps=1, **BASE)
    with pytest.raises(LangNeuronsError, match="development examples"):
        finetune(make_loaded("llama"), nli_data(6), config, tmp_path / "a", progress=False)
    with pytest.raises(LangNeuronsError, match="also training examples"):
        finetune(make_loaded("llama"), nli_data(6), config, tmp_path / "b", progress=False, dev_examples=nli_data(2))
    stopping = FinetuneConfig("xnli", max_steps=2, eval_every=1, patience=1, **BASE)
    with pytest.raises(LangNeuronsError, match="development examples"):
        finetune(make_loaded("llama"), nli_data(6), stopping, tmp_path / "c", progress=False)
    with pytest.raises(LangNeuronsError, match="lr_search_steps"):
        FinetuneConfig("xnli", learning_rates=(1e-3,)).resolved()
    with pytest.raises(LangNeuronsError, match="eval_every"):
        FinetuneConfig("xnli", patience=2).resolved()


def test_early_stopping_counts_evaluations_without_improvement_and_keeps_the_best():
    parameters = {"w": torch.zeros(2)}
    stopper = EarlyStopping(patience=2)
    assert not stopper.update(0, 50.0, "accuracy", parameters)
    parameters["w"] += 1
    assert not stopper.update(2, 60.0, "accuracy", parameters)  # better: best = step 2, w = 1
    parameters["w"] += 1
    assert not stopper.update(4, 60.0, "accuracy", parameters)  # equal is not better: 1 bad
    parameters["w"] += 1
    assert stopper.update(6, 55.0, "accuracy", parameters)  # 2 bad in a row: stop
    assert stopper.restore(parameters) and torch.equal(parameters["w"], torch.ones(2))
    assert (stopper.best_step, stopper.best_score) == (2, 60.0)
    lower = EarlyStopping(patience=1)
    lower.update(0, 30.0, "perplexity", parameters)
    assert not lower.update(1, 20.0, "perplexity", parameters) and lower.best_step == 1  # perplexity: lower wins


def test_early_stopped_run_saves_the_best_evaluated_adapter_and_records_where_it_stopped(
        tmp_path, make_loaded, nli_data, monkeypatch):
    import langneurons.finetune.train as train

    scores = iter([40.0, 50.0, 45.0, 44.0, 99.0, 99.0])  # dev scores at steps 0, 1, 2, 3 (then never asked)
    snapshots = {}
    def scripted(loaded, model, config, dev, language):
        def score():
            step = len(snapshots)
            snapshots[step] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            return {"dev_metric": "accuracy", "dev_score": next(scores), "dev_n": len(dev)}
        return score

    monkeypatch.setattr(train, "dev_scorer", scripted)
    config = FinetuneConfig("xnli", max_steps=8, learning_rate=1e-2, eval_every=1, patience=2, save_every=0, **BASE)
    result = finetune(make_loaded("llama"), nli_data(6), config, tmp_path, progress=False, dev_examples=_dev())
    stop = result.metadata["early_stopping"]
    assert (stop["best_step"], stop["stopped_step"], stop["stopped_early"]) == (1, 3, True)
    assert result.step == 3 and [p["step"] for p in result.metadata["curve"]] == [0, 1, 2, 3]
    saved = load_file(str(tmp_path / "adapter_model.safetensors"))
    best = {name.replace(".default", ""): value for name, value in snapshots[1].items()}  # PEFT saves without it
    assert set(saved) == set(best)
    assert all(torch.equal(saved[name], best[name]) for name in saved)
    assert not all(torch.equal(saved[name], snapshots[3][name.replace(".weight", ".default.weight")])
                   for name in saved)  # not the last parameters


@pytest.mark.parametrize("metric, expected", [("accuracy", 3e-3), ("perplexity", 1e-1)])
def test_the_chosen_rate_is_the_best_dev_score_in_the_metric_direction(
        metric, expected, tmp_path, make_loaded, nli_data, monkeypatch):
    import math

    import langneurons.finetune.train as train

    def scripted(loaded, model, config, dev, language):  # dev score peaks at lr 3e-3 (distance in decades)
        if not config.eval_every:
            return None
        return lambda: {"dev_metric": metric, "dev_n": len(dev),
                        "dev_score": 50.0 - abs(math.log10(config.learning_rate) - math.log10(3e-3))}

    monkeypatch.setattr(train, "dev_scorer", scripted)
    config = FinetuneConfig("xnli", max_steps=1, learning_rates=(1e-4, 3e-3, 1e-1), lr_search_steps=1, **BASE)
    result = finetune(make_loaded("llama"), nli_data(6), config, tmp_path, progress=False, dev_examples=_dev())
    assert result.metadata["lr_search"]["chosen"] == expected
    assert result.metadata["config"]["learning_rate"] == expected


def test_a_resumed_early_stopping_run_keeps_the_best_adapter_saved_before_the_interruption(
        tmp_path, make_loaded, nli_data, monkeypatch):
    import langneurons.finetune.train as train

    scores = {0: 10.0, 1: 20.0, 2: 15.0, 3: 30.0, 4: 25.0, 5: 24.0, 6: 50.0}  # best at 3; 2 worse after it: stop at 5
    first_step = {"value": 0}

    def scripted(loaded, model, config, dev, language):
        steps = iter(range(first_step["value"], 100))
        return lambda: {"dev_metric": "accuracy", "dev_score": scores[next(steps)], "dev_n": len(dev)}

    class Interrupted(Exception):
        pass

    def stop_at_4(step, loss):
        if step == 4:
            raise Interrupted

    monkeypatch.setattr(train, "dev_scorer", scripted)
    config = FinetuneConfig("xnli", max_steps=6, learning_rate=1e-2, eval_every=1, patience=2, save_every=1, **BASE)
    straight = finetune(make_loaded("llama"), nli_data(6), config, tmp_path / "straight", progress=False,
                        dev_examples=_dev())
    with pytest.raises(Interrupted):
        finetune(make_loaded("llama"), nli_data(6), config, tmp_path / "resumed", progress=False,
                 dev_examples=_dev(), on_step=stop_at_4)
    first_step["value"] = 5  # the resumed run evaluates from step 5 on
    resumed = finetune(make_loaded("llama"), nli_data(6), config, tmp_path / "resumed", progress=False,
                       dev_examples=_dev())
    for result in (straight, resumed):
        stop = result.metadata["early_stopping"]
        assert (stop["best_step"], stop["stopped_step"], stop["stopped_early"]) == (3, 5, True)
    a, b = (load_file(str(tmp_path / name / "adapter_model.safetensors")) for name in ("straight", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_each_seed_draws_a_fresh_layer_matched_random_set_recorded_in_the_metadata(
        tmp_path, make_loaded, make_neuron_set, qa_data):
    from langneurons.finetune.train import training_neurons

    loaded = make_loaded("llama")
    neuron_set = make_neuron_set(loaded)
    masks = [training_neurons(FinetuneConfig("xquad", neurons="random", languages=("en",), seed=seed).resolved(),
                              loaded.info, neuron_set)[0] for seed in (0, 1, 2)]
    language = neuron_set.mask("en")
    for mask in masks:
        assert torch.equal(mask.sum(1), language.sum(1))  # layer-matched, same size
    assert len({tuple(m.flatten().tolist()) for m in masks}) == 3  # a fresh set per seed
    config = FinetuneConfig("xquad", neurons="random", languages=("en",), seed=2, max_steps=1, batch_size=2, lora_r=2)
    result = finetune(loaded, qa_data(), config, tmp_path, neuron_set=neuron_set, progress=False)
    assert result.metadata["neurons"]["random_seed"] == 2
    saved = NeuronSet.load(tmp_path / "training_neurons.json")
    assert torch.equal(saved.mask(saved.languages[0]), masks[2])


def test_the_cli_dev_split_is_carved_from_the_training_data_outside_the_training_sample(monkeypatch):
    import langneurons.finetune.api as api
    import langneurons.tasks as tasks

    splits = []
    real = api.load_xnli

    def spy(source, language, split="test", *args, **kwargs):
        splits.append(split)
        return real(source, language, split, *args, **kwargs)

    monkeypatch.setattr(api, "load_xnli", spy)
    monkeypatch.setattr(tasks, "load_xnli", spy)
    spec = api.TrainingData("xnli", limit=4, dev_limit=3)
    train, dev = api.training_examples(spec), api.development_examples(spec)
    assert len(train) == 4 and len(dev) == 3 and not {e.id for e in train} & {e.id for e in dev}
    assert set(splits) == {"train"}  # never the test split
    assert api.development_examples(api.TrainingData("xnli", limit=4)) is None


def test_the_dev_loss_is_the_gold_labels_cross_entropy_over_the_three_verbaliser_logits():
    import math

    records = [{"gold": 0, "label_logits": [0.0, 0.0, 0.0]},           # uniform: log 3
               {"gold": 2, "label_logits": [0.0, math.log(2.0), 0.0]}]  # p(gold) = 1 / 4
    assert label_cross_entropy(records) == pytest.approx((math.log(3.0) + math.log(4.0)) / 2)


def test_tied_dev_scores_are_broken_by_the_lower_dev_loss_and_loss_selection_ranks_by_loss_alone():
    # the transfer run's search: 36.0 / 36.0 / 35.0 after 40 steps went to the first candidate by order
    assert choose_candidate([36.0, 36.0, 35.0], [1.09, 1.02, 0.95], "accuracy") == 1
    assert choose_candidate([36.0, 36.0, 35.0], [1.09, 1.02, 0.95], "accuracy", "loss") == 2
    assert choose_candidate([36.0, 36.0, 35.0], [None, None, None], "accuracy") == 0  # no loss: by order
    assert choose_candidate([36.0, 37.0], [0.5, 2.0], "accuracy") == 1  # a higher score wins whatever the loss
    assert choose_candidate([12.0, 9.0, 9.0], [2.5, 2.2, 2.1], "perplexity") == 2  # lower perplexity, then loss
    assert choose_candidate([40.0, 40.0], [1.0, 1.0], "accuracy", "loss") == 0  # equal losses: by order
    with pytest.raises(LangNeuronsError, match="dev loss"):
        choose_candidate([40.0, 41.0], [None, None], "f1", "loss")


def test_loss_selection_trains_the_candidate_with_the_lowest_dev_loss_and_refuses_xquad(
        tmp_path, make_loaded, nli_data):
    config = FinetuneConfig("xnli", max_steps=2, learning_rates=(1e-5, 3e-2), lr_search_steps=2,
                            lr_selection="loss", **BASE)
    result = finetune(make_loaded("llama"), nli_data(6), config, tmp_path, progress=False, dev_examples=_dev())
    search = result.metadata["lr_search"]
    assert search["selection"] == "loss" and len(search["dev_losses"]) == 2
    assert search["chosen"] == search["candidates"][min(range(2), key=lambda i: (search["dev_losses"][i], i))]
    assert result.metadata["config"]["learning_rate"] == search["chosen"]
    with pytest.raises(LangNeuronsError, match="XQuAD"):
        FinetuneConfig("xquad", learning_rates=(1e-3,), lr_search_steps=1, lr_selection="loss").resolved()
    with pytest.raises(LangNeuronsError, match="lr_selection"):
        FinetuneConfig("xnli", lr_selection="accuracy").resolved()


def test_lr_selection_enters_the_stage_cache_key_only_when_not_the_default():
    """Runs cached before the option existed keep their key (they resume, not retrain)."""
    from langneurons.finetune.stage import FinetuneRunConfig, run_inputs

    default = run_inputs(FinetuneRunConfig("a", options=FinetuneConfig("xnli", learning_rates=(1e-3,), lr_search_steps=5)))
    assert "lr_selection" not in default["options"] and default["options"]["lr_search_steps"] == 5
    by_loss = FinetuneConfig("xnli", learning_rates=(1e-3,), lr_search_steps=5, lr_selection="loss")
    assert run_inputs(FinetuneRunConfig("a", options=by_loss))["options"]["lr_selection"] == "loss"
