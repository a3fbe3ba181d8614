"""langneurons: find, test and manipulate the language-specific neurons of multilingual LLMs.

Pipeline (one package per stage): corpus -> activations -> identify -> intervene -> finetune
-> evaluate -> report. The CLI (``langneurons``) only calls the functions exported here::

    import langneurons as ln

    loaded = ln.load_model("gemma3-270m")
    ln.collect(loaded, ln.CollectOptions(languages=("en", "fr")), "out/statistics")
    lape = ln.identify("out/statistics", ln.IdentifyOptions(languages=("en", "fr"))).neuron_set
    matrix, files = ln.ppl_matrix(loaded, lape, "out/statistics", out_dir="out/ppxc")

Every name below is imported on first use (``import langneurons`` stays fast); neuron sets are
passed as :class:`NeuronSet` objects or as the paths of their files.
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

_API = {
    # models
    "load_model": "langneurons.models.loading",
    "ModelOptions": "langneurons.models.loading",
    "LoadedModel": "langneurons.models.loading",
    # activation statistics
    "collect": "langneurons.activations.api",
    "CollectOptions": "langneurons.activations.api",
    "load_statistics_dir": "langneurons.activations.api",
    # neuron sets
    "identify": "langneurons.identify.api",
    "IdentifyOptions": "langneurons.identify.api",
    "NeuronSet": "langneurons.identify.neuron_set",
    # interventions
    "ppl_matrix": "langneurons.intervene.api",
    "PPXCOptions": "langneurons.intervene.api",
    # steering
    "steer": "langneurons.steer.api",
    "SteeringOptions": "langneurons.steer.experiment",
    # fine-tuning and evaluation
    "finetune": "langneurons.finetune",
    "FinetuneConfig": "langneurons.finetune",
    "load_finetuned": "langneurons.finetune",
    "evaluate": ("langneurons.evaluate.evaluation", "evaluate_grid"),
    "evaluate_grid": "langneurons.evaluate.evaluation",
    "load_xnli": "langneurons.tasks",
    "load_xquad": "langneurons.tasks",
    # the whole study
    "run_experiment": "langneurons.runner.run",
    "load_config": "langneurons.runner.config",
    "LangNeuronsError": "langneurons.errors",
}
"""Public name -> module (or (module, name there)) it is imported from on first use."""

__all__ = ["__version__", *_API]


SHADOWED = ("identify", "steer", "finetune", "evaluate")
"""Public functions named like the stage package that holds them: ``langneurons.identify`` is
always the function (importing the package ``langneurons.identify`` would otherwise rebind the
name); import the packages' contents with ``from langneurons.identify import ...``."""


def _resolve(name: str):
    module, attribute = _API[name] if isinstance(_API[name], tuple) else (_API[name], name)
    return getattr(importlib.import_module(module), attribute)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'langneurons' has no attribute {name!r}")
    value = _resolve(name)
    if name not in SHADOWED:
        globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


class _Package(types.ModuleType):
    """This module, with :data:`SHADOWED` names resolved to the functions however the packages
    of the same names were imported."""

    def __getattribute__(self, name: str):
        if name in SHADOWED:
            return _resolve(name)
        return super().__getattribute__(name)


sys.modules[__name__].__class__ = _Package
