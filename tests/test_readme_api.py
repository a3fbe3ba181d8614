"""The README's "Python API" snippet runs as written, on the tiny random Llama instead of Gemma
(``ln.load_model`` is the one call replaced), and leaves the files it says it writes."""

import re
from pathlib import Path

import langneurons as ln

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_python_api_snippet_runs(tmp_path, monkeypatch, capsys):
    from tiny import tiny_model, tiny_tokenizer

    from langneurons.models.loading import describe

    def tiny_load_model(name, **options):
        assert name == "gemma3-270m" and not options
        loaded = describe(tiny_model("llama"), model_id="tiny-test")
        loaded.tokenizer = tiny_tokenizer()
        return loaded

    monkeypatch.setattr(ln, "load_model", tiny_load_model)
    monkeypatch.setenv("LANGNEURONS_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_snippet(), "README.md", "exec"), namespace)
    assert isinstance(namespace["lape"], ln.NeuronSet) and namespace["lape"].languages == ["en", "fr"]
    assert namespace["ppxc"].languages == ["en", "fr"]
    assert {row["condition"] for row in namespace["steering"].rows} >= {"baseline"}
    for path in ("out/statistics/en.safetensors", "out/ppxc/ppxc.json", "out/steering/steering.json",
                 "out/steering/manifest.json"):
        assert (tmp_path / path).is_file(), path
    printed = capsys.readouterr().out
    assert "language-specific neurons" in printed


def test_the_public_names_are_imported_on_first_use_and_stay_the_functions():
    import subprocess
    import sys

    code = ("import sys, langneurons as ln; assert 'torch' not in sys.modules; "
            "import langneurons.identify.api, langneurons.steer.api, langneurons.evaluate.evaluation; "
            "from langneurons.identify.api import identify; from langneurons.steer.api import steer; "
            "from langneurons.evaluate.evaluation import evaluate_grid; from langneurons.finetune import finetune; "
            "assert (ln.identify, ln.steer, ln.evaluate, ln.finetune) == (identify, steer, evaluate_grid, finetune); "
            "assert all(getattr(ln, name) is not None for name in ln.__all__)")
    src = str(Path(__file__).resolve().parents[1] / "src")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
