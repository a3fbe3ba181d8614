"""Stage API: corpus -> per-language statistics files (what ``langneurons collect`` calls).

A statistics folder holds, per language, ``<lang>.safetensors`` (activation statistics of the
identification part of the corpus) and ``<lang>.heldout.safetensors`` (held-out token blocks,
never used for identification; the perplexity stage reads them), plus ``manifest.json``.

Under torchrun (``WORLD_SIZE > 1``) :func:`collect` shards every language's blocks over the ranks
and sums their statistics (:mod:`.distributed`); rank 0 writes the same files as one process.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from langneurons.activations.collect import CollectConfig, collect_with_replicates
from langneurons.activations.distributed import distributed_session, place_model
from langneurons.launch import world_size_from_env
from langneurons.activations.replicates import ReplicateStatistics, replicates_path
from langneurons.activations.sketch import SketchConfig
from langneurons.activations.statistics import ActivationStatistics
from langneurons.artefacts import LOCK_FILE, folder_lock, write_json
from langneurons.corpus.packing import load_blocks, prepare_language, save_blocks
from langneurons.corpus.sources import load_corpus
from langneurons.bounds import MAX_REPLICATES, check_count, check_seed
from langneurons.activations.residual import merge_residual_files
from langneurons.errors import LangNeuronsError, brief, warn
from langneurons.languages import check_languages
from langneurons.models.loading import LoadedModel
from langneurons.provenance import MANIFEST


@dataclass(frozen=True)
class CollectOptions:
    """What to read and how much of it.

    token_budget: text tokens per language for identification; heldout_budget: for perplexity.
    shard: ``(index, count)`` to process only every ``count``-th block starting at ``index``
    (merge the shard files later with ``langneurons merge``).
    backend: torch.distributed backend under torchrun (``gloo`` or ``nccl``; default nccl when
    CUDA is available, or ``$LANGNEURONS_DIST_BACKEND``).
    replicates: also keep per-chunk counts in this many interleaved chunks of blocks, in
    ``<lang>.replicates.safetensors`` (:mod:`.replicates`; needed by ``langneurons stability``).
    residual: also keep per-language, per-layer sums of the residual stream after each block in
    ``<lang>.residual.safetensors`` (:mod:`langneurons.activations.residual`; needed by DiffMean).
    """

    languages: tuple[str, ...]
    corpus: str = "builtin"
    corpus_path: str | None = None
    max_documents: int | None = None
    token_budget: int | None = 100_000
    heldout_fraction: float = 0.1
    heldout_budget: int | None = 20_000
    block_length: int = 512
    batch_size: int = 4
    seed: int = 0
    sketch: SketchConfig = field(default_factory=SketchConfig)
    shard: tuple[int, int] | None = None
    backend: str | None = None
    replicates: int | None = None
    residual: bool = False

    def __post_init__(self):
        check_collect_options(self)


ADDED_OPTIONS = {"replicates": None, "residual": False}
"""Fields added to :class:`CollectOptions` after its first release, with their defaults. At the
default they are left out of :func:`options_dict`, so manifests and the runner's cache keys of
existing statistics folders stay the same."""


def options_dict(options: CollectOptions) -> dict:
    """``asdict(options)`` without the added fields that hold their default value."""
    data = asdict(options)
    for name, default in ADDED_OPTIONS.items():
        if data.get(name) == default:
            data.pop(name, None)
    return data


def check_collect_options(options: CollectOptions) -> None:
    """Refuse option values that cannot give a useful statistics folder (checked when the options
    are made, so by the CLI and by ``load_config`` alike, before any model is loaded)."""
    def at_least(name: str, minimum: int, optional: bool = False) -> None:
        value = getattr(options, name)
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise LangNeuronsError(f"{name.replace('_', '-')} must be an integer >= {minimum}, got {brief(value)}")

    at_least("batch_size", 1)
    at_least("token_budget", 1, optional=True)
    at_least("heldout_budget", 0, optional=True)
    at_least("block_length", 2)
    at_least("max_documents", 1, optional=True)
    if not 0.0 <= options.heldout_fraction < 1.0:
        raise LangNeuronsError(f"heldout-fraction must be in [0, 1), got {brief(options.heldout_fraction)}")
    check_seed(options.seed)
    if options.replicates is not None:
        check_count(options.replicates, "replicates", 1, MAX_REPLICATES)
    if options.shard is not None and not 0 <= options.shard[0] < options.shard[1]:
        raise LangNeuronsError(f"shard must be i/n with 0 <= i < n, got {options.shard[0]}/{options.shard[1]}")


def statistics_path(directory, language: str, shard: tuple[int, int] | None = None) -> Path:
    suffix = f".shard{shard[0]}of{shard[1]}" if shard else ""
    return Path(directory) / f"{language}{suffix}.safetensors"


def heldout_path(directory, language: str) -> Path:
    return Path(directory) / f"{language}.heldout.safetensors"


def collect(
    loaded: LoadedModel, options: CollectOptions, out_dir, progress: bool = True
) -> dict[str, ActivationStatistics]:
    """Prepare each language's corpus and run the statistics pass; files land in ``out_dir``.

    Under torchrun, joins the process group for the duration of the call (see :mod:`.distributed`).
    """
    languages = check_languages(options.languages)
    check_collect_options(options)
    if options.shard is not None and world_size_from_env() > 1:
        raise LangNeuronsError("use either --shard i/n or torchrun, not both (torchrun shards the blocks itself)")
    with distributed_session(options.backend) as context:
        if context is not None:
            place_model(loaded, context)
        if context is not None and not context.is_main:
            return _collect(loaded, options, languages, Path(out_dir), progress, context)
        with folder_lock(out_dir, lock_name(options.shard)):  # rank 0 holds the folder for all ranks
            return _collect(loaded, options, languages, Path(out_dir), progress, context)


def lock_name(shard: tuple[int, int] | None) -> str:
    """The lock file of a collect run: shards of one folder run side by side, each holds its own."""
    return LOCK_FILE if shard is None else f".langneurons.shard{shard[0]}of{shard[1]}.lock"


def _collect(loaded, options, languages, out_dir: Path, progress: bool, context) -> dict[str, ActivationStatistics]:
    main = context is None or context.is_main
    corpus = load_corpus(options.corpus, languages, max_documents=options.max_documents, local_path=options.corpus_path)
    results: dict[str, ActivationStatistics] = {}
    if options.replicates is not None and options.replicates < 1:
        raise LangNeuronsError(f"replicates must be at least 1, got {options.replicates}")
    config = CollectConfig(batch_size=options.batch_size, sketch=options.sketch, replicates=options.replicates,
                           residual=options.residual)
    for language in languages:
        data = prepare_language(
            loaded.tokenizer, corpus[language], language, options.block_length, options.token_budget,
            options.heldout_fraction, options.heldout_budget, options.seed,
        )
        blocks = data.identification
        block_ids = torch.arange(blocks.num_blocks)
        if options.shard is not None:
            index, count = options.shard
            blocks = blocks.select(slice(index, None, count))
            block_ids = block_ids[index::count]
        writes_heldout = main and (options.shard is None or options.shard[0] == 0)
        if data.heldout is not None and writes_heldout:
            save_blocks(data.heldout, heldout_path(out_dir, language), {"model": loaded.info.model_id})
        elif writes_heldout:
            warn(f"no held-out text for {language!r} ({len(corpus[language])} document(s), held-out fraction "
                 f"{options.heldout_fraction}, budget {options.heldout_budget}): ppl-matrix cannot score it")
        results[language] = collect_with_replicates(
            loaded, blocks, config, output=statistics_path(out_dir, language, options.shard), progress=progress,
            distributed=context, block_ids=block_ids,
        )[0]
    manifest = {
        "model": loaded.info.to_dict(),
        "options": options_dict(options),
        "languages": languages,
        "token_counts": {lang: stats.token_count for lang, stats in results.items()},
        "corpus_files": corpus_fingerprints(options.corpus, languages),
    }
    if main:
        write_json(out_dir / (MANIFEST if options.shard is None else f"manifest.shard{options.shard[0]}.json"),
                   manifest)
    return results


def corpus_fingerprints(corpus: str, languages) -> dict[str, dict[str, str]]:
    """Language -> ``{"path", "sha256"}`` of the corpus file a statistics pass reads (recorded in its
    manifest; ``heldout`` steering prompts are re-read from it and must be the same lines)."""
    from langneurons.corpus.sources import corpus_files

    return {language: {"path": str(path), "sha256": file_sha256(path)}
            for language, path in corpus_files(corpus, languages).items()}


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_corpus_unchanged(statistics_dir, languages) -> None:
    """The corpus files of ``languages`` are those the statistics pass of ``statistics_dir`` read
    (same SHA-256), so lines re-read from them (``heldout`` prompts) are the lines it held out; a
    one-line error naming a changed file; a warning for statistics that record no fingerprints."""
    manifest_path = Path(statistics_dir) / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        recorded, corpus = manifest.get("corpus_files"), manifest["options"]["corpus"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise LangNeuronsError(f"cannot read the statistics manifest {manifest_path}: {error}") from None
    if recorded is None:
        warn(f"{manifest_path} records no corpus file fingerprints (statistics of an older langneurons): cannot "
             "check that the held-out lines re-read from the corpus are the ones held out")
        return
    now = corpus_fingerprints(corpus, [language for language in languages if language in recorded])
    for language in languages:
        if language not in recorded:
            continue
        path = recorded[language]["path"]
        if language not in now or now[language]["sha256"] != recorded[language]["sha256"]:
            raise LangNeuronsError(f"corpus file {path} changed since the statistics pass of {statistics_dir} "
                                   "(SHA-256 differs): its held-out lines are no longer known; collect again")


def load_statistics_dir(directory, languages=None, expected=None) -> dict[str, ActivationStatistics]:
    """Statistics of a folder written by :func:`collect` (all languages, or the chosen ones)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise LangNeuronsError(f"statistics folder not found: {directory}")
    available = sorted(p.name[: -len(".safetensors")] for p in directory.glob("*.safetensors")
                       if "." not in p.name[: -len(".safetensors")])
    chosen = list(check_languages(languages)) if languages else available
    missing = [lang for lang in chosen if lang not in available]
    if missing:
        raise LangNeuronsError(f"no statistics for {missing} in {directory} (available: {', '.join(available) or 'none'})")
    return {lang: ActivationStatistics.load(statistics_path(directory, lang), expected=expected) for lang in chosen}


