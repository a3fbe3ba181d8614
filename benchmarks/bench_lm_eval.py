"""The harness backend with an empty intervention vs the harness's plain Hugging Face backend.

Both evaluate the same local multiple-choice task (documents cut from the suite's token blocks,
three choices each) on the same loaded model through ``lm_eval.simple_evaluate``; the candidate
is :class:`langneurons.harness.backend.LangNeuronsLM` without intervention, the baseline
``HFLM`` given the same model object. The ratio is the backend's overhead (target <= 1.05); the
run also checks that both give the same log-likelihoods.

Needs the extra ``langneurons[lm-eval]``. Run: ``python -m benchmarks.bench_lm_eval --model tiny``.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import BenchResult, compare
from langneurons.models.loading import LoadedModel

_TASK = """task: bench_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{text}}}}"
doc_to_choice: ["yes", "no", "maybe"]
doc_to_target: label
metric_list:
  - metric: acc
"""


def _write_task(folder: Path, loaded: LoadedModel, input_ids: torch.Tensor, chunk: int = 32) -> None:
    rows = [piece for row in input_ids.cpu() for piece in row.split(chunk) if len(piece) == chunk]
    docs = [{"text": loaded.tokenizer.decode(piece.tolist(), skip_special_tokens=True), "label": i % 3}
            for i, piece in enumerate(rows)]
    (folder / "data.jsonl").write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs),
                                       encoding="utf-8")
    (folder / "bench.yaml").write_text(_TASK.format(data=folder / "data.jsonl"), encoding="utf-8")


def run(loaded: LoadedModel, input_ids: torch.Tensor, repeats: int = 5, batch_size: int = 4) -> list[BenchResult]:
    from langneurons.harness import register, require_lm_eval

    lm_eval = require_lm_eval()
    register()
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from langneurons.harness.backend import LangNeuronsLM

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _write_task(folder, loaded, input_ids)
        manager = TaskManager(include_path=str(folder))
        plain = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, backend="causal", batch_size=batch_size)
        ours = LangNeuronsLM(loaded=loaded, batch_size=batch_size)

        def evaluate(lm):
            out = lm_eval.simple_evaluate(model=lm, tasks=["bench_mc"], task_manager=manager, log_samples=True,
                                          bootstrap_iters=0, verbosity="ERROR")
            return [s["filtered_resps"] for s in sorted(out["samples"]["bench_mc"], key=lambda s: s["doc_id"])]

        same = evaluate(plain) == evaluate(ours)
        result = compare("lm-eval backend, empty intervention", "harness hf backend (HFLM)", lambda: evaluate(plain),
                         "langneurons backend", lambda: evaluate(ours), repeats=repeats, target="<= 1.05")
        result.extra |= {"identical_loglikelihoods": float(same), "documents": len(evaluate(ours))}
    return [result]


if __name__ == "__main__":
    from benchmarks.run import main

    main(["--only", "lm_eval", *sys.argv[1:]])
