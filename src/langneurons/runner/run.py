"""The experiment runner: every stage of the study from one config, cached, with a manifest.

Stages (each in its own folder of the run directory)::

    statistics/             activation statistics + held-out blocks per language
    identify/<set>/         neurons.json (+ entropy, figures) per identification entry
    stability/<set>/        resampling stability of a LAPE/act-prob set (``stability:`` section)
    ppxc/<set>/             perplexity-change matrix, tables and heatmap per neuron set
    steering/               language steering: rates per pair and condition, examples, figures
    finetune/<run>/         LoRA / neuron-LoRA adapter (or neuron rows) per fine-tuning run;
                            LM-task runs: perplexity.json (base vs tuned on held-out text)
    evaluate/<model>/       scores.csv/json + predictions.jsonl per evaluated model (the grid)
    results/                all scores, model comparisons, intervention-delta figure
    claims/                 the literature's claims tested on the run's artefacts (claims.md/csv/json)
    lm_eval/                lm-evaluation-harness tasks under the conditions (config section lm_eval)
    lm_eval_ppl/<model>/    per-block NLL of base and LM-tuned models on held-out target text (subnetwork claim)
    report/                 report.md + report.html (written by :mod:`langneurons.report.report`)
    manifest.json           config, versions, model, per-stage keys/timings/outputs

Caching: a stage's key is ``stable_hash`` of the tool version, its options and the content
hashes of the upstream outputs it reads ("products": the neuron set file, not its figures). A
stage is skipped only when its ``stage.json`` has the same key and every output file it
recorded is still there with the same SHA-256; otherwise its folder is cleared and it is
recomputed (a changed option reruns the stage and whatever reads its products; a deleted or
edited output reruns that stage). A stage interrupted with the same key keeps its folder, so
the stage APIs resume (statistics and PPXC checkpoints, fine-tuning checkpoints, each guarded by
its own input hash). The statistics folder is never cleared: its per-language files are reused by
:func:`langneurons.activations.collect_statistics` only when their recorded input hash matches.

The model is loaded only when a stage has to run; its weights fingerprint must match the one in
the manifest (LangNeuronsError otherwise; pin ``model.revision`` for hub models). A run directory
written by another tool version is refused unless ``force`` (then every stage reruns: the
version is in every key).
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import platform
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import yaml

from langneurons import __version__
from langneurons.artefacts import (LOCK_FILE, check_plain_name, ensure_dir, folder_lock, stable_hash, write_json,
                                   write_text)
from langneurons.errors import LangNeuronsError
from langneurons.finetune.lm_task import LM_TASK
from langneurons.finetune.rows import ROWS_FILE
from langneurons.models.architectures import adapter_for
from langneurons.models.loading import LoadedModel
from langneurons.runner.config import ExperimentConfig, ModelConfig, check_input_paths, load_config

FORMAT = "langneurons.run/1"
MANIFEST = "manifest.json"
STAGE_RECORD = "stage.json"
ModelLoader = Callable[[ModelConfig], LoadedModel]
_PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets", "safetensors", "torchmetrics", "matplotlib",
             "numpy", "scipy", "pyyaml", "lingua-language-detector", "lm_eval")


@dataclass
class StageRecord:
    """One stage of one invocation: ``status`` is ``computed`` or ``cached``; ``seconds`` the wall
    time it took now, ``compute_seconds`` / ``cpu_seconds`` the wall / process CPU time its outputs
    took to compute; ``outputs`` maps file paths (relative to the run directory) to SHA-256;
    ``product`` hashes the outputs downstream reads."""

    name: str
    key: str
    status: str
    seconds: float
    compute_seconds: float
    cpu_seconds: float
    product: str
    outputs: dict[str, str] = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunResult:
    run_dir: Path
    manifest: Path
    stages: dict[str, StageRecord]
    seconds: float
    report: tuple[Path, Path] | None = None

    @property
    def computed(self) -> list[str]:
        return [name for name, record in self.stages.items() if record.status == "computed"]

    @property
    def cached(self) -> list[str]:
        return [name for name, record in self.stages.items() if record.status == "cached"]


def default_loader(spec: ModelConfig) -> LoadedModel:
    """Load the configured model with :func:`langneurons.models.loading.load_model`."""
    from langneurons.models.loading import load_model

    loaded = load_model(spec.name, revision=spec.revision, dtype=spec.dtype, device_map=spec.device_map,
                        load_in_4bit=spec.load_in_4bit, gguf_file=spec.gguf_file)
    if spec.device:
        loaded.model.to(spec.device)
    return loaded


def run_experiment(
    config: str | Path | Mapping | ExperimentConfig,
    run_dir: str | Path,
    *,
    loader: ModelLoader | None = None,
    loaded: LoadedModel | None = None,
    force: bool = False,
    progress: bool = True,
    report: bool = True,
    variables: Mapping[str, str] | None = None,
) -> RunResult:
    """Run (or resume) the experiment ``config`` (YAML path, dict or ExperimentConfig) in ``run_dir``.

    ``loaded`` (an already loaded model) or ``loader`` (``ModelConfig -> LoadedModel``) replace
    :func:`default_loader`; either way the model is loaded only if some stage must run.
    ``force`` accepts a run directory of another tool version (every stage is recomputed).
    The runner is one process: under torchrun / accelerate launch it refuses to start (launch
    the stage commands ``collect`` and ``finetune`` instead; docs/scaling.md).
    """
    from langneurons.launch import world_size_from_env

    if world_size_from_env() > 1:
        raise LangNeuronsError("langneurons run is one process; launch 'collect' or 'finetune' with torchrun / "
                               "accelerate launch instead (see docs/scaling.md)")
    if not isinstance(config, ExperimentConfig):
        config = load_config(config, variables)
    check_input_paths(config)  # before any stage (and before the model loads)
    if loaded is not None:
        loader = lambda spec: loaded  # noqa: E731
    return _Experiment(config, Path(run_dir), loader or default_loader, force, progress).run(report)


def _perplexity_role(run) -> str | None:
    """An LM-task run's arm in the subnetwork claim: ``lape-rows`` (rows of a language's neurons),
    ``random-rows``, ``lora``; None for other runs (e.g. the rows of all neurons)."""
    if run.options.adapter == "lora":
        return "lora"
    return {"languages": "lape-rows", "random": "random-rows"}.get(run.options.neurons)


# ---------------------------------------------------------------------------------- task data


def task_examples(tasks, task: str, language: str, split: str) -> list:
    """Examples of ``task`` in ``language`` for ``split`` as configured in ``tasks`` (a
    :class:`langneurons.runner.config.TasksConfig`): ``eval``, ``train``, or ``dev`` (``dev_limit``
    examples of the training data that the ``train`` sample does not contain)."""
    from langneurons.tasks import load_xnli, load_xquad, split_by_article, subsample

    options = getattr(tasks, task)
    if options is None:
        raise LangNeuronsError(f"task {task!r} has no data section under tasks")
    if split == "dev":
        every = task_examples(replace(tasks, **{task: replace(options, train_limit=None)}), task, language, "train")
        training = {example.id for example in task_examples(tasks, task, language, "train")}
        unused = [example for example in every if example.id not in training]
        if not unused:
            raise LangNeuronsError(f"{task}: no training examples are left for a development sample "
                                   f"(lower train_limit or drop dev_limit)")
        return subsample(unused, options.dev_limit, options.seed + 1)
    if task == "xnli":
        if split == "train":
            return load_xnli(options.train_source or options.source, language, "train", options.train_limit,
                             options.seed, options.balanced)
        return load_xnli(options.source, language, "test", options.eval_limit, options.seed, options.balanced)
    if options.train == "by_article":
        source = (options.train_source or options.source) if split == "train" else options.source
        train, held_out = split_by_article(load_xquad(source, language), options.eval_fraction, options.seed)
        chosen = train if split == "train" else held_out
        return subsample(chosen, options.train_limit if split == "train" else options.eval_limit, options.seed)
    if split == "train":
        return load_xquad(options.train_source or options.source, language, options.train_limit, options.seed, "train")
    return load_xquad(options.source, language, options.eval_limit, options.seed)


# ---------------------------------------------------------------------------------- the run


def _sha256(path: Path, canonical: bool = True) -> str:
    """SHA-256 of a file's content. A ``.safetensors`` file is hashed with its JSON header in
    canonical form (sorted keys): the library writes the metadata map in an arbitrary order, so
    the same tensors and metadata may be different bytes. ``canonical=False``: the raw bytes (how
    run directories of earlier versions recorded their outputs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if canonical and path.suffix == ".safetensors":
            size = handle.read(8)
            try:
                header = json.loads(handle.read(int.from_bytes(size, "little")))
                digest.update(json.dumps(header, sort_keys=True).encode())
            except (ValueError, OverflowError, MemoryError):
                handle.seek(0)  # not a readable safetensors header: hash the bytes as they are
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _folder_hash(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (task YAML and local data), by relative path."""
    return {str(p.relative_to(folder)): _sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version(), "langneurons": __version__}
    for name in _PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def machine_description() -> str:
    """What the stages ran on, e.g. ``x86_64, 2 CPU cores (torch threads 2)`` or ``... CUDA: NVIDIA H200``."""
    import os

    import torch

    text = f"{platform.machine()}, {os.cpu_count()} CPU cores (torch threads {torch.get_num_threads()})"
    if torch.cuda.is_available():
        text += f", CUDA: {torch.cuda.get_device_name(0)}"
    return text


class _Experiment:
    def __init__(self, config: ExperimentConfig, run_dir: Path, loader: ModelLoader, force: bool, progress: bool):
        self.config, self.run_dir, self.loader, self.force, self.progress = config, run_dir, loader, force, progress
        self.records: dict[str, StageRecord] = {}
        self._loaded: LoadedModel | None = None
        self._prepared: dict = {}
        self.manifest: dict = {}

    # ------------------------------------------------------------------ model
    @property
    def loaded(self) -> LoadedModel:
        if self._loaded is None:
            self._log("loading model " + self.config.model.name)
            self._loaded = self.loader(self.config.model)
            recorded = (self.manifest.get("model") or {}).get("weights_fingerprint")
            if recorded and recorded != self._loaded.info.weights_fingerprint:  # cached stages would be stale
                raise LangNeuronsError(
                    f"{self.run_dir / MANIFEST}: this run was made with model weights {recorded}, "
                    f"{self._loaded.info.model_id} now has {self._loaded.info.weights_fingerprint}; "
                    "use a new run directory")
            self.manifest["model"] = self._loaded.info.to_dict()
            self._save_manifest()
        return self._loaded

    def fresh_base(self) -> LoadedModel:
        """A private copy of the base model (fine-tuning and adapter loading wrap it in place): a deep
        copy of a model on one device, a fresh load of one dispatched over devices (``device_map``)."""
        base = self.loaded
        if getattr(base.model, "hf_device_map", None):
            return self.loader(self.config.model)
        model = copy.deepcopy(base.model)
        return LoadedModel(model=model, tokenizer=base.tokenizer, info=base.info, adapter=adapter_for(model))

    # ------------------------------------------------------------------ bookkeeping
    def _log(self, message: str) -> None:
        if self.progress:
            print(f"[langneurons] {message}", file=sys.stderr, flush=True)

    def _check_run_dir(self) -> None:
        path = self.run_dir / MANIFEST
        if path.exists():
            try:
                manifest = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                manifest = {}
            if manifest.get("format") != FORMAT and not self.force:
                raise LangNeuronsError(f"{path} is not a langneurons run manifest; "
                                       "use another run directory or --force")
            if manifest.get("tool_version") != __version__ and not self.force:
                raise LangNeuronsError(
                    f"{path} was written by langneurons {manifest.get('tool_version')}, this is {__version__}; "
                    "use a new run directory or --force (everything is recomputed)")
            self.manifest = manifest if manifest.get("format") == FORMAT else {}
        elif self.run_dir.exists() and any(p.name != LOCK_FILE for p in self.run_dir.iterdir()) and not self.force:
            raise LangNeuronsError(f"{self.run_dir} is not empty and has no {MANIFEST}: not a langneurons run "
                                   "directory (choose another or use --force)")
        if self.force and self.manifest.get("tool_version") != __version__:
            self.manifest.pop("model", None)

    def _save_manifest(self) -> None:
        self.manifest.update({
            "format": FORMAT, "tool_version": __version__, "config": self.config.to_dict(),
            "config_hash": stable_hash(self.config.to_dict()), "versions": package_versions(),
            "stages": {name: record.to_dict() for name, record in self.records.items()},
            "stage_order": list(self.records),
            "outputs": sorted(p for record in self.records.values() for p in record.outputs),
        })
        self.manifest["machine"] = machine_description()
        self.manifest.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
        self.manifest["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_json(self.run_dir / MANIFEST, self.manifest)

    def _intact(self, outputs: Mapping[str, str]) -> bool:
        for relative, digest in outputs.items():
            path = self.run_dir / relative
            if not path.is_file() or digest not in (_sha256(path), _sha256(path, canonical=False)):
                return False
        return bool(outputs)

    def stage(self, name: str, inputs: dict, compute: Callable[[Path], None], product: tuple[str, ...] = ("*",),
              clear: bool = True) -> StageRecord:
        """Run ``compute(directory)`` unless its outputs for ``inputs`` are cached (module docstring)."""
        key = stable_hash(FORMAT, __version__, name, inputs)
        directory = self.run_dir / name
        for part in name.split("/"):  # names are checked when the config loads; never a stage outside the run
            check_plain_name(part, f"stage {name!r}: each part")
        record_path = directory / STAGE_RECORD
        try:
            previous = json.loads(record_path.read_text(encoding="utf-8")) if record_path.exists() else {}
        except ValueError:
            previous = {}
        start, cpu_start = time.perf_counter(), time.process_time()
        if previous.get("key") == key and previous.get("status") == "complete" and self._intact(previous["outputs"]):
            record = StageRecord(name, key, "cached", time.perf_counter() - start, previous["compute_seconds"],
                                 previous.get("cpu_seconds", 0.0), previous["product"], previous["outputs"], inputs)
            self._log(f"{name}: cached")
        else:
            resumable = previous.get("key") == key and previous.get("status") == "running"
            if directory.exists() and clear and not resumable:
                shutil.rmtree(directory)
            ensure_dir(directory)
            write_json(record_path, {"key": key, "status": "running"})
            self._log(f"{name}: computing")
            compute(directory)
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
            files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != STAGE_RECORD
                           and not p.name.startswith("."))
            outputs = {str(p.relative_to(self.run_dir)): _sha256(p) for p in files}
            chosen = sorted(p for pattern in product for p in directory.glob(pattern) if p.is_file()
                            and p.name != STAGE_RECORD)
            product_hash = stable_hash([[str(p.relative_to(directory)), outputs[str(p.relative_to(self.run_dir))]]
                                        for p in chosen])
            record = StageRecord(name, key, "computed", seconds, seconds, cpu_seconds, product_hash, outputs, inputs)
            write_json(record_path, {"key": key, "status": "complete", "compute_seconds": seconds,
                                     "cpu_seconds": cpu_seconds, "product": product_hash, "outputs": outputs,
                                     "inputs": inputs})
            self._log(f"{name}: done in {seconds:.1f} s")
        self.records[name] = record
        self._save_manifest()
        return record

    # ------------------------------------------------------------------ stages
    def statistics(self) -> StageRecord:
        from langneurons.activations.api import collect, options_dict

        config = self.config
        options = config.statistics

        def compute(directory: Path) -> None:
            collect(self.loaded, options, directory, progress=self.progress)
            for path in directory.glob("*.safetensors*"):  # files of languages no longer configured
                if path.name.split(".")[0] not in config.languages:
                    path.unlink()

        inputs = {"model": asdict(config.model), "statistics": options_dict(options)}  # unchanged keys by default
        return self.stage("statistics", inputs, compute, product=("*.safetensors",), clear=False)

    def identify(self, entry, statistics: StageRecord) -> StageRecord:
        from langneurons.identify.api import identify
        from langneurons.identify.api import options_dict as identify_options_dict

        like_name = entry.options.like
        like = self.records[f"identify/{like_name}"] if like_name else None
        options = replace(entry.options, languages=tuple(self.config.languages),
                          like=str(self.run_dir / "identify" / like_name / "neurons.json") if like_name else None)

        def compute(directory: Path) -> None:
            identify(self.run_dir / "statistics", options, output=directory / "neurons.json", figures=entry.figures)

        inputs = {"options": identify_options_dict(replace(options, like=like_name)), "figures": entry.figures,
                  "statistics": statistics.product if entry.method != "random" else None,
                  "like": like.product if like else None}
        return self.stage(f"identify/{entry.name}", inputs, compute, product=("neurons.json",))

    def stability(self, set_name: str, statistics: StageRecord) -> StageRecord:
        from langneurons.identify.api import options_dict as identify_options_dict
        from langneurons.identify.api import stability_of
        from langneurons.identify.stability import StabilityOptions

        config = self.config.stability
        options = replace(self.config.neuron_set(set_name).options, languages=tuple(self.config.languages))
        resampling = StabilityOptions(resamples=config.resamples, splits=config.splits, seed=config.seed,
                                      confidence=config.confidence)

        def compute(directory: Path) -> None:
            stability_of(self.run_dir / "statistics", options, resampling, out_dir=directory,
                         min_frequency=config.min_frequency)

        inputs = {"resampling": asdict(resampling), "min_frequency": config.min_frequency,
                  "identify": identify_options_dict(options), "statistics": statistics.product}
        return self.stage(f"stability/{set_name}", inputs, compute, product=("stability.json", "stable.json"))

    def _neuron_set(self, name: str):
        from langneurons.identify.neuron_set import NeuronSet

        return NeuronSet.load(self.run_dir / "identify" / name / "neurons.json")

    def _statistics_for(self, languages) -> dict:
        from langneurons.activations.api import load_statistics_dir

        return load_statistics_dir(self.run_dir / "statistics", list(languages))

    def ppxc(self, set_name: str, statistics: StageRecord) -> StageRecord:
        from langneurons.activations.api import load_heldout
        from langneurons.intervene import ppxc_matrix, write_ppxc
        from langneurons.report.ppxc_figures import write_ppxc_figure

        options = self.config.ppxc
        languages = list(options.languages or self.config.languages)

        def compute(directory: Path) -> None:
            heldout = {language: load_heldout(self.run_dir / "statistics", language, self.loaded.tokenizer)
                       for language in languages}
            needs_statistics = options.action.split("=")[0] in ("stat", "add")
            result = ppxc_matrix(
                self.loaded, self._neuron_set(set_name), heldout, languages, intervention_kind=options.action,
                random_control=options.random_control, seed=options.seed, token_budget=options.token_budget,
                cache_dir=directory / "cells", progress=self.progress, batch_size=options.batch_size,
                statistics_by_language=self._statistics_for(self.config.languages) if needs_statistics else None,
                n_resamples=options.bootstrap_resamples, confidence=options.confidence,
            )
            write_ppxc(result, directory)
            write_ppxc_figure(result, directory, name="ppxc", measure=options.measure)

        own_options = {k: v for k, v in asdict(options).items() if k != "neuron_sets"}  # not the other sets
        inputs = {"options": own_options, "languages": languages, "statistics": statistics.product,
                  "neurons": self.records[f"identify/{set_name}"].product}
        return self.stage(f"ppxc/{set_name}", inputs, compute, product=("ppxc.json",))

    def steering(self, statistics: StageRecord) -> StageRecord:
        from importlib.metadata import version

        from langneurons.steer.api import write_steering
        from langneurons.steer.experiment import run_steering, steering_prompts
        from langneurons.steer.langid import LinguaIdentifier

        from langneurons.runner.directions import steering_directions, steering_keys

        steering = self.config.steering
        options = steering.options
        neurons = steering.neuron_set is not None
        load_directions, direction_inputs = steering_directions(self)

        def compute(directory: Path) -> None:
            if options.prompts == "heldout":  # the lines re-read from the corpus must be the ones held out
                from langneurons.activations.api import check_corpus_unchanged

                check_corpus_unchanged(self.run_dir / "statistics", options.source_languages)
            identifier = LinguaIdentifier(options.identifier_languages, options.min_confidence)
            result = run_steering(
                self.loaded, self._neuron_set(steering.neuron_set) if neurons else None, options, identifier,
                self._statistics_for(options.languages) if neurons and options.needs_statistics else None,
                set_name=steering.neuron_set, prompts=steering_prompts(options, asdict(self.config.statistics)),
                progress=self.progress, directions=load_directions(), direction_name=steering.directions)
            write_steering(result, directory, options.examples)

        own = steering_keys(asdict(options), bool(direction_inputs))
        inputs = {"model": asdict(self.config.model), "options": own, "neuron_set": steering.neuron_set,
                  "neurons": self.records[f"identify/{steering.neuron_set}"].product if neurons else None,
                  "statistics": statistics.product if options.needs_statistics_folder else None,
                  "identifier": version("lingua-language-detector"), **direction_inputs}
        return self.stage("steering", inputs, compute, product=("steering.json",))

    def finetune(self, run) -> StageRecord:
        from langneurons.finetune import finetune

        tasks = self.config.tasks
        neuron_record = self.records[f"identify/{run.neuron_set}"] if run.neuron_set else None
        uses_set = run.options.neurons in ("languages", "random")

        wants_dev = bool(run.options.eval_every or run.options.learning_rates or run.options.patience)
        first_seed = self._first_seed(run) if run.options.learning_rates else None
        lm_text = run.task == LM_TASK

        def compute(directory: Path) -> None:
            from langneurons.report.finetune_figures import write_learning_curve

            if lm_text:  # train / dev / eval parts of the language's held-out (or other) text
                parts = self._lm_parts(run.source_language)
                examples, dev = parts["train"], (parts["dev"] or None) if wants_dev else None
            else:  # the test split is never read here (learning-rate choice and stopping use dev only)
                examples = task_examples(tasks, run.task, run.source_language, "train")
                dev = (task_examples(tasks, run.task, run.source_language, "dev")
                       if getattr(tasks, run.task).dev_limit and wants_dev else None)
            options = self._equal_parameters(run, directory)
            base = self.fresh_base()
            neuron_set = self._neuron_set(run.neuron_set) if uses_set else None
            search = None
            if first_seed is not None:  # one learning-rate search per run, not per seed
                search = json.loads((self.run_dir / "finetune" / first_seed / "langneurons_finetune.json")
                                    .read_text(encoding="utf-8"))["lr_search"]
            result = finetune(base, examples, options, directory, neuron_set=neuron_set, progress=self.progress,
                              dev_examples=dev, dev_language=run.source_language, lr_search=search)
            write_learning_curve(result.metadata, directory, title=f"{run.name}: learning curve")
            if lm_text:
                self._write_lm_perplexity(result.model, parts["eval"], run, directory)
            del base, result
            gc.collect()

        inputs = {"model": asdict(self.config.model), "run": asdict(run), "data": asdict(getattr(tasks, run.task)),
                  "neurons": neuron_record.product if (neuron_record and uses_set) else None}
        if lm_text:
            inputs["statistics"] = asdict(self.config.statistics) if tasks.lm.source == "heldout" else None
        if first_seed is not None:
            inputs["lr_search_from"] = self.records[f"finetune/{first_seed}"].product
        if run.equal_parameters_to is not None:
            matched = self.config.run(run.equal_parameters_to)
            inputs["equal_parameters_to"] = {"run": asdict(matched), "neurons": self.records[
                f"identify/{matched.neuron_set}"].product if matched.neuron_set else None}
        product = (ROWS_FILE,) if run.options.adapter == "rows" else ("adapter_model.safetensors", "adapter_config.json")
        return self.stage(f"finetune/{run.name}", inputs, compute, product=product + (("perplexity.json",) * lm_text))

    def _first_seed(self, run) -> str | None:
        """The first seeded run of ``run``'s group (``name@seed``) when ``run`` is a later one, else None."""
        from langneurons.runner.config import seed_groups

        group = next(members for members in seed_groups(self.config.finetune).values() if run.name in members)
        return group[0] if len(group) > 1 and group[0] != run.name else None

    def _equal_parameters(self, run, directory: Path):
        """The run's options, with ``lora_r`` set to match the trainable parameters of the rows run
        ``run.equal_parameters_to`` (sizes written to ``equal_parameters.json``)."""
        if run.equal_parameters_to is None:
            return run.options
        from langneurons.finetune.rows import equal_parameters, lora_targets
        from langneurons.finetune.train import training_neurons

        def mask(of) -> "torch.Tensor | None":
            options = of.options.resolved()
            uses = options.neurons in ("languages", "random")
            return training_neurons(options, self.loaded.info, self._neuron_set(of.neuron_set) if uses else None)[0]

        matched = self.config.run(run.equal_parameters_to)
        own = run.options.resolved()
        sizes = equal_parameters(self.loaded.adapter, mask(matched), lora_targets(self.loaded.adapter, own, mask(run)),
                                 matched.options.resolved().mlp_targets)
        write_json(directory / "equal_parameters.json", {"matched_run": matched.name, **asdict(sizes)})
        return replace(run.options, lora_r=sizes.rank)

    def lm_perplexity_models(self) -> list[str]:
        """``base`` and every LM-task run with a role in the subnetwork claim (none without LM runs)."""
        named = [run.name for run in self.config.finetune if run.task == LM_TASK and _perplexity_role(run)]
        return ["base"] + named if named else []

    def lm_perplexity(self, model_name: str) -> StageRecord:
        """Per-block NLL of ``model_name`` on the eval part of its LM text (every target language for
        ``base``) -> ``lm_eval_ppl/<model>/perplexity.json`` (:class:`langneurons.report.claims.PerplexityUnits`)."""
        from langneurons.finetune import load_finetuned
        from langneurons.finetune.lm_task import lm_blocks
        from langneurons.intervene.perplexity import perplexity
        from langneurons.report.claims import PerplexityUnits

        section = self.config.tasks.lm
        lm_runs = [run for run in self.config.finetune if run.task == LM_TASK and _perplexity_role(run)]
        run = None if model_name == "base" else self.config.run(model_name)
        languages = sorted({r.source_language for r in lm_runs}) if run is None else [run.source_language]
        batch_size = self.config.evaluation.batch_size if self.config.evaluation is not None else 8

        def compute(directory: Path) -> None:
            if run is None:
                model, parameters = self.loaded, None
            else:
                folder = self.run_dir / "finetune" / model_name
                model = load_finetuned(folder, base=self.fresh_base())
                parameters = json.loads((folder / "langneurons_finetune.json").read_text())["parameters"]["trainable"]
            units = {}
            for language in languages:
                blocks = lm_blocks(model.tokenizer, self._lm_parts(language)["eval"], language, section.block_length,
                                   section.eval_token_budget)
                result = perplexity(model, blocks, batch_size=batch_size, progress=self.progress)
                units[language] = [{"id": f"block-{i}", "nll": nll, "tokens": tokens}
                                   for i, (nll, tokens) in enumerate(zip(result.block_nll, result.block_tokens))]
            PerplexityUnits(model_name, "baseline" if run is None else _perplexity_role(run),
                            None if run is None else run.source_language, parameters, units
                            ).write(directory / "perplexity.json")

        inputs = {"model": asdict(self.config.model), "lm": asdict(section), "languages": languages,
                  "statistics": asdict(self.config.statistics) if section.source == "heldout" else None,
                  "adapter": None if run is None else self.records[f"finetune/{model_name}"].product,
                  "batch_size": batch_size}
        return self.stage(f"lm_eval_ppl/{model_name}", inputs, compute, product=("perplexity.json",))

    def _lm_parts(self, language: str) -> dict[str, list[str]]:
        from langneurons.finetune.lm_task import LMText, lm_split

        section = self.config.tasks.lm
        spec = LMText(section.source, language, section.eval_fraction, section.dev_fraction, section.seed,
                      section.max_documents)
        return lm_split(spec, asdict(self.config.statistics))

    def _write_lm_perplexity(self, tuned: LoadedModel, texts: list[str], run, directory: Path) -> None:
        """Perplexity of base and tuned model on the LM text's ``eval`` part (never identified on or
        trained on) -> ``perplexity.json``."""
        from langneurons.finetune.lm_task import perplexity_before_after

        if not texts:
            raise LangNeuronsError(f"finetune/{run.name}: tasks.lm.eval_fraction leaves no text to score")
        tuned.model.eval()
        section = self.config.tasks.lm
        record = perplexity_before_after(self.loaded, tuned, texts, run.source_language, section.block_length,
                                         batch_size=run.options.batch_size, token_budget=section.eval_token_budget)
        write_json(directory / "perplexity.json", dict(record, run=run.name))

    def _prepared_task(self, task: str, language: str):
        from langneurons.evaluate.evaluation import prepare_task

        key = (task, language)
        if key not in self._prepared:
            options = getattr(self.config.tasks, task)
            examples = task_examples(self.config.tasks, task, language, "eval")
            self._prepared[key] = prepare_task(self.loaded.tokenizer, task, language, examples, options.max_length,
                                               getattr(options, "max_new_tokens", 0))
        return self._prepared[key]

    def evaluate(self, model_name: str, statistics: StageRecord) -> StageRecord:
        from langneurons.evaluate.evaluation import evaluate_grid
        from langneurons.finetune import load_finetuned

        evaluation = self.config.evaluation
        zero_shot = model_name == "base" or self.config.run(model_name).task == LM_TASK  # LM-tuned: zero-shot too
        tasks = list(evaluation.tasks) if zero_shot else [self.config.run(model_name).task]
        intervene = evaluation.intervene_models is None or model_name in evaluation.intervene_models
        sets = list(evaluation.neuron_sets) if intervene else []
        needs_statistics = bool(sets) and any(a.split("=")[0] in ("stat", "add") for a in evaluation.actions)

        def compute(directory: Path) -> None:
            if model_name == "base":
                model = self.loaded
            else:
                model = load_finetuned(self.run_dir / "finetune" / model_name, base=self.fresh_base())
            data = {task: {language: self._prepared_task(task, language)
                           for language in self.config.evaluation_languages(task)} for task in tasks}
            result = evaluate_grid(
                model, data, neuron_sets={name: self._neuron_set(name) for name in sets},
                actions=evaluation.actions if sets else (),
                statistics=self._statistics_for(self.config.languages) if needs_statistics else None,
                positions=evaluation.positions, batch_size=evaluation.batch_size,
                n_resamples=evaluation.bootstrap_resamples, confidence=evaluation.confidence, seed=evaluation.seed,
                model_name=model_name, neurons_model_info=self.loaded.info, progress=self.progress,
            )
            result.write(directory)

        model_input = ({"base": asdict(self.config.model)} if model_name == "base"
                       else {"adapter": self.records[f"finetune/{model_name}"].product})
        inputs = {
            "model": model_input, "tasks": {task: asdict(getattr(self.config.tasks, task)) for task in tasks},
            "languages": {task: list(self.config.evaluation_languages(task)) for task in tasks},
            "positions": evaluation.positions,
            "neuron_sets": {name: self.records[f"identify/{name}"].product for name in sets},
            "actions": list(evaluation.actions) if sets else [],
            "statistics": statistics.product if needs_statistics else None,
            "options": {k: getattr(evaluation, k) for k in ("batch_size", "bootstrap_resamples", "confidence", "seed")},
        }
        return self.stage(f"evaluate/{model_name}", inputs, compute, product=("scores.json", "predictions.jsonl"))

    def results(self) -> StageRecord:
        from langneurons.report.delta_figures import write_delta_figure

        evaluation = self.config.evaluation

        def compute(directory: Path) -> None:
            from langneurons.evaluate.evaluation import ROW_FIELDS, GridResult, rows_to_csv

            grids = {name: GridResult.load(self.run_dir / "evaluate" / name) for name in evaluation.models}
            rows = [row for grid in grids.values() for row in grid.rows]
            write_text(directory / "scores.csv", rows_to_csv(rows, ROW_FIELDS))
            write_json(directory / "scores.json", rows)
            comparisons = self._model_comparisons(grids)
            write_text(directory / "model_comparisons.csv", rows_to_csv(comparisons, COMPARISON_FIELDS))
            write_json(directory / "model_comparisons.json", comparisons)
            if any(row["delta"] is not None for row in rows):
                write_delta_figure(rows, directory, name="intervention_deltas")

        inputs = {"evaluations": {name: self.records[f"evaluate/{name}"].product for name in evaluation.models},
                  "reference": evaluation.reference, "options": [evaluation.bootstrap_resamples,
                                                                 evaluation.confidence, evaluation.seed]}
        return self.stage("results", inputs, compute, product=("scores.json", "model_comparisons.json"))

    def claims(self) -> StageRecord:
        from langneurons.report.claims import claims_options, evaluate_claims, write_claims

        config = self.config
        models = list(config.evaluation.models) if config.evaluation is not None else []
        runs = {run.name: (run.task, run.options.neurons) for run in config.finetune
                if run.task != LM_TASK}  # LM-task runs enter the subnetwork claim (lm_eval_ppl), not neuron LoRA
        reference = config.evaluation.reference if config.evaluation is not None else None

        def compute(directory: Path) -> None:
            write_claims(evaluate_claims(self.run_dir, config.claims, runs, models, reference_model=reference),
                         directory)

        upstream = {name: record.product for name, record in self.records.items()
                    if name.startswith(("identify/", "ppxc/", "direction_ppxc/", "evaluate/", "lm_eval_ppl/"))
                    or name == "steering"}
        inputs = {"options": claims_options(config.claims), "runs": runs, "models": models, "reference": reference,
                  "upstream": upstream}
        return self.stage("claims", inputs, compute, product=("claims.json",))

    def lm_eval(self, statistics: StageRecord) -> StageRecord:
        """Harness tasks on the base model: baseline, each set x language x action, random controls."""
        from langneurons.intervene.spec import InterventionSpec, parse_action

        section = self.config.lm_eval
        languages = list(section.languages or self.config.languages)
        specs = [InterventionSpec(neurons=name, languages=(language,), positions=section.positions,
                                  **parse_action(action))
                 for name in section.neuron_sets for language in languages for action in section.actions]
        needs_statistics = any(spec.statistics_languages for spec in specs)

        def compute(directory: Path) -> None:
            from langneurons.harness.api import conditions_for, run_lm_eval
            from langneurons.harness.backend import LangNeuronsLM

            conditions = conditions_for(specs, random_control=section.random_control, seed=section.seed,
                                        neuron_sets={name: self._neuron_set(name) for name in section.neuron_sets})
            lm = LangNeuronsLM(loaded=self.loaded, batch_size=section.batch_size,
                               statistics=str(self.run_dir / "statistics") if needs_statistics else None)
            result = run_lm_eval(lm, conditions, self._lm_eval_options(), model_name=self.config.model.name)
            result.write(directory)

        inputs = {"model": asdict(self.config.model), "options": asdict(section), "languages": languages,
                  "task_files": {folder: _folder_hash(Path(folder)) for folder in section.include_path},
                  "neuron_sets": {name: self.records[f"identify/{name}"].product for name in section.neuron_sets},
                  "statistics": statistics.product if needs_statistics else None}
        return self.stage("lm_eval", inputs, compute, product=("scores.json", "samples.jsonl"))

    def _lm_eval_options(self):
        from langneurons.harness.api import LmEvalOptions

        section = self.config.lm_eval
        return LmEvalOptions(tasks=section.tasks, include_path=section.include_path, limit=section.limit,
                             num_fewshot=section.num_fewshot, bootstrap_resamples=section.bootstrap_resamples,
                             confidence=section.confidence, seed=section.seed)

    def _model_comparisons(self, grids) -> list[dict]:
        """Each fine-tuned model vs its reference run and vs the base model, on the unintervened
        baseline, per task, language and metric (paired on the same examples)."""
        from langneurons.evaluate.evaluation import compare_records, score_rows

        evaluation = self.config.evaluation
        finetuned = [name for name in evaluation.models if name != "base"]
        rows = []
        for name in finetuned:
            task = self.config.run(name).task
            if task == LM_TASK:  # scored zero-shot like the base model: compared with it on the tasks
                rows += self._zero_shot_comparisons(name, grids)
                continue
            same_task = [other for other in finetuned if self.config.run(other).task == task]
            reference = evaluation.reference if evaluation.reference in same_task else same_task[0]
            references = [r for r in dict.fromkeys([reference, "base"]) if r != name and r in grids
                          and (r != "base" or task in evaluation.tasks)]
            for ref in references:
                for language in self.config.evaluation_languages(task):
                    mine, theirs = grids[name].records(task, language), grids[ref].records(task, language)
                    args = (evaluation.bootstrap_resamples, evaluation.confidence, evaluation.seed)
                    scores, ref_scores = score_rows(task, mine, *args), score_rows(task, theirs, *args)
                    for metric, comparison in compare_records(task, theirs, mine, *args).items():
                        rows.append({"task": task, "language": language, "metric": metric, "model": name,
                                     "reference": ref, "n": scores[metric]["n"], "score": scores[metric]["score"],
                                     "reference_score": ref_scores[metric]["score"], **comparison})
        return rows

    def _zero_shot_comparisons(self, name: str, grids) -> list[dict]:
        """An LM-tuned model vs the base model on every evaluation task (paired on the same examples)."""
        from langneurons.evaluate.evaluation import compare_records, score_rows

        evaluation, rows = self.config.evaluation, []
        if "base" not in grids:
            return rows
        args = (evaluation.bootstrap_resamples, evaluation.confidence, evaluation.seed)
        for task in evaluation.tasks:
            for language in self.config.evaluation_languages(task):
                mine, theirs = grids[name].records(task, language), grids["base"].records(task, language)
                scores, ref_scores = score_rows(task, mine, *args), score_rows(task, theirs, *args)
                for metric, comparison in compare_records(task, theirs, mine, *args).items():
                    rows.append({"task": task, "language": language, "metric": metric, "model": name,
                                 "reference": "base", "n": scores[metric]["n"], "score": scores[metric]["score"],
                                 "reference_score": ref_scores[metric]["score"], **comparison})
        return rows

    # ------------------------------------------------------------------ everything
    def run(self, report: bool) -> RunResult:
        """Every stage, holding the run directory's lock (a second run into it is refused at once)."""
        with folder_lock(self.run_dir):
            return self._run(report)

    def _run(self, report: bool) -> RunResult:
        start, cpu_start = time.perf_counter(), time.process_time()
        config = self.config
        self._check_run_dir()
        if config.lm_eval is not None:  # the extra and the task names, before any stage runs
            from langneurons.harness import register
            from langneurons.harness.api import task_manager

            register()
            manager = task_manager(self._lm_eval_options())
            if config.lm_eval.positions == "prompt":
                from langneurons.harness.api import non_generation_tasks

                others = non_generation_tasks(self._lm_eval_options(), manager)
                if others:
                    raise LangNeuronsError(f"lm_eval.positions 'prompt' intervenes on generation only, but task "
                                           f"{next(iter(others))!r} is a {next(iter(others.values()))} task")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text(self.run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True))
        self._save_manifest()
        statistics = self.statistics()
        for entry in config.identification:
            self.identify(entry, statistics)
        from langneurons.runner import directions as direction_stages  # issue 19: direction sets, their PPXC

        for entry in config.directions:
            direction_stages.identify_stage(self, entry, statistics)
        if config.stability is not None:
            for name in config.stability.neuron_sets:
                self.stability(name, statistics)
        if config.ppxc is not None:
            for name in config.ppxc.neuron_sets:
                self.ppxc(name, statistics)
        if config.direction_ppxc is not None:
            for name in config.direction_ppxc.direction_sets:
                direction_stages.ppxc_stage(self, name, statistics)
        if config.steering is not None:
            self.steering(statistics)
        for run in config.finetune:
            self.finetune(run)
        if config.evaluation is not None:
            for name in config.evaluation.models:
                self.evaluate(name, statistics)
            self.results()
        if config.lm_eval is not None:
            self.lm_eval(statistics)
        for name in self.lm_perplexity_models():  # the subnetwork claim's per-block NLLs
            self.lm_perplexity(name)
        if config.claims is not None:
            self.claims()
        seconds = time.perf_counter() - start
        self.manifest["last_run"] = {"seconds": seconds, "cpu_seconds": time.process_time() - cpu_start,
                                     "computed": [n for n, r in self.records.items()
                                                                      if r.status == "computed"],
                                     "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._save_manifest()
        paths = None
        if report:
            from langneurons.report.report import write_report

            paths = write_report(self.run_dir)
            self._log(f"report: {paths[1]}")
        return RunResult(self.run_dir, self.run_dir / MANIFEST, dict(self.records), time.perf_counter() - start, paths)


COMPARISON_FIELDS = ("task", "language", "metric", "model", "reference", "n", "score", "reference_score", "delta",
                     "delta_ci_low", "delta_ci_high", "p_value", "test")
