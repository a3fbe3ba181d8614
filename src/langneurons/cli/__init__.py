"""The ``langneurons`` command line: thin wrappers over the stage APIs.

Every command exits non-zero with a one-line ``error: ...`` on bad input (a
:class:`~langneurons.errors.LangNeuronsError`), never with a traceback.

Over 500 lines because it is the stage commands' option declarations (typer parameters with their
help), one function each, that only parse and call the stage APIs; the experiment commands live in
:mod:`.experiment`.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from langneurons.cli.options import ModelChoice, model_options
from langneurons.errors import LangNeuronsError, LangNeuronsWarning

app = typer.Typer(
    name="langneurons",
    help="Find, test and manipulate the language-specific neurons of multilingual decoder LLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()



def _languages(value: str) -> tuple[str, ...]:
    from langneurons.languages import check_languages

    return tuple(check_languages(value.split(",")))


def _floats(value: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise LangNeuronsError(f"{option} takes comma-separated numbers, got {value!r}") from None


@app.command()
def architectures() -> None:
    """List the supported model families and where their neurons are."""
    from langneurons.models.architectures import ARCHITECTURES

    table = Table("model_type", "layers", "activation (neuron output)", "gate", "up", "down")
    for name, spec in sorted(ARCHITECTURES.items()):
        prefix = f"{spec.mlp}." if spec.mlp else ""
        table.add_row(name, " | ".join(spec.layers), prefix + spec.activation, spec.gate or "-", spec.up, spec.down)
    console.print(table)


@app.command()
@model_options
def collect(
    languages: Annotated[str, typer.Option("--languages", "-l", help="Comma-separated ISO 639-1 codes.")] = "en,fr,es,zh,hi,bn,ta,ur",
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for <lang>.safetensors statistics.")] = Path("runs/statistics"),
    corpus: Annotated[str, typer.Option(help="'builtin', a folder of <lang>.txt (e.g. ../shared/data/flores200/devtest), wikimedia/wikipedia or openlanguagedata/flores_plus.")] = "builtin",
    corpus_path: Annotated[Optional[str], typer.Option(help="Local copy of a HF dataset (with --corpus wikimedia/wikipedia ...).")] = None,
    max_documents: Annotated[Optional[int], typer.Option(help="Documents per language (default all; 1000 for HF datasets).")] = None,
    token_budget: Annotated[int, typer.Option(help="Text tokens per language for identification.")] = 100_000,
    heldout_fraction: Annotated[float, typer.Option(help="Fraction of documents held out for perplexity.")] = 0.1,
    heldout_budget: Annotated[int, typer.Option(help="Held-out tokens per language.")] = 20_000,
    block_length: Annotated[int, typer.Option(help="Tokens per packed block.")] = 512,
    batch_size: Annotated[int, typer.Option(help="Blocks per forward pass.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the held-out split.")] = 0,
    shard: Annotated[Optional[str], typer.Option(help="'i/n': only every n-th block from i (merge later).")] = None,
    replicates: Annotated[Optional[int], typer.Option(help="Also keep per-chunk counts in R interleaved chunks of blocks (<lang>.replicates.safetensors) for 'langneurons stability'.")] = None,
    residual: Annotated[bool, typer.Option(help="Also keep per-layer sums of the residual stream after each block (<lang>.residual.safetensors) for 'identify --method diffmean'.")] = False,
    model: ModelChoice = ModelChoice(),
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Record per-language activation statistics (one streaming pass per language).

    Under torchrun (WORLD_SIZE > 1) the blocks are sharded over ranks and merged with all_reduce.
    """
    from langneurons.activations.api import CollectOptions, collect as run_collect

    if replicates is not None and replicates < 1:
        raise LangNeuronsError(f"--replicates must be at least 1, got {replicates}")
    shard_pair = None
    if shard:
        try:
            index, count = (int(x) for x in shard.split("/"))
        except ValueError:
            raise LangNeuronsError(f"--shard must look like i/n, got {shard!r}") from None
        shard_pair = (index, count)
    options = CollectOptions(
        languages=_languages(languages), corpus=corpus, max_documents=max_documents, token_budget=token_budget,
        heldout_fraction=heldout_fraction, heldout_budget=heldout_budget, block_length=block_length,
        batch_size=batch_size, seed=seed, shard=shard_pair,
        corpus_path=corpus_path, replicates=replicates, residual=residual,
    )
    loaded = model.load(per_process=True)  # under torchrun with GPUs: each rank onto its own GPU
    results = run_collect(loaded, options, out, progress=progress)
    if os.environ.get("RANK", "0") != "0":
        return  # rank 0 reports
    table = Table("language", "tokens", "mean P(act>0)", title=f"statistics of {loaded.info.model_id} in {out}")
    for language, stats in results.items():
        table.add_row(language, f"{stats.token_count:,}", f"{stats.activation_probability.mean():.3f}")
    console.print(table)


