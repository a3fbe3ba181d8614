"""Intervention specs: a compact string (CLI) or a dict (YAML), resolved into an Intervention.

String grammar::

    spec       ::= neurons ":" languages ":" action [":" scope]
    neurons    ::= path of a NeuronSet file (.json | .safetensors); may itself contain ':'
    languages  ::= lang ("," lang)*              union of these languages' neurons
    action     ::= "zero"
                 | "constant=" number            set to a finite value
                 | "scale=" number               multiply by a factor
                 | "stat=" statistic ["@" lang]  set to a statistic of lang's activations
                                                 (default lang: the only intervened language)
                 | "add=" number "@" lang ">" lang
                                                 add strength x (mean of target - mean of source),
                                                 written add=STRENGTH@SOURCE>TARGET
    statistic  ::= "mean" | "std" | "min" | "max" | "p" number   (p0..p100, e.g. p10, p90)
    scope      ::= "all" | "prompt"              token positions (default all; see interventions)

Examples: ``runs/lape.json:hi:zero``, ``lape.json:hi,ur:stat=p90@hi``,
``lape.json:hi:constant=0.5``, ``lape.json:hi:scale=2``, ``lape.json:hi:add=4@en>hi``,
``lape.json:hi:zero:prompt``.

Dict / YAML form (same meaning)::

    {neurons: lape.json, languages: [hi, ur], kind: stat, statistic: p90, statistic_language: hi}
    {neurons: lape.json, languages: hi, kind: add, value: 4, source_language: en, target_language: hi}
    {neurons: lape.json, languages: [hi], kind: scale, value: 2, positions: prompt}

``value`` is the constant (constant), the factor (scale) or the strength (add).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields

import torch

from langneurons.activations.statistics import ActivationStatistics, check_statistic_name
from langneurons.errors import LangNeuronsError, brief
from langneurons.intervene.interventions import KINDS, Intervention, build_intervention
from langneurons.languages import check_language

SCOPES = ("all", "prompt")
InterventionFactory = Callable[[str, torch.Tensor], Intervention]
"""``factory(language, neurons [k, 2]) -> Intervention`` (one PPXC row)."""


@dataclass(frozen=True)
class InterventionSpec:
    """An unresolved intervention; see the module docstring for the fields' meaning."""

    neurons: str
    languages: tuple[str, ...]
    kind: str
    value: float | None = None
    statistic: str | None = None
    statistic_language: str | None = None
    source_language: str | None = None
    target_language: str | None = None
    positions: str = "all"

    def __post_init__(self):
        _check_action(self)

    @property
    def statistics_languages(self) -> list[str]:
        """Languages whose ActivationStatistics :func:`resolve` needs."""
        if self.kind == "stat":
            return [self.statistic_language or self.languages[0]]
        if self.kind == "add":
            return [self.source_language, self.target_language]
        return []

    def action(self) -> str:
        """The action part of the string form (``zero``, ``stat=p90@hi`` ...)."""
        if self.kind == "zero":
            return "zero"
        if self.kind == "stat":
            return f"stat={self.statistic}" + (f"@{self.statistic_language}" if self.statistic_language else "")
        if self.kind == "add":
            return f"add={self.value:g}@{self.source_language}>{self.target_language}"
        return f"{self.kind}={self.value:g}"

    def to_string(self) -> str:
        scope = "" if self.positions == "all" else f":{self.positions}"
        return f"{self.neurons}:{','.join(self.languages)}:{self.action()}{scope}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["languages"] = list(self.languages)
        return {key: value for key, value in data.items() if value is not None}


def parse_number(text: str, what: str) -> float:
    """``text`` as a finite number of magnitude <= :data:`MAX_MAGNITUDE` (one-line error naming ``what``)."""
    try:
        number = float(text)
    except ValueError:
        raise LangNeuronsError(f"{what} must be a number, got {text!r}") from None
    if not math.isfinite(number):
        raise LangNeuronsError(f"{what} must be finite, got {text!r}")
    if abs(number) > MAX_MAGNITUDE:
        raise LangNeuronsError(f"{what} must be at most {MAX_MAGNITUDE:g} in magnitude, got {text!r}")
    return number


