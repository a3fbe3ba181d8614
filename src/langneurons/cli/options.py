"""Options shared by the commands: the model to load, defined once.

A command decorated with :func:`model_options` gets ``--model/-m``, ``--revision``, ``--dtype``,
``--device-map``, ``--load-in-4bit`` and ``--gguf-file`` appended to its options, and receives
them as one ``model: ModelChoice`` argument (:class:`langneurons.models.loading.ModelOptions`,
the dataclass the experiment config's ``model:`` section and the harness backend use too).
"""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import fields
from typing import Annotated, Optional

import typer

from langneurons.models.loading import ModelOptions


ModelChoice = ModelOptions
"""What a command decorated with :func:`model_options` receives: the one model-options dataclass
(:class:`langneurons.models.loading.ModelOptions`); this module adds only the flags' help."""

OPTIONS = {
    "name": ("model", typer.Option("--model", "-m", help="Hub id, local folder, .gguf file, or 'gemma3-270m' "
                                                         "(embedded default).")),
    "revision": ("revision", typer.Option(help="Hub revision (branch, tag, commit).")),
    "dtype": ("dtype", typer.Option(help="float32, bfloat16, float16 or auto.")),
    "device_map": ("device_map", typer.Option("--device-map", help="e.g. 'auto' to split a big model over GPUs.")),
    "load_in_4bit": ("load_in_4bit", typer.Option("--load-in-4bit", help="4-bit weights (bitsandbytes, CUDA only).")),
    "gguf_file": ("gguf_file", typer.Option("--gguf-file", help="GGUF file name inside --model.")),
}
"""ModelOptions field -> (command parameter, its typer option); ``device`` is the runner's only."""


def _parameters() -> list[inspect.Parameter]:
    """The fields of :class:`ModelOptions` in :data:`OPTIONS` as keyword-only command parameters."""
    hints = typing.get_type_hints(ModelOptions)
    parameters = []
    for f in fields(ModelOptions):
        if f.name not in OPTIONS:
            continue
        name, option = OPTIONS[f.name]
        hint = hints[f.name]
        if type(None) in typing.get_args(hint):  # typer reads Optional[...], not ``X | None``
            hint = Optional[next(a for a in typing.get_args(hint) if a is not type(None))]
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                            annotation=Annotated[hint, option]))
    return parameters


def model_options(command):
    """Decorator for a typer command with a ``model: ModelChoice`` parameter: the parameter is
    replaced by the model options, which the command receives bundled as a :class:`ModelChoice`."""
    signature = inspect.signature(command, eval_str=True)  # typer reads the Annotated options
    if "model" not in signature.parameters:
        raise TypeError(f"{command.__name__} needs a 'model: ModelChoice' parameter")
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values() if p.name != "model"]

    @functools.wraps(command)
    def wrapper(**kwargs):
        choice = ModelOptions(**{field: kwargs.pop(name) for field, (name, _) in OPTIONS.items()})
        return command(model=choice, **kwargs)

    parameters = own + _parameters()
    wrapper.__signature__ = signature.replace(parameters=parameters)
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper
