"""No file a user can hand to langneurons is read with pickle (torch.load with weights_only=False,
pickle, dill, joblib ...): such a file could run code. Checked over the package's source."""

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "langneurons"
UNSAFE = re.compile(r"weights_only\s*=\s*False|pickle|\bdill\b|joblib\.load|torch\.load\(")


def _sources():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 40  # the package, not an empty folder
    return {path: path.read_text(encoding="utf-8") for path in files}


def test_the_package_never_unpickles():
    offending = [f"{path.relative_to(SRC)}:{n}: {line.strip()}"
                 for path, text in _sources().items() for n, line in enumerate(text.splitlines(), 1)
                 if UNSAFE.search(line)]
    assert not offending, "\n".join(offending)


def test_the_check_finds_what_it_looks_for():
    lines = ["state = torch.load(path, weights_only=False)", "import pickle", "x = torch.load(p)"]
    assert all(UNSAFE.search(line) for line in lines)
    assert not UNSAFE.search("from safetensors.torch import load_file")
