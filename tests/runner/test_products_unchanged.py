"""The tiny config's products and reports are byte for byte those of the committed listing
(``tests/runner/data/tiny_products.txt``), times, dates, paths and host aside: a refactor of the
runner, the stages or the report must not change any output (``scripts/compare_products.py``
says what is normalised; regenerate the listing only for an intended change of the outputs)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LISTING = ROOT / "tests" / "runner" / "data" / "tiny_products.txt"


def test_the_tiny_run_writes_exactly_the_listed_products():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_products.py"), "tiny",
                           "--compare", str(LISTING)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    verdict = done.stdout.strip().splitlines()[-1]
    assert verdict.startswith("identical: ") and int(verdict.split()[1]) > 80, verdict
