"""The steering experiment: prompts in a source language, interventions on language neurons,
greedy continuations, and the language the identifier finds in them.

For each (source, target) pair the conditions are:

* ``baseline``: no intervention;
* ``<set>:deactivate``: ``zero`` on the source language's neurons;
* ``<set>:activate:<action>``: an action on the target language's neurons, one per entry of
  ``actions`` (the strength sweep): ``add=S`` (S x (mean of target - mean of source), written
  ``add=S@source>target`` to the intervention parser), ``stat=pXX`` (the target's own XXth
  percentile, ``stat=pXX@target``), ``scale=F`` or ``constant=V``;
* ``<set>:both:<action>``: deactivate and activate together (the source's neurons are zeroed
  first, then the target's action applies; a neuron in both sets gets both);

with ``<set>`` the language-specific neuron set and, when ``random_control``, ``random``: a
layer-matched random set with the same number of neurons per layer and language, drawn from
the neurons outside the set (:func:`langneurons.identify.random_control.random_control`).

With a DiffMean direction set (``directions``) the same run adds direction conditions
(:mod:`langneurons.steer.directions`): ``<directions>:add=a@L`` (a x (target mean - source mean)
in the residual stream after the blocks L), a layer sweep (``direction_layers``) times a strength
sweep (``direction_strengths``), optionally ``<directions>:ablate@L`` and ``ablate+add=a@L``
(the source's direction removed), each with a ``random-dir:`` twin of matched norm per layer.
Every row names its random twin (``random_twin``) and its unit (``neurons`` / ``directions``).

Every action string goes through the intervention spec parser (:mod:`langneurons.intervene.spec`)
and the interventions of :mod:`langneurons.intervene`. Generation is greedy, batched with the
KV cache (:func:`langneurons.evaluate.generation.greedy_generate`), ``max_new_tokens`` new tokens
or up to EOS (newlines do not stop it); the intervention is applied to every position or, with
``positions="prompt"``, to prompt tokens only. Per generation the identifier gives a language;
per condition :func:`langneurons.steer.metric.language_rates` gives the target / source / other
rates with Wilson intervals. Fluency: the perplexity of the generated tokens given their prompt
under the *unintervened* model (exp of the token-weighted mean NLL over all continuations of the
condition), so a steered model that emits fluent-looking garbage in the target script shows up.

Honest selection and scores that do not reward loops. Each source language's prompts are split
(seeded, disjoint; :mod:`langneurons.steer.selection`) into a dev part (``dev_fraction``) and a
test part; every condition runs on all prompts and gets one row per split (field ``split``).
The best condition is chosen on the dev rows (by the fluent target rate); reports and claims read
the test rows. Beside the rates, each row has the degenerate rate (loops,
:mod:`langneurons.steer.degeneration`), the fluent target rate (target language and not
degenerate) and the combined score (harmonic mean of target rate and non-degenerate share, with a
bootstrap interval over prompts; :func:`langneurons.steer.metric.loop_aware_scores`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field

import torch

from langneurons.corpus.packing import TokenBlocks
from langneurons.bounds import check_seed
from langneurons.errors import LangNeuronsError
from langneurons.evaluate.generation import StopRule, greedy_generate, stop_token_ids
from langneurons.tasks.prompts import pad_id
from langneurons.identify.neuron_set import NeuronSet
from langneurons.identify.random_control import random_control
from langneurons.intervene import Intervention, intervene, intervention_factory, perplexity
from langneurons.intervene.spec import parse_action, parse_spec
from langneurons.languages import check_language
from langneurons.progress import progress_bar
from langneurons.steer.langid import Identification, Identifier, check_covered
from langneurons.steer.degeneration import is_degenerate
from langneurons.steer.metric import LOOP_AWARE_FIELDS, language_rates, loop_aware_scores
from langneurons.steer.prompts import HELDOUT, heldout_prompts, load_prompts
from langneurons.steer.directions import layer_text
from langneurons.steer.selection import (SELECTION_METRIC, SPLITS, TIE_BREAK, best_condition, dev_count,
                                         selection_split, split_labels)

MODES = ("baseline", "deactivate", "activate", "both")
ACTIVATION_KINDS = ("add", "stat", "scale", "constant")
ROW_FIELDS = ("source", "target", "condition", "split", "neuron_set", "unit", "mode", "kind", "strength", "action",
              "layers", "random_twin", "positions", "neurons", "n", "target_count", "target_rate", "target_ci_low", "target_ci_high",
              "source_count", "source_rate", "source_ci_low", "source_ci_high", "other_count", "other_rate",
              "other_ci_low", "other_ci_high", "mean_confidence", "fluency_ppl", "fluency_tokens", "mean_new_tokens",
              *LOOP_AWARE_FIELDS)


@dataclass(frozen=True)
class SteeringOptions:
    """What the experiment runs.

    pairs: ``SOURCE>TARGET`` language pairs. actions: target activations of the sweep
    (``add=S``, ``stat=pXX``, ``scale=F``, ``constant=V``; the pair supplies the languages).
    deactivate: also run ``zero`` on the source's neurons, alone and with each action.
    random_control / seed: the layer-matched random set. prompts: ``builtin``, a corpus folder, or
    ``heldout`` (the documents the statistics pass held out, never used for identification);
    prompt_count prompts of prompt_words words (from the end with prompts_from_end); dev_fraction of
    them (seeded by seed) choose the best condition, the rest are the test prompts every reported
    number uses (0: no split, the choice is made on the test prompts).
    max_new_tokens / batch_size / positions (``all`` or ``prompt``): generation.
    identifier_languages: candidate languages of the identifier (default every covered one);
    min_confidence: below it a generation is undetermined. confidence: of the Wilson intervals.
    examples: example prompts per pair written to examples.json.
    neuron_modes: the neuron conditions run, a subset of deactivate / activate / both (``deactivate``
    False drops deactivate and both); e.g. ``[both]`` runs only source zeroing + target action.
    direction_layers: the layer sweep of direction steering (each entry one condition group: ``6``,
    ``4-9``); direction_strengths: the add strengths a; direction_ablate: also ablate the source's
    direction (alone and with each add); direction_weighting: of the random twins (``isotropic`` /
    ``spread``). Used only when the run gets a direction set.
    """

    pairs: tuple[str, ...] = ("en>fr",)
    actions: tuple[str, ...] = ("add=1", "add=2", "add=4")
    deactivate: bool = True
    random_control: bool = True
    seed: int = 0
    prompts: str = "builtin"
    prompt_count: int = 8
    prompt_words: int = 8
    prompts_from_end: bool = False
    dev_fraction: float = 0.5
    max_new_tokens: int = 16
    batch_size: int = 8
    positions: str = "all"
    identifier_languages: tuple[str, ...] | None = None
    min_confidence: float = 0.0
    confidence: float = 0.95
    examples: int = 3
    neuron_modes: tuple[str, ...] = ("deactivate", "activate", "both")
    direction_layers: tuple[str, ...] = ()
    direction_strengths: tuple[float, ...] = (1.0, 2.0, 4.0)
    direction_ablate: bool = False
    direction_weighting: str = "isotropic"

    def __post_init__(self):
        if not self.pairs:
            raise LangNeuronsError("steering needs at least one SOURCE>TARGET pair")
        for pair in self.pairs:
            parse_pair(pair)
        if len(set(self.pairs)) != len(self.pairs):
            raise LangNeuronsError(f"a steering pair is listed twice: {list(self.pairs)}")
        for action in self.actions:
            activation_kind(action)
        if len(set(self.actions)) != len(self.actions):
            raise LangNeuronsError(f"a steering action is listed twice: {list(self.actions)}")
        if self.positions not in ("all", "prompt"):
            raise LangNeuronsError(f"positions must be all or prompt, got {self.positions!r}")
        for name in ("prompt_count", "prompt_words", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise LangNeuronsError(f"{name} must be >= 1, got {getattr(self, name)}")
        dev_count(self.prompt_count, self.dev_fraction)  # both parts non-empty
        if self.examples < 0:
            raise LangNeuronsError(f"examples must be >= 0, got {self.examples}")
        check_seed(self.seed)
        if not 0.0 < self.confidence < 1.0:
            raise LangNeuronsError(f"confidence must be strictly between 0 and 1, got {self.confidence}")
        self._check_directions()
        bad = [mode for mode in self.neuron_modes if mode not in MODES[1:]]
        if bad or not self.neuron_modes or len(set(self.neuron_modes)) != len(self.neuron_modes):
            raise LangNeuronsError(f"neuron_modes must be distinct modes of deactivate, activate, both; "
                                   f"got {list(self.neuron_modes)}")

    def _check_directions(self) -> None:
        from langneurons.directions.direction_set import WEIGHTINGS
        from langneurons.steer.directions import check_strength, layer_text

        choices = [layer_text(layers) for layers in self.direction_layer_choices]
        if len(set(choices)) != len(choices):
            raise LangNeuronsError(f"a direction layer choice is listed twice: {choices}")
        strengths = [check_strength(value) for value in self.direction_strengths]
        if len(set(strengths)) != len(strengths):
            raise LangNeuronsError(f"a direction strength is listed twice: {strengths}")
        if self.direction_layers and not strengths and not self.direction_ablate:
            raise LangNeuronsError("direction steering needs at least one strength (or direction_ablate)")
        if self.direction_weighting not in WEIGHTINGS:
            raise LangNeuronsError(f"direction_weighting must be one of {', '.join(WEIGHTINGS)}, "
                                   f"got {self.direction_weighting!r}")

    @property
    def direction_layer_choices(self) -> list[tuple[int, ...]]:
        """The layer sweep of direction steering, each entry parsed (``"4-6"`` -> (4, 5, 6))."""
        from langneurons.steer.directions import parse_layer_choice

        return [parse_layer_choice(text) for text in self.direction_layers]

    @property
    def source_languages(self) -> list[str]:
        return list(dict.fromkeys(parse_pair(pair)[0] for pair in self.pairs))

    @property
    def languages(self) -> list[str]:
        return list(dict.fromkeys(code for pair in self.pairs for code in parse_pair(pair)))

    @property
    def needs_statistics(self) -> bool:
        return any(activation_kind(action) in ("add", "stat") for action in self.actions)

    @property
    def needs_statistics_folder(self) -> bool:
        """add/stat actions read the statistics; ``heldout`` prompts read their pass's options."""
        return self.needs_statistics or self.prompts == HELDOUT


