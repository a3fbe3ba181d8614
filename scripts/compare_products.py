"""Byte-identity check of a run's products and reports, times, dates, paths and host aside.

Runs an experiment config into a run directory (or reads one already run) and writes a listing
``relative path -> SHA-256`` of every file in it, one per line, sorted. A refactor that must not
change any output is checked by listing the same config before and after it and comparing::

    # the tiny test config (tiny random Llama, tiny tokenizer, hand-written data; ~20 s on 2 cores)
    # (the fixtures and the run go to /tmp/langneurons-compare-products; the stage keys hash the
    # config's absolute data paths, so the tiny listing compares only runs made in that folder)
    python scripts/compare_products.py tiny --write tests/runner/data/tiny_products.txt
    python scripts/compare_products.py tiny --compare tests/runner/data/tiny_products.txt
    # any config with the real model (e.g. the CI demo config), or an existing run directory
    python scripts/compare_products.py src/langneurons/data/configs/demo.yaml runs/demo-a --write before.txt
    python scripts/compare_products.py --existing runs/demo-b --compare before.txt

What is normalised before hashing (everything else is hashed byte for byte):

* ``.json`` files (parsed, re-dumped with sorted keys): values under the keys in
  :data:`VOLATILE_KEYS` (wall/CPU times, dates, the machine description, package versions, the
  host's file paths of ``include_path`` task folders' hashes are kept) are replaced by ``"<x>"``;
  every string has the run directory's parent folder replaced by ``<root>`` (absolute paths of the
  fixture data and of the run directory), the same for ``.jsonl``, ``.csv``, ``.yaml``.
* ``.md`` / ``.html`` / ``.txt``: the root folder -> ``<root>``; ISO dates/times -> ``<time>``;
  durations (``N s``, ``N.N s``, ``N min``) -> ``<duration>``; the ``versions``-derived words
  ``torch X``, ``transformers X`` -> ``<version>``; the machine line ``(... CPU cores ...)`` ->
  ``<machine>``.
  In the stages table of the report, the three timing columns of each row -> ``<times>``.
* ``.svg``: the ``<dc:date>`` stamp (a run made by this script pins it, and the element ids, anyway).
* ``stage.json`` and ``manifest.json``: as JSON above; they also record output SHA-256s, which are
  kept (a changed product changes them too).
* ``.lock`` files are left out.

Binary files (safetensors, PNG, SVG, adapters) are hashed as they are: safetensors headers in the
canonical form the runner uses (the library writes the metadata map in an arbitrary order).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

VOLATILE_KEYS = frozenset({
    "seconds", "compute_seconds", "cpu_seconds", "wall_seconds", "created", "updated", "finished", "machine",
    "versions", "timestamp", "date", "time", "elapsed", "elapsed_seconds", "train_seconds", "tokens_per_second",
    "samples_per_second", "steps_per_second", "total_seconds", "runtime",
})
_TIME = re.compile(r"\d{4}-\d\d-\d\d([T ]\d\d:\d\d(:\d\d(\.\d+)?)?([+-]\d\d:\d\d|Z)?)?")
_DURATION = re.compile(r"\b\d+(\.\d+)? ?(s|min|h|ms)\b")
_VERSION = re.compile(r"\b(torch|transformers|langneurons|peft|python) \d+[\w.+-]*")
_STAGE_TIMES = re.compile(r"(\| (?:computed|cached) )\|[ \d.|]*\|$", re.M)
_STAGE_TIMES_HTML = re.compile(r"(<td>(?:computed|cached)</td>)(<td>[\d.]*</td>)+")
_SVG_DATE = re.compile(r"<dc:date>[^<]*</dc:date>")
_MACHINE = re.compile(r"[\w-]+, \d+ CPU cores \(torch threads \d+\)(, CUDA: [^)\n]*)?")


def _strings(value, root: str):
    if isinstance(value, dict):
        return {k: ("<x>" if k in VOLATILE_KEYS else _strings(v, root)) for k, v in value.items()}
    if isinstance(value, list):
        return [_strings(v, root) for v in value]
    if isinstance(value, str):
        return value.replace(root, "<root>")
    return value


def _text(text: str, root: str) -> str:
    text = text.replace(root, "<root>")
    text = _STAGE_TIMES.sub(r"\1| <times> |", text)
    text = _STAGE_TIMES_HTML.sub(r"\1<td><times></td>", text)
    text = _MACHINE.sub("<machine>", text)
    text = _TIME.sub("<time>", text)
    text = _DURATION.sub("<duration>", text)
    return _VERSION.sub(r"\1 <version>", text)


def _safetensors(path: Path) -> bytes:
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8:8 + size])
    except ValueError:
        return data
    return json.dumps(header, sort_keys=True).encode() + data[8 + size:]


def normalised(path: Path, root: str) -> bytes:
    """The bytes of ``path`` that the listing hashes (module docstring)."""
    suffix = path.suffix
    if suffix == ".json":
        data = _strings(json.loads(path.read_text(encoding="utf-8")), root)
        return json.dumps(data, sort_keys=True, ensure_ascii=False).encode()
    if suffix == ".jsonl":
        lines = [json.dumps(_strings(json.loads(line), root), sort_keys=True, ensure_ascii=False)
                 for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return "\n".join(lines).encode()
    if suffix in (".csv", ".yaml", ".yml"):
        return path.read_text(encoding="utf-8").replace(root, "<root>").encode()
    if suffix in (".md", ".html", ".txt"):
        return _text(path.read_text(encoding="utf-8"), root).encode()
    if suffix == ".svg":
        return _SVG_DATE.sub("<dc:date/>", path.read_text(encoding="utf-8")).encode()
    if suffix == ".safetensors":
        return _safetensors(path)
    return path.read_bytes()


def listing(run_dir: Path, root: Path | None = None) -> dict[str, str]:
    """``relative path -> SHA-256`` of the normalised content of every file under ``run_dir``."""
    run_dir = Path(run_dir)
    root_text = str((root or run_dir.parent).resolve())
    return {p.relative_to(run_dir).as_posix(): hashlib.sha256(normalised(p, root_text)).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file() and p.suffix != ".lock"}


def format_listing(entries: dict[str, str]) -> str:
    return "".join(f"{digest}  {path}\n" for path, digest in sorted(entries.items()))


def read_listing(path: Path) -> dict[str, str]:
    entries = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split("  ", 1)
            entries[name] = digest
    return entries


def differences(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    """One line per file missing, extra or changed (empty: identical)."""
    lines = [f"missing: {p}" for p in sorted(set(expected) - set(actual))]
    lines += [f"extra:   {p}" for p in sorted(set(actual) - set(expected))]
    lines += [f"changed: {p}" for p in sorted(set(expected) & set(actual)) if expected[p] != actual[p]]
    return lines


def tiny_config(root: Path) -> dict:
    """The test suite's tiny config (tests/runner/conftest.py) plus the stages it leaves out
    (stability with statistics replicates, steering), so every stage of the runner is covered."""
    tests = Path(__file__).resolve().parents[1] / "tests"
    for folder in (tests, tests / "runner"):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    from conftest import tiny_config as base_config  # tests/runner/conftest.py
    from conftest import write_fixtures

    write_fixtures(root)
    config = base_config(root)
    config["statistics"]["replicates"] = 4
    config["stability"] = {"neuron_sets": ["lape"], "resamples": 6, "splits": 2}
    config["steering"] = {"neuron_set": "lape", "pairs": ["en>fr"], "actions": ["add=2"],
                          "prompts": str(root / "corpus"), "prompt_count": 2, "prompt_words": 3,
                          "max_new_tokens": 3, "identifier_languages": ["en", "fr", "hi", "de"]}
    return config


TINY_ROOT = Path("/tmp/langneurons-compare-products")
"""Where the tiny config's fixtures and run go: the stage keys hash the config, absolute data
paths included, so the listing of the tiny run is comparable only for the same folder."""


@contextlib.contextmanager
def _folder_lock(root: Path):
    """Exclusive use of ``root`` (cleared first): two checks at once would share the folder."""
    import fcntl

    root.parent.mkdir(parents=True, exist_ok=True)
    with open(str(root) + ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        shutil.rmtree(root, ignore_errors=True)
        yield


def run_tiny(run_dir: Path) -> Path:
    """Run the tiny config into ``run_dir`` (its fixtures go into ``run_dir``'s parent, which must
    not exist yet or be empty; use :data:`TINY_ROOT` ``/ "run"`` for a listing comparable with the
    committed one)."""
    from langneurons.runner.run import run_experiment

    run_dir = Path(run_dir)
    root = run_dir.parent
    root.mkdir(parents=True, exist_ok=True)
    config = tiny_config(root)
    from conftest import TinyLoader  # importable once tiny_config has set the path

    run_experiment(config, run_dir, loader=TinyLoader(), progress=False)
    return run_dir


PINNED_ENVIRONMENT = {"PYTHONHASHSEED": "0", "SOURCE_DATE_EPOCH": "0"}
"""Set for a run made by this script (it re-executes itself with them): matplotlib stamps SVG files
with the date (the SVG element ids are pinned with ``svg.hashsalt`` in-process), and the hash seed
guards any output that follows set order (``adapter_config.json``'s ``target_modules`` no longer
does: ``finetune.neuron_lora.sort_target_modules``)."""


def _pin_environment(argv) -> None:
    import os

    if any(os.environ.get(k) != v for k, v in PINNED_ENVIRONMENT.items()):
        os.execve(sys.executable, [sys.executable, __file__, *argv], {**os.environ, **PINNED_ENVIRONMENT})
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = "langneurons-compare-products"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", help="'tiny' or an experiment config (YAML); omit with --existing")
    parser.add_argument("run_dir", nargs="?", help="run directory to write (a new one); for 'tiny' its fixtures go "
                                                   f"to its parent, which is cleared (default {TINY_ROOT}/run)")
    parser.add_argument("--existing", help="list this finished run directory instead of running a config")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                        help="a ${NAME} variable of the config (e.g. data=../shared/data)")
    parser.add_argument("--write", help="write the listing to this file")
    parser.add_argument("--compare", help="compare with this listing; exit 1 on any difference")
    args = parser.parse_args(argv)
    if not args.existing:
        _pin_environment(sys.argv[1:] if argv is None else list(argv))
    if args.existing:
        run_dir = Path(args.existing)
    elif args.config == "tiny":
        run_dir = Path(args.run_dir or TINY_ROOT / "run")
        with _folder_lock(run_dir.parent):
            run_tiny(run_dir)
            entries = listing(run_dir)
    elif args.config and args.run_dir:
        run_dir = Path(args.run_dir)
        from langneurons.runner.run import run_experiment

        variables = dict(item.split("=", 1) for item in args.var)
        run_experiment(args.config, run_dir, variables=variables)
    else:
        parser.error("give a config and a run directory, or --existing RUN_DIR")
    if args.config != "tiny":
        entries = listing(run_dir)
    if args.write:
        Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        Path(args.write).write_text(format_listing(entries), encoding="utf-8")
    if args.compare:
        lines = differences(read_listing(Path(args.compare)), entries)
        print("\n".join(lines) or f"identical: {len(entries)} files")
        return 1 if lines else 0
    if not args.write:
        sys.stdout.write(format_listing(entries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
