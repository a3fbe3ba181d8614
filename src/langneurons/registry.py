"""The studies of an experiment, in the order the runner computes them: one line per study.

Each entry is the :class:`langneurons.stage.Stage` that the study's package declares in its
``stage.py`` (config section, cached run, figures, report section, published files). The runner
(:mod:`langneurons.runner.run`), the report (:mod:`langneurons.report.report`) and ``publish``
(:mod:`langneurons.report.publish`) loop over :data:`STAGES`; docs/stages.md says how to add one.
"""

from __future__ import annotations

from langneurons.activations.stage import STATISTICS
from langneurons.directions.stage import DIRECTION_PPXC, DIRECTION_SETS
from langneurons.evaluate.stage import EVALUATION
from langneurons.finetune.stage import FINETUNE, LM_PERPLEXITY
from langneurons.harness.stage import LM_EVAL
from langneurons.identify.stage import AGREEMENT, IDENTIFY, STABILITY
from langneurons.intervene.stage import PPXC
from langneurons.report.claims_stage import CLAIMS
from langneurons.stage import Stage
from langneurons.steer.stage import STEERING

STAGES: tuple[Stage, ...] = (
    STATISTICS,
    IDENTIFY,
    DIRECTION_SETS,
    STABILITY,
    AGREEMENT,
    PPXC,
    DIRECTION_PPXC,
    STEERING,
    FINETUNE,
    EVALUATION,
    LM_EVAL,
    LM_PERPLEXITY,
    CLAIMS,
)


def report_order() -> list[Stage]:
    """The stages with a report section, in the report's order (``report_first`` ones first)."""
    with_section = [stage for stage in STAGES if stage.report is not None]
    return [stage for stage in with_section if stage.report_first] + [
        stage for stage in with_section if not stage.report_first]


def published_patterns() -> tuple[str, ...]:
    """Glob patterns (relative to a run directory) of the files a published result keeps: the
    config, manifest and report, then each stage's ``published`` patterns."""
    from langneurons.provenance import MANIFEST

    return ("config.yaml", MANIFEST, "report/report.md") + tuple(
        pattern for stage in STAGES for pattern in stage.published)
