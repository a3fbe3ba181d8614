"""Cross-checks of an experiment config (the types were checked by the parser): languages,
references between sections (neuron sets, fine-tuning runs, models), ranges and actions."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from langneurons.artefacts import check_plain_name
from langneurons.errors import LangNeuronsError, brief
from langneurons.finetune.train import NEURON_MODES
from langneurons.harness.stage import LmEvalConfig
from langneurons.identify.api import METHODS
from langneurons.languages import check_language
from langneurons.steer.experiment import parse_pair
from langneurons.steer.stage import SteeringConfig


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


def _actions(actions, path: str) -> None:
    """Every intervention action of ``actions`` parses; the error names ``path[i]``."""
    from langneurons.intervene.spec import parse_action

    for i, action in enumerate(actions):
        try:
            parse_action(action)
        except LangNeuronsError as error:
            raise LangNeuronsError(f"{path}[{i}]: {error}") from None


def _names(values, path: str, defined: list[str], what: str) -> None:
    for i, name in enumerate(values):
        if name not in defined:
            raise LangNeuronsError(f"{path}[{i}]: no {what} named {brief(name)} (defined: {', '.join(defined) or 'none'})")


def validate(config) -> None:
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
            options = config.ppxc.options
            check_ppxc_options(options.action, options.token_budget, options.batch_size, options.measure)
        except LangNeuronsError as error:
            raise LangNeuronsError(f"ppxc: {error}") from None
        _names(config.ppxc.neuron_sets, "ppxc.neuron_sets", sets, "neuron set")
        if config.ppxc.options.languages is not None:
            _languages(config.ppxc.options.languages, "ppxc.languages", languages)
    if config.steering is not None:
        _validate_steering(config.steering, sets, languages)
    validate_directions(config, sets)  # issue 19: diffmean sets, direction PPXC, steering.directions
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
        if config.stability.options.resamples < 1 or config.stability.options.splits < 0:
            raise LangNeuronsError("stability: resamples must be >= 1 and splits >= 0")
        from langneurons.identify.stability import StabilityOptions

        try:  # the bounds of the stability command (resamples, splits, seed, confidence)
            StabilityOptions(**asdict(config.stability.options))
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
        _actions(evaluation.actions, "evaluation.actions")
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
        _validate_learning_targets(claims.learning_targets, evaluation)
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


def _check_model(model) -> None:
    from langneurons.models.loading import DTYPES

    if model.dtype not in DTYPES:
        raise LangNeuronsError(f"model.dtype: unknown dtype {brief(model.dtype)}; use one of {', '.join(DTYPES)}")


def _check_tasks(tasks) -> None:
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
    if not section.options.tasks:
        raise LangNeuronsError("lm_eval.tasks: at least one harness task is needed")
    _names(section.neuron_sets, "lm_eval.neuron_sets", sets, "neuron set")
    if section.languages is not None:
        _languages(section.languages, "lm_eval.languages", languages)
    if section.positions not in ("all", "prompt"):
        raise LangNeuronsError(f"lm_eval.positions must be all or prompt, got {section.positions!r}")
    _actions(section.actions, "lm_eval.actions")
    for i, folder in enumerate(section.options.include_path):
        if not Path(folder).is_dir():
            raise LangNeuronsError(f"lm_eval.include_path[{i}]: folder not found: {folder}")
    if section.options.limit is not None and section.options.limit < 1:
        raise LangNeuronsError(f"lm_eval.limit must be positive, got {section.options.limit}")
    from langneurons.bounds import MAX_RESAMPLES, check_count, check_seed

    check_count(section.batch_size, "lm_eval.batch_size", 1, 1_000_000)
    check_count(section.options.bootstrap_resamples, "lm_eval.bootstrap_resamples", 1, MAX_RESAMPLES)
    check_seed(section.options.seed, "lm_eval.seed")
    from langneurons.harness.api import LmEvalOptions

    try:  # the lm-eval command's own checks of its options (confidence, ...)
        LmEvalOptions(**asdict(section.options))
    except LangNeuronsError as error:
        raise LangNeuronsError(f"lm_eval: {error}") from None


def check_input_paths(config) -> None:
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


def validate_directions(config, neuron_sets: list[str]) -> None:
    """Direction entries need ``statistics.residual: true``; names are unique among all sets;
    ``direction_ppxc`` and ``steering.directions`` name diffmean entries; languages are the
    experiment's. One-line errors."""
    names = [entry.name for entry in config.directions]
    for i, entry in enumerate(config.directions):
        path = f"identification ({entry.name})"
        if not config.statistics.residual:
            raise LangNeuronsError(f"{path}: method diffmean needs statistics.residual: true (residual-stream sums)")
        if entry.name in neuron_sets or names.count(entry.name) > 1:
            raise LangNeuronsError(f"{path}.name: set {brief(entry.name)} is defined twice")
        languages = entry.options.languages or config.languages
        if entry.options.languages is not None:
            _languages(entry.options.languages, f"{path}.languages", config.languages)
        if len(languages) < 2 or entry.options.rank > len(languages) - 1:
            raise LangNeuronsError(f"{path}: diffmean needs >= 2 languages and rank <= languages - 1 "
                                   f"(got {len(languages)} languages, rank {entry.options.rank})")
    section = config.direction_ppxc
    if section is not None:
        _names(section.direction_sets, "direction_ppxc.direction_sets", names, "diffmean direction set")
        if section.languages is not None:
            _languages(section.languages, "direction_ppxc.languages", config.languages)
        try:
            section.options(section.languages or config.languages)
        except LangNeuronsError as error:
            raise LangNeuronsError(f"direction_ppxc: {error}") from None
    steering = config.steering
    if steering is not None and steering.directions is not None:
        _names([steering.directions], "steering.directions", names, "diffmean direction set")
        if not steering.options.direction_layers:
            raise LangNeuronsError("steering.direction_layers: direction steering needs a layer sweep (e.g. ['6'])")
        entry = next(e for e in config.directions if e.name == steering.directions)
        have = entry.options.languages or config.languages
        for language in steering.options.languages:
            if language not in have:
                raise LangNeuronsError(f"steering.directions: {entry.name!r} has no direction for {language!r}")


def _validate_learning_targets(targets, evaluation) -> None:
    """Each of ``claims.learning_targets`` names an evaluated model (or a seeded run's base name), a
    task it is evaluated on, and a score in (0, 100]."""
    from langneurons.report.claims import run_seed

    models = set(evaluation.models) if evaluation is not None else set()
    bases = models | {run_seed(name)[0] for name in models}
    tasks = set(evaluation.tasks) if evaluation is not None else set()
    for i, target in enumerate(targets):
        where = f"claims.learning_targets[{i}]"
        if target.model not in bases:
            raise LangNeuronsError(f"{where}: model {brief(target.model)} is not evaluated "
                                   f"(evaluation.models: {', '.join(sorted(models)) or 'none'})")
        if target.task not in tasks:
            raise LangNeuronsError(f"{where}: task {brief(target.task)} is not evaluated "
                                   f"(evaluation.tasks: {', '.join(sorted(tasks)) or 'none'})")
        if not 0 < target.score <= 100:
            raise LangNeuronsError(f"{where}: score must be a percentage in (0, 100], got {brief(target.score)}")