@app.command()
def merge(
    files: Annotated[list[Path], typer.Argument(help="Statistics files of the same model and language.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Merged statistics file.")],
) -> None:
    """Add statistics files (e.g. shards from --shard i/n) into one, checking they are compatible."""
    from langneurons.activations.api import merge_statistics

    merged = merge_statistics(files, out)
    console.print(f"merged {len(files)} files: {merged.token_count:,} tokens of {merged.meta.language} -> {out}")


def _print_summary(neuron_set) -> None:
    from langneurons.identify.neuron_set import summarize

    rows = summarize(neuron_set)
    if not rows:
        return
    table = Table(*rows[0].keys(), title=f"{neuron_set.method} neurons of {neuron_set.source.get('model_id', '?')}")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)


@app.command()
def identify(
    statistics: Annotated[Path, typer.Option("--statistics", "-s", help="Folder written by 'collect'.")] = Path("runs/statistics"),
    method: Annotated[str, typer.Option(help="lape, act-prob, ap (Kojima et al. 2024: average precision of the activation at telling the language's tokens from the others', from the histograms), random, or diffmean (residual-stream directions: mean of the language minus the mean of the other languages' means; needs 'collect --residual').")] = "lape",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Neuron set file (.json or .safetensors); a direction set (.safetensors) for diffmean.")] = None,
    languages: Annotated[Optional[str], typer.Option("--languages", "-l", help="Subset of languages (default all).")] = None,
    top_rate: Annotated[Optional[float], typer.Option(help="LAPE: fraction of all neurons kept (0.01). act-prob, ap: fraction per language (0.00125).")] = None,
    filter_rate: Annotated[float, typer.Option(help="LAPE: probability bar as a quantile of all probabilities.")] = 0.95,
    percentile: Annotated[float, typer.Option(help="act-prob: threshold percentile t.")] = 90.0,
    threshold: Annotated[str, typer.Option(help="act-prob: 'pooled' (all languages) or 'own' (paper code).")] = "pooled",
    like: Annotated[Optional[Path], typer.Option(help="random: neuron set whose per-layer counts to match, or direction set whose per-layer norms to match.")] = None,
    seed: Annotated[int, typer.Option(help="random: seed; with --min-frequency: seed of the resamples.")] = 0,
    exclude_selected: Annotated[bool, typer.Option(help="random: avoid the neurons of --like.")] = False,
    min_frequency: Annotated[Optional[float], typer.Option(help="lape, act-prob: keep only neurons selected in at least this fraction of bootstrap resamples (e.g. 0.8; needs 'collect --replicates').")] = None,
    resamples: Annotated[int, typer.Option(help="With --min-frequency: bootstrap resamples.")] = 100,
    export_lape: Annotated[Optional[Path], typer.Option(help="Also write the LAPE release format (torch.save).")] = None,
    venn: Annotated[Optional[str], typer.Option(help="2 or 3 languages for the Venn diagram.")] = None,
    figures: Annotated[bool, typer.Option(help="Write figures next to the neuron set.")] = True,
    rank: Annotated[int, typer.Option(help="diffmean: also store the rank-R language subspace per layer (0: none).")] = 0,
    weighting: Annotated[str, typer.Option(help="random with a direction set: isotropic or spread (scaled like the stream).")] = "isotropic",
) -> None:
    """Identify language-specific neurons (or residual directions); print a summary and write the set."""
    from langneurons.identify.api import IdentifyOptions, identify as run_identify

    if _identify_directions(statistics, method, out, languages, like, seed, rank, weighting):
        return
    out = out or statistics.parent / f"{method}.json"
    options = IdentifyOptions(
        method=method, languages=_languages(languages) if languages else None, top_rate=top_rate,
        filter_rate=filter_rate, percentile=percentile, threshold=threshold, like=str(like) if like else None,
        seed=seed, exclude_selected=exclude_selected, min_frequency=min_frequency, resamples=resamples,
    )
    result = run_identify(statistics, options, output=out, figures=figures,
                          venn_languages=venn.split(",") if venn else None)
    if export_lape:
        result.neuron_set.export_lape(export_lape)
    _print_summary(result.neuron_set)
    console.print(f"neuron set: {out}" + (f"; figures: {out.with_name(out.stem + '_figures')}" if figures else ""))


