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


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the langneurons modules it imports (a package's ``__init__`` is its own node;
    ``from a import b`` counts ``a.b`` when that is a module, else ``a``). A module's import of
    its own enclosing packages is left out: Python runs those first anyway, whoever imports it."""
    files = {module_name(p, package): p for p in package.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
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


def test_no_module_imports_itself_back():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("stage", STAGE_PACKAGES)
def test_no_stage_package_imports_the_runner_the_cli_or_the_report(stage):
    graph = import_graph()
    upward = sorted(f"{module} -> {target}" for module, targets in graph.items()
                    if module == f"langneurons.{stage}" or module.startswith(f"langneurons.{stage}.")
                    for target in targets if target.startswith(UPPER))
    assert upward == []
