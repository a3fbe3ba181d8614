"""Directional PPXC: ablate language i's residual direction, measure perplexity on language j.

The same machinery as the neuron PPXC matrix (:mod:`langneurons.intervene.ppxc`): the same
held-out blocks within the same token budget, the same baseline, the same paired block
bootstrap, the same tables and specificity. Row i removes the component along language i's
direction (:func:`~langneurons.directions.interventions.ablate_direction`) from the residual
stream after each chosen block; the ``random`` rows remove a seeded random direction of the same
norm per (language, layer) (:meth:`~langneurons.directions.direction_set.DirectionSet.random_control`).
The ``neurons`` column of the tables counts the directions removed (one per chosen layer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

from langneurons.corpus.packing import TokenBlocks
from langneurons.directions.direction_set import DirectionSet
from langneurons.directions.interventions import _layers, ablate_direction, erase_direction
from langneurons.errors import LangNeuronsError
from langneurons.intervene.perplexity import target_count
from langneurons.intervene.ppxc import LANGUAGE_SPECIFIC, RANDOM, PPXCResult, ppxc_from_interventions, within_budget


ABLATIONS = ("orthogonal", "leace")
ERASE_ACTION = "erase (leace)"
"""``config["action"]`` of a PPXC result whose directions were erased (``ablation="leace"``)."""


def direction_ppxc_matrix(
    loaded,
    direction_set: DirectionSet,
    heldout: Mapping[str, TokenBlocks],
    languages: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    random_control: bool = True,
    seed: int = 0,
    weighting: str = "isotropic",
    token_budget: int | None = None,
    ablation: str = "orthogonal",
    cache_dir: str | Path | None = None,
    progress: bool = True,
    batch_size: int = 8,
    n_resamples: int = 1000,
    confidence: float = 0.95,
) -> PPXCResult:
    """The PPXC matrix of ``direction_set``'s directions ablated at ``layers`` (default all) on
    ``loaded`` (a LoadedModel); arguments as in :func:`~langneurons.intervene.ppxc.ppxc_matrix`.
    ``weighting``: of the random directions (``isotropic`` or ``spread``). ``ablation``:
    ``orthogonal`` (remove the component along the unit direction) or ``leace`` (erase it with the
    stream's diagonal covariance and mean, :func:`~langneurons.directions.interventions.erase_direction`;
    the random rows are erased with the same statistics)."""
    if ablation not in ABLATIONS:
        raise LangNeuronsError(f"unknown ablation {ablation!r}; use one of {', '.join(ABLATIONS)}")
    languages = list(languages) if languages is not None else [l for l in direction_set.languages if l in heldout]
    if not languages:
        raise LangNeuronsError("the PPXC matrix needs at least one language")
    if len(set(languages)) != len(languages):
        raise LangNeuronsError(f"duplicate languages in {list(languages)}")
    for language in languages:
        direction_set.index(language)
        if language not in heldout:
            raise LangNeuronsError(f"no held-out text for {language!r} (have {sorted(heldout)})")
        if heldout[language].num_blocks == 0 or target_count(heldout[language]) == 0:
            raise LangNeuronsError(f"the held-out text for {language!r} is empty")
    direction_set.check_model(loaded)
    chosen = _layers(direction_set, layers)
    for language in languages:
        heldout[language].check_tokenizer(loaded.tokenizer)
    blocks = {language: within_budget(heldout[language], token_budget) for language in languages}
    sets = {LANGUAGE_SPECIFIC: direction_set}
    if random_control:
        sets[RANDOM] = direction_set.random_control(seed=seed, weighting=weighting)
    remove = partial(erase_direction, stream=direction_set) if ablation == "leace" else ablate_direction
    interventions = {name: {row: remove(chosen_set, row, chosen) for row in languages}
                     for name, chosen_set in sets.items()}
    counts = {name: {row: iv.num_directions for row, iv in rows.items()} for name, rows in interventions.items()}
    config = {"unit": "residual directions", "action": "ablate" if ablation == "orthogonal" else ERASE_ACTION,
              "layers": chosen, "token_budget": token_budget,
              "seed": seed, "random_control": random_control, "weighting": weighting,
              "heldout": {l: {"fingerprint": b.fingerprint(), "tokens": target_count(b)} for l, b in blocks.items()}}
    return ppxc_from_interventions(loaded, blocks, languages, interventions, counts, direction_set.method, config,
                                   cache_dir, progress, batch_size, (n_resamples, confidence, seed))
