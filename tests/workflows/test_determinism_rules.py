"""The workflows run unsandboxed (for speed), so these rules stand in for the sandbox: workflow code
touches no clock, randomness, threads, files, network or environment, and imports only the pure core.

The pure core is held to the same rules: every `trading/` module a workflow imports (directly or
through another `trading/` module) runs inside the workflow on every replay, so it may not read the
clock, draw random numbers, start threads, sleep, do I/O or read the environment either."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKFLOW_FILES = sorted((REPO / "workflows").glob("*.py"))
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
# Modules whose import alone says the code is impure: clock, randomness, environment, threads, files,
# network, processes, and the project's own I/O layers.
FORBIDDEN_MODULES = (
    "time",
    "random",
    "secrets",
    "uuid",
    "os",
    "sys",
    "threading",
    "_thread",
    "concurrent",
    "multiprocessing",
    "subprocess",
    "socket",
    "asyncio",
    "io",
    "pathlib",
    "shutil",
    "tempfile",
    "glob",
    "sqlite3",
    "urllib",
    "http",
    "requests",
    "httpx",
    "aiohttp",
    "websockets",
    "redis",
    "psycopg",
    "pydantic_settings",
    "temporalio",
    "exchange",
    "activities",
    "workers",
    "signals",
    "feeds",
    "journal",
    "backtest",
    *FORBIDDEN_TRADING,
)
FORBIDDEN_CALLS = {  # called by a bare name (after `from time import time` and the like)
    "now",
    "utcnow",
    "today",
    "time",
    "time_ns",
    "perf_counter",
    "monotonic",
    "random",
    "randint",
    "uniform",
    "choice",
    "shuffle",
    "uuid1",
    "uuid4",
    "sleep",
    "open",
    "input",
    "print",
    "getenv",
    "urandom",
}
# (object, attribute) as written, the object being the last name before the attribute: catches
# `datetime.now()` and `datetime.datetime.now()` alike. `None` as the attribute: any attribute.
FORBIDDEN_ATTRS: set[tuple[str, str | None]] = {
    ("os", None),
    ("sys", None),
    ("random", None),
    ("secrets", None),
    ("threading", None),
    ("subprocess", None),
    ("socket", None),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "monotonic"),
    ("time", "monotonic_ns"),
    ("time", "perf_counter"),
    ("time", "perf_counter_ns"),
    ("time", "sleep"),
    ("time", "localtime"),
    ("asyncio", "sleep"),
    ("asyncio", "to_thread"),
    ("uuid", "uuid1"),
    ("uuid", "uuid4"),
}
# Clock reads whatever they are called on (`from datetime import datetime as dt; dt.now()`), except on
# `workflow` (workflow.now() is the replayed clock).
CLOCK_ATTRS = {
    "now",
    "utcnow",
    "today",
    "time_ns",
    "monotonic",
    "monotonic_ns",
    "perf_counter",
    "perf_counter_ns",
}
# Methods that are I/O or threads whatever they are called on (Path.read_text(), loop.run_in_executor()).
FORBIDDEN_METHODS = {
    "read_text",
    "write_text",
    "read_bytes",
    "write_bytes",
    "mkdir",
    "unlink",
    "touch",
    "iterdir",
    "run_in_executor",
}


def _dotted(node: ast.expr) -> list[str]:
    """`a.b.c` as ["a", "b", "c"]; [] when the chain does not start at a name (a call, a subscript)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return []
    parts.append(node.id)
    return parts[::-1]


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node that runs: annotations and `if TYPE_CHECKING:` blocks are skipped."""
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        yield node
        for name, value in ast.iter_fields(node):
            if name in ("annotation", "returns"):
                continue
            if isinstance(node, ast.If) and name == "body" and "TYPE_CHECKING" in _dotted(node.test):
                continue
            children = value if isinstance(value, list) else [value]
            todo.extend(c for c in children if isinstance(c, ast.AST))


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:  # relative: not used in this project; name it so it is judged, not skipped
        return [f"{'.' * node.level}{node.module or ''}"]
    module = node.module or ""
    # `from trading import pnl` imports trading.pnl.
    return [module, *(f"{module}.{a.name}" for a in node.names if module in ("trading", "workflows"))]


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def scan(source: str, filename: str, *, workflow: bool) -> list[str]:
    """The rule violations in one module's source, as `file:line what`. `workflow`: the stricter import
    list of workflow modules (else: the pure core's forbidden modules)."""
    found: set[tuple[int, str]] = set()

    def report(node: ast.AST, what: str) -> None:
        line = getattr(node, "lineno", 0)
        found.add((line, f"{filename}:{line} {what}"))

    for node in _runtime_nodes(ast.parse(source, filename)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for name in _imported(node):
                if (
                    _matches(name, FORBIDDEN_TRADING)
                    or (workflow and not name.startswith(ALLOWED_IMPORTS))
                    or (not workflow and _matches(name, FORBIDDEN_MODULES))
                ):
                    report(node, f"imports {name}")
        elif isinstance(node, ast.Attribute):
            chain = _dotted(node)
            if len(chain) >= 2 and chain[0] != "workflow":  # workflow.now() and workflow.time() are replayed
                owner, attr = chain[-2], chain[-1]
                if (
                    (owner, attr) in FORBIDDEN_ATTRS
                    or (owner, None) in FORBIDDEN_ATTRS
                    or attr in CLOCK_ATTRS
                ):
                    report(node, f"uses {'.'.join(chain)}")
            if node.attr in FORBIDDEN_METHODS:
                report(node, f"calls .{node.attr}()")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in FORBIDDEN_CALLS:
                report(node, f"calls {node.func.id}()")
    return [what for _, what in sorted(found)]


def _module_file(module: str) -> Path | None:
    path = REPO.joinpath(*module.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def trading_modules_of_workflows() -> list[Path]:
    """Every `trading/` module the workflows import at run time, directly or through each other."""
    seen: set[Path] = set()
    todo = list(WORKFLOW_FILES)
    while todo:
        path = todo.pop()
        for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name in _imported(node):
                if not _matches(name, ("trading",)):
                    continue
                parts = name.split(".")
                for i in range(1, len(parts) + 1):  # trading/__init__.py runs too
                    file = _module_file(".".join(parts[:i]))
                    if file is not None and file not in seen:
                        seen.add(file)
                        todo.append(file)
    return sorted(seen)


TRADING_FILES = trading_modules_of_workflows()


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflow_module_stays_deterministic(path: Path) -> None:
    problems = scan(path.read_text(), _rel(path), workflow=True)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", TRADING_FILES, ids=lambda p: _rel(p))
def test_trading_module_a_workflow_runs_stays_pure(path: Path) -> None:
    problems = scan(path.read_text(), _rel(path), workflow=False)
    assert not problems, "\n".join(problems)


def test_the_workflows_reach_the_trading_modules() -> None:
    """The scan follows imports: the modules the position and portfolio run on are all in it."""
    names = {_rel(p) for p in TRADING_FILES}
    assert {
        "trading/governor.py",
        "trading/exit_policy.py",
        "trading/pnl.py",
        "trading/intents.py",
        "trading/instruments.py",
        "trading/ids.py",
    } <= names, names
    assert "trading/config.py" not in names


# Each is one violation planted in otherwise clean code; both rule sets must catch every one.
PLANTED = {
    "time.time()": "import time\nx = time.time()\n",
    "time.monotonic()": "import time\nx = time.monotonic()\n",
    "from time import time": "from time import time\nx = time()\n",
    "datetime.now()": "from datetime import datetime\nx = datetime.now()\n",
    "datetime.datetime.utcnow()": "import datetime\nx = datetime.datetime.utcnow()\n",
    "date.today()": "from datetime import date\nx = date.today()\n",
    "aliased datetime": "from datetime import datetime as dt\nx = dt.now()\n",
    "random.random()": "import random\nx = random.random()\n",
    "from random import choice": "from random import choice\nx = choice([1, 2])\n",
    "uuid.uuid4()": "import uuid\nx = uuid.uuid4()\n",
    "os.environ": "import os\nx = os.environ['KEY']\n",
    "os.getenv()": "import os\nx = os.getenv('KEY')\n",
    "open()": "x = open('f').read()\n",
    "Path.read_text()": "def f(p):\n    return p.read_text()\n",
    "threading.Thread": "import threading\nt = threading.Thread(target=print)\n",
    "run_in_executor": "def f(loop):\n    return loop.run_in_executor(None, print)\n",
    "asyncio.sleep()": "import asyncio\nasync def f():\n    await asyncio.sleep(1)\n",
    "trading.config": "from trading.config import Settings\n",
}


@pytest.mark.parametrize("source", PLANTED.values(), ids=PLANTED.keys())
def test_the_rules_catch_a_planted_violation(source: str) -> None:
    code = f"from decimal import Decimal\n\n\ndef clean(x: Decimal) -> Decimal:\n    return x * 2\n\n{source}"
    assert scan(code, "planted.py", workflow=False), "the pure-core rules missed it"
    assert scan(code, "planted.py", workflow=True), "the workflow rules missed it"


def test_the_rules_leave_deterministic_code_alone() -> None:
    clean = (
        "from __future__ import annotations\n"
        "from datetime import UTC, datetime\n"
        "from decimal import Decimal\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from trading.config import Settings\n"
        "def f(ms: int, settings: Settings) -> datetime:\n"
        "    return datetime.fromtimestamp(ms / 1000, tz=UTC)\n"
    )
    assert scan(clean, "clean.py", workflow=False) == []
    replayed = "from temporalio import workflow\nx = workflow.now()\ny = workflow.time()\n"
    assert scan(replayed, "w.py", workflow=True) == []


def test_a_planted_violation_in_a_trading_module_is_reported_with_its_line() -> None:
    source = (
        "from decimal import Decimal\n\n\ndef stamp() -> int:\n    import time\n    return int(time.time())\n"
    )
    problems = scan(source, "trading/planted.py", workflow=False)
    assert problems == ["trading/planted.py:5 imports time", "trading/planted.py:6 uses time.time"]