def _identify_directions(statistics, method, out, languages, like, seed, rank, weighting) -> bool:
    """``identify`` for residual directions (diffmean, or random like a direction set); False
    when the request is about neurons."""
    from langneurons.directions import api as directions
    from langneurons.directions.direction_set import is_direction_set_file

    if method == "random" and like is not None and is_direction_set_file(like):
        out = out or like.with_name(like.stem + ".random.safetensors")
        result = directions.random_directions(like, seed=seed, weighting=weighting, output=out)
    elif method == "diffmean":
        out = out or statistics.parent / "diffmean.safetensors"
        options = directions.DiffMeanOptions(languages=_languages(languages) if languages else None, rank=rank)
        result = directions.identify_directions(statistics, options, output=out)
    else:
        return False
    rows = result.summary_rows()
    table = Table(*rows[0].keys(), title=f"{result.method} directions of {result.source.get('model_id', '?')}")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)
    console.print(f"direction set: {out}")
    return True


@app.command()
def stability(
    statistics: Annotated[Path, typer.Option("--statistics", "-s", help="Folder written by 'collect --replicates R'.")] = Path("runs/statistics"),
    method: Annotated[str, typer.Option(help="lape or act-prob (re-identified on every resample with the same options).")] = "lape",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for stability.csv/json, frequency.safetensors, neurons.json, stable.json and figures (default next to the statistics).")] = None,
    languages: Annotated[Optional[str], typer.Option("--languages", "-l", help="Subset of languages (default all).")] = None,
    top_rate: Annotated[Optional[float], typer.Option(help="As for identify.")] = None,
    filter_rate: Annotated[float, typer.Option(help="LAPE: as for identify.")] = 0.95,
    percentile: Annotated[float, typer.Option(help="act-prob: as for identify.")] = 90.0,
    threshold: Annotated[str, typer.Option(help="act-prob: as for identify.")] = "pooled",
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples (chunks drawn with replacement).")] = 100,
    splits: Annotated[int, typer.Option(help="Random split-halves (two disjoint halves of the chunks).")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of resamples and splits.")] = 0,
    confidence: Annotated[float, typer.Option(help="Central interval reported.")] = 0.95,
    min_frequency: Annotated[float, typer.Option(help="Selection frequency of the stable set (stable.json).")] = 0.8,
    figures: Annotated[bool, typer.Option(help="Write the Jaccard-vs-chance and selection-frequency figures.")] = True,
) -> None:
    """How stable is a neuron set? Bootstrap and split-half Jaccard, set-size interval, chance level
    and per-neuron selection frequency, from the per-chunk counts of 'collect --replicates'."""
    from langneurons.identify.api import IdentifyOptions, stability_of
    from langneurons.identify.stability import StabilityOptions

    options = IdentifyOptions(method=method, languages=_languages(languages) if languages else None, top_rate=top_rate,
                              filter_rate=filter_rate, percentile=percentile, threshold=threshold)
    out = out or statistics.parent / f"stability-{method}"
    result, _ = stability_of(statistics, options, StabilityOptions(resamples=resamples, splits=splits, seed=seed,
                                                                   confidence=confidence),
                             out_dir=out, figures=figures, min_frequency=min_frequency)
    table = Table("language", "set", "size interval", "bootstrap J [interval]", "split-half J [interval]", "chance J",
                  f"stable (>= {min_frequency:g})",
                  title=f"stability of {method} ({resamples} resamples of {result.replicates} chunks)")
    from langneurons.evaluate.metrics import MIN_RESAMPLING_UNITS, unavailable

    for row in result.table(min_frequency):
        size = (f"{row['size_low']:.0f}-{row['size_high']:.0f}" if row["size_low"] is not None
                else unavailable(result.replicates))
        table.add_row(row["language"], str(row["set_size"]), size,
                      _interval(row, "bootstrap_jaccard"), _interval(row, "split_half_jaccard"),
                      f"{row['chance_jaccard']:.3f}", str(row[f"stable_size_{min_frequency:g}"]))
    console.print(table)
    if result.replicates < MIN_RESAMPLING_UNITS:
        console.print(f"intervals unavailable: {result.replicates} chunks < {MIN_RESAMPLING_UNITS} (collect with "
                      f"--replicates {MIN_RESAMPLING_UNITS} or more for intervals); medians only")
    console.print(f"stability tables, frequencies and figures in {out}")


def _interval(row: dict, key: str) -> str:
    if row[f"{key}_median"] is None:
        return "-"
    if row[f"{key}_low"] is None:
        from langneurons.evaluate.metrics import unavailable

        return f"{row[f'{key}_median']:.2f} [{unavailable(row['resampling_units'])}]"
    return f"{row[f'{key}_median']:.2f} [{row[f'{key}_low']:.2f}, {row[f'{key}_high']:.2f}]"


@app.command()
def agreement(
    first: Annotated[Path, typer.Argument(help="Neuron set file, or a statistics folder (then --method identifies on it).")],
    second: Annotated[Path, typer.Argument(help="Neuron set file, or a statistics folder (same model).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for agreement.csv/json and the figure.")] = Path("runs/agreement"),
    method: Annotated[str, typer.Option(help="For statistics folders: lape, act-prob or ap.")] = "lape",
    languages: Annotated[Optional[str], typer.Option("--languages", "-l", help="Languages (default: those of both).")] = None,
    top_rate: Annotated[Optional[float], typer.Option(help="For statistics folders: as for identify.")] = None,
    name: Annotated[str, typer.Option(help="File stem of the outputs.")] = "agreement",
    figures: Annotated[bool, typer.Option(help="Write the Jaccard-vs-chance figure.")] = True,
) -> None:
    """Jaccard per language of two neuron sets (two corpora, methods or settings), with its chance level."""
    from langneurons.identify.agreement import agreement as run_agreement, write_agreement
    from langneurons.identify.api import IdentifyOptions, identify as run_identify
    from langneurons.identify.neuron_set import NeuronSet

    from langneurons.artefacts import check_plain_name

    check_plain_name(name, "--name")  # before any identification
    chosen = _languages(languages) if languages else None

    def neuron_set(path: Path):
        if path.is_dir():
            options = IdentifyOptions(method=method, languages=chosen, top_rate=top_rate)
            return run_identify(path, options, figures=False).neuron_set
        return NeuronSet.load(path)

    rows = run_agreement(neuron_set(first), neuron_set(second), chosen)
    write_agreement(rows, out, (str(first), str(second)), figures=figures, name=name)
    table = Table("language", "first", "second", "shared", "Jaccard", "chance", title=f"{first} vs {second}")
    for row in rows:
        table.add_row(row["language"], str(row["size_first"]), str(row["size_second"]), str(row["shared"]),
                      "-" if row["jaccard"] is None else f"{row['jaccard']:.3f}", f"{row['chance_jaccard']:.3f}")
    console.print(table)
    console.print(f"agreement table and figure in {out}")


@app.command()
def plot(
    neuron_set: Annotated[Path, typer.Argument(help="Neuron set file (.json or .safetensors).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Figure folder (default next to the set).")] = None,
    venn: Annotated[Optional[str], typer.Option(help="2 or 3 languages for the Venn diagram.")] = None,
    entropy: Annotated[Optional[Path], typer.Option(help="LAPE entropy file for the entropy histogram.")] = None,
) -> None:
    """Draw the figures of an existing neuron set (counts, layers, overlap, Venn, entropy)."""
    from langneurons.identify import NeuronSet, load_entropy
    from langneurons.identify.figures import write_neuron_figures

    loaded_set = NeuronSet.load(neuron_set)
    if entropy is None and neuron_set.with_name(neuron_set.stem + ".entropy.safetensors").exists():
        entropy = neuron_set.with_name(neuron_set.stem + ".entropy.safetensors")
    files = write_neuron_figures(
        loaded_set, out or neuron_set.with_name(neuron_set.stem + "_figures"),
        entropy=load_entropy(entropy) if entropy else None, venn_languages=venn.split(",") if venn else None,
    )
    _print_summary(loaded_set)
    console.print(f"{len(files)} figure files in {files[0].parent if files else out}")


@app.command("ppl-matrix")
@model_options
def ppl_matrix(
    neurons: Annotated[Optional[Path], typer.Option("--neurons", "-n", help="Neuron set file (.json or .safetensors).")] = None,
    directions: Annotated[Optional[Path], typer.Option("--directions", help="Direction set (.safetensors from 'identify --method diffmean'): row i ablates language i's residual direction instead.")] = None,
    layers: Annotated[str, typer.Option(help="With --directions: layers where the direction is ablated ('all', '5', '2,5', '4-9').")] = "all",
    weighting: Annotated[str, typer.Option(help="With --directions: random control directions isotropic, or spread (scaled per dimension like the stream); norms always matched.")] = "isotropic",
    ablation: Annotated[str, typer.Option(help="With --directions: orthogonal (remove h.u along the unit direction) or leace (erase with the stream's diagonal covariance and mean; for streams with massive activations).")] = "orthogonal",
    statistics: Annotated[Path, typer.Option("--statistics", "-s", help="Folder written by 'collect' (held-out text and statistics).")] = Path("runs/statistics"),
    languages: Annotated[Optional[str], typer.Option("--languages", "-l", help="Rows and columns (default: the set's languages).")] = None,
    action: Annotated[Optional[str], typer.Option("--action", help="What to do to row language i's neurons: zero (default), constant=V, scale=F, stat=p90[@lang], add=S@src>tgt; with --directions only ablate.")] = None,
    random_control: Annotated[bool, typer.Option(help="Add layer-matched random-neuron control rows.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the random control.")] = 0,
    token_budget: Annotated[int, typer.Option(help="Held-out target tokens per language.")] = 20_000,
    batch_size: Annotated[int, typer.Option(help="Blocks per forward pass.")] = 8,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for ppxc.csv/json and the heatmap.")] = Path("runs/ppxc"),
    cache_dir: Annotated[Optional[Path], typer.Option(help="Result cache (default ~/.cache/langneurons/ppxc).")] = None,
    model: ModelChoice = ModelChoice(),
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Perplexity-change matrix: intervene on language i's neurons (or ablate its residual direction),
    measure perplexity on language j."""
    from langneurons.intervene.api import PPXCOptions, ppl_matrix as run_ppl_matrix

    if (neurons is None) == (directions is None):
        raise LangNeuronsError("give either --neurons NEURONSET or --directions DIRECTIONSET")
    if directions is not None:
        from langneurons.directions.api import DirectionPPXCOptions, direction_ppl_matrix, parse_layers

        if action not in (None, "ablate"):
            raise LangNeuronsError(f"with --directions the action is ablate, got --action {action}")
        action = "ablate"
        options = DirectionPPXCOptions(languages=_languages(languages) if languages else None,
                                       layers=parse_layers(layers), random_control=random_control, seed=seed,
                                       weighting=weighting, token_budget=token_budget, batch_size=batch_size,
                                       ablation=ablation)
        loaded = model.load()
        result, files = direction_ppl_matrix(loaded, directions, statistics, options, out_dir=out,
                                             cache_dir=cache_dir, progress=progress)
    else:
        action = action or "zero"
        options = PPXCOptions(languages=_languages(languages) if languages else None, action=action,
                              random_control=random_control, seed=seed, token_budget=token_budget,
                              batch_size=batch_size)
        loaded = model.load()
        result, files = run_ppl_matrix(loaded, neurons, statistics, options, out_dir=out, cache_dir=cache_dir,
                                       progress=progress)
    table = Table("set", "language", "neurons" if directions is None else "directions", "diag dNLL - mean off-diag", "ratio", title=f"PPXC specificity ({action})")
    for set_name in result.sets:
        for language, values in result.specificity(set_name).items():
            table.add_row(set_name, language, str(result.neuron_counts[set_name][language]),
                          f"{values['difference']:+.4f}", f"{values['ratio']:.2f}")
    console.print(table)
    console.print(f"PPXC tables and heatmap in {out}")


@app.command()
@model_options
def steer(
    neurons: Annotated[Optional[Path], typer.Option("--neurons", "-n", help="Neuron set file (.json or .safetensors) with the pairs' languages (optional with --directions).")] = None,
    directions: Annotated[Optional[Path], typer.Option("--directions", "-d", help="DiffMean direction set (.safetensors from 'identify --method diffmean'): its conditions run beside the neurons'.")] = None,
    layers: Annotated[str, typer.Option(help="With --directions: the layer sweep, comma-separated layers or ranges, each one condition group (e.g. '6,8,4-9').")] = "",
    strengths: Annotated[str, typer.Option(help="With --directions: add strengths a of a x (target mean - source mean).")] = "1,2,4",
    ablate_source: Annotated[bool, typer.Option(help="With --directions: also remove the source language's direction (alone and with each add).")] = False,
    pairs: Annotated[str, typer.Option(help="Comma-separated SOURCE>TARGET pairs, e.g. 'en>fr,en>hi,en>zh' (quote the >).")] = "en>fr",
    actions: Annotated[str, typer.Option(help="Target activations of the sweep: add=S (S x (target mean - source mean)), stat=pXX (target's percentile), scale=F, constant=V.")] = "add=1,add=2,add=4",
    statistics: Annotated[Optional[Path], typer.Option("--statistics", "-s", help="Folder written by 'collect' (needed by add and stat, and by --prompts heldout).")] = None,
    prompts: Annotated[str, typer.Option(help="'builtin' (first words of the built-in sample sentences), a corpus folder of <lang>.txt, or 'heldout': the lines the --statistics pass held out (never used to identify neurons).")] = "builtin",
    prompt_count: Annotated[int, typer.Option(help="Prompts per source language.")] = 8,
    prompt_words: Annotated[int, typer.Option(help="Words per prompt (2 x characters for unspaced scripts).")] = 8,
    prompts_from_end: Annotated[bool, typer.Option(help="Take the last lines of a corpus folder (not read by a budgeted 'collect').")] = False,
    dev_fraction: Annotated[float, typer.Option(help="Share of the prompts (seeded) that choose the best condition; the rest are the test prompts every reported rate uses (0: no split).")] = 0.5,
    max_new_tokens: Annotated[int, typer.Option(help="Greedy new tokens per prompt.")] = 16,
    batch_size: Annotated[int, typer.Option(help="Prompts per generation batch.")] = 8,
    positions: Annotated[str, typer.Option(help="Intervene on 'all' positions or on 'prompt' tokens only.")] = "all",
    deactivate: Annotated[bool, typer.Option(help="Also zero the source language's neurons (alone and with each action).")] = True,
    random_control: Annotated[bool, typer.Option(help="Repeat every condition on layer-matched random neurons.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the random control.")] = 0,
    identifier_languages: Annotated[Optional[str], typer.Option(help="Candidate languages of the identifier (default: all it covers).")] = None,
    min_confidence: Annotated[float, typer.Option(help="Below this identifier confidence a generation is 'undetermined'.")] = 0.0,
    examples: Annotated[int, typer.Option(help="Side-by-side examples per pair in examples.json.")] = 3,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for steering.csv/json, generations, examples and figures.")] = Path("runs/steering"),
    model: ModelChoice = ModelChoice(),
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Language steering: intervene on neurons, generate, identify the output language.

    Per pair and condition (baseline; zero the source's neurons; activate the target's; both;
    each again on layer-matched random neurons; with --directions, add a x (target mean - source
    mean) to the residual stream at each --layers choice and --strengths value, each again with a
    random direction of the same norm per layer): the rates of continuations in the target
    language, in the source language and other/undetermined (95% Wilson intervals), and the
    perplexity of the continuations under the unintervened model (fluency), the share that loops
    (degenerate), the fluent target rate (target language, not degenerate) and a combined score.
    The prompts are split into dev (choose the best condition) and test (every reported rate).
    The identifier is lingua, offline; a language it does not cover is refused.
    """
    from langneurons.steer.api import prepare, steer as run_steer
    from langneurons.steer.experiment import SteeringOptions

    options = SteeringOptions(
        pairs=tuple(p.strip() for p in pairs.split(",") if p.strip()),
        actions=tuple(a.strip() for a in actions.split(",") if a.strip()), deactivate=deactivate,
        random_control=random_control, seed=seed, prompts=prompts, prompt_count=prompt_count,
        prompt_words=prompt_words, prompts_from_end=prompts_from_end, dev_fraction=dev_fraction,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size, positions=positions,
        identifier_languages=_languages(identifier_languages) if identifier_languages else None,
        min_confidence=min_confidence, examples=examples,
        direction_layers=tuple(c.strip() for c in layers.split(",") if c.strip()) if directions else (),
        direction_strengths=_numbers(strengths, "--strengths"), direction_ablate=ablate_source,
    )
    from langneurons.artefacts import check_folder_target

    check_folder_target(out)  # before any work: the files land there
    prepared = prepare(options, neurons, statistics, directions_path=directions)  # checked before the model loads
    loaded = model.load()
    result, files = run_steer(loaded, neurons, options, out, statistics, prepared=prepared, progress=progress,
                              directions_path=directions)
    table = Table(title=f"steering {loaded.info.model_id}")
    for column in ("pair", "condition", "test n", "target % [95% CI]", "fluent target %", "source %", "other %",
                   "fluency ppl"):
        table.add_column(column, overflow="fold")
    for row in (r for r in result.rows if r["split"] == "test"):
        table.add_row(f"{row['source']}>{row['target']}", row["condition"], str(row["n"]),
                      f"{row['target_rate']:.0f} [{row['target_ci_low']:.0f}, {row['target_ci_high']:.0f}]",
                      f"{row['fluent_target_rate']:.0f}", f"{row['source_rate']:.0f}", f"{row['other_rate']:.0f}",
                      "-" if row["fluency_ppl"] is None else f"{row['fluency_ppl']:.1f}")
    console.print(table)
    console.print(f"{len(files)} files in {out}")


def _numbers(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise LangNeuronsError(f"{option} takes comma-separated numbers, got {text!r}") from None


@app.command()
@model_options
def finetune(
    task: Annotated[str, typer.Option(help="xnli, xquad or lm (causal-LM loss on --train-language text from --data).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Adapter folder (PEFT adapter + langneurons_finetune.json).")],
    train_language: Annotated[Optional[str], typer.Option(help="Language of the training data (default: en; lm: the one -l language).")] = None,
    data: Annotated[str, typer.Option(help="'builtin', 'hub' or a local path (XNLI folder/JSONL/TSV, XQuAD JSON/folder); lm: a statistics folder (its held-out text) or a corpus folder.")] = "builtin",
    limit: Annotated[Optional[int], typer.Option(help="Training examples (seeded subsample).")] = None,
    eval_fraction: Annotated[float, typer.Option(help="XQuAD: fraction of articles held out for evaluation.")] = 0.5,
    neurons: Annotated[str, typer.Option(help="Which MLP neurons may change: languages, random, all, none (attention-only LoRA).")] = "none",
    languages: Annotated[Optional[str], typer.Option("--languages", "-l", help="With --neurons languages/random: whose neurons.")] = None,
    neurons_file: Annotated[Optional[Path], typer.Option(help="Neuron set file for --neurons languages/random.")] = None,
    mlp_targets: Annotated[Optional[str], typer.Option(help="Neuron weights that may change: gate[,up,down] (default: gate for lora, gate,up,down for rows).")] = None,
    attention_lora: Annotated[Optional[bool], typer.Option("--attention-lora/--no-attention-lora", help="LoRA on attention too (default: only with --neurons none).")] = None,
    rank: Annotated[Optional[int], typer.Option(help="LoRA rank (default 8 for xnli, 64 for xquad).")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="LoRA alpha (default 2 x rank).")] = None,
    dropout: Annotated[float, typer.Option(help="LoRA dropout.")] = 0.05,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 2e-4,
    epochs: Annotated[int, typer.Option(help="Epochs (ignored with --max-steps).")] = 1,
    max_steps: Annotated[Optional[int], typer.Option(help="Optimizer steps (smoke runs).")] = None,
    batch_size: Annotated[int, typer.Option(help="Examples per micro-batch.")] = 8,
    grad_accumulation: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = 1,
    warmup_ratio: Annotated[float, typer.Option(help="Linear warmup as a fraction of the steps.")] = 0.03,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.01,
    max_length: Annotated[Optional[int], typer.Option(help="Tokens per example (contexts are cut, answers never).")] = None,
    bf16: Annotated[bool, typer.Option(help="bfloat16 autocast where supported.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of data order, LoRA init and random neurons.")] = 0,
    adapter: Annotated[str, typer.Option(help="lora, or rows: train the chosen neurons' own gate/up rows and down columns (no LoRA).")] = "lora",
    learning_rates: Annotated[Optional[str], typer.Option(help="Candidate learning rates (comma-separated) tried on the dev split; the best replaces --lr.")] = None,
    lr_search_steps: Annotated[int, typer.Option(help="Optimizer steps of each learning-rate candidate.")] = 0,
    lr_selection: Annotated[str, typer.Option(help="Rank candidates by dev 'score' (ties: lower dev loss) or dev 'loss' (XNLI, LM).")] = "score",
    dev_limit: Annotated[Optional[int], typer.Option(help="Development examples carved from the training data (xnli/xquad; not in the training sample).")] = None,
    eval_every: Annotated[int, typer.Option(help="Score the dev split every N steps (0: never).")] = 0,
    patience: Annotated[int, typer.Option(help="Stop after N dev evaluations without improvement; keep the best (0: off).")] = 0,
    lm_eval_fraction: Annotated[float, typer.Option(help="lm: fraction of the text kept for the perplexity evaluation.")] = 0.2,
    lm_dev_fraction: Annotated[float, typer.Option(help="lm: fraction of the text used as the dev split.")] = 0.1,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps (resume by rerunning).")] = 100,
    activation_checkpointing: Annotated[bool, typer.Option(help="Recompute layer activations in the backward pass: less memory, ~1 more forward of time, same weights.")] = False,
    model: ModelChoice = ModelChoice(),
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Fine-tune with plain LoRA or neuron-specific LoRA; rerun the same command to resume.

    Under accelerate launch or torchrun the same command trains data-parallel (docs/scaling.md).
    --batch-size stays the global micro-batch; the adapter equals the one-process adapter.
    """
    from langneurons.finetune.api import TrainingData, finetune_task
    from langneurons.finetune.train import FinetuneConfig

    config = FinetuneConfig(
        task=task, neurons=neurons, languages=_languages(languages) if languages else (),
        neuron_set_path=str(neurons_file) if neurons_file else None, lora_r=rank, lora_alpha=alpha,
        lora_dropout=dropout, attention_lora=attention_lora, mlp_targets=tuple(mlp_targets.split(",")) if mlp_targets else None,
        learning_rate=lr, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
        grad_accumulation=grad_accumulation, warmup_ratio=warmup_ratio, weight_decay=weight_decay, seed=seed,
        bf16=bf16, max_length=max_length, save_every=save_every, activation_checkpointing=activation_checkpointing,
        adapter=adapter, learning_rates=_floats(learning_rates, "--learning-rates") if learning_rates else (),
        lr_search_steps=lr_search_steps, lr_selection=lr_selection, eval_every=eval_every, patience=patience,
    )
    config.resolved()  # bad options fail before the model loads
    if train_language is None:
        if task == "lm" and len(config.languages) != 1:
            raise LangNeuronsError("--task lm trains on one language's text: give --train-language or one -l language")
        train_language = config.languages[0] if task == "lm" else "en"
    spec = TrainingData(task=task, language=train_language, data=data, limit=limit, eval_fraction=eval_fraction,
                        seed=seed, dev_limit=dev_limit, lm_eval_fraction=lm_eval_fraction,
                        lm_dev_fraction=lm_dev_fraction)
    loaded = model.load(per_process=True)  # under accelerate launch / torchrun: each process onto its own GPU
    result = finetune_task(loaded, spec, config, output, neuron_set_path=neurons_file, progress=progress)
    if os.environ.get("RANK", "0") != "0":
        return  # rank 0 reports
    search = result.metadata.get("lr_search")
    if search:
        console.print(f"learning rate {search['chosen']:g} chosen on dev ({search['dev_metric']} "
                      + ", ".join(f"{r:g}: {s:.2f}" for r, s in zip(search["candidates"], search["dev_scores"])) + ")")
    console.print(
        f"step {result.step}/{result.total_steps}, final loss {result.final_loss:.4f}, trainable parameters "
        f"{result.parameters.trainable:,}, neurons trained {result.trained_neurons:,}, skipped {result.skipped}, "
        f"truncated {result.truncated} -> {result.output_dir}"
    )


# run, report, demo and evaluate live in cli/experiment.py; they join the top-level commands.
from langneurons.cli.experiment import experiment_app  # noqa: E402

app.registered_commands.extend(experiment_app.registered_commands)


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning):
    """LangNeuronsWarning as one ``warning: ...`` line; other warnings as Python shows them."""
    if issubclass(category, LangNeuronsWarning):
        print(f"warning: {message}", file=file or sys.stderr, flush=True)
    else:
        _default(message, category, filename, lineno, file, line)


def main() -> None:
    warnings.showwarning = _show_warning
    try:
        app()
    except LangNeuronsError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted; completed files are kept, partial ones are not renamed into place", file=sys.stderr)
        sys.exit(130)
