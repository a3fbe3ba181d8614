"""Residual-stream language directions, studied on the same protocols as language neurons.

* :mod:`.residual`: per-language, per-layer sums of the residual stream after each block, kept in
  the statistics pass (``collect --residual``);
* :mod:`.direction_set`: :class:`DirectionSet`, DiffMean directions, the rank-r language
  subspace and the matched-norm random control;
* :mod:`.interventions`: :class:`DirectionIntervention` (``add``, ``ablate``) on the residual
  stream, accepted by :func:`langneurons.intervene.interventions.intervene`;
* :mod:`.ppxc`: the directional PPXC matrix; :mod:`.api`: the stage functions.
"""

from langneurons.directions.direction_set import DirectionSet, diffmean
from langneurons.directions.interventions import (
    DirectionIntervention,
    ablate_direction,
    erase_direction,
    ablate_subspace,
    add_direction,
)
from langneurons.activations.residual import ResidualStatistics, load_residual_dir, residual_path

__all__ = [
    "DirectionIntervention", "DirectionSet", "ResidualStatistics", "ablate_direction", "ablate_subspace", "erase_direction",
    "add_direction", "diffmean", "load_residual_dir", "residual_path",
]
