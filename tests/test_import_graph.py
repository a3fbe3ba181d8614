"""The package's import graph, read statically with ``ast`` (every ``import`` statement, at
module level or inside a function): no module imports itself back through other modules, and no
stage package imports upward into the runner, the CLI or the report. A stage that needs a
figure keeps its figure writer next to it; provenance (hashes, versions, manifest names) lives
in :mod:`langneurons.provenance`, shared by the runner and the stages."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "langneurons"
STAGE_PACKAGES = ("activations", "corpus", "identify", "intervene", "directions", "steer", "finetune", "evaluate",
                  "tasks", "harness", "models")
UPPER = ("langneurons.runner", "langneurons.cli", "langneurons.report")


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = ("langneurons",) + path.relative_to(package).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(name: str, modules: set[str]) -> str | None:
    """The module of ``modules`` that importing ``name`` runs last (``a.b.c`` -> ``a.b`` if ``c``
    is a name inside ``a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def enclosing_packages(module: str, modules: set[str]) -> list[str]:
    """The packages Python initialises before ``module`` (``a.b.c`` -> ``a.b``), the root left out:
    importing ``langneurons.x.y`` runs ``langneurons/x/__init__.py`` first, whoever imports it."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts)) if ".".join(parts[:i]) in modules]


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the langneurons modules it imports (a package's ``__init__`` is its own node;
    ``from a import b`` counts ``a.b`` when that is a module, else ``a``). A module's import of
    its own enclosing packages is left out: Python runs those first anyway, whoever imports it. An
module-level import of ``a.b.c`` also counts the packages ``a.b`` it initialises
(:func:`enclosing_packages`): a cycle through a package's ``__init__`` fails at import time with
a partially initialised module (``import langneurons.directions`` did, before its residual
statistics moved to :mod:`langneurons.activations.residual`)."""
    files = {module_name(p, package): p for p in package.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        edges = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        deferred = {id(inner) for function in ast.walk(tree) if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
                    for inner in ast.walk(function)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            for target in targets:
                if target.startswith("langneurons"):
                    resolved = resolve(target, modules)
                    if resolved and resolved != name and not name.startswith(resolved + "."):
                        edges.add(resolved)
                    if id(node) in deferred:  # runs after every module has loaded: no partial package
                        continue
                    for package_name in enclosing_packages(resolved or "", modules):  # run before resolved
                        if package_name != name and not name.startswith(package_name + "."):
                            edges.add(package_name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_reader_sees_function_level_and_package_imports(tmp_path):
    package = tmp_path / "langneurons"
    (package / "a").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a" / "__init__.py").write_text("from langneurons.a.x import f\n")
    (package / "a" / "x.py").write_text("def f():\n    from langneurons.b import g\n")
    (package / "b.py").write_text("from .a import x\n")
    (package / "a" / "y.py").write_text("from langneurons.a import x\nimport langneurons.a\n")
    graph = import_graph(package)
    assert graph["langneurons.a.x"] == {"langneurons.b"}
    assert graph["langneurons.a.y"] == {"langneurons.a.x"}
    assert graph["langneurons.b"] == {"langneurons.a.x", "langneurons.a"}
    assert cycles(graph) == [["langneurons.a", "langneurons.a.x", "langneurons.b"]]


def test_a_module_level_import_of_a_submodule_counts_its_package_init(tmp_path):
    """x imports p.s at module level: Python runs p/__init__ first, which imports x back."""
    package = tmp_path / "langneurons"
    (package / "p").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "p" / "__init__.py").write_text("from langneurons.p.t import h\n")
    (package / "p" / "s.py").write_text("")
    (package / "p" / "t.py").write_text("from langneurons.x import f\n")
    (package / "x.py").write_text("from langneurons.p.s import g\ndef f():\n    from langneurons.q.r import k\n")
    (package / "q").mkdir()
    (package / "q" / "__init__.py").write_text("")
    (package / "q" / "r.py").write_text("")
    graph = import_graph(package)
    assert graph["langneurons.x"] == {"langneurons.p.s", "langneurons.p", "langneurons.q.r"}  # not q: deferred
    assert cycles(graph) == [["langneurons.p", "langneurons.p.t", "langneurons.x"]]


def test_every_stage_package_imports_on_its_own():
    """The runtime check of the same rule: each package imported first (langneurons' modules dropped
    from ``sys.modules`` before each; the libraries stay loaded, so one interpreter is enough)."""
    import subprocess
    import sys

    script = (
        "import importlib, sys\n"
        f"for stage in {list(STAGE_PACKAGES)!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'langneurons' or m.startswith('langneurons.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module('langneurons.' + stage)\n"
        "    except ImportError as error:\n"
        "        sys.exit(f'import langneurons.{stage}: {error}')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1]


def test_no_module_imports_itself_back():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("stage", STAGE_PACKAGES)
def test_no_stage_package_imports_the_runner_the_cli_or_the_report(stage):
    graph = import_graph()
    upward = sorted(f"{module} -> {target}" for module, targets in graph.items()
                    if module == f"langneurons.{stage}" or module.startswith(f"langneurons.{stage}.")
                    for target in targets if target.startswith(UPPER))
    assert upward == []
