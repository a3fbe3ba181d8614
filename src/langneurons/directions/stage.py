"""The direction stages (issue 19): DiffMean direction sets (``identification`` entries with
``method: diffmean``, config field ``directions``) and the directional PPXC (section
``direction_ppxc:``); their config section, cached runs, report section and published files.

Stages: ``identify/<name>`` writes ``directions.safetensors``
(:func:`langneurons.directions.api.identify_directions`, from the statistics pass's residual
sums); ``direction_ppxc/<name>`` the PPXC tables and heatmap with language i's direction removed
(:func:`langneurons.directions.api.direction_ppl_matrix`). The steering stage reads a set when
``steering.directions`` names one (:mod:`langneurons.steer.stage`). Parsing and cross-checks of
the config keys: :mod:`langneurons.runner.directions`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from langneurons.blocks import Block, fmt_number, read_csv, read_json, stage_folders
from langneurons.directions.api import DiffMeanOptions, DirectionPPXCOptions, parse_layers
from langneurons.directions.ppxc import ERASE_ACTION
from langneurons.stage import Stage

DIFFMEAN = "diffmean"
DIRECTIONS_FILE = "directions.safetensors"


@dataclass(frozen=True)
class DirectionIdentifyConfig:
    """One direction set of ``identification`` (``method: diffmean``): its name and options
    (``languages``: default the experiment's; ``rank``: the language subspace's)."""

    name: str
    options: DiffMeanOptions = field(default_factory=DiffMeanOptions)

    @property
    def method(self) -> str:
        return DIFFMEAN

    def to_entry(self) -> dict:
        """The ``identification`` entry this was read from."""
        entry = {"name": self.name, "method": DIFFMEAN, "rank": self.options.rank}
        return entry if self.options.languages is None else {**entry, "languages": list(self.options.languages)}


@dataclass(frozen=True)
class DirectionPPXCConfig:
    """Directional PPXC of ``direction_sets`` (names of diffmean entries) on ``languages``
    (default all); ``layers``: where the directions are removed (``"4-9"``, ``"2,5"``; None: all).
    The rest as in :class:`langneurons.directions.api.DirectionPPXCOptions`."""

    direction_sets: tuple[str, ...] = (DIFFMEAN,)
    languages: tuple[str, ...] | None = None
    layers: str | None = None
    random_control: bool = True
    seed: int = 0
    weighting: str = "isotropic"
    token_budget: int | None = None
    batch_size: int = 8
    ablation: str = "orthogonal"

    def as_dict(self) -> dict:
        """The section's fields, ``ablation`` left out at its default ``orthogonal`` (added later:
        configs and cached stages without it keep their form and key)."""
        data = asdict(self)
        if data["ablation"] == "orthogonal":
            del data["ablation"]
        return data

    def options(self, languages) -> DirectionPPXCOptions:
        return DirectionPPXCOptions(languages=tuple(languages), layers=parse_layers(self.layers),
                                    random_control=self.random_control, seed=self.seed, weighting=self.weighting,
                                    token_budget=self.token_budget, batch_size=self.batch_size, ablation=self.ablation)


def direction_set_path(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / "identify" / name / DIRECTIONS_FILE


def run_identify(context) -> None:
    """``identify/<name>`` per diffmean entry: the direction set from the residual sums."""
    from langneurons.directions.api import identify_directions

    statistics = context.records["statistics"]
    for entry in context.config.directions:
        options = replace(entry.options, languages=tuple(entry.options.languages or context.config.languages))

        def compute(directory: Path, options=options) -> None:
            identify_directions(context.run_dir / "statistics", options, output=directory / DIRECTIONS_FILE)

        inputs = {"method": DIFFMEAN, "options": asdict(options), "statistics": statistics.product}
        context.stage(f"identify/{entry.name}", inputs, compute, product=(DIRECTIONS_FILE,))


def run_ppxc(context) -> None:
    """``direction_ppxc/<name>`` per direction set: ablate i's direction, perplexity on j."""
    from langneurons.directions.api import direction_ppl_matrix

    section = context.config.direction_ppxc
    languages = list(section.languages or context.config.languages)
    statistics = context.records["statistics"]
    for name in section.direction_sets:
        def compute(directory: Path, name=name) -> None:
            direction_ppl_matrix(context.loaded, direction_set_path(context.run_dir, name),
                                 context.run_dir / "statistics", section.options(languages), out_dir=directory,
                                 cache_dir=directory / "cells", progress=context.progress)

        own = {k: v for k, v in section.as_dict().items() if k != "direction_sets"}
        inputs = {"options": own, "languages": languages, "statistics": statistics.product,
                  "directions": context.records[f"identify/{name}"].product}
        context.stage(f"direction_ppxc/{name}", inputs, compute, product=("ppxc.json",))


def direction_ppxc_section(run_dir: Path, manifest: dict) -> list[Block]:
    """The neuron PPXC's tables with language i's residual direction removed instead of its neurons
    zeroed, and random directions of the same norm as the control."""
    from langneurons.intervene.stage import _ppxc_interval

    folders = stage_folders(run_dir, manifest, "direction_ppxc", "ppxc.json")
    if not folders:
        return []
    blocks: list[Block] = [
        ("h2", "Perplexity change with residual directions removed"),
        ("p", "As the PPXC above, with row language i's DiffMean direction (its mean hidden state minus the mean "
              "of the other languages' means) projected out of the residual stream after the listed blocks "
              "instead of its neurons zeroed; the random rows remove a seeded random direction of the same norm "
              "per language and layer. The neurons column counts the directions removed (one per block)."),
    ]
    for folder in folders:
        data = read_json(folder / "ppxc.json")
        layers = (data.get("config") or {}).get("layers")
        blocks.append(("h3", f"{folder.name} directions" + (f", blocks {layers}" if layers else "")))
        if (data.get("config") or {}).get("action") == ERASE_ACTION:
            blocks.append(("p", "Ablation: LEACE erasure with a diagonal covariance, not an orthogonal projection: "
                                "h - ((h - c) . w) d, w = (d / s²) / (d . d / s²), with s² the per-dimension "
                                "variance of the stream and c the mean of the languages' means, so h moves along d "
                                "only; the random rows are erased with the same s² and c."))
        if (folder / "ppxc.png").exists():
            blocks.append(("image", folder / "ppxc.png", f"PPXC with the {folder.name} directions removed"))
        rows = read_csv(folder / "ppxc_specificity.csv") if (folder / "ppxc_specificity.csv").exists() else []
        if rows:
            blocks.append(("table", ["set", "language", "directions", "difference (nats/token)", "95% CI", "ratio"],
                           [[r["set"], r["language"], r["neurons"], fmt_number(r["difference"], 4), _ppxc_interval(r),
                             fmt_number(r["ratio"], 2) if r["ratio"] not in ("", "nan") else "–"] for r in rows]))
    return blocks


DIRECTION_SETS = Stage("direction-sets", "directions", run_identify)
DIRECTION_PPXC = Stage("direction_ppxc", "direction_ppxc", run_ppxc, report=direction_ppxc_section, published=(
    "direction_ppxc/*/ppxc.json", "direction_ppxc/*/ppxc.csv", "direction_ppxc/*/ppxc_specificity.csv",
    "direction_ppxc/*/ppxc.png", "direction_ppxc/*/ppxc.svg"))