def load_replicates_dir(directory, languages, statistics=None) -> dict[str, ReplicateStatistics]:
    """Per-chunk counts of ``languages`` in a folder collected with ``--replicates``. With
    ``statistics`` (language -> the merged statistics of the same folder) the chunks must sum to
    them exactly (:func:`~.replicates.merged_check`), else a one-line error naming the file."""
    from langneurons.activations.replicates import merged_check

    directory = Path(directory)
    missing = [lang for lang in languages if not replicates_path(statistics_path(directory, lang)).exists()]
    if missing:
        raise LangNeuronsError(f"no replicate statistics for {missing} in {directory}; "
                               "collect them with 'langneurons collect --replicates R'")
    loaded = {}
    for lang in languages:
        path = replicates_path(statistics_path(directory, lang))
        loaded[lang] = replicates = ReplicateStatistics.load(path)
        merged = (statistics or {}).get(lang)
        if merged is not None and (not replicates.meta.same_model(merged.meta) or replicates.sketch != merged.sketch
                                   or not merged_check(replicates, merged)):
            raise LangNeuronsError(f"{path}: its chunks do not sum to the statistics {statistics_path(directory, lang)}"
                                   " (files of different passes, or damaged); collect again")
    return loaded


def load_heldout(directory, language: str, tokenizer=None):
    """Held-out blocks of ``language`` saved by :func:`collect`. Files written before documents
    were recorded get their ``document_ids`` back when ``tokenizer`` is given and re-packing the
    held-out documents of the corpus the folder's manifest names gives exactly the same blocks
    (tokenization only, no model pass); otherwise they load without them."""
    blocks = load_blocks(heldout_path(directory, language))
    if blocks.document_ids is None and tokenizer is not None:
        blocks = _recover_documents(Path(directory), blocks, tokenizer)
    return blocks


