"""The activity declarations (workflows/calls.py) against the workers and the implementations: every
declared activity is registered by exactly one worker, the one on its task queue; every registered
activity is declared; both sides take and return the same types. Also: what a stub schedules is exactly
what the string-named `workflow.execute_activity` calls scheduled, the wire contract (names, task
queues, argument counts) that histories carry is pinned, and nothing outside the declarations calls an
activity by name or matches an error type by a string literal.

Pure: the workers are built with a recording stand-in for `temporalio.worker.Worker` (no server), on a
Redis client that never connects and a SQLite journal under tmp_path."""

from __future__ import annotations

import ast
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import temporalio.workflow
from temporalio import activity
from temporalio.common import RetryPolicy

import workers.exchange_worker
import workers.inference_worker
import workers.lifecycle
from trading.config import Settings
from workflows import calls, retries
from workflows.errors import ErrorType
from workflows.messages import EXCHANGE_TASK_QUEUE, INFERENCE_TASK_QUEUE, LIFECYCLE_TASK_QUEUE

REPO = Path(__file__).resolve().parents[2]
DECLARED = {d.name: d for d in calls.declared()}

# What histories and running workflows carry: the activity type, its task queue and how many payloads
# its input is. Changing one breaks their replay (or strands their activities): a new name is a new
# activity, introduced behind `workflow.patched`.
WIRE = {
    # exchange
    "prepare_entry": (EXCHANGE_TASK_QUEUE, 1),
    "open_entry": (EXCHANGE_TASK_QUEUE, 1),
    "set_leverage": (EXCHANGE_TASK_QUEUE, 1),
    "get_mark_price": (EXCHANGE_TASK_QUEUE, 1),
    "get_position": (EXCHANGE_TASK_QUEUE, 1),
    "place_order": (EXCHANGE_TASK_QUEUE, 1),
    "place_stop": (EXCHANGE_TASK_QUEUE, 1),
    "cancel_stop": (EXCHANGE_TASK_QUEUE, 1),
    "sync_fills": (EXCHANGE_TASK_QUEUE, 1),
    "venue_state": (EXCHANGE_TASK_QUEUE, 0),
    "cancel_orphan": (EXCHANGE_TASK_QUEUE, 1),
    # trade-lifecycle
    "check_symbol": (LIFECYCLE_TASK_QUEUE, 1),  # local
    "request_reservation": (LIFECYCLE_TASK_QUEUE, 2),
    "deliver_decisions": (LIFECYCLE_TASK_QUEUE, 1),
    "find_stopped_holders": (LIFECYCLE_TASK_QUEUE, 1),
    "previous_portfolio_state": (LIFECYCLE_TASK_QUEUE, 0),
    "running_holders": (LIFECYCLE_TASK_QUEUE, 0),
    "project_portfolio": (LIFECYCLE_TASK_QUEUE, 1),
    "publish_ess_moves": (LIFECYCLE_TASK_QUEUE, 1),
    "publish_refusals": (LIFECYCLE_TASK_QUEUE, 1),
    "start_positions": (LIFECYCLE_TASK_QUEUE, 1),
    "project_position": (LIFECYCLE_TASK_QUEUE, 1),
    "publish_levels": (LIFECYCLE_TASK_QUEUE, 1),
    "journal_trade": (LIFECYCLE_TASK_QUEUE, 1),
    "tracked_positions": (LIFECYCLE_TASK_QUEUE, 0),
    "tell_position": (LIFECYCLE_TASK_QUEUE, 1),
    "adopt_position": (LIFECYCLE_TASK_QUEUE, 1),
    "record_reconcile": (LIFECYCLE_TASK_QUEUE, 1),
    "compute_market_inputs": (LIFECYCLE_TASK_QUEUE, 1),
    "deliver_market_inputs": (LIFECYCLE_TASK_QUEUE, 1),
    "policy_review_facts": (LIFECYCLE_TASK_QUEUE, 1),
    "apply_policy_proposal": (LIFECYCLE_TASK_QUEUE, 1),
    # inference
    "infer_bar": (INFERENCE_TASK_QUEUE, 1),
    "publish_decisions": (INFERENCE_TASK_QUEUE, 1),
    "quote_volumes": (INFERENCE_TASK_QUEUE, 1),
    "store_universe": (INFERENCE_TASK_QUEUE, 1),
    "publish_shadow_signals": (INFERENCE_TASK_QUEUE, 1),
    "evaluate_shadow": (INFERENCE_TASK_QUEUE, 1),
    "retrain_challenger": (INFERENCE_TASK_QUEUE, 1),
    "set_model_stage": (INFERENCE_TASK_QUEUE, 1),
}


