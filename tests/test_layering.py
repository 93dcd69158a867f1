"""The packages' layering, read from their import statements (AST): the command on top, the runtime at the bottom,
and no import circles.

Every ``import`` counts, also those inside functions; only imports under ``if TYPE_CHECKING:`` (typing, never run)
are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("rdedge", "sdk", "train", "export", "benchmarks")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The project modules one file imports (a ``from X import y`` counts ``X.y`` when that is a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    files = [p for package in PACKAGES for p in (REPO / package).rglob("*.py")]
    modules = {module_name(p) for p in files}
    return {module_name(p): imported_modules(p, modules) for p in files}


def test_the_graph_is_read():
    graph = import_graph()
    assert "sdk.result" in graph["sdk.detector"] and "sdk.stream" in graph["sdk.detector"]
    assert "sdk.detector" not in graph["sdk.stream"]  # Detector is named there for typing only
    assert "train.trainer" in graph["rdedge.commands.train"]  # an import inside a function counts


def test_the_runtime_imports_nothing_above_it():
    above = ("rdedge", "train", "export", "benchmarks")
    offending = {m: sorted(i for i in imports if i.split(".")[0] in above)
                 for m, imports in import_graph().items() if m.split(".")[0] == "sdk"}
    assert not {m: i for m, i in offending.items() if i}


def test_nothing_imports_the_command():
    offending = {m: sorted(i for i in imports if i.split(".")[0] == "rdedge")
                 for m, imports in import_graph().items() if m.split(".")[0] != "rdedge"}
    assert not {m: i for m, i in offending.items() if i}


def test_no_import_circles():
    graph = import_graph()
    mutual = sorted((a, b) for a, imports in graph.items() for b in imports if a < b and a in graph.get(b, ()))
    assert not mutual, f"modules importing each other: {mutual}"
    visiting: list[str] = []
    done: set[str] = set()

    def walk(module: str) -> None:
        if module in done:
            return
        assert module not in visiting, f"import circle: {' -> '.join([*visiting[visiting.index(module):], module])}"
        visiting.append(module)
        for child in sorted(graph.get(module, ())):
            walk(child)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        walk(module)
