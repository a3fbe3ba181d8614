"""Experiment configuration: typed dataclasses parsed from YAML (or a dict), validated up front.

Every key is checked: an unknown key, a wrong type, an unknown language or a reference to a
neuron set / fine-tuning run that is not defined is a :class:`LangNeuronsError` naming it (with
its path, e.g. ``evaluation.neuron_sets[1]``). A file may start from another with
``extends: other.yaml`` (path relative to the file): mappings are merged key by key, anything
else (lists, scalars) replaces the inherited value.

Sections (see ``langneurons/data/configs/demo.yaml`` for a complete example)::

    name, model, languages, statistics, identification[], ppxc, steering, tasks, finetune, evaluation, claims,
    stability, lm_eval

String values may use ``${name}`` variables (``vars:`` section, ``--var``/``--data``).
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Union

import yaml

from langneurons.activations.api import CollectOptions, options_dict
from langneurons.artefacts import check_plain_name
from langneurons.errors import LangNeuronsError, brief
from langneurons.finetune.train import NEURON_MODES, FinetuneConfig
from langneurons.identify.api import METHODS, IdentifyOptions
from langneurons.identify.api import options_dict as identify_options_dict
from langneurons.languages import check_language
from langneurons.report.claims import ClaimsConfig
from langneurons.runner.directions import (DirectionIdentifyConfig, DirectionPPXCConfig,
                                           parse_direction_ppxc, split_identification, to_dict_entries,
                                           steering_keys, validate_directions)
from langneurons.steer.experiment import SteeringOptions, parse_pair


@dataclass(frozen=True)
class ModelConfig:
    """What :func:`langneurons.models.loading.load_model` gets; ``device`` moves the model after loading."""

    name: str = "gemma3-270m"
    revision: str | None = None
    dtype: str = "float32"
    device_map: str | None = None
    load_in_4bit: bool = False
    gguf_file: str | None = None
    device: str | None = None


STATISTICS_EXCLUDED = ("languages", "shard", "backend")
""":class:`CollectOptions` fields a config does not set in ``statistics:`` (the experiment's
``languages`` apply; sharding and the distributed backend are launch-time choices)."""

IDENTIFY_EXCLUDED = ("languages",)
"""The experiment's ``languages`` apply to every neuron set."""


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
class PPXCConfig:
    """Perplexity-change matrices of ``neuron_sets`` on ``languages`` (default: all)."""

    neuron_sets: tuple[str, ...] = ("lape",)
    languages: tuple[str, ...] | None = None
    action: str = "zero"
    random_control: bool = True
    token_budget: int | None = None
    batch_size: int = 8
    measure: str = "delta_nll"
    seed: int = 0
    bootstrap_resamples: int = 1000
    confidence: float = 0.95


@dataclass(frozen=True)
class SteeringConfig:
    """The steering experiment on ``neuron_set`` (a set of ``identification``; None with
    ``directions`` only) and ``directions`` (a ``method: diffmean`` entry, or None), with the
    options of :class:`langneurons.steer.experiment.SteeringOptions` (written flat in the section)."""

    neuron_set: str | None = "lape"
    options: SteeringOptions = field(default_factory=SteeringOptions)
    directions: str | None = None


@dataclass(frozen=True)
class StabilityConfig:
    """Resampling stability (:mod:`langneurons.identify.stability`) of ``neuron_sets`` (LAPE or
    act-prob sets of this config); needs ``statistics.replicates`` >= 2. ``min_frequency``: the
    selection frequency of the stable set written next to the table."""

    neuron_sets: tuple[str, ...] = ("lape",)
    resamples: int = 100
    splits: int = 20
    seed: int = 0
    confidence: float = 0.95
    min_frequency: float = 0.8


@dataclass(frozen=True)
class XNLIConfig:
    """XNLI data: ``source`` (builtin, hub or a folder) for the test split, ``train_source`` for the
    training split (default: ``source``); seeded, optionally class-balanced subsamples.
    ``dev_limit``: a development sample of the training split, disjoint from the training
    examples, scored during fine-tuning for the learning curve (None: no curve).
    ``languages`` (optional) replaces ``evaluation.languages`` for this task."""

    source: str = "builtin"
    train_source: str | None = None
    eval_limit: int | None = None
    train_limit: int | None = None
    dev_limit: int | None = None
    balanced: bool = True
    max_length: int = 256
    seed: int = 0
    languages: tuple[str, ...] | None = None


@dataclass(frozen=True)
class XQuADConfig:
    """XQuAD data. ``train``: ``file`` (a separate training file, e.g. builtin ``train.en.json``)
    or ``by_article`` (train on the source language's training articles, evaluate every
    language on the held-out articles only, :func:`langneurons.tasks.split_by_article`).
    ``dev_limit``: as for XNLI, from the training examples left out of ``train_limit``.
    ``languages`` (optional) replaces ``evaluation.languages`` for this task."""

    source: str = "builtin"
    train_source: str | None = None
    train: str = "file"
    eval_fraction: float = 0.5
    eval_limit: int | None = None
    train_limit: int | None = None
    dev_limit: int | None = None
    max_length: int = 512
    max_new_tokens: int = 32
    seed: int = 0
    languages: tuple[str, ...] | None = None


