"""Provenance shared by the runner and the stage commands: content hashes of files, the package
versions and machine a result was computed with, and the names of the manifest files.

Every ``manifest.json`` (of a run directory, a statistics folder, a ``steer`` output folder) and
every ``stage.json`` of a run directory is named here, so readers and writers agree.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

from langneurons import __version__

MANIFEST = "manifest.json"
"""The manifest of a run directory or of a stage command's output folder."""
STAGE_RECORD = "stage.json"
"""The record of one stage of a run directory (key, status, outputs and their SHA-256)."""
RUN_FORMAT = "langneurons.run/1"
"""The ``format`` of a run directory's manifest."""

PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets", "safetensors", "torchmetrics", "matplotlib",
            "numpy", "scipy", "pyyaml", "lingua-language-detector", "lm_eval")
"""Packages whose versions a manifest records (those installed)."""


def file_sha256(path: Path, canonical: bool = True) -> str:
    """SHA-256 of a file's content. A ``.safetensors`` file is hashed with its JSON header in
    canonical form (sorted keys): the library writes the metadata map in an arbitrary order, so
    the same tensors and metadata may be different bytes. ``canonical=False``: the raw bytes (how
    run directories of earlier versions recorded their outputs)."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if canonical and path.suffix == ".safetensors":
            size = handle.read(8)
            try:
                header = json.loads(handle.read(int.from_bytes(size, "little")))
                digest.update(json.dumps(header, sort_keys=True).encode())
            except (ValueError, OverflowError, MemoryError):
                handle.seek(0)  # not a readable safetensors header: hash the bytes as they are
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_sha256(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (task YAML and local data), by relative path."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def package_versions() -> dict[str, str]:
    """Python, langneurons and the installed :data:`PACKAGES`, name -> version."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version(), "langneurons": __version__}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def machine_description() -> str:
    """What the stages ran on, e.g. ``x86_64, 2 CPU cores (torch threads 2)`` or ``... CUDA: NVIDIA H200``."""
    import os

    import torch

    text = f"{platform.machine()}, {os.cpu_count()} CPU cores (torch threads {torch.get_num_threads()})"
    if torch.cuda.is_available():
        text += f", CUDA: {torch.cuda.get_device_name(0)}"
    return text
