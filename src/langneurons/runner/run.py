"""The experiment runner: every stage of the study from one config, cached, with a manifest.

The stages are the studies of :data:`langneurons.registry.STAGES`, run in its order; each
declares its config section, cache-key inputs, run, figures and report section in its package's
``stage.py`` (:mod:`langneurons.stage`; docs/stages.md). :class:`Experiment` is the context they
run in (model loading, caching, the manifest).

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
import json
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from langneurons import __version__, registry
from langneurons.artefacts import (LOCK_FILE, check_plain_name, ensure_dir, folder_lock, stable_hash, write_json,
                                   write_text)
from langneurons.errors import LangNeuronsError
from langneurons.models.architectures import adapter_for
from langneurons.models.loading import LoadedModel
from langneurons.provenance import MANIFEST, STAGE_RECORD, file_sha256, machine_description, package_versions
from langneurons.provenance import RUN_FORMAT as FORMAT
from langneurons.runner.config import ExperimentConfig, ModelConfig, check_input_paths, load_config
from langneurons.stage import StageRecord
from langneurons.tasks.selection import task_examples  # noqa: F401 (langneurons.runner.task_examples)

ModelLoader = Callable[[ModelConfig], LoadedModel]


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
    """Load the configured model (:meth:`langneurons.models.loading.ModelOptions.load`)."""
    return spec.load()


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
    return Experiment(config, Path(run_dir), loader or default_loader, force, progress).run(report)


# ---------------------------------------------------------------------------------- the run


class Experiment:
    """One invocation of the runner, and the context every stage's ``run`` receives
    (:mod:`langneurons.stage`)."""

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
            if not path.is_file() or digest not in (file_sha256(path), file_sha256(path, canonical=False)):
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
            outputs = {str(p.relative_to(self.run_dir)): file_sha256(p) for p in files}
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

    # ------------------------------------------------------------------ services to the stages
    def neuron_set(self, name: str):
        """The neuron set ``identify/<name>/neurons.json`` of this run."""
        from langneurons.identify.neuron_set import NeuronSet

        return NeuronSet.load(self.run_dir / "identify" / name / "neurons.json")

    def statistics_for(self, languages) -> dict:
        """The run's activation statistics of ``languages``."""
        from langneurons.activations.api import load_statistics_dir

        return load_statistics_dir(self.run_dir / "statistics", list(languages))

    def prepared_task(self, task: str, language: str):
        """The evaluation examples of ``task`` in ``language``, tokenised once per run."""
        from langneurons.evaluate.evaluation import prepare_task

        key = (task, language)
        if key not in self._prepared:
            options = getattr(self.config.tasks, task)
            examples = task_examples(self.config.tasks, task, language, "eval")
            self._prepared[key] = prepare_task(self.loaded.tokenizer, task, language, examples, options.max_length,
                                               getattr(options, "max_new_tokens", 0))
        return self._prepared[key]

    # ------------------------------------------------------------------ everything
    def run(self, report: bool) -> RunResult:
        """Every stage, holding the run directory's lock (a second run into it is refused at once)."""
        with folder_lock(self.run_dir):
            return self._run(report)

    def _run(self, report: bool) -> RunResult:
        start, cpu_start = time.perf_counter(), time.process_time()
        config = self.config
        self._check_run_dir()
        stages = [stage for stage in registry.STAGES if stage.enabled(config)]
        for stage in stages:  # extras and names that only the libraries know, before any stage runs
            if stage.check is not None:
                stage.check(config)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text(self.run_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True))
        self._save_manifest()
        for stage in stages:
            stage.run(self)
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

