"""No import circles between our modules.

A circle (a imports b, b imports a, at module level or inside a function) makes the load order matter:
the first module to be imported sees the other half-built, and a function-level import that "breaks"
the circle only hides it until someone moves the import up. The graph is read from the source with
`ast`, so it counts every import statement, wherever it sits, without importing anything; only the
ones under `if TYPE_CHECKING:` are left out, as they never run (a type named in an annotation)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = (
    "trading",
    "exchange",
    "signals",
    "feeds",
    "activities",
    "workflows",
    "workers",
    "journal",
    "backtest",
    "alerts",
    "bench",
)


def module_files() -> dict[str, Path]:
    """Every module of our packages by dotted name (a package's `__init__.py` under the package name)."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of the tree except those under `if TYPE_CHECKING:` (its `else:` does run)."""
    nodes: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return nodes


def imported_names(module: str, path: Path) -> set[str]:
    """The dotted names a module's import statements name, relative imports resolved: for
    `from a.b import c`, both `a.b.c` (c may be a module) and `a.b`."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                drop = node.level - 1 if is_package else node.level
                anchor = anchor[: len(anchor) - drop] if drop else anchor
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """Module → the modules of ours it imports. `import a.b.c` counts as importing `a.b.c` only: the
    packages above it are loaded too, but an `__init__` that imports its own submodules would
    otherwise read as a circle with every one of them."""
    modules = module_files()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = {name for name in imported_names(module, path) if name in modules}
        targets.discard(module)
        graph[module] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle as the list of modules along it (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done, no circle through it
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def all_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected knot, found by cutting the edge that closed the last one."""
    remaining = {node: set(targets) for node, targets in graph.items()}
    cycles: list[list[str]] = []
    while (cycle := find_cycle(remaining)) is not None:
        cycles.append(cycle)
        remaining[cycle[-2]].discard(cycle[-1])
    return cycles


def test_the_graph_sees_our_modules_and_their_imports() -> None:
    # Guards the test itself: a graph that lost its edges (a path or parsing slip) would pass vacuously.
    graph = import_graph()
    assert "workers.cli" in graph and "trading.intents" in graph
    assert "trading.config" in graph["workers.cli"]
    assert sum(len(targets) for targets in graph.values()) > 200


def test_find_cycle_names_the_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_relative_imports_resolve(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("from . import sibling\nfrom .other import thing\nfrom .. import up\n")
    names = imported_names("pkg.sub.mod", source)
    assert {"pkg.sub.sibling", "pkg.sub.other", "pkg.sub.other.thing", "pkg.up"} <= names


def test_function_level_imports_count_and_type_checking_ones_do_not(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import pkg.typed\nelse:\n    import pkg.fallback\n"
        "def f():\n    import pkg.lazy\n"
    )
    names = imported_names("pkg.mod", source)
    assert {"pkg.lazy", "pkg.fallback"} <= names
    assert "pkg.typed" not in names


def test_no_import_cycles() -> None:
    cycles = all_cycles(import_graph())
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)
