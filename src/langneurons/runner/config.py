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

from collections.abc import Mapping
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from langneurons.activations.api import CollectOptions, options_dict
from langneurons.errors import LangNeuronsError
from langneurons.evaluate.stage import EvaluationConfig
from langneurons.finetune.stage import SEED_SEPARATOR, FinetuneRunConfig, seed_groups  # noqa: F401
from langneurons.finetune.train import FinetuneConfig
from langneurons.harness.stage import LmEvalConfig
from langneurons.identify.api import IdentifyOptions
from langneurons.identify.api import options_dict as identify_options_dict
from langneurons.identify.stage import IdentifyConfig, StabilityConfig
from langneurons.intervene.stage import PPXCConfig
from langneurons.models.loading import ModelOptions
from langneurons.report.claims import ClaimsConfig
from langneurons.runner.schema import (  # noqa: F401
    MAX_CONFIG_VALUES,
    build,
    check_expanded_size,
    convert,
    join_path,
    merge,
    plain,
    read_yaml,
    substitute_variables,
)
from langneurons.runner.directions import (DirectionIdentifyConfig, parse_direction_ppxc, split_identification,
                                           to_dict_entries)
from langneurons.runner.validation import check_input_paths, validate  # noqa: F401 (the runner's)
from langneurons.directions.stage import DirectionPPXCConfig
from langneurons.steer.experiment import SteeringOptions
from langneurons.steer.stage import SteeringConfig, steering_keys


ModelConfig = ModelOptions
"""The ``model:`` section: :class:`langneurons.models.loading.ModelOptions` (one declaration for
the config, the CLI and the harness backend)."""


STATISTICS_EXCLUDED = ("languages", "shard", "backend")
""":class:`CollectOptions` fields a config does not set in ``statistics:`` (the experiment's
``languages`` apply; sharding and the distributed backend are launch-time choices)."""

