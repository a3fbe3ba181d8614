"""A tiny experiment: tiny random Llama + tiny tokenizer, hand-written corpus and task files."""

import json

import pytest

CORPUS = {
    "en": ["the cat sat on the mat", "a cat and a mat", "the mat is red", "the cat is on the mat today",
           "a red cat sat", "the dog and the cat", "on the mat sat a cat", "the cat saw the mat"],
    "fr": ["le chat est sur le tapis", "un chat et un tapis", "le tapis est rouge", "le chat dort sur le tapis",
           "un chat rouge", "le chien et le chat", "sur le tapis un chat", "le chat voit le tapis"],
    "hi": ["बिल्ली चटाई पर है", "चटाई पर बिल्ली", "बिल्ली है", "लाल चटाई", "बिल्ली और कुत्ता",
           "चटाई लाल है", "बिल्ली सोती है", "कुत्ता चटाई पर"],
}
NLI = {"en": [("the cat sat on the mat", "the cat sat"), ("the mat", "a cat"), ("a cat and a mat", "no cat")],
       "fr": [("le chat est sur le tapis", "le chat"), ("le tapis", "un chat"), ("un chat", "pas de chat")]}
QA = {"en": ("the cat sat on the mat", [("who sat", "the cat"), ("where", "the mat")]),
      "fr": ("le chat est sur le tapis", [("qui", "le chat"), ("où", "le tapis")])}


def write_fixtures(root):
    """Corpus folder, XNLI folder (test/<lang>.jsonl, train/en.jsonl), XQuAD folder."""
    (root / "corpus").mkdir()
    for language, lines in CORPUS.items():
        (root / "corpus" / f"{language}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for split in ("test", "train"):
        (root / "xnli" / split).mkdir(parents=True)
    for language, pairs in NLI.items():
        rows = [{"premise": p, "hypothesis": h, "label": i % 3} for i in range(6) for p, h in [pairs[i % 3]]]
        (root / "xnli" / "test" / f"{language}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    train = [{"premise": p, "hypothesis": h, "label": i % 3} for i in range(9) for p, h in [NLI["en"][i % 3]]]
    (root / "xnli" / "train" / "en.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (root / "xquad").mkdir()
    for language, (context, qas) in QA.items():
        articles = [{"title": f"a{a}", "paragraphs": [{"context": context, "qas": [
            {"id": f"q{a}-{i}", "question": q, "answers": [{"text": t, "answer_start": context.index(t)}]}
            for i, (q, t) in enumerate(qas)]}]} for a in range(2)]
        (root / "xquad" / f"xquad.{language}.json").write_text(json.dumps({"data": articles}, ensure_ascii=False))
    context, qas = QA["en"]
    train = {"data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": f"t-{i}", "question": q, "answers": [{"text": t, "answer_start": context.index(t)}]}
        for i, (q, t) in enumerate(qas)]}]}]}
    (root / "xquad" / "train.en.json").write_text(json.dumps(train))


def tiny_config(root) -> dict:
    quick = {"task": "xnli", "max_steps": 2, "batch_size": 3, "lora_r": 4, "learning_rate": 0.005,
             "lora_dropout": 0.0, "max_length": 120, "eval_every": 1}
    return {
        "name": "tiny",
        "model": "tiny-test",
        "languages": ["en", "fr", "hi"],
        "statistics": {"corpus": str(root / "corpus"), "token_budget": 160, "heldout_fraction": 0.25,
                       "heldout_budget": 48, "block_length": 16, "batch_size": 4},
        "identification": [{"name": "lape", "method": "lape", "top_rate": 0.05, "filter_rate": 0.5, "figures": False},
                           {"name": "act-prob", "method": "act-prob", "top_rate": 0.02, "figures": False},
                           {"name": "random", "method": "random", "like": "lape", "seed": 1, "figures": False}],
        "ppxc": {"neuron_sets": ["lape"], "languages": ["en", "fr"], "token_budget": 30, "batch_size": 4},
        "tasks": {"xnli": {"source": str(root / "xnli"), "max_length": 120, "train_limit": 6, "dev_limit": 3},
                  "xquad": {"source": str(root / "xquad"), "max_length": 120, "max_new_tokens": 3}},
        "finetune": {"defaults": quick, "runs": [
            {"name": "attention", "neurons": "none"},
            {"name": "lape-neurons", "neurons": "languages", "languages": ["fr"], "neuron_set": "lape"}]},
        "evaluation": {"languages": ["en", "fr"], "models": ["base", "attention", "lape-neurons"],
                       "neuron_sets": ["lape", "random"], "actions": ["zero"], "intervene_models": ["base"],
                       "batch_size": 4, "bootstrap_resamples": 100},
        "claims": {"bootstrap_resamples": 200, "related_pairs": []},
    }


class TinyLoader:
    """Model loader for ``model: tiny-test`` that counts how often it is asked to load."""

    def __init__(self, seed: int = 0):
        self.calls, self.seed = 0, seed

    def __call__(self, spec):
        from tiny import tiny_model, tiny_tokenizer

        from langneurons.models.loading import describe

        assert spec.name == "tiny-test"
        self.calls += 1
        loaded = describe(tiny_model("llama", seed=self.seed), model_id="tiny-test")
        loaded.tokenizer = tiny_tokenizer()
        return loaded


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(fixture root, config dict, run directory) of one finished tiny run; copy it before changing it."""
    from langneurons.runner.run import run_experiment

    root = tmp_path_factory.mktemp("tiny-experiment")
    write_fixtures(root)
    config = tiny_config(root)
    loader = TinyLoader()
    result = run_experiment(config, root / "run", loader=loader, progress=False)
    return root, config, root / "run", result, loader


@pytest.fixture
def make_config():
    """``make_config(root=Path('/data'))`` -> a fresh config dict of the tiny experiment."""
    from pathlib import Path

    return lambda root=Path("/data"): tiny_config(Path(root))


@pytest.fixture
def make_fixtures():
    """``make_fixtures(root)`` writes the tiny corpus and task files under ``root``."""
    return write_fixtures


@pytest.fixture
def make_loader():
    """``make_loader(seed=0)`` -> a counting :class:`TinyLoader`."""
    return TinyLoader
