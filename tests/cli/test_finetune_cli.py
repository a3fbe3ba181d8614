"""``langneurons finetune`` with the rows adapter, the LM task and a learning-rate search."""

import json


def test_rows_adapter_on_the_lm_task_from_a_corpus_folder(workspace, langneurons, tmp_path):
    out = tmp_path / "rows"
    result = langneurons("finetune", "--model", workspace / "model", "--task", "lm", "--data", workspace / "corpus",
                         "-l", "fr", "--adapter", "rows", "--neurons", "all", "--mlp-targets", "gate,up,down",
                         "--max-length", "16", "--max-steps", "2", "--batch-size", "2", "--eval-every", "1",
                         "--learning-rates", "1e-4,1e-2", "--lr-search-steps", "1", "-o", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    metadata = json.loads((out / "langneurons_finetune.json").read_text())
    assert (metadata["task"], metadata["adapter"]) == ("lm", "rows")
    assert metadata["lr_search"]["candidates"] == [1e-4, 1e-2] and "learning rate" in result.stdout
    record = json.loads((out / "perplexity.json").read_text())
    assert record["language"] == "fr" and record["tuned"]["perplexity"] > 0 and record["base"]["perplexity"] > 0


def test_bad_finetune_options_are_one_line_errors_before_loading(langneurons, tmp_path):
    for args, message in ((["--task", "lm", "-l", "fr,en"], "one language's text"),
                          (["--task", "xnli", "--adapter", "rows"], "adapter 'rows'"),
                          (["--task", "xnli", "--learning-rates", "1e-3"], "lr_search_steps"),
                          (["--task", "xnli", "--patience", "2"], "eval_every")):
        result = langneurons("finetune", *args, "-o", tmp_path / "x", "--model", tmp_path / "missing")
        assert result.returncode == 1 and message in result.stderr and len(result.stderr.splitlines()) == 1
