"""What a study declares to the runner, the report and ``publish``: one :class:`Stage`.

Each study package holds a ``stage.py`` module that declares, in one place, its config section
(a dataclass, the type of that field of :class:`langneurons.runner.config.ExperimentConfig`), its
``run`` (which computes one or more cached stages through the context's ``stage``: the cache
key's inputs are the dict it passes), its figures (written by ``run`` with the package's own
figure writers), its report section and the files ``publish`` copies. The list of stages is
:data:`langneurons.registry.STAGES`; the runner, the report and ``publish`` loop over it
(docs/stages.md: how to add a study).

The context a stage's ``run`` receives (the runner's, :class:`langneurons.runner.run.Experiment`)
offers: ``config`` (the ExperimentConfig), ``run_dir``, ``records`` (stage name ->
:class:`StageRecord` of the stages run so far), ``loaded`` (the model, loaded on first use),
``fresh_base()`` (a private copy of it), ``neuron_set(name)``, ``statistics_for(languages)``,
``prepared_task(task, language)``, ``progress`` and ``stage(name, inputs, compute, product,
clear)``, which runs ``compute(directory)`` unless its outputs for ``inputs`` are cached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from langneurons.blocks import Block


@dataclass
class StageRecord:
    """One stage of one invocation: ``status`` is ``computed`` or ``cached``; ``seconds`` the wall
    time it took now, ``compute_seconds`` / ``cpu_seconds`` the wall / process CPU time its outputs
    took to compute; ``outputs`` maps file paths (relative to the run directory) to SHA-256;
    ``product`` hashes the outputs downstream reads."""

    name: str
    key: str
    status: str
    seconds: float
    compute_seconds: float
    cpu_seconds: float
    product: str
    outputs: dict[str, str] = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Stage:
    """A study as the runner, the report and ``publish`` see it.

    ``section``: the ExperimentConfig field that switches the study on (None: always on; an
    empty tuple or None value: off). ``run(context)``: computes its cached stages (None: written
    by its own command into the run directory, only reported and published). ``check(config)``:
    checks that need more than the config (an installed extra, task names), before any stage
    runs. ``report(run_dir, manifest)``: its report section's blocks; ``report_first``: shown
    before the other sections. ``published``: glob patterns (relative to the run directory) of
    the files a published result keeps.
    """

    name: str
    section: str | None
    run: Callable[[Any], None] | None
    report: Callable[[Path, dict], list[Block]] | None = None
    published: tuple[str, ...] = ()
    check: Callable[[Any], None] | None = None
    report_first: bool = False

    def enabled(self, config) -> bool:
        return self.run is not None and (self.section is None or bool(getattr(config, self.section)))


class WrappedOptions:
    """Mixin of a config section that wraps its stage's options dataclass (field ``options``, the
    one declaration of those options, as the stage command takes them) next to the section's own
    fields (the neuron sets it runs on, ...), and is written flat in the config: ``KEYS`` are the
    section's keys in their written order. :meth:`flat` is the section as written (and as its
    stage's cache key has always hashed it)."""

    KEYS: ClassVar[tuple[str, ...]] = ()

    def flat(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "options"}
        values.update(asdict(self.options))
        return {key: values[key] for key in self.KEYS}
