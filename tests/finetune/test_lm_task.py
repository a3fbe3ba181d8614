"""The language-modelling task: one language's held-out text, packed, loss on every token but BOS."""

import json

import pytest

from langneurons.corpus.packing import split_documents
from langneurons.errors import LangNeuronsError
from langneurons.finetune.api import TrainingData, finetune_task
from langneurons.tasks.prompts import IGNORE_INDEX
from langneurons.finetune.lm_task import LMText, encode_lm, lm_blocks, lm_split
from langneurons.finetune.train import FinetuneConfig, load_finetuned

HI = [f"बिल्ली {i} चटाई पर है और कुत्ता {i} सोता है" for i in range(20)]
EN = [f"the cat {i} sat on the mat and the dog {i} slept" for i in range(20)]
FR = [f"le chat {i} est sur le tapis et le chien {i} dort" for i in range(20)]


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for language, lines in (("hi", HI), ("en", EN), ("fr", FR)):
        (folder / f"{language}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_blocks_are_packed_and_every_token_but_bos_is_a_target(make_loaded):
    tokenizer = make_loaded().tokenizer
    data = encode_lm(tokenizer, HI[:6], 16, "hi")
    blocks = lm_blocks(tokenizer, HI[:6], "hi", 16)
    assert len(data.examples) == blocks.num_blocks > 1
    for example, ids in zip(data.examples, blocks.input_ids.tolist()):
        assert list(example.input_ids) == ids and len(ids) == 16  # packed: no padding
        expected = [IGNORE_INDEX if t == tokenizer.bos_token_id else t for t in ids]
        assert list(example.labels) == expected and example.labels[0] == IGNORE_INDEX
        assert example.target_count == sum(t != tokenizer.bos_token_id for t in ids)


def test_split_parts_are_disjoint_and_the_heldout_source_never_holds_identification_text(tmp_path, corpus):
    parts = lm_split(LMText(str(corpus), "hi", eval_fraction=0.2, dev_fraction=0.1))
    assert sorted(sum(parts.values(), [])) == sorted(HI)
    assert (len(parts["eval"]), len(parts["dev"]), len(parts["train"])) == (4, 2, 14)
    assert lm_split(LMText(str(corpus), "hi")) == parts  # seeded
    statistics = tmp_path / "statistics"
    statistics.mkdir()
    options = {"corpus": str(corpus), "heldout_fraction": 0.5, "seed": 3, "max_documents": None}
    (statistics / "manifest.json").write_text(json.dumps({"options": options}))
    identification, heldout = split_documents(HI, 0.5, 3)
    parts = lm_split(LMText(str(statistics), "hi", eval_fraction=0.3, dev_fraction=0.0))
    assert sorted(parts["train"] + parts["eval"]) == sorted(heldout) and not parts["dev"]
    assert not set(identification) & set(parts["train"] + parts["eval"])
    assert lm_split(LMText("heldout", "hi", 0.3, 0.0), options) == parts
    with pytest.raises(LangNeuronsError, match="statistics pass"):
        lm_split(LMText("heldout", "hi"))


def test_lm_task_trains_only_on_the_given_languages_training_text(tmp_path, corpus, make_loaded, monkeypatch):
    import langneurons.finetune.train as train

    seen: list[list[int]] = []
    real = train.collate

    def spy(examples, pad, *args, **kwargs):
        batch = real(examples, pad, *args, **kwargs)
        seen.extend(batch["input_ids"].tolist())
        return batch

    monkeypatch.setattr(train, "collate", spy)
    loaded = make_loaded("llama")
    spec = TrainingData(task="lm", language="hi", data=str(corpus))
    config = FinetuneConfig("lm", max_steps=4, batch_size=2, lora_r=4, max_length=16, learning_rate=1e-2,
                            eval_every=2)
    result = finetune_task(loaded, spec, config, tmp_path / "run", progress=False)
    parts = lm_split(spec.lm_text())
    allowed = lm_blocks(loaded.tokenizer, parts["train"], "hi", 16).input_ids.tolist()
    assert seen and all(row in allowed for row in seen)  # every trained row is a block of hi training text
    import re

    for row in seen:  # Hindi text only: no Latin letter in any trained block
        text = loaded.tokenizer.decode(row, skip_special_tokens=True)
        assert re.search("[\u0900-\u097F]", text)  # Devanagari
        assert not re.search("[A-Za-z]", text), text
    assert result.metadata["curve"][0]["dev_metric"] == "perplexity"  # dev: the hi dev part

    record = json.loads((tmp_path / "run" / "perplexity.json").read_text())
    from langneurons.intervene.perplexity import perplexity

    blocks = lm_blocks(loaded.tokenizer, parts["eval"], "hi", 16)
    assert record["base"]["perplexity"] == pytest.approx(perplexity(make_loaded("llama"), blocks, progress=False)
                                                         .perplexity)
    tuned = load_finetuned(tmp_path / "run", base=make_loaded("llama"))
    assert record["tuned"]["perplexity"] == pytest.approx(perplexity(tuned, blocks, progress=False).perplexity)
    assert record["tuned"]["perplexity"] != record["base"]["perplexity"]


def test_rows_adapter_on_the_lm_task_with_early_stopping(tmp_path, corpus, make_loaded, make_neuron_set):
    loaded = make_loaded("llama")
    path = tmp_path / "set.safetensors"
    make_neuron_set(loaded).save(path)
    config = FinetuneConfig("lm", adapter="rows", neurons="languages", languages=("en",),
                            mlp_targets=("gate", "up", "down"), max_steps=6, batch_size=2, max_length=16,
                            learning_rate=1e-2, eval_every=1, patience=2, neuron_set_path=str(path))
    result = finetune_task(loaded, TrainingData(task="lm", language="hi", data=str(corpus)), config,
                           tmp_path / "run", neuron_set_path=path, progress=False)
    stop = result.metadata["early_stopping"]
    curve = result.metadata["curve"]
    best = min(curve, key=lambda p: p["dev_score"])
    assert stop["best_step"] == best["step"] and stop["metric"] == "perplexity"
    assert result.metadata["adapter"] == "rows" and stop["stopped_step"] <= 6
    assert load_finetuned(tmp_path / "run", base=make_loaded("llama")).info.model_id.endswith("+rows:run")


def test_perplexity_change_is_the_token_weighted_nll_difference_with_a_block_bootstrap():
    import math

    from langneurons.finetune.lm_task import perplexity_change

    before = {"block_nll": [2.0, 6.0], "block_tokens": [1, 3]}
    after = {"block_nll": [1.0, 3.0], "block_tokens": [1, 3]}
    change = perplexity_change(before, after, n_resamples=200)
    assert change["delta_nll"] == pytest.approx((4.0 - 8.0) / 4.0)  # -1 nat per token
    assert change["ratio"] == pytest.approx(math.exp(-1.0)) and change["tokens"] == 4
    # resamples: {block 1 twice} -> -1, {block 2 twice} -> -1, one of each -> -1: the interval is a point
    assert (change["ci_low"], change["ci_high"]) == pytest.approx((-1.0, -1.0))
    uneven = perplexity_change(before, {"block_nll": [2.0, 3.0], "block_tokens": [1, 3]}, n_resamples=400)
    assert uneven["delta_nll"] == pytest.approx(-3.0 / 4.0)
    assert uneven["ci_low"] == pytest.approx(-1.0) and uneven["ci_high"] == pytest.approx(0.0)  # -3/3 .. 0/1
    with pytest.raises(LangNeuronsError, match="same blocks"):
        perplexity_change(before, {"block_nll": [1.0], "block_tokens": [4]})