@dataclass(frozen=True)
class LMTaskConfig:
    """Text of the language-modelling task (fine-tuning runs with ``task: lm``; the run's
    ``source_language`` is the text's language). ``source``: ``heldout`` (the documents the
    statistics pass held out, never used for identification) or a corpus folder; split (seeded)
    into ``eval`` (``eval_fraction``: the perplexity of base and tuned model, text training never
    saw), ``dev`` (``dev_fraction``: learning-rate choice, early stopping) and ``train``.
    ``eval_token_budget`` caps the scored tokens; ``max_documents`` the documents read;
    ``block_length``: tokens per scored block of the eval part (the same blocks for every model:
    ``lm_eval_ppl/<model>/perplexity.json``, the subnetwork claim's input)."""

    source: str = "heldout"
    eval_fraction: float = 0.2
    dev_fraction: float = 0.1
    seed: int = 0
    max_documents: int | None = None
    eval_token_budget: int | None = None
    block_length: int = 256


@dataclass(frozen=True)
class TasksConfig:
    xnli: XNLIConfig | None = field(default_factory=XNLIConfig)
    xquad: XQuADConfig | None = field(default_factory=XQuADConfig)
    lm: LMTaskConfig | None = None


@dataclass(frozen=True)
class FinetuneRunConfig:
    """One fine-tuning run: its ``name``, the training language, the neuron set its neuron modes
    read (``languages``/``random``), and the hyper-parameters of :class:`FinetuneConfig`."""

    name: str
    source_language: str = "en"
    neuron_set: str | None = None
    options: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(task="xnli"))
    equal_parameters_to: str | None = None
    """A run training neuron rows (``adapter: rows``): this LoRA run's rank is the one whose trainable
    parameters are nearest to that run's (:func:`langneurons.finetune.rows.equal_parameters`)."""

    @property
    def task(self) -> str:
        return self.options.task


@dataclass(frozen=True)
class EvaluationConfig:
    """The evaluation grid: ``models`` (``base`` = zero-shot base model, or fine-tuning run names)
    x {``neuron_sets`` x ``actions``} x ``languages``; the base model is scored on ``tasks``, a
    fine-tuned model on its own task. ``intervene_models`` (default: all) get the intervention
    conditions, the others the baseline only. Fine-tuned runs are compared with ``reference``
    (default: the first run of the same task)."""

    languages: tuple[str, ...]
    models: tuple[str, ...] = ("base",)
    tasks: tuple[str, ...] = ("xnli", "xquad")
    neuron_sets: tuple[str, ...] = ()
    actions: tuple[str, ...] = ("zero",)
    intervene_models: tuple[str, ...] | None = None
    positions: str = "all"
    reference: str | None = None
    batch_size: int = 8
    bootstrap_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class LmEvalConfig:
    """lm-evaluation-harness tasks (extra ``langneurons[lm-eval]``) on the base model under the
    baseline and, for every neuron set x language x action, the intervention on that language's
    neurons (plus its layer-matched random control when ``random_control``).

    ``tasks``: harness task or group names; ``include_path``: folders of extra task YAML files
    (relative to the working directory); ``languages``: whose neurons are intervened (default:
    the experiment's languages); ``limit``: documents per task; ``num_fewshot``: None keeps each
    task's default. Scores and paired tests as in :mod:`langneurons.harness.api`."""

    tasks: tuple[str, ...]
    include_path: tuple[str, ...] = ()
    neuron_sets: tuple[str, ...] = ()
    languages: tuple[str, ...] | None = None
    actions: tuple[str, ...] = ("zero",)
    positions: str = "all"
    random_control: bool = True
    limit: int | None = None
    num_fewshot: int | None = None
    batch_size: int = 8
    bootstrap_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class ExperimentConfig:
    languages: tuple[str, ...]
    name: str = "experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    statistics: CollectOptions = field(default_factory=lambda: CollectOptions(languages=()))
    identification: tuple[IdentifyConfig, ...] = (IdentifyConfig("lape"),)
    ppxc: PPXCConfig | None = None
    steering: SteeringConfig | None = None
    tasks: TasksConfig = field(default_factory=TasksConfig)
    finetune: tuple[FinetuneRunConfig, ...] = ()
    evaluation: EvaluationConfig | None = None
    claims: ClaimsConfig | None = None
    stability: StabilityConfig | None = None
    lm_eval: LmEvalConfig | None = None
    directions: tuple[DirectionIdentifyConfig, ...] = ()  # identification entries with method: diffmean
    direction_ppxc: DirectionPPXCConfig | None = None

    def __post_init__(self):
        if self.statistics.languages != tuple(self.languages):  # one list of languages for every stage
            object.__setattr__(self, "statistics", replace(self.statistics, languages=tuple(self.languages)))

    def to_dict(self) -> dict:
        """The config as YAML-ready data that :func:`load_config` reads back into an equal config."""
        data = _plain(asdict(self))
        data["statistics"] = {k: v for k, v in _plain(options_dict(self.statistics)).items()
                              if k not in STATISTICS_EXCLUDED}
        data["identification"] = [
            {"name": entry.name, **{k: v for k, v in _plain(identify_options_dict(entry.options)).items()
                                    if k not in IDENTIFY_EXCLUDED},
             "figures": entry.figures}
            for entry in self.identification
        ]
        if data["tasks"].get("lm") is None:
            data["tasks"].pop("lm", None)  # configs without the LM task read and hash as before it existed
        if data.get("stability") is None:
            data.pop("stability", None)  # configs without the section keep their earlier form and hash
        data["finetune"] = {"runs": [
            {**{key: run[key] for key in _RUN_KEYS if key != "equal_parameters_to" or run[key] is not None},
             **{k: v for k, v in run["options"].items() if k not in _FINETUNE_EXCLUDED}}
            for run in data["finetune"]
        ]}
        if data["steering"] is None:  # configs without the section read and hash as before it existed
            del data["steering"]
        else:
            steering = data["steering"]
            options = steering_keys(steering["options"], steering["directions"] is not None)
            data["steering"] = {"neuron_set": steering["neuron_set"], **options,
                                **({"directions": steering["directions"]} if steering["directions"] else {})}
        if data.get("claims") is not None:  # fields added with issue 19 only when set
            from langneurons.report.claims import claims_options

            data["claims"] = _plain(claims_options(self.claims))
        directions = to_dict_entries(self)  # configs without directions read and hash as before them
        data.pop("directions", None)
        data.pop("direction_ppxc", None)
        data["identification"] += directions.pop("identification", [])
        data.update(directions)
        if data["lm_eval"] is None:  # configs without the section read and hash as before it existed
            del data["lm_eval"]
        return data

    def neuron_set(self, name: str) -> IdentifyConfig:
        return next(entry for entry in self.identification if entry.name == name)

    def run(self, name: str) -> FinetuneRunConfig:
        return next(run for run in self.finetune if run.name == name)

    def evaluation_languages(self, task: str) -> tuple[str, ...]:
        """The languages ``task`` is evaluated on (the task's own list, else ``evaluation.languages``)."""
        return getattr(self.tasks, task).languages or self.evaluation.languages