def _recover_documents(directory: Path, blocks, tokenizer):
    import json
    from dataclasses import replace

    from langneurons.corpus.packing import pack_blocks, split_documents

    try:
        options = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))["options"]
        corpus = load_corpus(options["corpus"], [blocks.language], max_documents=options.get("max_documents"),
                             local_path=options.get("corpus_path"))
        _, held = split_documents(corpus[blocks.language], float(options["heldout_fraction"]), int(options["seed"]))
        again = pack_blocks(tokenizer, held, blocks.language, int(options["block_length"]), options["heldout_budget"])
    except (OSError, ValueError, KeyError, TypeError, LangNeuronsError):
        return blocks  # the corpus is gone or the manifest is not ours: intervals fall back to blocks
    if (again.input_ids.shape != blocks.input_ids.shape or not torch.equal(again.input_ids, blocks.input_ids)
            or not torch.equal(again.counted, blocks.counted)):
        return blocks
    return replace(blocks, document_ids=again.document_ids)


def merge_statistics(paths, output) -> ActivationStatistics:
    """Add statistics files of the same model and language (e.g. shards); write the sum.

    Refuses files of other models, languages or histogram bins, and the same blocks twice
    (equal corpus fingerprints), which would count tokens twice.
    """
    if len(paths) < 1:
        raise LangNeuronsError("nothing to merge")
    merged = ActivationStatistics.load(paths[0])
    seen = {merged.meta.corpus_fingerprint: paths[0]}
    for path in paths[1:]:
        part = ActivationStatistics.load(path)
        merged.check_compatible(part)
        if part.meta.corpus_fingerprint in seen:
            raise LangNeuronsError(f"{path} and {seen[part.meta.corpus_fingerprint]} hold the same token blocks; "
                                   "merging them would count every token twice")
        seen[part.meta.corpus_fingerprint] = path
        merged = merged.merge(part)
    _merge_replicates(paths, output, merged)
    merge_residual_files(paths, output)
    merged.save(output)
    return merged


def _merge_replicates(paths, output, merged: ActivationStatistics) -> None:
    """Shards collected with ``--replicates`` hold different blocks of the same chunks: add their
    per-chunk counts too (all shards must have them, or none)."""
    present = [replicates_path(path).exists() for path in paths]
    if not any(present):
        return
    if not all(present):
        raise LangNeuronsError("some shards have replicate statistics and some do not; collect all with --replicates")
    parts = [ReplicateStatistics.load(replicates_path(path)) for path in paths]
    total = parts[0]
    for part in parts[1:]:
        total = total.add(part)
    total = ReplicateStatistics(merged.meta, total.sketch, total.token_count, total.positive_count, total.histogram)
    total.save(replicates_path(output), input_hash="merged")
