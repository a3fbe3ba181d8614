"""Evaluation tasks: XNLI (classification) and XQuAD (extractive QA) data loading."""

from langneurons.tasks.xnli import (
    LABELS,
    NLIExample,
    balanced_indices,
    check_label_coverage,
    load_xnli,
    sample_indices,
    subsample,
)
from langneurons.tasks.xquad import (
    QAExample,
    article_split,
    count_span_mismatches,
    load_xquad,
    parse_squad,
    split_by_article,
)

__all__ = [
    "LABELS",
    "NLIExample",
    "QAExample",
    "article_split",
    "balanced_indices",
    "check_label_coverage",
    "count_span_mismatches",
    "load_xnli",
    "load_xquad",
    "parse_squad",
    "sample_indices",
    "split_by_article",
    "subsample",
]