def steering_prompts(options: SteeringOptions, statistics_options: Mapping | None = None) -> dict[str, list[str]]:
    """Source language -> prompt texts, as ``options`` says; ``heldout`` prompts need the options of
    the statistics pass (its manifest's ``options``)."""
    if options.prompts == HELDOUT:
        if statistics_options is None:
            raise LangNeuronsError("prompts 'heldout' need the statistics pass they were held out of")
        return {language: heldout_prompts(statistics_options, language, options.prompt_count, options.prompt_words,
                                          options.prompts_from_end) for language in options.source_languages}
    return {language: load_prompts(options.prompts, language, options.prompt_count, options.prompt_words,
                                   options.prompts_from_end) for language in options.source_languages}


def parse_pair(pair: str) -> tuple[str, str]:
    """``"en>fr"`` -> ("en", "fr"); a one-line error for anything else."""
    source, separator, target = str(pair).strip().partition(">")
    if not separator or not source or not target:
        raise LangNeuronsError(f"a steering pair is written SOURCE>TARGET (e.g. en>fr), got {pair!r}")
    source, target = check_language(source.strip()), check_language(target.strip())
    if source == target:
        raise LangNeuronsError(f"steering pair {pair!r}: source and target are the same language")
    return source, target


def activation_kind(action: str) -> str:
    """The kind of a target-activation template (``add=2`` -> ``add``); checked by the spec parser."""
    if "@" in action or ">" in action:
        raise LangNeuronsError(f"write steering actions without languages (add=S, stat=pXX, scale=F), got {action!r}; "
                               "each pair supplies them")
    kind = action.split("=", 1)[0].strip()
    if kind not in ACTIVATION_KINDS:
        raise LangNeuronsError(f"steering action {action!r}: activating the target takes one of "
                               f"{', '.join(ACTIVATION_KINDS)}")
    # the spec parser's own checks (finite values, statistic names), on a stand-in pair
    parse_spec(f"neurons.json:fr:{full_action(action, 'en', 'fr')}")
    return kind


