"""EleutherAI's lm-evaluation-harness with langneurons models, adapters and interventions.

* :mod:`.backend`: ``LangNeuronsLM``, the harness's Hugging Face backend (``HFLM``) loading the
  model the langneurons way and applying an intervention inside every request; registered in
  the harness as ``--model langneurons``.
* :mod:`.api`: :func:`~langneurons.harness.api.run_lm_eval`, harness tasks for a grid of
  conditions (baseline, interventions, random controls) with paired tests against the baseline.
* ``python -m langneurons.harness ...``: the harness's own command line with the backend registered
  (lm-eval 0.4.13 has no plugin discovery for third-party models).

The harness is the optional extra ``langneurons[lm-eval]``; :func:`require_lm_eval` turns its
absence into a one-line error.
"""

from __future__ import annotations

from langneurons.errors import LangNeuronsError

MODEL_NAME = "langneurons"
EXTRA_HINT = "pip install 'langneurons[lm-eval]'"


def require_lm_eval():
    """The imported ``lm_eval`` package, or LangNeuronsError naming the extra to install."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM  # noqa: F401
    except ImportError as error:
        raise LangNeuronsError(f"the lm-eval integration needs lm-evaluation-harness ({EXTRA_HINT}): {error}") from None
    return lm_eval


def register() -> type:
    """Register ``LangNeuronsLM`` in the harness as ``langneurons`` (idempotent); return the class."""
    require_lm_eval()
    from langneurons.harness.backend import LangNeuronsLM

    return LangNeuronsLM
