"""Fork N ranks of a torch.distributed job from the test process, with torchrun's environment.

Forked ranks need no fresh import of torch, so a two-rank gloo job costs about a second. A rank
reports a failure through its exit code and ``<out>/rank<r>.error``.
"""

import multiprocessing
import os
import socket
from pathlib import Path

import torch


SRC = str(Path(__file__).resolve().parents[1] / "src")


def launcher_env(**extra) -> dict:
    """Environment for a real launcher (torchrun, accelerate launch) started from a test: the
    source tree on the path, one thread per rank, gloo."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(PYTHONPATH=SRC + os.pathsep + env.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               LANGNEURONS_DIST_BACKEND="gloo", **extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(target, rank: int, world_size: int, port: int, args: tuple, out: Path, extra_env: dict) -> None:
    os.environ.update(WORLD_SIZE=str(world_size), RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LANGNEURONS_DIST_BACKEND="gloo", **extra_env)
    torch.set_num_threads(1)
    try:
        target(rank, *args)
    except BaseException as error:  # noqa: BLE001 - report any failure through the exit code
        (Path(out) / f"rank{rank}.error").write_text(repr(error))
        os._exit(1)
    os._exit(0)


def run_ranks(target, args: tuple, out: Path, world_size: int = 2, timeout: float = 90,
              **extra_env) -> list[int | None]:
    """Exit codes of ``target(rank, *args)`` in ``world_size`` forked ranks (None: still running
    after ``timeout`` s, i.e. hung; such ranks are killed)."""
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    context = multiprocessing.get_context("fork")
    ranks = [context.Process(target=_rank_main, args=(target, rank, world_size, port, args, out, extra_env))
             for rank in range(world_size)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout)
    exitcodes = [process.exitcode for process in ranks]
    for process in ranks:
        if process.is_alive():
            process.kill()
    return exitcodes


def rank_errors(out: Path) -> list[str]:
    return [p.read_text() for p in sorted(Path(out).glob("rank*.error"))]