def full_action(action: str, source: str, target: str) -> str:
    """The action string for the intervention parser: the pair's languages added."""
    kind = action.split("=", 1)[0].strip()
    if kind == "add":
        return f"{action.strip()}@{source}>{target}"
    if kind == "stat":
        return f"{action.strip()}@{target}"
    return action.strip()


def strength(action: str) -> float | None:
    """The swept number of an action: add's S, scale's F, constant's V, stat's percentile (None for mean/std/...)."""
    fields_ = parse_action(full_action(action, "en", "fr"))
    if fields_["kind"] == "stat":
        name = fields_["statistic"]
        return float(name[1:]) if name.startswith("p") else None
    return float(fields_["value"])


@dataclass(frozen=True)
class Condition:
    """One condition of a pair: ``neuron_set`` (None for the baseline), ``mode`` (:data:`MODES`),
    and the template ``action`` of activate / both."""

    mode: str
    neuron_set: str | None = None
    action: str | None = None

    @property
    def name(self) -> str:
        if self.mode == "baseline":
            return "baseline"
        if self.mode == "deactivate":
            return f"{self.neuron_set}:deactivate"
        return f"{self.neuron_set}:{self.mode}:{self.action}"

    @property
    def kind(self) -> str | None:
        if self.mode == "deactivate":
            return "zero"
        return activation_kind(self.action) if self.action else None