# ---------------------------------------------------------------------------------- loading


MAX_CONFIG_VALUES = 100_000
"""A config with more values than this once YAML aliases are expanded is refused (an alias bomb
of a few hundred bytes expands to billions); real configs have a few hundred."""


def load_config(source: str | Path | Mapping, variables: Mapping[str, str] | None = None) -> ExperimentConfig:
    """Parse and validate a YAML file or a dict into an :class:`ExperimentConfig`.

    Every value is checked here, before any stage runs: types, ranges, languages, references,
    intervention actions (the parser of the CLI) and the stage options' own checks.
    ``${name}`` inside any string value is replaced by ``variables[name]``, else by the config's
    own ``vars: {name: default}`` section (e.g. ``${data}`` for the folder of local data copies);
    a name with neither is an error. The parsed config holds only the substituted values.
    """
    if isinstance(source, Mapping):
        data, origin = dict(source), "config"
    else:
        path = Path(source)
        data, origin = _read_yaml(path), path.name
    try:
        check_expanded_size(data)
        data = substitute_variables(data, variables)
    except LangNeuronsError as error:
        raise LangNeuronsError(f"{origin}: {error}") from None
    try:
        config = _parse(data)
    except LangNeuronsError as error:
        raise LangNeuronsError(f"{origin}: {error}") from None
    try:
        validate(config)
    except LangNeuronsError as error:
        raise LangNeuronsError(f"{origin}: {error}") from None
    return config