MAX_MAGNITUDE = 1e6
"""Largest |value| of constant/scale/add: beyond it an intervention only produces overflow
(inf/NaN activations in half precision), never a measurement."""


def _check_action(spec: InterventionSpec) -> None:
    if spec.kind not in KINDS:
        raise LangNeuronsError(f"unknown intervention kind {spec.kind!r}; use one of {', '.join(KINDS)}")
    if not spec.languages:
        raise LangNeuronsError("an intervention needs at least one language")
    for language in spec.languages:
        check_language(language)
    if spec.positions not in SCOPES:
        raise LangNeuronsError(f"positions must be one of {SCOPES}, got {spec.positions!r}")
    if spec.kind in ("constant", "scale", "add"):
        if spec.value is None or not math.isfinite(float(spec.value)):
            raise LangNeuronsError(f"{spec.kind} needs a finite value, got {spec.value!r}")
    if spec.kind == "stat":
        check_statistic_name(spec.statistic)
        if spec.statistic_language is None and len(spec.languages) > 1:
            raise LangNeuronsError("stat on several languages needs the statistics' language: stat=NAME@LANG")
        if spec.statistic_language is not None:
            check_language(spec.statistic_language)
    if spec.kind == "add":
        if spec.source_language is None or spec.target_language is None:
            raise LangNeuronsError("add needs a source and a target language: add=STRENGTH@SOURCE>TARGET")
        check_language(spec.source_language)
        check_language(spec.target_language)


def parse_action(action: str) -> dict:
    """Fields of the action part (``zero``, ``constant=0.5``, ``stat=p90@hi``, ``add=4@en>hi`` ...)."""
    if not isinstance(action, str):
        raise LangNeuronsError(f"an intervention action is a string such as zero or stat=p90, got {brief(action)}")
    kind, has_value, argument = action.strip().partition("=")
    if kind not in KINDS:
        raise LangNeuronsError(f"unknown intervention kind {brief(kind)} in {brief(action)}; "
                               f"use one of {', '.join(KINDS)}")
    if kind == "zero":
        if has_value:
            raise LangNeuronsError(f"zero takes no value: {action!r}")
        return {"kind": "zero"}
    if not argument:
        raise LangNeuronsError(f"{kind} needs a value: {action!r}")
    if kind in ("constant", "scale"):
        return {"kind": kind, "value": parse_number(argument, f"{kind} value")}
    if kind == "stat":
        name, _, language = argument.partition("@")
        check_statistic_name(name)  # every action is checked where it is read (CLI, config), not when used
        if language:
            check_language(language)
        return {"kind": kind, "statistic": name, "statistic_language": language or None}
    strength, _, languages = argument.partition("@")
    source, _, target = languages.partition(">")
    if not source or not target:
        raise LangNeuronsError(f"add is written add=STRENGTH@SOURCE>TARGET, got {action!r}")
    check_language(source)
    check_language(target)
    return {"kind": kind, "value": parse_number(strength, "add strength"), "source_language": source,
            "target_language": target}


def parse_spec(spec: str | Mapping | InterventionSpec) -> InterventionSpec:
    """Parse the string or dict form (see the module docstring)."""
    if isinstance(spec, InterventionSpec):
        return spec
    if isinstance(spec, Mapping):
        allowed = {f.name for f in fields(InterventionSpec)}
        unknown = sorted(set(spec) - allowed)
        if unknown:
            raise LangNeuronsError(f"unknown intervention keys {unknown}; allowed: {sorted(allowed)}")
        missing = [key for key in ("neurons", "languages", "kind") if key not in spec]
        if missing:
            raise LangNeuronsError(f"intervention is missing {missing}")
        data = dict(spec)
        languages = data["languages"]
        languages = languages.split(",") if isinstance(languages, str) else languages
        data["languages"] = tuple(str(language).strip() for language in languages)
        if data.get("value") is not None:
            data["value"] = parse_number(str(data["value"]), f"{data['kind']} value")
        return InterventionSpec(**data)
    text = str(spec).strip()
    positions = "all"
    head, _, last = text.rpartition(":")
    if last in SCOPES:
        text, positions = head, last
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not all(parts):
        raise LangNeuronsError(f"intervention spec must be NEURONS:LANGS:ACTION[:SCOPE], got {spec!r}")
    path, languages, action = parts
    return InterventionSpec(neurons=path, languages=tuple(l.strip() for l in languages.split(",")),
                            positions=positions, **parse_action(action))


