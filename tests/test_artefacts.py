"""langneurons.artefacts: atomic writes give the modes of a plain open() under the umask (not
mkstemp's 0600), a folder in use by another process is refused naming its PID, and a file
where a folder should be is a one-line error."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from langneurons.artefacts import (
    LOCK_FILE,
    atomic_save_safetensors,
    ensure_dir,
    folder_lock,
    staging_dir,
    write_json,
    write_text,
)
from langneurons.errors import LangNeuronsError

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path, umask):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = [write_text(tmp_path / "a.txt", "x"), write_json(tmp_path / "sub" / "b.json", {"a": 1}),
               atomic_save_safetensors({"t": torch.zeros(2)}, tmp_path / "c.safetensors", {"k": "v"})]
    for path in written:
        assert mode(path) == mode(plain) == 0o666 & ~umask, path
    assert mode(tmp_path / "sub") == 0o777 & ~umask
    assert mode(staging_dir(tmp_path, ".stage-")) == 0o777 & ~umask  # renamed into place as a run folder


def test_a_rewrite_keeps_the_normal_mode(tmp_path, umask):
    path = write_text(tmp_path / "a.txt", "one")
    os.chmod(path, 0o600)  # e.g. written by an older version
    write_text(path, "two")
    assert mode(path) == 0o666 & ~umask and path.read_text() == "two"


def test_a_file_in_the_way_of_a_folder_is_a_clear_error(tmp_path):
    (tmp_path / "taken").write_text("x")
    for folder in (tmp_path / "taken", tmp_path / "taken" / "deeper"):
        with pytest.raises(LangNeuronsError, match=f"{tmp_path / 'taken'} is a file, not a folder"):
            ensure_dir(folder)
    with pytest.raises(LangNeuronsError, match="is a file, not a folder"):
        write_json(tmp_path / "taken" / "x.json", {})
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(LangNeuronsError, match="it is a folder"):
        write_json(tmp_path / "folder.json", {})


HOLDER = "import sys, time\nfrom langneurons.artefacts import folder_lock\nwith folder_lock(sys.argv[1]):\n" \
         "    print('held', flush=True)\n    sys.stdin.readline()\n"


def test_a_folder_held_by_another_process_is_refused_naming_it_and_free_after_it_ends(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "out")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": SRC})
    try:
        assert holder.stdout.readline().strip() == "held"
        assert (tmp_path / "out" / LOCK_FILE).read_text().strip() == str(holder.pid)
        with pytest.raises(LangNeuronsError, match=f"{tmp_path / 'out'} is in use by process {holder.pid}"):
            with folder_lock(tmp_path / "out"):
                pass
    finally:
        holder.communicate("\n", timeout=60)
    with folder_lock(tmp_path / "out"):  # released when the holder ended
        assert (tmp_path / "out" / LOCK_FILE).read_text().strip() == str(os.getpid())


def test_the_same_process_may_nest_the_lock_and_other_folders_are_independent(tmp_path):
    with folder_lock(tmp_path / "run"):
        with folder_lock(tmp_path / "run"), folder_lock(tmp_path / "run" / "statistics"):
            pass
        with folder_lock(tmp_path / "run"):  # still held, still re-entrant
            pass
