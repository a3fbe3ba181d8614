"""Stage API of the direction study: residual statistics -> DirectionSet (``identify --method
diffmean``), and a DirectionSet + held-out text -> directional PPXC (``ppl-matrix --directions``).

The runner-facing pieces are :class:`DiffMeanOptions`, :func:`identify_directions`,
:class:`DirectionPPXCOptions` and :func:`direction_ppl_matrix` (kept here, apart from the neuron
stages, so a stage registry can take them over as they are).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from langneurons.activations.api import load_heldout
from langneurons.directions.direction_set import WEIGHTINGS, DirectionSet, diffmean
from langneurons.directions.ppxc import direction_ppxc_matrix
from langneurons.activations.residual import load_residual_dir
from langneurons.errors import LangNeuronsError, brief
from langneurons.intervene.ppxc import PPXCResult, write_ppxc
from langneurons.languages import check_languages
from langneurons.models.loading import LoadedModel, cache_root


def parse_layers(text: str | None) -> tuple[int, ...] | None:
    """``all`` / None -> None (every layer); ``"3"``, ``"2,5,7"``, ``"4-9"`` (inclusive), or a mix
    -> sorted unique layer indices (checked against a model when used)."""
    if text is None or str(text).strip() in ("", "all"):
        return None
    layers: set[int] = set()
    for part in str(text).split(","):
        first, dash, last = part.strip().partition("-")
        try:
            low, high = int(first), int(last) if dash else int(first)
        except ValueError:
            raise LangNeuronsError(f"layers are written like 'all', '5', '2,5,7' or '4-9', got {brief(text)}") from None
        if low < 0 or high < low:
            raise LangNeuronsError(f"bad layer range {part.strip()!r} in {brief(text)}")
        layers.update(range(low, high + 1))
    return tuple(sorted(layers))


@dataclass(frozen=True)
class DiffMeanOptions:
    """languages: subset (default all with residual statistics); rank: also store the rank-r
    language subspace per layer (0: none; at most languages - 1)."""

    languages: tuple[str, ...] | None = None
    rank: int = 0

    def __post_init__(self):
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 0:
            raise LangNeuronsError(f"rank must be an integer >= 0, got {brief(self.rank)}")


def identify_directions(statistics_dir, options: DiffMeanOptions = DiffMeanOptions(), output=None) -> DirectionSet:
    """DiffMean directions from the ``<lang>.residual.safetensors`` files of a folder collected
    with ``--residual``; with ``output`` (.safetensors) the set is saved there."""
    languages = list(check_languages(options.languages)) if options.languages else None
    if output is not None and Path(output).suffix != ".safetensors":
        raise LangNeuronsError(f"a direction set is saved as .safetensors, got {Path(output).name}")
    direction_set = diffmean(load_residual_dir(statistics_dir, languages), rank=options.rank)
    if output is not None:
        direction_set.save(output)
    return direction_set


def random_directions(like, seed: int = 0, weighting: str = "isotropic", output=None) -> DirectionSet:
    """The random control of the direction set in file ``like`` (matched norms; seeded)."""
    direction_set = DirectionSet.load(like).random_control(seed=seed, weighting=weighting)
    if output is not None:
        direction_set.save(output)
    return direction_set


@dataclass(frozen=True)
class DirectionPPXCOptions:
    """layers: where the directions are ablated (None: all). weighting: of the random control's
    directions (``isotropic`` or ``spread``). ablation: ``orthogonal`` or ``leace``
    (:func:`~langneurons.directions.ppxc.direction_ppxc_matrix`). The rest as in the neuron PPXC options."""

    languages: tuple[str, ...] | None = None
    layers: tuple[int, ...] | None = None
    random_control: bool = True
    seed: int = 0
    weighting: str = "isotropic"
    token_budget: int | None = 20_000
    batch_size: int = 8
    ablation: str = "orthogonal"

    def __post_init__(self):
        from langneurons.intervene.api import check_ppxc_options

        check_ppxc_options("zero", self.token_budget, self.batch_size)
        if self.weighting not in WEIGHTINGS:
            raise LangNeuronsError(f"unknown random weighting {brief(self.weighting)}; use one of {', '.join(WEIGHTINGS)}")
        from langneurons.directions.ppxc import ABLATIONS

        if self.ablation not in ABLATIONS:
            raise LangNeuronsError(f"unknown ablation {brief(self.ablation)}; use one of {', '.join(ABLATIONS)}")


def direction_ppl_matrix(loaded: LoadedModel, directions_path, statistics_dir, options: DirectionPPXCOptions,
                         out_dir=None, cache_dir=None, progress: bool = True) -> tuple[PPXCResult, list[Path]]:
    """Directional PPXC on the held-out blocks saved by ``collect`` in ``statistics_dir``; with
    ``out_dir`` the tables (``ppxc.csv``, ``ppxc.json``, ``ppxc_specificity.csv``) and heatmap."""
    direction_set = DirectionSet.load(directions_path)
    direction_set.check_model(loaded)
    languages = list(check_languages(options.languages)) if options.languages else direction_set.languages
    for language in languages:
        direction_set.index(language)
    heldout = {language: load_heldout(statistics_dir, language) for language in languages}
    result = direction_ppxc_matrix(
        loaded, direction_set, heldout, languages, layers=options.layers, random_control=options.random_control,
        seed=options.seed, weighting=options.weighting, token_budget=options.token_budget, ablation=options.ablation,
        cache_dir=cache_dir or cache_root() / "ppxc", progress=progress, batch_size=options.batch_size,
    )
    files: list[Path] = []
    if out_dir is not None:
        from langneurons.intervene.figures import write_ppxc_figure

        files += list(write_ppxc(result, out_dir).values())
        files += write_ppxc_figure(result, out_dir)
    return result, files