# ---------------------------------------------------------------------------------- resolving
def _checked_statistics(statistics_by_language: Mapping[str, ActivationStatistics] | None, language: str,
                        info) -> ActivationStatistics:
    stats = (statistics_by_language or {}).get(language)
    if stats is None:
        raise LangNeuronsError(f"no activation statistics for {language!r} (have {sorted(statistics_by_language or {})})")
    meta = stats.meta
    if (meta.num_layers, meta.neurons_per_layer, meta.weights_fingerprint) != (
        info.num_layers, info.neurons_per_layer, info.weights_fingerprint
    ):
        raise LangNeuronsError(
            f"statistics for {language!r} were recorded on {meta.model_id} (weights {meta.weights_fingerprint}), "
            f"not on {info.model_id} (weights {info.weights_fingerprint})"
        )
    return stats


def _table(spec_like: dict, statistics_by_language, info, default_language: str) -> torch.Tensor | None:
    """The per-neuron [L, N] table a stat/add action needs (None for the others)."""
    kind = spec_like["kind"]
    if kind == "stat":
        language = spec_like.get("statistic_language") or default_language
        return _checked_statistics(statistics_by_language, language, info).statistic(spec_like["statistic"])
    if kind == "add":
        source = _checked_statistics(statistics_by_language, spec_like["source_language"], info).mean
        target = _checked_statistics(statistics_by_language, spec_like["target_language"], info).mean
        return (spec_like["value"] * (target - source)).float()
    return None


def resolve(spec, neuron_set=None, statistics_by_language: Mapping[str, ActivationStatistics] | None = None,
            loaded=None) -> Intervention:
    """Turn a spec (string, dict or InterventionSpec) into an :class:`Intervention` for ``loaded``.

    ``neuron_set`` defaults to ``NeuronSet.load(spec.neurons)``. Raises LangNeuronsError when the
    set or the statistics belong to another model, a language is not in the set, a statistic
    is unknown, or a value is not finite.
    """
    from langneurons.identify.neuron_set import NeuronSet

    spec = parse_spec(spec)
    if loaded is None:
        raise LangNeuronsError("resolving an intervention needs the loaded model")
    neuron_set = neuron_set if neuron_set is not None else NeuronSet.load(spec.neurons)
    neuron_set.check_model(loaded.info)
    missing = [language for language in spec.languages if language not in neuron_set.languages]
    if missing:
        raise LangNeuronsError(f"languages {missing} are not in the neuron set (it has {neuron_set.languages})")
    neurons = neuron_set.union(list(spec.languages))
    table = _table(asdict(spec), statistics_by_language, loaded.info, spec.languages[0])
    value = table if table is not None else spec.value
    return build_intervention(spec.kind, neurons, neuron_set.num_layers, neuron_set.neurons_per_layer, value,
                              label=f"{spec.action()} {','.join(spec.languages)} ({neuron_set.method})")


def intervention_factory(action: str | InterventionFactory, loaded,
                         statistics_by_language: Mapping[str, ActivationStatistics] | None = None
                         ) -> InterventionFactory:
    """A PPXC row factory from an action string (``zero``, ``scale=0``, ``stat=p10``, ...).

    For ``stat`` without ``@lang``, each row's neurons get the row language's own statistic.
    A callable is returned unchanged.
    """
    if callable(action):
        return action
    fields_ = parse_action(action)
    info = loaded.info
    tables: dict[str, torch.Tensor | None] = {}

    def factory(language: str, neurons: torch.Tensor) -> Intervention:
        if language not in tables:
            tables[language] = _table(fields_, statistics_by_language, info, language)
        value = tables[language] if tables[language] is not None else fields_.get("value")
        return build_intervention(fields_["kind"], neurons, info.num_layers, info.neurons_per_layer, value,
                                  label=action)

    if fields_["kind"] in ("stat", "add"):  # fail early on missing / foreign statistics
        languages = [fields_["statistic_language"]] if fields_.get("statistic_language") else []
        languages += [fields_[key] for key in ("source_language", "target_language") if fields_.get(key)]
        for language in languages:
            _checked_statistics(statistics_by_language, language, info)
    return factory