def conditions(options: SteeringOptions, set_names: Sequence[str]) -> list[Condition]:
    """Every condition of one pair, baseline first, then per neuron set the deactivation and,
    per action, activate and both."""
    out = [Condition("baseline")]
    modes = set(options.neuron_modes) if options.deactivate else set(options.neuron_modes) & {"activate"}
    for name in set_names:
        if "deactivate" in modes:
            out.append(Condition("deactivate", name))
        for action in options.actions:
            out.extend(Condition(mode, name, action) for mode in ("activate", "both") if mode in modes)
    return out


@dataclass
class SteeringResult:
    """Rows (one per pair x condition, fields :data:`ROW_FIELDS`), generations (one record per
    pair x condition x prompt: prompt, continuation, identified language and confidence) and
    provenance (model, neuron set, identifier, options)."""

    rows: list[dict]
    generations: list[dict]
    meta: dict = field(default_factory=dict)

    def row(self, source: str, target: str, condition: str, split: str = "test") -> dict:
        return next(r for r in self.rows
                    if (r["source"], r["target"], r["condition"], r["split"]) == (source, target, condition, split))

    def best_condition(self, neuron_set: str) -> str | None:
        """The non-baseline condition of ``neuron_set`` with the highest mean fluent target rate over
        the pairs on the dev prompts (test prompts when there is no dev part; ties: the higher mean
        target rate, then the first in condition order); None when the set has no condition."""
        return best_condition(self.rows, neuron_set, SELECTION_METRIC)

    def best_conditions(self) -> dict[str, str | None]:
        """The dev-chosen best condition of each unit: ``{"neurons": ..., "directions": ...}`` (the
        language neuron set's and the direction set's; None where the run has no such unit)."""
        return {"neurons": self.best_condition(self.meta["neuron_set"]) if self.meta.get("neuron_set") else None,
                "directions": (self.best_condition(self.meta["direction_set"]) if self.meta.get("direction_set")
                               else None)}


def check_statistics_model(statistics: Mapping | None, fingerprint: str | None, model: str,
                           shape: tuple[int, int]) -> None:
    """The statistics (language -> ActivationStatistics) were recorded on the model of weights
    ``fingerprint`` and ``shape`` (layers, neurons per layer), described as ``model`` in the
    message: the neuron set's model before the model loads, the loaded model before generating."""
    for language, stats in (statistics or {}).items():
        meta = stats.meta
        if (meta.num_layers, meta.neurons_per_layer) != tuple(shape) \
                or (fingerprint and meta.weights_fingerprint != fingerprint):
            raise LangNeuronsError(f"the statistics of {language!r} were recorded on {meta.model_id} (weights "
                                   f"{meta.weights_fingerprint}), not on {model} (weights {fingerprint}); use "
                                   "statistics of the same model")


