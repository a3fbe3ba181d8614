"""Evaluation: the grid {model} x {neuron set x intervention} x {language} (:func:`evaluate_grid`),
task metrics (percent), bootstrap confidence intervals and paired tests."""

from langneurons.evaluate.evaluation import GridResult, PreparedTask, evaluate_grid, predict, prepare_task

from langneurons.evaluate.metrics import (
    MIN_RESAMPLING_UNITS,
    TOO_FEW_UNITS,
    PairedComparison,
    ScoreSummary,
    accuracy,
    bootstrap_ci,
    compare_accuracy,
    correctness,
    enough_units,
    mcnemar,
    paired_bootstrap,
    resampling_interval,
    squad_scores,
    summarize,
    unavailable,
    wilson_interval,
)

__all__ = [
    "MIN_RESAMPLING_UNITS",
    "TOO_FEW_UNITS",
    "enough_units",
    "resampling_interval",
    "unavailable",
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