def check_expanded_size(data: Any, limit: int = MAX_CONFIG_VALUES) -> None:
    """Refuse data with more than ``limit`` values counted with every alias expanded (and
    self-referencing data); stops counting at the limit, so an alias bomb costs no time."""
    count, stack = 0, [data]
    while stack:
        value = stack.pop()
        count += 1
        if count > limit:
            raise LangNeuronsError(f"the config expands to more than {limit} values (YAML aliases?); refused")
        if isinstance(value, Mapping):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if not path.is_file():
        raise LangNeuronsError(f"experiment config not found: {path}")
    if path.resolve() in seen:
        raise LangNeuronsError(f"{path}: 'extends' loops back to itself")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise LangNeuronsError(f"{path}: not valid YAML ({str(error).splitlines()[0][:120]})") from None
    except (UnicodeDecodeError, OSError) as error:
        raise LangNeuronsError(f"{path}: not a readable UTF-8 text file ({str(error)[:120]})") from None
    try:
        check_expanded_size(data)
    except LangNeuronsError as error:
        raise LangNeuronsError(f"{path}: {error}") from None
    if not isinstance(data, dict):
        raise LangNeuronsError(f"{path}: an experiment config must be a mapping of sections")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    base = _read_yaml((path.parent / str(parent)), seen + (path.resolve(),))
    return merge(base, data)


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def substitute_variables(data: dict, variables: Mapping[str, str] | None = None) -> dict:
    """``data`` without its ``vars`` section, with every ``${name}`` in its strings replaced
    (``variables`` first, then ``vars``)."""
    data = dict(data)
    defaults = data.pop("vars", None) or {}
    if not isinstance(defaults, Mapping):
        raise LangNeuronsError("vars must be a mapping of names to strings")
    values = {str(k): str(v) for k, v in {**defaults, **(variables or {})}.items()}

    def replace_in(value: Any, path: str) -> Any:
        if isinstance(value, str):
            def lookup(match: re.Match) -> str:
                name = match.group(1)
                if name not in values:
                    raise LangNeuronsError(f"{path} uses ${{{name}}} but no value is given "
                                           f"(add it under vars: or pass --var {name}=VALUE)")
                return values[name]

            return _VARIABLE.sub(lookup, value)
        if isinstance(value, Mapping):
            return {k: replace_in(v, _join(path, str(k))) for k, v in value.items()}
        if isinstance(value, list):
            return [replace_in(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    return replace_in(data, "")


def merge(base: Mapping, override: Mapping) -> dict:
    """``override`` on top of ``base``: nested mappings merged, other values replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _parse(data: dict) -> ExperimentConfig:
    """Sections whose types are stage option dataclasses (statistics: CollectOptions,
    identification: IdentifyOptions, finetune: FinetuneConfig) are read with the experiment-wide
    fields left out; everything else is read field by field from the config dataclasses."""
    data = dict(data)
    if isinstance(data.get("model"), str):
        data["model"] = {"name": data["model"]}
    own = {key: data.pop(key) for key in ("statistics", "identification", "finetune", "steering", "direction_ppxc",
                                          "directions") if key in data}
    if "directions" in own:
        raise LangNeuronsError("directions: write direction sets as identification entries with method: diffmean")
    directions: list = []
    if "identification" in own:
        own["identification"], directions = split_identification(own["identification"])
    config = _build(ExperimentConfig, data, "")
    languages = config.languages
    statistics = _build(CollectOptions, own.get("statistics", {}), "statistics", excluded=STATISTICS_EXCLUDED,
                        fixed={"languages": languages})
    identification = (_identification(own["identification"]) if "identification" in own
                      else config.identification)
    runs = _finetune_runs(own["finetune"]) if own.get("finetune") is not None else ()
    steering = _steering(own["steering"]) if own.get("steering") is not None else None
    evaluation = _expand_seeded_models(config.evaluation, runs)
    return replace(config, statistics=statistics, identification=identification, finetune=runs, steering=steering,
                   evaluation=evaluation, directions=tuple(entry for _, entry in directions),
                   direction_ppxc=parse_direction_ppxc(own.get("direction_ppxc")))


SEED_SEPARATOR = "@"
"""A run with ``seeds: [0, 1, 2]`` becomes runs ``<name>@0``, ``<name>@1``, ``<name>@2``."""


def seed_groups(runs: tuple[FinetuneRunConfig, ...]) -> dict[str, list[str]]:
    """Run name before ``@seed`` -> the names of its seeded runs (runs without seeds: themselves)."""
    groups: dict[str, list[str]] = {}
    for run in runs:
        groups.setdefault(run.name.rsplit(SEED_SEPARATOR, 1)[0] if SEED_SEPARATOR in run.name else run.name,
                          []).append(run.name)
    return groups


def _expand_seeded_models(evaluation, runs: tuple[FinetuneRunConfig, ...]):
    """evaluation.models / intervene_models / reference naming a seeded run's base name stand for
    all its seeds (the reference: its first seed)."""
    if evaluation is None:
        return None
    groups = {name: members for name, members in seed_groups(runs).items() if members != [name]}

    def expand(names):
        return None if names is None else tuple(m for name in names for m in groups.get(name, [name]))

    reference = evaluation.reference
    return replace(evaluation, models=expand(evaluation.models), intervene_models=expand(evaluation.intervene_models),
                   reference=groups[reference][0] if reference in groups else reference)


def _steering(section: Any) -> SteeringConfig:
    """``steering: {neuron_set, directions, <SteeringOptions fields>}``."""
    if not isinstance(section, Mapping):
        raise LangNeuronsError("steering must be a mapping")
    options = {k: v for k, v in section.items() if k not in ("neuron_set", "directions")}
    return SteeringConfig(
        neuron_set=_convert(str | None, section.get("neuron_set", "lape"), "steering.neuron_set"),
        options=_build(SteeringOptions, options, "steering", extra=("neuron_set", "directions")),
        directions=_convert(str | None, section.get("directions"), "steering.directions"),
    )


def _identification(section: Any) -> tuple[IdentifyConfig, ...]:
    """``identification: [{name, figures, <IdentifyOptions fields but languages>}]``."""
    if not isinstance(section, list):
        raise LangNeuronsError("identification must be a list of neuron sets")
    parsed = []
    for i, entry in enumerate(section):
        path = f"identification[{i}]"
        if not isinstance(entry, Mapping):
            raise LangNeuronsError(f"{path} must be a mapping")
        if "name" not in entry:
            raise LangNeuronsError(f"missing key {path}.name")
        options = {k: v for k, v in entry.items() if k not in ("name", "figures")}
        parsed.append(IdentifyConfig(
            name=_convert(str, entry["name"], f"{path}.name"),
            options=_build(IdentifyOptions, options, path, excluded=IDENTIFY_EXCLUDED, extra=("name", "figures")),
            figures=_convert(bool, entry.get("figures", True), f"{path}.figures"),
        ))
    return tuple(parsed)


_RUN_KEYS = ("name", "source_language", "neuron_set", "equal_parameters_to")
_FINETUNE_EXCLUDED = ("neuron_set_path",)  # the runner passes the neuron set itself


def _finetune_runs(section: Any) -> tuple[FinetuneRunConfig, ...]:
    """``finetune: {defaults: {...}, runs: [{name, source_language, neuron_set, <FinetuneConfig fields>}]}``."""
    if not isinstance(section, Mapping):
        raise LangNeuronsError("finetune must be a mapping with 'runs' (and optional 'defaults')")
    unknown = sorted(set(section) - {"defaults", "runs"})
    if unknown:
        raise LangNeuronsError(f"unknown key finetune.{unknown[0]}; allowed: defaults, runs")
    defaults = section.get("defaults") or {}
    runs = section.get("runs") or []
    if not isinstance(defaults, Mapping) or not isinstance(runs, list):
        raise LangNeuronsError("finetune.defaults must be a mapping and finetune.runs a list")
    option_fields = {f.name for f in fields(FinetuneConfig)} - set(_FINETUNE_EXCLUDED)
    option_fields |= {"seeds"}
    parsed = []
    for i, run in enumerate(runs):
        path = f"finetune.runs[{i}]"
        if not isinstance(run, Mapping):
            raise LangNeuronsError(f"{path} must be a mapping")
        merged = {**defaults, **run}
        unknown = sorted(set(merged) - option_fields - set(_RUN_KEYS))
        if unknown:
            raise LangNeuronsError(f"unknown key {path}.{unknown[0]}; allowed: "
                                   f"{', '.join(sorted(option_fields | set(_RUN_KEYS)))}")
        if "name" not in merged:
            raise LangNeuronsError(f"{path} needs a name")
        seeds = _convert(tuple[int, ...] | None, merged.pop("seeds", None), f"{path}.seeds")
        if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
            raise LangNeuronsError(f"{path}.seeds must be a non-empty list of distinct integers")
        options = _build(FinetuneConfig, {k: v for k, v in merged.items() if k in option_fields}, path)
        name = _convert(str, merged["name"], f"{path}.name")
        for seed in seeds if seeds is not None else (None,):  # each seed: its own run, its own random set
            parsed.append(FinetuneRunConfig(
                name=name if seed is None else f"{name}{SEED_SEPARATOR}{seed}",
                source_language=_convert(str, merged.get("source_language", "en"), f"{path}.source_language"),
                neuron_set=_convert(str | None, merged.get("neuron_set"), f"{path}.neuron_set"),
                options=options if seed is None else replace(options, seed=seed),
                equal_parameters_to=_convert(str | None, merged.get("equal_parameters_to"),
                                             f"{path}.equal_parameters_to"),
            ))
    return tuple(parsed)


def _build(cls, data: Any, path: str, excluded: tuple[str, ...] = (), fixed: Mapping | None = None,
           extra: tuple[str, ...] = ()):
    """An instance of dataclass ``cls`` from a mapping, every key and type checked.

    excluded: fields the mapping may not set (``fixed`` values or the defaults apply);
    extra: further keys the section allows, read elsewhere (named in the error message only).
    """
    where = path or "the config"
    if not isinstance(data, Mapping):
        raise LangNeuronsError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls) if f.init and not f.name.startswith("_") and f.name not in excluded]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise LangNeuronsError(f"unknown key {_join(path, unknown[0])}; allowed: {', '.join(sorted(known + list(extra)))}")
    kwargs = dict(fixed or {})
    for f in fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], _join(path, f.name))
        elif f.init and f.name not in kwargs and f.default is MISSING and f.default_factory is MISSING:
            raise LangNeuronsError(f"missing key {_join(path, f.name)}")
    try:
        return cls(**kwargs)
    except LangNeuronsError as error:
        raise LangNeuronsError(f"{where}: {error}") from None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _convert(hint, value: Any, path: str):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, path)
            except LangNeuronsError as error:
                errors.append(error)
        raise errors[0]
    if origin is tuple:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise LangNeuronsError(f"{path} must be a list, got {type(value).__name__}")
        return tuple(_convert(args[0], item, f"{path}[{i}]") for i, item in enumerate(value))
    if is_dataclass(hint):
        return _build(hint, value, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise LangNeuronsError(f"{path} must be true or false, got {brief(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise LangNeuronsError(f"{path} must be an integer, got {brief(value)}")
        return value
    if hint is float:
        if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value.strip()):
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise LangNeuronsError(f"{path} must be a number, got {brief(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise LangNeuronsError(f"{path} must be a string, got {brief(value)}")
        return str(value)
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise LangNeuronsError(f"{path} must be a mapping")
        return dict(value)
    return value


# ---------------------------------------------------------------------------------- validation


def _languages(values, path: str, allowed: tuple[str, ...] | None = None) -> None:
    if len(set(values)) != len(values):
        raise LangNeuronsError(f"{path} lists a language twice: {list(values)}")
    for i, language in enumerate(values):
        try:
            check_language(language)
        except LangNeuronsError:
            raise LangNeuronsError(f"unknown language {brief(language)} in {path}[{i}]; use ISO 639-1 codes "
                                   "such as en, fr, hi, zh") from None
        if allowed is not None and language not in allowed:
            raise LangNeuronsError(f"{path}[{i}]: language {brief(language)} is not among the experiment's languages "
                                   f"({', '.join(allowed)})")


def _names(values, path: str, defined: list[str], what: str) -> None:
    for i, name in enumerate(values):
        if name not in defined:
            raise LangNeuronsError(f"{path}[{i}]: no {what} named {brief(name)} (defined: {', '.join(defined) or 'none'})")


def validate(config: ExperimentConfig) -> None:
    """Cross-references and languages (the types were checked by the parser)."""
    if not config.languages:
        raise LangNeuronsError("languages: at least one language is needed")
    _languages(config.languages, "languages")
    languages = config.languages
    check_plain_name(config.name, "name")  # the default run directory and published result folder
    sets: list[str] = []
    for i, entry in enumerate(config.identification):
        path = f"identification[{i}]"
        if entry.method not in METHODS:
            raise LangNeuronsError(f"{path}.method: unknown method {brief(entry.method)}; use one of {', '.join(METHODS)}")
        if entry.name in sets:
            raise LangNeuronsError(f"{path}.name: neuron set {brief(entry.name)} is defined twice")
        check_plain_name(entry.name, f"{path}.name")  # the stage folder identify/<name>
        if entry.method == "random":
            if entry.options.like is None:
                raise LangNeuronsError(f"{path}: method random needs 'like' (an earlier neuron set)")
            _names([entry.options.like], f"{path}.like", sets, "earlier neuron set")
        sets.append(entry.name)
    _check_model(config.model)
    if config.ppxc is not None:
        from langneurons.intervene.api import check_ppxc_options

        try:
            check_ppxc_options(config.ppxc.action, config.ppxc.token_budget, config.ppxc.batch_size,
                               config.ppxc.measure)
        except LangNeuronsError as error:
            raise LangNeuronsError(f"ppxc: {error}") from None
        _names(config.ppxc.neuron_sets, "ppxc.neuron_sets", sets, "neuron set")
        if config.ppxc.languages is not None:
            _languages(config.ppxc.languages, "ppxc.languages", languages)
    if config.steering is not None:
        _validate_steering(config.steering, sets, languages)
    validate_directions(config, sets)
    if config.stability is not None:
        _names(config.stability.neuron_sets, "stability.neuron_sets", sets, "neuron set")
        for name in config.stability.neuron_sets:
            if config.neuron_set(name).method not in ("lape", "act-prob"):
                raise LangNeuronsError(f"stability.neuron_sets: {name!r} is a {config.neuron_set(name).method} set; "
                                       "stability resamples lape and act-prob sets")
        if (config.statistics.replicates or 0) < 2:
            raise LangNeuronsError("stability needs statistics.replicates >= 2 (per-chunk counts of the statistics pass)")
        if not 0.0 < config.stability.min_frequency <= 1.0:
            raise LangNeuronsError(f"stability.min_frequency must be in (0, 1], got {config.stability.min_frequency}")
        if config.stability.resamples < 1 or config.stability.splits < 0:
            raise LangNeuronsError("stability: resamples must be >= 1 and splits >= 0")
        from langneurons.identify.stability import StabilityOptions

        try:  # the bounds of the stability command (resamples, splits, seed, confidence)
            StabilityOptions(config.stability.resamples, config.stability.splits, config.stability.seed,
                             config.stability.confidence)
        except LangNeuronsError as error:
            raise LangNeuronsError(f"stability: {error}") from None
    for i, entry in enumerate(config.identification):
        if entry.options.min_frequency is not None and (config.statistics.replicates or 0) < 2:
            raise LangNeuronsError(f"identification[{i}]: min_frequency needs statistics.replicates >= 2")
    runs: list[str] = []
    for i, run in enumerate(config.finetune):
        path = f"finetune.runs[{i}]"
        check_plain_name(run.name, f"{path}.name")  # the stage folders finetune/<name>, evaluate/<name>
        if run.name in runs or run.name == "base":
            raise LangNeuronsError(f"{path}.name: {brief(run.name)} is reserved or defined twice")
        runs.append(run.name)
        _languages([run.source_language], f"{path}.source_language")
        try:
            options = run.options.resolved()
        except LangNeuronsError as error:
            raise LangNeuronsError(f"{path}: {error}") from None
        if getattr(config.tasks, options.task) is None:
            raise LangNeuronsError(f"{path}: task {brief(options.task)} has no data section under tasks")
        if (options.learning_rates or options.patience) and options.task != "lm" \
                and not getattr(config.tasks, options.task).dev_limit:
            raise LangNeuronsError(f"{path}: learning_rates / patience choose on a dev split: set "
                                   f"tasks.{options.task}.dev_limit")
        if options.task == "lm" and (options.learning_rates or options.patience) and not config.tasks.lm.dev_fraction:
            raise LangNeuronsError(f"{path}: learning_rates / patience choose on a dev split: set tasks.lm.dev_fraction")
        if options.task == "lm" and config.tasks.lm.source == "heldout" and not config.statistics.heldout_fraction:
            raise LangNeuronsError(f"{path}: LM text 'heldout' needs statistics.heldout_fraction > 0")
        if options.neurons in ("languages", "random"):
            if run.neuron_set is None:
                raise LangNeuronsError(f"{path}: neurons {brief(options.neurons)} needs neuron_set (one of {sets})")
            _names([run.neuron_set], f"{path}.neuron_set", sets, "neuron set")
            _languages(options.languages, f"{path}.languages", languages)
        elif options.neurons not in NEURON_MODES:
            raise LangNeuronsError(f"{path}.neurons: unknown mode {brief(options.neurons)}")
        if run.equal_parameters_to is not None:
            matched = [r for r in config.finetune if r.name == run.equal_parameters_to]
            if not matched or matched[0].options.adapter != "rows" or options.adapter != "lora":
                raise LangNeuronsError(f"{path}.equal_parameters_to: a LoRA run matches the size of a run with "
                                       f"adapter 'rows', not {brief(run.equal_parameters_to)}")
    evaluation = config.evaluation
    if evaluation is not None:
        allowed = languages if evaluation.neuron_sets else None
        _languages(evaluation.languages, "evaluation.languages", allowed)
        for task in ("xnli", "xquad"):
            section = getattr(config.tasks, task)
            if section is not None and section.languages is not None:
                _languages(section.languages, f"tasks.{task}.languages", allowed)
        _names(evaluation.models, "evaluation.models", ["base"] + runs, "model ('base' or a fine-tuning run)")
        _names(evaluation.neuron_sets, "evaluation.neuron_sets", sets, "neuron set")
        _names(evaluation.intervene_models or (), "evaluation.intervene_models", list(evaluation.models), "model")
        if evaluation.reference is not None:
            _names([evaluation.reference], "evaluation.reference", list(evaluation.models), "model")
        for i, task in enumerate(evaluation.tasks):
            if task not in ("xnli", "xquad"):
                raise LangNeuronsError(f"evaluation.tasks[{i}]: unknown task {brief(task)}; use xnli or xquad")
            if getattr(config.tasks, task) is None:
                raise LangNeuronsError(f"evaluation.tasks[{i}]: task {brief(task)} has no data section under tasks")
        if evaluation.positions not in ("all", "prompt"):
            raise LangNeuronsError(f"evaluation.positions must be all or prompt, got {brief(evaluation.positions)}")
        from langneurons.intervene.spec import parse_action

        for i, action in enumerate(evaluation.actions):
            try:
                parse_action(action)
            except LangNeuronsError as error:
                raise LangNeuronsError(f"evaluation.actions[{i}]: {error}") from None
    if config.claims is not None:
        claims = config.claims
        if not 0 < claims.alpha < 1 or claims.practical_points < 0 or not 0 < claims.outer_fraction <= 0.5:
            raise LangNeuronsError("claims: need 0 < alpha < 1, practical_points >= 0, 0 < outer_fraction <= 0.5")
        if claims.bootstrap_resamples < 1:
            raise LangNeuronsError("claims.bootstrap_resamples must be >= 1")
        if claims.practical_nats < 0:
            raise LangNeuronsError("claims.practical_nats must be >= 0")
        for i, pair in enumerate(claims.related_pairs):
            if len(pair) != 2:
                raise LangNeuronsError(f"claims.related_pairs[{i}] must name two languages, got {list(pair)}")
            _languages(pair, f"claims.related_pairs[{i}]")  # pairs outside the PPXC languages are skipped
    _check_tasks(config.tasks)
    if evaluation is not None:
        _at_least(evaluation.batch_size, 1, "evaluation.batch_size")
        _at_least(evaluation.bootstrap_resamples, 1, "evaluation.bootstrap_resamples")
        if not 0.0 < evaluation.confidence < 1.0:
            raise LangNeuronsError(f"evaluation.confidence must be in (0, 1), got {brief(evaluation.confidence)}")
    if config.lm_eval is not None:
        _validate_lm_eval(config.lm_eval, sets, languages)
    if config.tasks.xquad is not None and config.tasks.xquad.train not in ("file", "by_article"):
        raise LangNeuronsError(f"tasks.xquad.train must be file or by_article, got {brief(config.tasks.xquad.train)}")


def _at_least(value: int | None, minimum: int, path: str) -> None:
    if value is not None and value < minimum:
        raise LangNeuronsError(f"{path} must be at least {minimum}, got {brief(value)}")


def _check_model(model: ModelConfig) -> None:
    from langneurons.models.loading import _DTYPES

    if model.dtype not in _DTYPES:
        raise LangNeuronsError(f"model.dtype: unknown dtype {brief(model.dtype)}; use one of {', '.join(_DTYPES)}")


def _check_tasks(tasks: TasksConfig) -> None:
    """Numbers of the task sections (limits, lengths, fractions)."""
    for task in ("xnli", "xquad"):
        section = getattr(tasks, task)
        if section is None:
            continue
        for name in ("eval_limit", "train_limit", "dev_limit", "max_length", "max_new_tokens"):
            if hasattr(section, name):
                _at_least(getattr(section, name), 1, f"tasks.{task}.{name}")
    if tasks.lm is not None:
        _at_least(tasks.lm.max_documents, 1, "tasks.lm.max_documents")
        _at_least(tasks.lm.eval_token_budget, 1, "tasks.lm.eval_token_budget")
        _at_least(tasks.lm.block_length, 2, "tasks.lm.block_length")
        lm = tasks.lm
        if not (0.0 < lm.eval_fraction < 1.0 and 0.0 <= lm.dev_fraction < 1.0 and lm.eval_fraction + lm.dev_fraction < 1.0):
            raise LangNeuronsError("tasks.lm: need 0 < eval_fraction, 0 <= dev_fraction and their sum below 1")
    if tasks.xquad is not None and not 0.0 < tasks.xquad.eval_fraction < 1.0:
        raise LangNeuronsError(f"tasks.xquad.eval_fraction must be in (0, 1), got {brief(tasks.xquad.eval_fraction)}")


def _validate_steering(steering: SteeringConfig, sets: list[str], languages: tuple[str, ...]) -> None:
    """The set exists, the pairs' languages are the experiment's (statistics, neurons) and the
    identifier covers them."""
    from langneurons.steer.langid import check_covered

    if steering.neuron_set is None and steering.directions is None:
        raise LangNeuronsError("steering needs neuron_set or directions")
    if steering.neuron_set is not None:
        _names([steering.neuron_set], "steering.neuron_set", sets, "neuron set")
    options = steering.options
    for i, pair in enumerate(options.pairs):
        for language in parse_pair(pair):
            if language not in languages:
                raise LangNeuronsError(f"steering.pairs[{i}]: language {language!r} is not among the experiment's "
                                       f"languages ({', '.join(languages)})")
            try:
                check_covered(language)
            except LangNeuronsError as error:
                raise LangNeuronsError(f"steering.pairs[{i}]: {error}") from None
    if options.identifier_languages is not None:
        _languages(options.identifier_languages, "steering.identifier_languages")


def _validate_lm_eval(section: LmEvalConfig, sets: list[str], languages: tuple[str, ...]) -> None:
    from langneurons.intervene.spec import parse_action

    if not section.tasks:
        raise LangNeuronsError("lm_eval.tasks: at least one harness task is needed")
    _names(section.neuron_sets, "lm_eval.neuron_sets", sets, "neuron set")
    if section.languages is not None:
        _languages(section.languages, "lm_eval.languages", languages)
    if section.positions not in ("all", "prompt"):
        raise LangNeuronsError(f"lm_eval.positions must be all or prompt, got {section.positions!r}")
    for i, action in enumerate(section.actions):
        try:
            parse_action(action)
        except LangNeuronsError as error:
            raise LangNeuronsError(f"lm_eval.actions[{i}]: {error}") from None
    for i, folder in enumerate(section.include_path):
        if not Path(folder).is_dir():
            raise LangNeuronsError(f"lm_eval.include_path[{i}]: folder not found: {folder}")
    if section.limit is not None and section.limit < 1:
        raise LangNeuronsError(f"lm_eval.limit must be positive, got {section.limit}")
    from langneurons.bounds import MAX_RESAMPLES, check_count, check_seed

    check_count(section.batch_size, "lm_eval.batch_size", 1, 1_000_000)
    check_count(section.bootstrap_resamples, "lm_eval.bootstrap_resamples", 1, MAX_RESAMPLES)
    check_seed(section.seed, "lm_eval.seed")


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively (JSON/YAML friendly)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def check_input_paths(config: ExperimentConfig) -> None:
    """Every local input the config names exists (the statistics corpus and its local copy, the
    steering prompts folder, the task sources of the tasks that are used), else a one-line error
    naming the key; checked by the runner before any stage runs (a config is parsed without it,
    so it can be read on another machine)."""
    from langneurons.corpus.sources import HF_SOURCES

    def exists(value: str | None, key: str, keywords: tuple[str, ...], folder: bool = False) -> None:
        if value is None or value in keywords:
            return
        path = Path(value)
        if not (path.is_dir() if folder else path.exists()):
            raise LangNeuronsError(f"{key}: {'folder' if folder else 'file or folder'} not found: {value}")

    statistics = config.statistics
    exists(statistics.corpus, "statistics.corpus", ("builtin", *HF_SOURCES), folder=True)
    exists(statistics.corpus_path, "statistics.corpus_path", (), folder=True)
    if config.steering is not None:
        exists(config.steering.options.prompts, "steering.prompts", ("builtin", "heldout"), folder=True)
    used = set(config.evaluation.tasks) if config.evaluation is not None else set()
    used |= {run.task for run in config.finetune}
    for task in sorted(used):
        section = getattr(config.tasks, task)
        if section is None:
            continue
        if task == "lm":  # the statistics pass's held-out text, or a corpus folder
            exists(section.source, "tasks.lm.source", ("builtin", "heldout"), folder=True)
            continue
        exists(section.source, f"tasks.{task}.source", ("builtin", "hub"))
        exists(section.train_source, f"tasks.{task}.train_source", ("builtin", "hub"))