def check_inputs(options: SteeringOptions, neuron_set: NeuronSet | None, identifier: Identifier,
                 statistics: Mapping | None, directions=None) -> None:
    """Everything that can be checked before the model runs (one-line errors); ``neuron_set`` and
    ``directions`` (a DirectionSet) may each be None, not both."""
    if neuron_set is None and directions is None:
        raise LangNeuronsError("steering needs a neuron set (--neurons) or a direction set (--directions)")
    for language in options.languages:
        if not identifier.covers(language):
            check_covered(language)  # a clear message for lingua-uncovered languages
            raise LangNeuronsError(f"language {language!r} is not among the identifier's candidate languages")
        if neuron_set is not None and language not in neuron_set.languages:
            raise LangNeuronsError(f"the neuron set has no neurons for {language!r} (it has "
                                   f"{', '.join(neuron_set.languages)})")
    if directions is not None:
        check_direction_inputs(options, directions)
    if neuron_set is not None and options.needs_statistics:
        missing = [language for language in options.languages if language not in (statistics or {})]
        if missing:
            raise LangNeuronsError(f"add/stat actions need activation statistics of {missing}")


def check_direction_inputs(options: SteeringOptions, directions) -> None:
    """The direction set has the pairs' languages and means, the layer sweep is given and in range."""
    if not options.direction_layers:
        raise LangNeuronsError("direction steering needs direction_layers (e.g. --layers 6,4-9 on the command line)")
    if directions.means is None:
        raise LangNeuronsError(f"direction steering adds target mean - source mean; this {directions.method} "
                               "direction set has no means (use a DiffMean set)")
    for language in options.languages:
        if language not in directions.languages:
            raise LangNeuronsError(f"the direction set has no direction for {language!r} (it has "
                                   f"{', '.join(directions.languages)})")
    for layers in options.direction_layer_choices:
        if layers[-1] >= directions.num_layers:
            raise LangNeuronsError(f"direction layer {layers[-1]} outside the model's 0..{directions.num_layers - 1}")


def _continuation_blocks(prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]], pad: int,
                         language: str) -> TokenBlocks | None:
    """Prompt + continuation, right-padded; only continuation tokens are counted (perplexity
    targets). None when nothing was generated."""
    rows = [list(p) + list(c) for p, c in zip(prompts, continuations) if c]
    if not rows:
        return None
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    counted = torch.zeros((len(rows), width), dtype=torch.bool)
    kept = [(p, c) for p, c in zip(prompts, continuations) if c]
    for i, (row, (prompt, continuation)) in enumerate(zip(rows, kept)):
        input_ids[i, : len(row)] = torch.as_tensor(row)
        counted[i, len(prompt) : len(row)] = True
    return TokenBlocks(language, input_ids, counted)


