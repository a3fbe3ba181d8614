"""Publish a finished run as a committed result: the tables, figures, report, config and manifest
of a run directory copied into ``docs/results/<name>/`` (the same layout, so the report's image
links keep working), without the per-example predictions, adapters, statistics or any text of
the data sets; plus the claims table in ``docs/results/README.md`` and, between marker comments,
in the project README. Everything written here is read from the run's artefacts.

Hostile input: the result name is one plain folder name (:func:`~langneurons.artefacts.check_plain_name`)
and only that folder inside the results folder is ever replaced; a symbolic link in the run
directory (file or folder) is refused, never followed (only regular files inside the run are
copied); the manifest and the README to update are checked before anything is written.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from langneurons.artefacts import check_plain_name, inside, write_text
from langneurons.errors import LangNeuronsError
from langneurons.provenance import MANIFEST
from langneurons.registry import published_patterns

PUBLISHED = published_patterns()
"""Glob patterns (relative to the run directory) of what a published result holds (each study's
``published`` patterns of :data:`langneurons.registry.STAGES`): never
``generations.jsonl`` or ``examples.json`` of steering (continuations of data-set prompts); the
examples of ``steering-examples/`` only when that run used the built-in prompts (checked)."""

README_START, README_END = "<!-- langneurons:claims:start -->", "<!-- langneurons:claims:end -->"


@dataclass
class Publication:
    directory: Path
    files: list[Path]
    index: Path


def publish_run(run_dir, results_dir, name: str | None = None, readme=None) -> Publication:
    """Copy the publishable artefacts of ``run_dir`` to ``results_dir/<name>`` (default: the run's
    config name + model), rewrite ``results_dir/README.md`` (one claims table per published
    result), and, if given, the marked block of ``readme``."""
    from langneurons.report.report import write_report

    run_dir, results_dir = Path(run_dir), Path(results_dir)
    manifest = _read_manifest(run_dir)
    if readme is not None:
        readme = Path(readme)
        _check_readme(readme)
        if not (run_dir / "claims" / "claims.md").is_file():
            raise LangNeuronsError(f"{run_dir} has no claims for the README block (add a claims: section to the "
                                   "config and rerun, or publish without --readme)")
    name = check_plain_name(manifest["config"].get("name", run_dir.name) if name is None else name,
                            "the result name (--name)")
    target = results_dir / name
    if not inside(target, results_dir):
        raise LangNeuronsError(f"the result folder {target} is not inside the results folder {results_dir}")
    if target.exists() and not target.is_dir():
        raise LangNeuronsError(f"cannot publish to {target}: it is a file, not a folder")
    _sources(run_dir)  # every link refused before anything is read or written
    write_report(run_dir)
    sources = _sources(run_dir)
    if target.exists():
        shutil.rmtree(target)
    files = []
    for source in sources:
        destination = target / source.relative_to(run_dir)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
        files.append(destination)
    index = write_text(results_dir / "README.md", _index(results_dir))
    if readme is not None:
        _update_readme(readme, results_dir, target)
    return Publication(target, files, index)


def _read_manifest(run_dir: Path) -> dict:
    """The run's manifest (a JSON object with a ``config`` mapping), else a one-line error."""
    manifest_path = run_dir / MANIFEST
    if not manifest_path.is_file():
        raise LangNeuronsError(f"{run_dir} is not a langneurons run directory (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise LangNeuronsError(f"{manifest_path} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict):
        raise LangNeuronsError(f"{manifest_path} has no config (is it a langneurons run manifest?)")
    return manifest


def _check_readme(readme: Path) -> None:
    """The README to update is a text file with the start marker before the end marker."""
    if not readme.is_file():
        raise LangNeuronsError(f"README to update not found (or not a file): {readme}")
    try:
        text = readme.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise LangNeuronsError(f"cannot read {readme}: {error}") from None
    if README_START not in text or README_END not in text:
        raise LangNeuronsError(f"{readme} has no {README_START} ... {README_END} block to update")
    if text.index(README_START) > text.index(README_END) or text.count(README_START) != 1 \
            or text.count(README_END) != 1:
        raise LangNeuronsError(f"{readme} must hold exactly one {README_START} followed by one {README_END}")


def _sources(run_dir: Path) -> list[Path]:
    """The run's publishable files (:data:`PUBLISHED`): regular files inside ``run_dir``. A symbolic
    link on the way (file or folder) is refused: a link could publish any file of the machine."""
    sources = []
    for pattern in published_patterns():
        for source in sorted(run_dir.glob(pattern)):
            relative = source.relative_to(run_dir)
            links = [run_dir.joinpath(*relative.parts[: i + 1]) for i in range(len(relative.parts))]
            link = next((p for p in links if p.is_symlink()), None)
            if link is not None:
                raise LangNeuronsError(f"{link} is a symbolic link; publish copies only regular files inside the "
                                       "run directory (replace the link by the file)")
            if source.is_file() and _publishable(source, run_dir) and source not in sources:
                sources.append(source)
    return sources


