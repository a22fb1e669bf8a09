"""The workflows run unsandboxed (for speed), so these rules stand in for the sandbox: workflow code
touches no clock, randomness, threads, files, network or environment, and imports only the pure core."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WORKFLOW_FILES = sorted((Path(__file__).resolve().parents[2] / "workflows").glob("*.py"))
ALLOWED_IMPORTS = (
    "__future__",
    "asyncio",
    "dataclasses",
    "datetime",
    "decimal",
    "enum",
    "typing",
    "pydantic",
    "temporalio.workflow",
    "temporalio.common",
    "temporalio.exceptions",
    "temporalio",
    "trading",
    "workflows",
)
FORBIDDEN_TRADING = ("trading.config",)  # pydantic-settings reads the environment
FORBIDDEN_CALLS = {
    "now",
    "utcnow",
    "today",
    "time",
    "perf_counter",
    "monotonic",
    "random",
    "randint",
    "uuid4",
    "sleep",
    "open",
    "getenv",
    "urandom",
}
FORBIDDEN_ATTRS = {
    ("os", "environ"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("time", "time"),
    ("asyncio", "sleep"),
    ("random", "random"),
    ("uuid", "uuid4"),
}


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflow_module_stays_deterministic(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            for name in names:
                assert name.startswith(ALLOWED_IMPORTS), f"{path.name}:{node.lineno} imports {name}"
                assert not name.startswith(FORBIDDEN_TRADING), f"{path.name}:{node.lineno} imports {name}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            pair = (node.value.id, node.attr)
            assert pair not in FORBIDDEN_ATTRS, f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in FORBIDDEN_CALLS, f"{path.name}:{node.lineno} calls {node.func.id}()"


def test_the_rules_catch_a_wall_clock() -> None:
    bad = ast.parse("import time\nx = time.time()\n")
    pairs = {
        (n.value.id, n.attr)
        for n in ast.walk(bad)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
    }
    assert pairs & FORBIDDEN_ATTRS