def steered_generate(loaded, prompts: Sequence[Sequence[int]], interventions: Sequence[Intervention], pad: int,
                     stop, max_new_tokens: int, batch_size: int, positions: str = "all") -> list[list[int]]:
    """Greedy continuations (token ids) of tokenised ``prompts`` under every intervention at once
    (hooks run in list order), batched by length with the KV cache; one intervention context per
    batch, which the prompt-only scope needs. Outputs in input order."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        with ExitStack() as stack:
            for intervention in interventions:
                stack.enter_context(intervene(loaded, intervention, positions=positions))
            generated = greedy_generate(loaded.model, [prompts[i] for i in chosen], pad, stop,
                                        max_new_tokens=max_new_tokens, batch_size=len(chosen))
        for index, tokens in zip(chosen, generated):
            outputs[index] = tokens
    return outputs


class _Runner:
    def __init__(self, loaded, options: SteeringOptions, identifier: Identifier, statistics, progress: bool):
        self.loaded, self.options, self.identifier, self.progress = loaded, options, identifier, progress
        tokenizer = loaded.tokenizer
        self.eos = stop_token_ids(loaded.model, tokenizer)
        self.stop = StopRule(tokenizer, self.eos, stop_at_newline=False)
        self.pad = pad_id(tokenizer)
        self.factories: dict[str, object] = {}
        self.statistics = statistics

    def factory(self, action: str):
        if action not in self.factories:
            self.factories[action] = intervention_factory(action, self.loaded, self.statistics)
        return self.factories[action]

    def interventions(self, condition: Condition, sets: Mapping[str, NeuronSet], source: str,
                      target: str) -> list[Intervention]:
        """Deactivation first, then activation (the order their hooks run in)."""
        if condition.mode == "baseline":
            return []
        neuron_set = sets[condition.neuron_set]
        out = []
        if condition.mode in ("deactivate", "both"):
            out.append(self.factory("zero")(source, neuron_set.indices(source)))
        if condition.mode in ("activate", "both"):
            action = full_action(condition.action, source, target)
            out.append(self.factory(action)(target, neuron_set.indices(target)))
        return [i for i in out if i.num_neurons > 0]

    def generate(self, prompts: Sequence[Sequence[int]], interventions: Sequence[Intervention]) -> list[list[int]]:
        options = self.options
        return steered_generate(self.loaded, prompts, interventions, self.pad, self.stop, options.max_new_tokens,
                                options.batch_size, options.positions)

    def text(self, tokens: Sequence[int]) -> str:
        return self.loaded.tokenizer.decode([t for t in tokens if t not in self.eos], skip_special_tokens=True)

    def fluency(self, prompts, continuations, language: str) -> tuple[float | None, int]:
        blocks = _continuation_blocks(prompts, continuations, self.pad, language)
        if blocks is None:
            return None, 0
        result = perplexity(self.loaded, blocks, batch_size=self.options.batch_size, progress=False)
        return result.perplexity, result.token_count


def run_steering(loaded, neuron_set: NeuronSet | None, options: SteeringOptions, identifier: Identifier,
                 statistics: Mapping | None = None, set_name: str | None = None,
                 prompts: Mapping[str, Sequence[str]] | None = None, progress: bool = True,
                 directions=None, direction_name: str | None = None) -> SteeringResult:
    """Run every pair and condition of ``options`` on ``loaded`` (see the module docstring).

    Args:
        neuron_set: the language-specific set (its ``method`` names it unless ``set_name``); None
            for a run of direction conditions only.
        identifier: e.g. :class:`langneurons.steer.langid.LinguaIdentifier`.
        statistics: language -> ActivationStatistics (for ``add`` and ``stat`` actions).
        prompts: source language -> prompt texts (default: read as ``options`` says).
        directions: a DiffMean :class:`~langneurons.directions.direction_set.DirectionSet` (its
            ``method`` names it unless ``direction_name``): adds the direction conditions.
    """
    from langneurons.steer.directions import RANDOM_DIRECTIONS, DirectionInterventions, direction_conditions

    if neuron_set is not None:
        neuron_set.check_model(loaded.info)
    if directions is not None:
        directions.check_model(loaded)
    check_statistics_model(statistics, loaded.info.weights_fingerprint, loaded.info.model_id,
                           (loaded.info.num_layers, loaded.info.neurons_per_layer))
    check_inputs(options, neuron_set, identifier, statistics, directions)
    sets: dict[str, NeuronSet] = {}
    if neuron_set is not None:
        set_name = set_name or neuron_set.method
        if set_name in ("random", "none", RANDOM_DIRECTIONS):
            set_name = f"{set_name}-set"
        sets[set_name] = neuron_set
        if options.random_control:
            sets["random"] = random_control(neuron_set, seed=options.seed, exclude_selected=True)
    else:
        set_name = None
    cells: list[tuple[str, object]] = []
    for pair in options.pairs:
        cells += [(pair, condition) for condition in conditions(options, list(sets))]
    direction_builder = None
    if directions is not None:
        direction_name = direction_name or directions.method
        if direction_name in (*sets, "baseline", RANDOM_DIRECTIONS):
            direction_name = f"{direction_name}-directions"
        direction_builder = DirectionInterventions(directions, options.seed, options.direction_weighting)
        planned = direction_conditions(direction_name, options.direction_layer_choices, options.direction_strengths,
                                       options.direction_ablate, options.random_control)
        cells = [cell for pair in options.pairs for cell in
                 [c for c in cells if c[0] == pair] + [(pair, condition) for condition in planned]]
    if prompts is None:
        prompts = steering_prompts(options)
    runner = _Runner(loaded, options, identifier, statistics, progress)
    tokenized = {language: [list(loaded.tokenizer(text)["input_ids"]) for text in texts]
                 for language, texts in prompts.items()}
    splits = {language: split_labels(len(texts), options.dev_fraction, options.seed)
              for language, texts in prompts.items()}
    rows, generations = [], []
    for pair, condition in progress_bar(cells, "steering", enabled=progress):
        source, target = parse_pair(pair)
        if source not in tokenized:
            raise LangNeuronsError(f"no prompts for source language {source!r}")
        if isinstance(condition, Condition):
            interventions = runner.interventions(condition, sets, source, target)
            describe_row = {"unit": None if condition.mode == "baseline" else "neurons",
                            "neuron_set": condition.neuron_set, "mode": condition.mode, "kind": condition.kind,
                            "strength": strength(condition.action) if condition.action else None,
                            "action": full_action(condition.action, source, target) if condition.action
                            else condition.kind, "layers": None,
                            "random_twin": (Condition(condition.mode, "random", condition.action).name
                                            if "random" in sets and condition.neuron_set not in (None, "random")
                                            else None),
                            "neurons": sum(i.num_neurons for i in interventions)}
        else:
            interventions = direction_builder(condition, source, target)
            describe_row = {"unit": "directions", "neuron_set": condition.unit, "mode": condition.mode,
                            "kind": condition.kind, "strength": condition.strength,
                            "action": condition.spec(source, target), "layers": layer_text(condition.layers),
                            "random_twin": condition.random_twin, "neurons": 0}
        continuations = runner.generate(tokenized[source], interventions)
        texts = [runner.text(tokens) for tokens in continuations]
        identified: list[Identification] = identifier.identify(texts)
        for split in SPLITS:
            chosen = [i for i, label in enumerate(splits[source]) if label == split]
            if not chosen:
                continue
            found, said, generated = ([seq[i] for i in chosen] for seq in (identified, texts, continuations))
            rates = language_rates(found, source, target, options.confidence)
            loops = loop_aware_scores(found, said, target, options.confidence, seed=options.seed)
            ppl, tokens = runner.fluency([tokenized[source][i] for i in chosen], generated, target)
            rows.append({
                "source": source, "target": target, "condition": condition.name, "split": split,
                **describe_row, "positions": options.positions,
                **rates.flat(), "fluency_ppl": ppl, "fluency_tokens": tokens,
                "mean_new_tokens": sum(len(c) for c in generated) / len(generated), **loops.flat(),
            })
        for index, (prompt, text, found) in enumerate(zip(prompts[source], texts, identified)):
            generations.append({"source": source, "target": target, "condition": condition.name, "prompt_index": index,
                                "split": splits[source][index], "prompt": prompt, "continuation": text,
                                "language": found.language, "confidence": found.confidence,
                                "degenerate": is_degenerate(text)})
    describe = getattr(identifier, "describe", None)
    meta = {
        "model": loaded.info.to_dict(), "options": asdict(options), "neuron_set": set_name,
        "neuron_set_method": neuron_set.method if neuron_set is not None else None,
        "neuron_set_parameters": neuron_set.parameters if neuron_set is not None else None,
        "neurons": {name: {language: int(len(s.indices(language))) for language in options.languages}
                    for name, s in sets.items()},
        "identifier": describe() if describe else {"identifier": getattr(identifier, "name", "custom")},
        "splits": {language: {split: [i for i, label in enumerate(labels) if label == split] for split in SPLITS}
                   for language, labels in splits.items()},
        "selection": {"metric": SELECTION_METRIC, "tie_break": TIE_BREAK, "split": selection_split(rows)},
    }
    if directions is not None:
        meta.update({
            "direction_set": direction_name, "direction_set_method": directions.method,
            "direction_set_parameters": directions.parameters,
            "random_directions": {"name": RANDOM_DIRECTIONS, "seed": options.seed,
                                  "weighting": options.direction_weighting,
                                  "norm": "per layer, the norm of the steering vector (add) / of the direction"},
            "steering_vector_norms": {pair: [float(v) for v in torch.linalg.vector_norm(
                directions.steering_vector(*parse_pair(pair)), dim=-1)] for pair in options.pairs},
        })
    return SteeringResult(rows, generations, meta)