def _publishable(path: Path, run_dir: Path) -> bool:
    """False for a ``steering-examples`` file of a run whose prompts were not the built-in ones."""
    from langneurons.steer.stage import steering_used_builtin_prompts

    return path.parent != run_dir / "steering-examples" or steering_used_builtin_prompts(path.parent)


def _ppxc_figures(folder: Path) -> list[Path]:
    """The PPXC heatmaps of a published run, the config's first PPXC neuron set first."""
    config = json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("config", {})
    order = list((config.get("ppxc") or {}).get("neuron_sets", []))
    figures = sorted(folder.glob("ppxc/*/ppxc.png"))
    return sorted(figures, key=lambda p: order.index(p.parent.name) if p.parent.name in order else len(order))


def _summary_line(folder: Path) -> str:
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    model = manifest.get("model", {})
    stages = manifest.get("stages", {})
    compute = sum(record.get("compute_seconds", 0.0) for record in stages.values())
    versions = manifest.get("versions", {})
    return (f"Model `{model.get('model_id', '?')}` (weights {model.get('weights_fingerprint', '?')}), languages "
            f"{', '.join(manifest['config'].get('languages', []))}; langneurons {manifest.get('tool_version')}, "
            f"torch {versions.get('torch', '?')}, transformers {versions.get('transformers', '?')}. "
            f"Compute time of all stages: {compute / 60:.0f} min ({_machine(manifest)}).")


def _machine(manifest: dict) -> str:
    return manifest.get("machine", "CPU")


def _index(results_dir: Path) -> str:
    parts = ["# Results", "",
             "Written by `langneurons publish` from the run directories of `make replicate` (and other "
             "`langneurons run` experiments); nothing here is typed by hand. Each folder holds the run's "
             "config, manifest, report (`report/report.md`), tables and figures — never the per-example "
             "predictions or any text of the data sets.", ""]
    for folder in sorted(p for p in results_dir.iterdir() if (p / "claims" / "claims.md").is_file()):
        parts += [f"## [{folder.name}]({folder.name}/report/report.md)", "", _summary_line(folder), "",
                  (folder / "claims" / "claims.md").read_text(encoding="utf-8"),
                  "Verdict rules, per-language details and tests: "
                  f"[`claims.json`]({folder.name}/claims/claims.json). Reproduce: `langneurons run "
                  f"{folder.name}/config.yaml` (or `make replicate`).", ""]
        ppxc = _ppxc_figures(folder)
        if ppxc:
            parts += [f"![PPXC of the {ppxc[0].parent.name} neurons]({ppxc[0].relative_to(results_dir).as_posix()})",
                      ""]
    reports = sorted(p for p in results_dir.iterdir() if (p / "report" / "report.md").is_file()
                     and not (p / "claims" / "claims.md").is_file())
    for folder in reports:
        parts += [f"## [{folder.name}]({folder.name}/report/report.md)", "", _summary_line(folder), "",
                  f"No claims section; the report has the tables and figures. Reproduce: `langneurons run "
                  f"{folder.name}/config.yaml`.", ""]
    others = sorted(p for p in results_dir.iterdir() if p.is_dir() and not (p / "claims" / "claims.md").is_file()
                    and p not in reports)
    if others:
        parts += ["## Other results", ""]
        for folder in others:
            entry = "README.md" if (folder / "README.md").is_file() else MANIFEST
            parts.append(f"- [{folder.name}]({folder.name}/{entry}): written by its own command, with its config "
                         "and manifest")
        parts.append("")
    return "\n".join(parts)


def _update_readme(readme: Path, results_dir: Path, target: Path) -> None:
    """Rewrite the README's marked block: the claims of every published result that has claims, the
    one just published (``target``) first, the others by name, each with its summary line and its
    PPXC figure, so that publishing one study never drops another's rows."""
    text = readme.read_text(encoding="utf-8")
    base = readme.resolve().parent

    def link(path: Path) -> str:  # relative to the README, whether the paths given were relative or absolute
        return Path(os.path.relpath(path.resolve(), base)).as_posix()

    others = sorted(p for p in results_dir.iterdir()
                    if p.is_dir() and p.resolve() != target.resolve() and (p / "claims" / "claims.md").is_file())
    block = [README_START, ""]
    for folder in [target, *others]:
        if len(others):
            block += [f"**{folder.name}**", ""]
        block += [f"From [`{link(folder)}`]({link(folder)}/report/report.md) (written by `langneurons publish`). "
                  + _summary_line(folder), "", (folder / "claims" / "claims.md").read_text(encoding="utf-8")]
        figure = _ppxc_figures(folder)
        if figure:
            block += [f"![PPXC of {folder.name}]({link(figure[0])})", ""]
    block.append(README_END)
    start, end = text.index(README_START), text.index(README_END) + len(README_END)
    write_text(readme, text[:start] + "\n".join(block) + text[end:])
