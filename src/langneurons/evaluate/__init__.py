"""Evaluation: the grid {model} x {neuron set x intervention} x {language} (:func:`evaluate_grid`),
task metrics (percent), bootstrap confidence intervals and paired tests."""

from langneurons.evaluate.evaluation import GridResult, PreparedTask, evaluate_grid, predict, prepare_task

from langneurons.evaluate.metrics import (
    PairedComparison,
    ScoreSummary,
    accuracy,
    bootstrap_ci,
    compare_accuracy,
    correctness,
    mcnemar,
    paired_bootstrap,
    squad_scores,
    summarize,
    wilson_interval,
)

__all__ = [
    "GridResult",
    "PreparedTask",
    "evaluate_grid",
    "predict",
    "prepare_task",
    "PairedComparison",
    "ScoreSummary",
    "accuracy",
    "bootstrap_ci",
    "compare_accuracy",
    "correctness",
    "mcnemar",
    "paired_bootstrap",
    "squad_scores",
    "summarize",
    "wilson_interval",
]
