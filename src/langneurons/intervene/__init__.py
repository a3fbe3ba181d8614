"""Test-time interventions on neuron sets, perplexity, and the perplexity-change (PPXC) matrix.

* :func:`intervene` (context manager) applies an :class:`Intervention` (zero / constant / stat /
  add / scale on chosen neurons) to every forward pass of a model;
* :func:`parse_spec` / :func:`resolve` turn a CLI string (``lape.json:hi:zero``) or a dict into one;
* :func:`perplexity` scores packed token blocks (token-weighted), optionally intervened;
* :func:`ppxc_matrix` intervenes on each language's neurons and scores every language.
"""

from langneurons.intervene.interventions import KINDS, Intervention, build_intervention, intervene
from langneurons.intervene.perplexity import PerplexityResult, perplexity
from langneurons.intervene.ppxc import MEASURES, PPXCResult, ppxc_matrix, write_ppxc
from langneurons.intervene.spec import InterventionSpec, intervention_factory, parse_spec, resolve
from langneurons.intervene.api import PPXCOptions, ppl_matrix

__all__ = [
    "Intervention",
    "InterventionSpec",
    "KINDS",
    "MEASURES",
    "PPXCOptions",
    "PPXCResult",
    "PerplexityResult",
    "build_intervention",
    "intervene",
    "intervention_factory",
    "parse_spec",
    "perplexity",
    "ppl_matrix",
    "ppxc_matrix",
    "resolve",
    "write_ppxc",
]
