"""Atomic artefact writes (temp file + rename), output-folder locks and input hashing for caches.

A file only appears under its final name once it is complete, so an interrupted run never
leaves a partial file that looks finished. Files and folders get the mode a plain ``open()`` /
``mkdir()`` would give them under the process's umask (colleagues on a shared machine can read
results), not the private 0600/0700 of ``mkstemp``/``mkdtemp``. A folder written by a long
command is held with :func:`folder_lock`, so two processes never mix their files in it.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from langneurons.errors import LangNeuronsError

LOCK_FILE = ".langneurons.lock"


def _umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a file created by a plain ``open()`` now (0o666 minus the umask)."""
    return 0o666 & ~_umask()


def folder_mode() -> int:
    """Mode of a folder created by a plain ``mkdir()`` now (0o777 minus the umask)."""
    return 0o777 & ~_umask()


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create folder ``path`` (and its parents); a file in the way is a one-line error."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), folder)
        raise LangNeuronsError(f"cannot create folder {folder}: {blocker} is a file, not a folder") from None
    except OSError as error:
        raise LangNeuronsError(f"cannot create folder {folder}: {error.strerror or error}") from None
    return folder


def check_folder_target(path: str | os.PathLike) -> Path:
    """``path`` if it can become a folder (it is one, or nothing of it exists as a file); checked
    before long work whose results land there. Creates nothing."""
    folder = Path(path)
    blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise LangNeuronsError(f"cannot write into {folder}: {blocker} is a file, not a folder")
    return folder


def staging_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new empty folder in ``parent`` (to fill, then rename into place) with the normal folder mode."""
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=ensure_dir(parent)))
    os.chmod(staging, folder_mode())
    return staging


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place only if the block succeeds.

    The file gets the mode a plain ``open()`` would give it (mkstemp's 0600 would survive the rename)."""
    target = Path(path)
    if target.is_dir():
        raise LangNeuronsError(f"cannot write {target}: it is a folder")
    ensure_dir(target.parent)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.fchmod(handle, file_mode())
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, file_mode())  # a writer that replaced the file keeps the normal mode too
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    with atomic_path(path) as temporary:
        writer(temporary)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(path: str | os.PathLike, rows: list[dict]) -> Path:
    """A table as CSV (columns: the first row's keys; None -> empty), atomically."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [], lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path, metadata: dict[str, str]) -> Path:
    from safetensors.torch import save_file

    return atomic_write(path, lambda p: save_file(tensors, str(p), metadata=metadata))


def atomic_torch_save(obj: Any, path) -> Path:
    """``torch.save`` for export formats others read (the LAPE release format); langneurons
    itself never loads such a file."""
    return atomic_write(path, lambda p: torch.save(obj, p))


def stable_hash(*parts: Any, length: int = 16) -> str:
    """Hex digest of JSON-serialisable parts (dict keys sorted); used as a cache key."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            digest.update(part.detach().contiguous().cpu().numpy().tobytes())
        elif isinstance(part, bytes):
            digest.update(part)
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:length]


_HELD: dict[Path, tuple[int, int]] = {}  # folder -> (file descriptor, nesting depth) held by this process


@contextmanager
def folder_lock(folder: str | os.PathLike, name: str = LOCK_FILE) -> Iterator[Path]:
    """Hold an exclusive lock on output ``folder`` for the duration of the block.

    The lock is ``fcntl.flock`` on ``<folder>/<name>``, which holds the holder's PID; the
    operating system releases it when the process ends, however it ends (no stale locks). A
    second process gets ``LangNeuronsError("<folder> is in use by process N")`` at once. The
    same process may take the lock again (nested stages)."""
    folder = ensure_dir(folder)
    key = (folder / name).resolve()
    if key in _HELD:
        handle, depth = _HELD[key]
        _HELD[key] = (handle, depth + 1)
        try:
            yield folder
        finally:
            handle, depth = _HELD[key]
            _HELD[key] = (handle, depth - 1)
        return
    try:
        handle = os.open(key, os.O_RDWR | os.O_CREAT, file_mode())
    except OSError as error:
        raise LangNeuronsError(f"cannot lock {folder}: {error.strerror or error}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        holder = os.pread(handle, 32, 0).decode(errors="replace").strip() or "?"
        os.close(handle)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise LangNeuronsError(f"{folder} is in use by process {holder}; wait for it to finish "
                                   "or choose another folder") from None
        raise LangNeuronsError(f"cannot lock {folder}: {error.strerror or error}") from None
    try:
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
        _HELD[key] = (handle, 1)
        yield folder
    finally:
        _HELD.pop(key, None)
        fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)


def check_plain_name(name: Any, what: str) -> str:
    """``name`` if it is one plain folder or file name (one path component: not empty, not ``.``
    or ``..``, no ``/``, ``\\`` or NUL, not absolute); else a one-line error naming ``what``.

    Names that become paths inside an output folder (published results, config stages, table
    stems) are checked with this, so no name can write or delete outside that folder."""
    from langneurons.errors import brief

    if (not isinstance(name, str) or not name or name in (".", "..") or any(c in name for c in "/\\\0")
            or os.path.isabs(name)):
        raise LangNeuronsError(f"{what} must be one plain name (no '/', '\\', '..' or absolute path), "
                               f"got {brief(name)}")
    return name


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when ``path`` (resolved, links followed) lies strictly inside ``folder`` (resolved)."""
    resolved, base = Path(path).resolve(), Path(folder).resolve()
    return resolved != base and base in resolved.parents