class _RecordingWorker:
    """Stands in for temporalio.worker.Worker: keeps what the factory registers."""

    def __init__(self, client: object, *, task_queue: str, activities: list[Any] = (), **_: object) -> None:
        self.task_queue = task_queue
        self.activities = list(activities)


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, list[activity._Definition]]:
    """Task queue → the activity definitions its worker registers, as the three factories build them."""
    for module in (workers.lifecycle, workers.exchange_worker, workers.inference_worker):
        monkeypatch.setattr(module, "Worker", _RecordingWorker)
    settings = Settings(_env_file=None, qt_home=tmp_path / "qt", database_url=None)  # type: ignore[call-arg]
    redis = aioredis.Redis(host="127.0.0.1", port=1)  # never used: nothing connects
    built = [
        workers.lifecycle.lifecycle_worker(object(), settings, redis, market=None),  # type: ignore[arg-type]
        workers.exchange_worker.exchange_worker(object(), exchange=None),  # type: ignore[arg-type]
        workers.inference_worker.inference_worker(object(), settings, redis, tmp_path / "models"),  # type: ignore[arg-type]
    ]
    out: dict[str, list[activity._Definition]] = {}
    for w in built:
        assert isinstance(w, _RecordingWorker)
        out.setdefault(w.task_queue, []).extend(
            activity._Definition.must_from_callable(f) for f in w.activities
        )
    return out


def test_each_activity_is_declared_once_with_its_wire_contract() -> None:
    names = Counter(d.name for d in calls.declared())
    assert [n for n, k in names.items() if k > 1] == []
    got = {d.name: (d.task_queue, len(d.inputs)) for d in calls.declared()}
    assert got == WIRE
    assert [d.name for d in calls.declared() if d.local] == ["check_symbol"]


def test_every_declared_activity_is_registered_by_exactly_one_worker_on_its_queue(
    registered: dict[str, list[activity._Definition]],
) -> None:
    where = Counter((q, d.name) for q, defs in registered.items() for d in defs)
    assert [k for k, n in where.items() if n > 1] == [], "registered twice on one worker"
    queues: dict[str, list[str]] = {}
    for q, name in where:
        queues.setdefault(name, []).append(q)
    undeclared = sorted(set(queues) - set(DECLARED))
    assert undeclared == [], f"registered but not declared in workflows/calls.py: {undeclared}"
    unregistered = sorted(set(DECLARED) - set(queues))
    assert unregistered == [], f"declared but registered by no worker: {unregistered}"
    wrong = {n: qs for n, qs in queues.items() if qs != [DECLARED[n].task_queue]}
    assert wrong == {}, "each activity on exactly one worker, the one on its declared task queue"


def _normal(t: object) -> object:
    return type(None) if t is None else t


def test_declared_and_implemented_types_agree(registered: dict[str, list[activity._Definition]]) -> None:
    mismatches = []
    for defs in registered.values():
        for d in defs:
            decl = DECLARED[d.name]
            args = [_normal(t) for t in d.arg_types or []]
            if args != [_normal(t) for t in decl.inputs]:
                mismatches.append(f"{d.name} takes {args}, declared {list(decl.inputs)}")
            if _normal(d.ret_type) != _normal(decl.output):
                mismatches.append(f"{d.name} returns {d.ret_type}, declared {decl.output}")
    assert mismatches == []


