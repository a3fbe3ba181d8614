"""The ``identify`` stages (one per entry of ``identification:``), the ``stability`` stages
(section ``stability:``) and the agreement tables (``langneurons agreement ... --out
RUN/agreement``): their config sections, cached runs, report sections and published files."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from langneurons.blocks import Block, fmt_number, read_json, stage_folders
from langneurons.identify.api import IdentifyOptions
from langneurons.identify.stability import StabilityOptions
from langneurons.stage import Stage, WrappedOptions

NEURON_FIGURES = (("neuron_counts", "neurons per language"), ("neuron_layers", "neurons per layer"),
                  ("neuron_overlap", "overlap between languages"), ("lape_entropy", "LAPE entropy"))


@dataclass(frozen=True)
class IdentifyConfig:
    """One neuron set: ``name`` (referred to elsewhere), the method and its options
    (:class:`IdentifyOptions`; ``like`` names an earlier set of this config, for ``random``),
    and ``figures`` (draw the set's counts, layers, overlap, Venn and entropy figures)."""

    name: str
    options: IdentifyOptions = field(default_factory=IdentifyOptions)
    figures: bool = True

    @property
    def method(self) -> str:
        return self.options.method


@dataclass(frozen=True)
class StabilityConfig(WrappedOptions):
    """Resampling stability (:mod:`langneurons.identify.stability`, :class:`StabilityOptions`,
    written flat in the section) of ``neuron_sets`` (LAPE or act-prob sets of this config); needs
    ``statistics.replicates`` >= 2. ``min_frequency``: the selection frequency of the stable set
    written next to the table."""

    neuron_sets: tuple[str, ...] = ("lape",)
    options: StabilityOptions = field(default_factory=StabilityOptions)
    min_frequency: float = 0.8

    KEYS = ("neuron_sets", "resamples", "splits", "seed", "confidence", "min_frequency")


def run_identify(context) -> None:
    from langneurons.identify.api import identify
    from langneurons.identify.api import options_dict as identify_options_dict

    statistics = context.records["statistics"]
    for entry in context.config.identification:
        like_name = entry.options.like
        like = context.records[f"identify/{like_name}"] if like_name else None
        options = replace(entry.options, languages=tuple(context.config.languages),
                          like=str(context.run_dir / "identify" / like_name / "neurons.json") if like_name else None)

        def compute(directory: Path, options=options, entry=entry) -> None:
            identify(context.run_dir / "statistics", options, output=directory / "neurons.json", figures=entry.figures)

        inputs = {"options": identify_options_dict(replace(options, like=like_name)), "figures": entry.figures,
                  "statistics": statistics.product if entry.method != "random" else None,
                  "like": like.product if like else None}
        context.stage(f"identify/{entry.name}", inputs, compute, product=("neurons.json",))


def run_stability(context) -> None:
    from langneurons.identify.api import options_dict as identify_options_dict
    from langneurons.identify.api import stability_of

    config = context.config.stability
    statistics = context.records["statistics"]
    resampling = config.options
    for set_name in config.neuron_sets:
        options = replace(context.config.neuron_set(set_name).options, languages=tuple(context.config.languages))

        def compute(directory: Path, options=options) -> None:
            stability_of(context.run_dir / "statistics", options, resampling, out_dir=directory,
                         min_frequency=config.min_frequency)

        inputs = {"resampling": asdict(resampling), "min_frequency": config.min_frequency,
                  "identify": identify_options_dict(options), "statistics": statistics.product}
        context.stage(f"stability/{set_name}", inputs, compute, product=("stability.json", "stable.json"))


# ---------------------------------------------------------------------------------- report

def neurons_section(run_dir: Path, manifest: dict) -> list[Block]:
    from langneurons.identify.neuron_set import NeuronSet, summarize

    folders = stage_folders(run_dir, manifest, "identify", "neurons.json")
    if not folders:
        return []
    blocks: list[Block] = [("h2", "Language-specific neurons")]
    for folder in folders:
        neuron_set = NeuronSet.load(folder / "neurons.json")
        total = neuron_set.num_layers * neuron_set.neurons_per_layer
        blocks.append(("h3", f"{folder.name} ({neuron_set.method})"))
        blocks.append(("p", f"{len(neuron_set.union())} distinct neurons of {total} "
                            f"({neuron_set.num_layers} layers x {neuron_set.neurons_per_layer}); "
                            f"parameters: `{json.dumps(neuron_set.parameters, sort_keys=True)}`."))
        rows = summarize(neuron_set)
        blocks.append(("table", list(rows[0]), [[str(v) for v in row.values()] for row in rows]))
        figures = folder / "neurons_figures"
        for name, caption in NEURON_FIGURES:
            if (figures / f"{name}.png").exists():
                blocks.append(("image", figures / f"{name}.png", f"{folder.name}: {caption}"))
        for venn in sorted(figures.glob("neuron_venn_*.png")):
            languages = venn.stem.removeprefix("neuron_venn_").replace("_", ", ")
            blocks.append(("image", venn, f"{folder.name}: shared neurons of {languages}"))
    return blocks


def _unavailable_chunks(data: dict) -> str:
    from langneurons.evaluate.metrics import unavailable

    return unavailable(int(data["replicates"]))


def stability_section(run_dir: Path, manifest: dict) -> list[Block]:
    folders = stage_folders(run_dir, manifest, "stability", "stability.json")
    if not folders:
        return []
    blocks: list[Block] = [
        ("h2", "Stability of the neuron sets"),
        ("p", "Each set re-identified with the same method and options on bootstrap resamples of its statistics "
              "(chunks of token blocks drawn with replacement) and on random split-halves. Jaccard: of a "
              "resample's set with the full-data set, or of the two halves' sets; median [central interval]. "
              "Chance: the expected Jaccard of two random sets with the same per-layer counts. Stable: neurons "
              "of the full set selected in at least that fraction of resamples."),
    ]
    for folder in folders:
        data = read_json(folder / "stability.json")
        rows = data["table"]
        stable_key = next((key for key in rows[0] if key.startswith("stable_size_")), None) if rows else None
        blocks.append(("h3", f"{folder.name} ({data['method']}, {data['options']['resamples']} resamples of "
                             f"{data['replicates']} chunks)"))
        if rows and rows[0].get("size_low", 0) is None:
            blocks.append(("p", f"Intervals unavailable: {data['replicates']} chunks are fewer than the 20 "
                                "resampling units an interval needs; medians only."))

        def interval(row, key):
            if row[f"{key}_median"] is None:
                return "–"
            if row[f"{key}_low"] is None:
                return f"{row[f'{key}_median']:.2f} [{_unavailable_chunks(data)}]"
            return f"{row[f'{key}_median']:.2f} [{row[f'{key}_low']:.2f}, {row[f'{key}_high']:.2f}]"

        def size_interval(row):
            if row["size_low"] is None:
                return _unavailable_chunks(data)
            return f"{row['size_low']:.0f}–{row['size_high']:.0f}"

        blocks.append(("table", ["language", "set size", "size interval", "bootstrap Jaccard", "split-half Jaccard",
                                 "chance", f"stable (>= {stable_key.removeprefix('stable_size_')})" if stable_key
                                 else "stable"],
                       [[r["language"], str(r["set_size"]), size_interval(r),
                         interval(r, "bootstrap_jaccard"), interval(r, "split_half_jaccard"),
                         f"{r['chance_jaccard']:.3f}", str(r.get(stable_key, "–"))] for r in rows]))
        for name, caption in (("stability_jaccard", "Jaccard per language against chance"),
                              ("selection_frequency", "selection frequency of the neurons")):
            if (folder / f"{name}.png").exists():
                blocks.append(("image", folder / f"{name}.png", f"{folder.name}: {caption}"))
    return blocks


def agreement_section(run_dir: Path, manifest: dict) -> list[Block]:
    """Tables of ``agreement/*.json`` (``langneurons agreement ... --out RUN/agreement``), if any."""
    files = sorted((run_dir / "agreement").glob("*.json"))
    if not files:
        return []
    blocks: list[Block] = [
        ("h2", "Agreement between neuron sets"),
        ("p", "Jaccard per language of two sets (two methods on the same statistics, or one method on two "
              "corpora); chance: the expected Jaccard of two random sets with the same per-layer counts."),
    ]
    for path in files:
        data = read_json(path)
        blocks += [("h3", f"{path.stem}: {Path(data['first']).as_posix()} vs {Path(data['second']).as_posix()}"),
                   ("table", ["language", "first", "second", "shared", "Jaccard", "chance"],
                    [[r["language"], str(r["size_first"]), str(r["size_second"]), str(r["shared"]),
                      fmt_number(r["jaccard"], 3), f"{r['chance_jaccard']:.3f}"] for r in data["rows"]])]
        if path.with_suffix(".png").exists():
            blocks.append(("image", path.with_suffix(".png"), f"{path.stem}: Jaccard per language against chance"))
    return blocks


IDENTIFY = Stage("identify", "identification", run_identify, report=neurons_section, published=(
    "identify/*/neurons.json", "identify/*/*.png", "identify/*/*.svg", "identify/*/*_figures/*.png",
    "identify/*/*_figures/*.svg", "identify/*/*.csv"))
STABILITY = Stage("stability", "stability", run_stability, report=stability_section, published=(
    "stability/*/stability.csv", "stability/*/stability.json", "stability/*/stable.json", "stability/*/*.png",
    "stability/*/*.svg"))
AGREEMENT = Stage("agreement", None, None, report=agreement_section, published=(
    "agreement/*.csv", "agreement/*.json", "agreement/*.png", "agreement/*.svg"))
