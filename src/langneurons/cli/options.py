"""Options shared by the commands: the model to load, defined once.

A command decorated with :func:`model_options` gets ``--model/-m``, ``--revision``, ``--dtype``,
``--device-map``, ``--load-in-4bit`` and ``--gguf-file`` appended to its options, and receives
them as one ``model: ModelChoice`` argument.
"""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass, fields
from typing import Annotated, Optional

import typer


@dataclass(frozen=True)
class ModelChoice:
    """The model a command loads (the arguments of :func:`~langneurons.models.loading.load_model`)."""

    model: Annotated[str, typer.Option("--model", "-m", help="Hub id, local folder, .gguf file, or 'gemma3-270m' (embedded default).")] = "gemma3-270m"
    revision: Annotated[Optional[str], typer.Option(help="Hub revision (branch, tag, commit).")] = None
    dtype: Annotated[str, typer.Option(help="float32, bfloat16, float16 or auto.")] = "float32"
    device_map: Annotated[Optional[str], typer.Option("--device-map", help="e.g. 'auto' to split a big model over GPUs.")] = None
    load_in_4bit: Annotated[bool, typer.Option("--load-in-4bit", help="4-bit weights (bitsandbytes, CUDA only).")] = False
    gguf_file: Annotated[Optional[str], typer.Option("--gguf-file", help="GGUF file name inside --model.")] = None

    def load(self, per_process: bool = False):
        """The loaded model. ``per_process``: under torchrun / accelerate launch with GPUs and no
        ``--device-map``, each process loads the whole model onto its own GPU."""
        from langneurons.launch import rank_device_map
        from langneurons.models.loading import load_model

        device_map = self.device_map or (rank_device_map() if per_process else None)
        return load_model(self.model, revision=self.revision, dtype=self.dtype, device_map=device_map,
                          load_in_4bit=self.load_in_4bit, gguf_file=self.gguf_file)


def _parameters() -> list[inspect.Parameter]:
    """The fields of :class:`ModelChoice` as keyword-only command parameters."""
    hints = typing.get_type_hints(ModelChoice, include_extras=True)
    return [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
            for f in fields(ModelChoice)]


def model_options(command):
    """Decorator for a typer command with a ``model: ModelChoice`` parameter: the parameter is
    replaced by the model options, which the command receives bundled as a :class:`ModelChoice`."""
    signature = inspect.signature(command, eval_str=True)  # typer reads the Annotated options
    if "model" not in signature.parameters:
        raise TypeError(f"{command.__name__} needs a 'model: ModelChoice' parameter")
    names = [f.name for f in fields(ModelChoice)]
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values() if p.name != "model"]

    @functools.wraps(command)
    def wrapper(**kwargs):
        choice = ModelChoice(**{name: kwargs.pop(name) for name in names})
        return command(model=choice, **kwargs)

    parameters = own + _parameters()
    wrapper.__signature__ = signature.replace(parameters=parameters)
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper
