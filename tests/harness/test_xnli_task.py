"""The harness copy of langneurons' XNLI evaluation predicts what langneurons predicts, example by example."""

import pytest
import torch

from langneurons.evaluate.evaluation import predict_xnli, prepare_task
from langneurons.tasks.xnli import NLIExample

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.tasks import TaskManager  # noqa: E402

from langneurons.harness.backend import LangNeuronsLM  # noqa: E402
from langneurons.harness.xnli_task import verbaliser_choices, write_xnli_tasks  # noqa: E402

PAIRS = [("the cat sat on the mat", "the cat sat"), ("le chat est sur le tapis", "le chat"),
         ("el gato está en la alfombra", "the mat sat on the cat"), ("the mat is red", "a cat")]


def test_harness_predictions_equal_langneurons_predictions(tmp_path, model_dir):
    examples = [NLIExample(f"en-{i}", p, h, i % 3) for i, (p, h) in enumerate(PAIRS * 3)]
    lm = LangNeuronsLM(model=str(model_dir), device="cpu", batch_size=4)
    tasks = write_xnli_tasks(tmp_path / "tasks", lm.loaded.tokenizer, {"en": examples}, max_length=120)
    assert tasks == {"en": "langneurons_xnli_en"} and len(verbaliser_choices(lm.loaded.tokenizer)) == 3

    own = predict_xnli(lm.loaded, prepare_task(lm.loaded.tokenizer, "xnli", "en", examples, max_length=120))
    out = lm_eval.simple_evaluate(model=lm, tasks=[tasks["en"]], task_manager=TaskManager(include_path=str(tmp_path / "tasks")),
                                  log_samples=True, bootstrap_iters=0)
    samples = sorted(out["samples"][tasks["en"]], key=lambda s: s["doc_id"])
    harness = [int(torch.tensor([ll for ll, _ in s["filtered_resps"]]).argmax()) for s in samples]
    assert harness == [record["prediction"] for record in own]
    assert out["results"][tasks["en"]]["acc,none"] == pytest.approx(sum(r["correct"] for r in own) / len(own))