IDENTIFY_EXCLUDED = ("languages",)
"""The experiment's ``languages`` apply to every neuron set."""


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
        data = plain(asdict(self))
        data["statistics"] = {k: v for k, v in plain(options_dict(self.statistics)).items()
                              if k not in STATISTICS_EXCLUDED}
        data["identification"] = [
            {"name": entry.name, **{k: v for k, v in plain(identify_options_dict(entry.options)).items()
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

            data["claims"] = plain(claims_options(self.claims))
        directions = to_dict_entries(self)  # configs without directions read and hash as before them
        data.pop("directions", None)
        data.pop("direction_ppxc", None)
        data["identification"] += directions.pop("identification", [])
        data.update(directions)
        if data["lm_eval"] is None:  # configs without the section read and hash as before it existed
            del data["lm_eval"]
        for name in WRAPPED_SECTIONS:  # written flat: their own keys and their options' in one mapping
            if getattr(self, name) is not None:
                data[name] = plain(getattr(self, name).flat())
        return data

    def neuron_set(self, name: str) -> IdentifyConfig:
        return next(entry for entry in self.identification if entry.name == name)

    def run(self, name: str) -> FinetuneRunConfig:
        return next(run for run in self.finetune if run.name == name)

    def evaluation_languages(self, task: str) -> tuple[str, ...]:
        """The languages ``task`` is evaluated on (the task's own list, else ``evaluation.languages``)."""
        return getattr(self.tasks, task).languages or self.evaluation.languages


# ---------------------------------------------------------------------------------- loading


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
        data, origin = read_yaml(path), path.name
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


def _parse(data: dict) -> ExperimentConfig:
    """Sections whose types are stage option dataclasses (statistics: CollectOptions,
    identification: IdentifyOptions, finetune: FinetuneConfig) are read with the experiment-wide
    fields left out; everything else is read field by field from the config dataclasses."""
    data = dict(data)
    if isinstance(data.get("model"), str):
        data["model"] = {"name": data["model"]}
    own = {key: data.pop(key) for key in ("statistics", "identification", "finetune", "steering", *WRAPPED_SECTIONS,
                                          "direction_ppxc", "directions") if key in data}
    if "directions" in own:
        raise LangNeuronsError("directions: write direction sets as identification entries with method: diffmean")
    directions: list = []
    if "identification" in own:
        own["identification"], directions = split_identification(own["identification"])
    config = build(ExperimentConfig, data, "")
    languages = config.languages
    statistics = build(CollectOptions, own.get("statistics", {}), "statistics", excluded=STATISTICS_EXCLUDED,
                        fixed={"languages": languages})
    identification = (_identification(own["identification"]) if "identification" in own
                      else config.identification)
    runs = _finetune_runs(own["finetune"]) if own.get("finetune") is not None else ()
    steering = _steering(own["steering"]) if own.get("steering") is not None else None
    wrapped = {name: _wrapped(WRAPPED_SECTIONS[name], own[name], name) if own.get(name) is not None else None
               for name in WRAPPED_SECTIONS}
    evaluation = _expand_seeded_models(config.evaluation, runs)
    return replace(config, statistics=statistics, identification=identification, finetune=runs, steering=steering,
                   evaluation=evaluation, **wrapped, directions=tuple(entry for _, entry in directions),
                   direction_ppxc=parse_direction_ppxc(own.get("direction_ppxc")))


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


WRAPPED_SECTIONS = {"ppxc": PPXCConfig, "stability": StabilityConfig, "lm_eval": LmEvalConfig}
"""Sections that wrap their stage's options dataclass (:class:`langneurons.stage.WrappedOptions`)."""


def _wrapped(cls, section: Any, path: str):
    """A :class:`~langneurons.stage.WrappedOptions` section from its flat mapping: the keys of its
    options dataclass build ``options`` (defaults: those of the section's default options, where
    it has one), the others the section's own fields."""
    if not isinstance(section, Mapping):
        raise LangNeuronsError(f"{path} must be a mapping")
    unknown = sorted(set(section) - set(cls.KEYS))
    if unknown:
        raise LangNeuronsError(f"unknown key {join_path(path, unknown[0])}; allowed: {', '.join(sorted(cls.KEYS))}")
    options_field = next(f for f in fields(cls) if f.name == "options")
    options_cls = typing.get_type_hints(cls)["options"]
    option_keys = [f.name for f in fields(options_cls)]
    defaults = {}
    if options_field.default_factory is not MISSING:
        defaults = {f.name: getattr(options_field.default_factory(), f.name) for f in fields(options_cls)}
    options = build(options_cls, {k: v for k, v in section.items() if k in option_keys}, path,
                    excluded=tuple(k for k in option_keys if k not in cls.KEYS), fixed=defaults, checked=False)
    return build(cls, {k: v for k, v in section.items() if k not in option_keys}, path, fixed={"options": options})


def _steering(section: Any) -> SteeringConfig:
    """``steering: {neuron_set, directions, <SteeringOptions fields>}``."""
    if not isinstance(section, Mapping):
        raise LangNeuronsError("steering must be a mapping")
    options = {k: v for k, v in section.items() if k not in ("neuron_set", "directions")}
    return SteeringConfig(
        neuron_set=convert(str | None, section.get("neuron_set", "lape"), "steering.neuron_set"),
        options=build(SteeringOptions, options, "steering", extra=("neuron_set", "directions")),
        directions=convert(str | None, section.get("directions"), "steering.directions"),
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
            name=convert(str, entry["name"], f"{path}.name"),
            options=build(IdentifyOptions, options, path, excluded=IDENTIFY_EXCLUDED, extra=("name", "figures")),
            figures=convert(bool, entry.get("figures", True), f"{path}.figures"),
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
        seeds = convert(tuple[int, ...] | None, merged.pop("seeds", None), f"{path}.seeds")
        if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
            raise LangNeuronsError(f"{path}.seeds must be a non-empty list of distinct integers")
        options = build(FinetuneConfig, {k: v for k, v in merged.items() if k in option_fields}, path)
        name = convert(str, merged["name"], f"{path}.name")
        for seed in seeds if seeds is not None else (None,):  # each seed: its own run, its own random set
            parsed.append(FinetuneRunConfig(
                name=name if seed is None else f"{name}{SEED_SEPARATOR}{seed}",
                source_language=convert(str, merged.get("source_language", "en"), f"{path}.source_language"),
                neuron_set=convert(str | None, merged.get("neuron_set"), f"{path}.neuron_set"),
                options=options if seed is None else replace(options, seed=seed),
                equal_parameters_to=convert(str | None, merged.get("equal_parameters_to"),
                                            f"{path}.equal_parameters_to"),
            ))
    return tuple(parsed)


# ---------------------------------------------------------------------------------- validation