class _Scheduled:
    """Stands in for an activity handle: awaiting it gives what was scheduled."""

    def __init__(self, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.kind, self.args, self.kwargs = kind, args, kwargs

    def __await__(self) -> Any:
        yield from ()
        return self


@pytest.fixture
def scheduling(monkeypatch: pytest.MonkeyPatch) -> None:
    for fn, kind in (("start_activity", "activity"), ("start_local_activity", "local")):
        monkeypatch.setattr(temporalio.workflow, fn, lambda *a, _k=kind, **kw: _Scheduled(_k, a, kw))


@pytest.mark.usefixtures("scheduling")
async def test_a_stub_schedules_what_the_string_call_scheduled() -> None:
    """`execute_activity(name, arg, ...)` sends `[arg]`; none for no argument; `args=[a, b]` as given;
    no result type for an activity that returns nothing; the options as declared (unset: None)."""
    arg = object()
    levels = calls.PUBLISH_LEVELS.start(arg)  # type: ignore[arg-type]
    assert (levels.kind, levels.args) == ("activity", ("publish_levels",))  # type: ignore[attr-defined]
    assert levels.kwargs == dict(  # type: ignore[attr-defined]
        args=[arg],
        task_queue=LIFECYCLE_TASK_QUEUE,
        result_type=None,
        start_to_close_timeout=timedelta(seconds=5),
        schedule_to_close_timeout=None,
        heartbeat_timeout=None,
        retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=3),
    )
    prev: Any = await calls.PREVIOUS_PORTFOLIO_STATE.run()
    assert (prev.args, prev.kwargs["args"]) == (("previous_portfolio_state",), [])
    assert prev.kwargs["result_type"] == calls.PortfolioView | None
    reserve: Any = await calls.REQUEST_RESERVATION.run("portfolio-default", arg)  # type: ignore[arg-type]
    assert reserve.kwargs["args"] == ["portfolio-default", arg]
    check: Any = await calls.CHECK_SYMBOL.run(arg)  # type: ignore[arg-type]
    assert (check.kind, check.args, check.kwargs["args"]) == ("local", ("check_symbol",), [arg])
    assert "task_queue" not in check.kwargs and "heartbeat_timeout" not in check.kwargs
    train: Any = await calls.RETRAIN_CHALLENGER.run(arg)  # type: ignore[arg-type]
    assert train.kwargs["heartbeat_timeout"] == timedelta(minutes=10)
    assert train.kwargs["start_to_close_timeout"] == timedelta(hours=2)


def test_with_options_changes_only_what_it_is_given() -> None:
    base = calls.PUBLISH_SHADOW_SIGNALS
    other = base.with_options(start_to_close_timeout=timedelta(minutes=5), retry_policy=retries.FIVE_TRIES)
    assert (other.name, other.task_queue, other.input, other.output) == (
        base.name,
        base.task_queue,
        base.input,
        base.output,
    )
    assert (other.start_to_close_timeout, other.retry_policy) == (timedelta(minutes=5), retries.FIVE_TRIES)
    assert base.start_to_close_timeout == timedelta(seconds=60)  # the declaration itself is unchanged


def test_error_type_values_never_change() -> None:
    """They are in histories (failures, retry policies) and what the trade CLI and callers match."""
    assert {e.name: e.value for e in ErrorType} == {
        "REJECTED": "Rejected",
        "IP_BANNED": "IpBanned",
        "RATE_LIMITED": "RateLimited",
        "UNKNOWN_SYMBOL": "UnknownSymbol",
        "ENTRIES_HALTED": "EntriesHalted",
        "INVALID_INTENT": "InvalidIntent",
        "CLOSE_REFUSED": "CloseRefused",
        "STALE_PROPOSAL": "StaleProposal",
        "PROPOSAL_REFUSED": "ProposalRefused",
        "NO_BARS_STORED": "NoBarsStored",
        "BAD_RETRAIN_INPUT": "BadRetrainInput",
        "VALIDATION_ERROR": "ValidationError",
    }
    assert {ErrorType.STALE_PROPOSAL: 1}.get("StaleProposal") == 1  # a decoded type is a plain str


ACTIVITY_CALLS = {"execute_activity", "start_activity", "execute_local_activity", "start_local_activity"}
SOURCES = sorted(
    p
    for d in ("workflows", "activities", "workers", "exchange")
    for p in (REPO / d).rglob("*.py")
    if p != REPO / "workflows" / "calls.py" and "paper" not in p.parts
)


def _is_error_type_literal(node: ast.AST) -> bool:
    """`ApplicationError(..., type="X")`, `x.type == "X"`, `x.type in ("X", ...)`."""
    if isinstance(node, ast.Call):
        func = node.func
        named = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        return named == "ApplicationError" and any(
            k.arg == "type" and isinstance(k.value, ast.Constant) and isinstance(k.value.value, str)
            for k in node.keywords
        )
    if isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute) and node.left.attr == "type":
        items = [e for c in node.comparators for e in (c.elts if isinstance(c, ast.Tuple | ast.Set) else [c])]
        return any(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in items)
    return False


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_activity_called_by_name_nor_error_type_matched_by_literal(path: Path) -> None:
    problems = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            path.parts[-2] == "workflows"
            and isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ACTIVITY_CALLS
        ):
            problems.append(f"line {node.lineno}: {node.func.attr}: call a stub of workflows/calls.py")
        if _is_error_type_literal(node):
            problems.append(f"line {node.lineno}: an error type as a literal: use workflows.errors.ErrorType")
    assert problems == []
