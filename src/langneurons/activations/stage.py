"""The ``statistics`` stage: activation statistics and held-out blocks per language
(config section ``statistics:``, :class:`langneurons.activations.api.CollectOptions`)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from langneurons.stage import Stage


def run(context) -> None:
    from langneurons.activations.api import collect, options_dict

    config = context.config
    options = config.statistics

    def compute(directory: Path) -> None:
        collect(context.loaded, options, directory, progress=context.progress)
        for path in directory.glob("*.safetensors*"):  # files of languages no longer configured
            if path.name.split(".")[0] not in config.languages:
                path.unlink()

    inputs = {"model": asdict(config.model), "statistics": options_dict(options)}  # unchanged keys by default
    context.stage("statistics", inputs, compute, product=("*.safetensors",), clear=False)


STATISTICS = Stage("statistics", None, run)
