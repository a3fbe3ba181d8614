"""Evaluation: task metrics (percent), bootstrap confidence intervals and paired tests."""

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
)

__all__ = [
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
]
