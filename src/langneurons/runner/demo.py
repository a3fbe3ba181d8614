"""The embedded demo: the built-in experiment config run end to end on the default model.

``full`` (``data/configs/demo.yaml``) is sized for under 10 minutes on 2 CPU cores including the
first conversion of the default model; ``ci`` (``data/configs/demo-ci.yaml``) runs every stage
and report section on less data.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from langneurons.errors import LangNeuronsError
from langneurons.runner.run import ModelLoader, RunResult, run_experiment

BUDGETS = {"full": "demo.yaml", "ci": "demo-ci.yaml"}


def builtin_config(name: str) -> Path:
    """Path of a config shipped in ``langneurons/data/configs`` (``demo``, ``demo-ci``, ``paper``,
    ``replication``, ``transfer``, ``transfer-seeds``, ``subnetwork``, ...)."""
    folder = files("langneurons").joinpath("data").joinpath("configs")
    resource = folder.joinpath(f"{name.removesuffix('.yaml')}.yaml")
    if not resource.is_file():
        available = sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))
        raise LangNeuronsError(f"no built-in config {name!r}; available: {', '.join(available)}")
    return Path(str(resource))


def run_demo(run_dir: str | Path = "demo-run", budget: str = "full", *, force: bool = False, progress: bool = True,
             loader: ModelLoader | None = None) -> RunResult:
    """Run the demo experiment into ``run_dir`` and print the path of its report."""
    if budget not in BUDGETS:
        raise LangNeuronsError(f"unknown demo budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    result = run_experiment(builtin_config(BUDGETS[budget]), run_dir, loader=loader, force=force, progress=progress)
    markdown, page = result.report
    print(f"demo finished in {result.seconds:.0f} s; report: {page} (Markdown: {markdown})")
    return result
