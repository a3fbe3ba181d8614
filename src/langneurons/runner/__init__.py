"""The experiment runner: one YAML config -> every stage of the study, cached, with a manifest
and a report (``langneurons run``, ``langneurons demo``)."""

from langneurons.runner.config import ExperimentConfig, load_config
from langneurons.runner.demo import builtin_config, run_demo
from langneurons.runner.run import RunResult, StageRecord, default_loader, run_experiment, task_examples

__all__ = [
    "ExperimentConfig",
    "RunResult",
    "StageRecord",
    "builtin_config",
    "default_loader",
    "load_config",
    "run_demo",
    "run_experiment",
    "task_examples",
]
