"""Stage API: neuron set + held-out text -> PPXC matrix, tables and heatmap (``langneurons ppl-matrix``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from langneurons.activations.api import load_heldout, load_statistics_dir
from langneurons.errors import LangNeuronsError, brief
from langneurons.identify.neuron_set import as_neuron_set
from langneurons.intervene.ppxc import MEASURES, PPXCResult, ppxc_matrix, write_ppxc
from langneurons.intervene.spec import parse_action
from langneurons.languages import check_languages
from langneurons.models.loading import LoadedModel, cache_root


@dataclass(frozen=True)
class PPXCOptions:
    """action: what is done to row language i's neurons (``zero``, ``scale=0.5``, ``stat=p10``, ...).
    token_budget: target tokens per evaluated language (whole leading held-out blocks).
    measure: what the heatmap shows (:data:`MEASURES`); bootstrap_resamples / confidence: the
    block-bootstrap intervals of the cells and of the specificity."""

    languages: tuple[str, ...] | None = None
    action: str = "zero"
    random_control: bool = True
    seed: int = 0
    token_budget: int | None = 20_000
    batch_size: int = 8
    measure: str = "delta_nll"
    bootstrap_resamples: int = 1000
    confidence: float = 0.95

    def __post_init__(self):
        check_ppxc_options(self.action, self.token_budget, self.batch_size, self.measure)


def check_ppxc_options(action: str, token_budget: int | None, batch_size: int, measure: str | None = None) -> None:
    """The checks of a PPXC request, shared by ``ppl-matrix`` and ``load_config`` (``ppxc:``):
    the action is parsed by :func:`~langneurons.intervene.spec.parse_action`."""
    parse_action(action)
    if token_budget is not None and (isinstance(token_budget, bool) or not isinstance(token_budget, int)
                                     or token_budget < 1):
        raise LangNeuronsError(f"token budget must be an integer >= 1, got {brief(token_budget)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise LangNeuronsError(f"batch size must be an integer >= 1, got {brief(batch_size)}")
    if measure is not None and measure not in MEASURES:
        raise LangNeuronsError(f"unknown PPXC measure {brief(measure)}; use one of {', '.join(MEASURES)}")


def ppl_matrix(loaded: LoadedModel, neuron_set, statistics_dir, options: PPXCOptions | None = None, out_dir=None,
               cache_dir=None, progress: bool = True) -> tuple[PPXCResult, list[Path]]:
    """Compute the PPXC matrix on the held-out blocks saved by ``collect`` in ``statistics_dir``.

    ``neuron_set``: a :class:`NeuronSet` or the path of one; ``options``: default :class:`PPXCOptions`."""
    options = options or PPXCOptions()
    neuron_set = as_neuron_set(neuron_set)
    neuron_set.check_model(loaded.info)
    languages = list(check_languages(options.languages)) if options.languages else neuron_set.languages
    missing = [lang for lang in languages if lang not in neuron_set.languages]
    if missing:
        raise LangNeuronsError(f"languages {missing} are not in the neuron set ({', '.join(neuron_set.languages)})")
    heldout = {language: load_heldout(statistics_dir, language, loaded.tokenizer) for language in languages}
    empty = [lang for lang, blocks in heldout.items() if blocks.token_count == 0]
    if empty:
        raise LangNeuronsError(f"no held-out text for {empty}")
    statistics = None
    if parse_action(options.action)["kind"] in ("stat", "add"):
        statistics = load_statistics_dir(statistics_dir, expected=None)
    result = ppxc_matrix(
        loaded, neuron_set, heldout, languages, intervention_kind=options.action,
        random_control=options.random_control, seed=options.seed, token_budget=options.token_budget,
        cache_dir=cache_dir or cache_root() / "ppxc", progress=progress, batch_size=options.batch_size,
        statistics_by_language=statistics, n_resamples=options.bootstrap_resamples, confidence=options.confidence,
    )
    files: list[Path] = []
    if out_dir is not None:
        from langneurons.intervene.figures import write_ppxc_figure

        files += list(write_ppxc(result, out_dir).values())
        files += write_ppxc_figure(result, out_dir, measure=options.measure)
    return result, files
