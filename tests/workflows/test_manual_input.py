"""Manual input errors (issue 4, Must show): every malformed trade, typed by an operator on the Temporal CLI
or on `qtrader trade open`, fails at once with a message naming the field, and nothing reaches the
exchange or the portfolio.

"At once" is asserted as behaviour, not as wall time (latency belongs to benchmarks; the seconds each
case took are printed): the workflow fails on its first workflow task, without a workflow-task-failure
loop and without waiting on anything (no timer, no activity, no signal to the portfolio); the project
CLI refuses before starting anything.

Each case goes through both doors, as child processes against one real stack (dev server, Redis, paper
exchange, both workers):
- `temporal workflow start ... --input '<json>' --fail-existing`: the workflow must be *Failed* (not
  Running with a workflow-task-failure loop); the failure is read with the SDK and with
  `temporal workflow result`, and its history shows it failed at once.
- `qtrader trade open --json '<json>'`: refused with exit code 2 before anything is started (or, for what
  only the venue knows, the unlisted symbol, after the workflow failed at once).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from tests.conftest import REPO
from tests.workflows.conftest import Stack
from trading.exit_policy import initial_state
from trading.exit_profile import ExitProfile
from trading.governor import Grant, RiskPolicy
from trading.instruments import SymbolRules
from trading.intents import Side
from workers.stack import temporal_binary
from workflows.messages import (
    DEFAULT_PORTFOLIO_ID,
    LIFECYCLE_TASK_QUEUE,
    PortfolioInput,
    PortfolioView,
    PositionCarry,
    PositionStatus,
)

# Only a runaway case waits this long (a workflow that never fails); a healthy one fails at once.
HANG_GUARD_S = 60.0
# Fail fast: what a workflow that failed on its own input may never have done. A marker is allowed: the
# symbol check is a local activity, and only the venue knows an unlisted symbol.
WAITED = {
    EventType.EVENT_TYPE_TIMER_STARTED: "started a timer",
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED: "scheduled an activity",
    EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED: "signalled another workflow",
    EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED: "started a child workflow",
}
OK = {"symbol": "BTCUSDT", "side": "LONG", "notional_usdt": 150}


def _carry() -> dict:
    rules = SymbolRules(
        symbol="BTCUSDT",
        base_asset="BTC",
        price_precision=2,
        quantity_precision=3,
        tick_size=Decimal("0.1"),
        min_price=Decimal("0.1"),
        max_price=Decimal("1000000"),
        step_size=Decimal("0.001"),
        min_qty=Decimal("0.001"),
        max_qty=Decimal("1000"),
        market_step_size=Decimal("0.001"),
        market_min_qty=Decimal("0.001"),
        market_max_qty=Decimal("120"),
        min_notional=Decimal("100"),
    )
    carry = PositionCarry(
        status=PositionStatus.OPEN,
        rules=rules,
        grant=Grant(holder_id="someone-else", notional_usdt=Decimal(100)),
        fills=[],
        profile=ExitProfile(),
        exit_state=initial_state(
            Side.LONG, Decimal(60000), Decimal("0.002"), 5, Decimal(0), ExitProfile(), rules
        ),
        hard_stop_id=None,
        hard_stop_seq=0,
        exit_seq=0,
        opened_at_ms=1,
    )
    return carry.model_dump(mode="json")


@dataclass(frozen=True)
class Case:
    name: str
    input: str  # the JSON text exactly as an operator types it
    expect: tuple[str, ...]  # the message must contain one of these (the field's name)
    venue: bool = False  # only the exchange can tell: the project CLI starts the workflow, which fails


def j(**fields: object) -> str:
    return json.dumps({**OK, **fields})


def without(*names: str, **fields: object) -> str:
    return json.dumps({k: v for k, v in {**OK, **fields}.items() if k not in names})


CASES = [
    Case("unknown field", j(colour="red"), ("colour",)),
    Case("typo in a field name", without("notional_usdt", notional=100), ("notional",)),
    Case("missing symbol", without("symbol"), ("symbol",)),
    Case("missing side", without("side"), ("side",)),
    Case("lowercase symbol", j(symbol="btcusdt"), ("symbol",)),
    Case("malformed symbol", j(symbol="BTC-USDT"), ("symbol",)),
    Case("symbol not listed on the exchange", j(symbol="FOOUSDT"), ("symbol: FOOUSDT",), venue=True),
    Case("bad side", j(side="UP"), ("side",)),
    Case("lowercase side", j(side="long"), ("side",)),
    Case("both quantity and notional", j(quantity=0.002), ("quantity or notional_usdt",)),
    Case("neither quantity nor notional", without("notional_usdt"), ("quantity or notional_usdt",)),
    Case("negative quantity", without("notional_usdt", quantity=-0.002), ("quantity",)),
    Case("zero quantity", without("notional_usdt", quantity=0), ("quantity",)),
    Case("non-numeric notional", j(notional_usdt="lots"), ("notional_usdt",)),
    Case("NaN notional", j(notional_usdt="NaN"), ("notional_usdt",)),
    Case("leverage 0", j(leverage=0), ("leverage",)),
    Case("leverage 126", j(leverage=126), ("leverage",)),
    Case("leverage 'ten'", j(leverage="ten"), ("leverage",)),
    Case("leverage 2.5", j(leverage=2.5), ("leverage",)),
    Case("confidence 1.5", j(confidence=1.5), ("confidence",)),
    Case("kill_score -0.1", j(kill_score=-0.1), ("kill_score",)),
    Case("empty strategy", j(strategy=""), ("strategy",)),
    Case("intent_id too long", j(intent_id="x" * 129), ("intent_id",)),
    Case("unknown source", j(source="robot"), ("source",)),
    Case("exits with an unknown key", j(exits={"trailing_pct": 1}), ("exits.trailing_pct",)),
    Case("stop_loss_pct 0", j(exits={"stop_loss_pct": 0}), ("exits.stop_loss_pct",)),
    Case("stop_loss_pct 150", j(exits={"stop_loss_pct": 150}), ("exits.stop_loss_pct",)),
    Case("exits not an object", j(exits=5), ("exits",)),
    Case("options with an unknown key", j(options={"portfolio": "x"}), ("options.portfolio",)),
    Case("carry given on a first run", j(carry=_carry()), ("carry",)),
    Case("malformed carry", j(carry={"status": "OPEN"}), ("carry",)),
    Case("JSON array", "[]", ("PositionInput", "JSON object")),
    Case("JSON string", '"x"', ("PositionInput", "JSON object")),
    Case("JSON null", "null", ("PositionInput", "JSON object")),
]

# The project CLI's flag form: (name, flags, expected field / flag in the message).
SYM, SIDE, NOTIONAL = ["--symbol", "BTCUSDT"], ["--side", "LONG"], ["--notional", "150"]
FLAG_CASES = [
    ("flags: lowercase symbol", ["--symbol", "btcusdt", *SIDE, *NOTIONAL], "--symbol"),
    ("flags: missing side", [*SYM, *NOTIONAL], "--side"),
    ("flags: both sizes", [*SYM, *SIDE, *NOTIONAL, "--quantity", "0.002"], "quantity or notional_usdt"),
    ("flags: negative notional", [*SYM, *SIDE, "--notional", "-5"], "--notional"),
    ("flags: leverage ten", [*SYM, *SIDE, *NOTIONAL, "--leverage", "ten"], "--leverage"),
    ("flags: stop-loss 150 %", [*SYM, *SIDE, *NOTIONAL, "--stop-loss-pct", "150"], "--stop-loss-pct"),
    ("flags: empty strategy", [*SYM, *SIDE, *NOTIONAL, "--strategy", ""], "--strategy"),
    ("flags and --json together", [*SYM, "--json", "{}"], "--json"),
    ("--json not JSON", ["--json", "{symbol: BTCUSDT}"], "--json"),
]


def temporal_start(address: str, workflow_id: str, *inputs: str) -> list[str]:
    """`temporal workflow start` exactly as the README documents it."""
    return [
        temporal_binary(),
        "workflow",
        "start",
        "--address",
        address,
        "--type",
        "PositionWorkflow",
        "--task-queue",
        LIFECYCLE_TASK_QUEUE,
        "--workflow-id",
        workflow_id,
        *(arg for text in inputs for arg in ("--input", text)),
        "--fail-existing",
    ]


def qtrader(*args: str) -> list[str]:
    return [sys.executable, "-m", "workers.cli", *args]


async def _exec(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=REPO
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


def _input_task_failures(events: Sequence[HistoryEvent]) -> list[str]:
    """Workflow-task failures other than the SDK's deadlock detector (an activation starved of CPU on a
    loaded machine): a bad input that fails the *task* instead of the workflow retries it forever."""
    failures = [
        e.workflow_task_failed_event_attributes.failure.message
        for e in events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]
    return [m for m in failures if "TMPRL1101" not in m]


async def _failure(handle: WorkflowHandle, started: float) -> tuple[float, str]:
    """Seconds from `started` until the workflow is known Failed (printed, never asserted), and its
    failure message. A workflow whose task fails instead (a workflow-task-failure loop) is reported as
    soon as its first task failure is in its history, one that is still running much later as such."""
    while True:
        desc = await handle.describe()
        if desc.status != WorkflowExecutionStatus.RUNNING:
            break
        loop = _input_task_failures((await handle.fetch_history()).events)
        if loop:
            return time.monotonic() - started, f"NOT FAILED: its workflow task fails: {loop[0]}"
        if time.monotonic() - started > HANG_GUARD_S:
            return time.monotonic() - started, "NOT FAILED: still RUNNING"
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    try:
        await handle.result()
    except WorkflowFailureError as err:
        cause = err.cause
        while getattr(cause, "cause", None) is not None:
            cause = cause.cause
        return elapsed, getattr(cause, "message", None) or str(cause)
    return elapsed, f"NOT FAILED: {desc.status.name if desc.status else '?'}"


async def _not_at_once(handle: WorkflowHandle) -> list[str]:
    """Why the workflow did not fail at once, from its history (empty: it failed at once): it failed on
    its first workflow task's input, with no task-failure loop and without waiting on anything."""
    events = (await handle.fetch_history()).events
    problems = [f"workflow task failed: {m[:200]}" for m in _input_task_failures(events)]
    problems += sorted({what for e in events if (what := WAITED.get(e.event_type))})
    if not events or events[-1].event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
        problems.append("its history does not end in WorkflowExecutionFailed")
    return problems


async def _exists(stack: Stack, workflow_id: str) -> bool:
    try:
        await stack.client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def _settled(handle: WorkflowHandle, within: float = 15) -> dict:
    async with asyncio.timeout(within):
        while True:
            state = await handle.query("state")
            if state["status"] in ("OPEN", "REJECTED", "FAILED"):
                return state
            await asyncio.sleep(0.1)


def _names_field(message: str, expect: tuple[str, ...]) -> bool:
    return any(e in message for e in expect)


async def test_malformed_manual_trades_fail_fast_through_both_clis(stack: Stack) -> None:
    stack.exchange.set_price("BTCUSDT", "60000")
    address = stack.settings.temporal_address
    temporal = temporal_binary()
    env = stack.env()
    rows: list[tuple[str, str, float, str]] = []
    problems: list[str] = []
    async with stack.workers():
        # The portfolio runs from the start, so we can prove that no request ever reached it.
        portfolio = await stack.client.start_workflow(
            "PortfolioWorkflow",
            PortfolioInput(policy=RiskPolicy.from_settings(stack.settings)),
            id=DEFAULT_PORTFOLIO_ID,
            task_queue=LIFECYCLE_TASK_QUEUE,
        )

        async def through_both(i: int, case: Case) -> None:
            # --- the Temporal CLI ---
            wf_id = f"position-bad-temporal-{i}"
            started = time.monotonic()
            rc, out, err = await _exec(temporal_start(address, wf_id, case.input))
            if rc != 0:  # refused by the CLI itself (never for well-formed JSON)
                elapsed, message = time.monotonic() - started, err.strip()
            else:
                handle = stack.client.get_workflow_handle(wf_id)
                elapsed, message = await _failure(handle, started)
                desc = await handle.describe()
                if desc.status != WorkflowExecutionStatus.FAILED:
                    problems.append(f"temporal CLI / {case.name}: status {desc.status}")
                for why in await _not_at_once(handle):
                    problems.append(f"temporal CLI / {case.name}: not at once: {why}")
                # The operator's own view of the outcome.
                _, res_out, res_err = await _exec(
                    [temporal, "workflow", "result", "--address", address, "--workflow-id", wf_id]
                )
                if not _names_field(res_out + res_err, case.expect):
                    problems.append(
                        f"temporal CLI / {case.name}: `workflow result` lacks {case.expect}: "
                        f"{(res_out + res_err)[:300]!r}"
                    )
            rows.append(("temporal", case.name, elapsed, message))
            if not _names_field(message, case.expect):
                problems.append(f"temporal CLI / {case.name}: message lacks {case.expect}: {message[:300]!r}")

            # --- the project CLI ---
            wf_id = f"position-bad-qtrader-{i}"
            started = time.monotonic()
            rc, out, err = await _exec(qtrader("trade", "open", "--json", case.input, "--id", wf_id), env)
            elapsed = time.monotonic() - started
            message = err.strip()
            rows.append(("qtrader", case.name, elapsed, message))
            if rc != 2:
                problems.append(f"qtrader / {case.name}: exit {rc} (stdout {out!r}, stderr {err!r})")
            if not _names_field(message, case.expect):
                problems.append(f"qtrader / {case.name}: message lacks {case.expect}: {message[:300]!r}")
            if not case.venue and await _exists(stack, wf_id):
                problems.append(f"qtrader / {case.name}: a workflow was started")
            if case.venue:  # only the venue knows: the workflow was started, and must have failed at once
                for why in await _not_at_once(stack.client.get_workflow_handle(wf_id)):
                    problems.append(f"qtrader / {case.name}: not at once: {why}")

        async def with_flags(k: int, name: str, flags: list[str], expect: str) -> None:
            wf_id = f"position-bad-flags-{k}"
            started = time.monotonic()
            rc, _, err = await _exec(qtrader("trade", "open", *flags, "--id", wf_id), env)
            elapsed = time.monotonic() - started
            rows.append(("qtrader", name, elapsed, err.strip()))
            if rc != 2 or expect not in err:
                problems.append(f"qtrader / {name}: exit {rc}: {err.strip()[:300]!r}")
            if await _exists(stack, wf_id):
                problems.append(f"qtrader / {name}: a workflow was started")

        # The cases are independent (each its own workflow id): a few at a time, since each runs up to
        # three CLI processes and the CLI's start-up, not the system, is most of a case's time.
        gate = asyncio.Semaphore(4)

        async def limited(step: Awaitable[None]) -> None:
            async with gate:
                await step

        await asyncio.gather(*(limited(through_both(i, case)) for i, case in enumerate(CASES)))
        await asyncio.gather(*(limited(with_flags(k, *f)) for k, f in enumerate(FLAG_CASES)))

        # Nothing reached the venue or the portfolio.
        orders = stack.exchange.admin("GET", "orders")
        algos = stack.exchange.admin("GET", "algo-orders")
        view = await portfolio.query("state", result_type=PortfolioView)
        print(f"\n{'door':<9} {'case':<36} {'seconds':>7}  message")
        for door, name, elapsed, message in rows:
            print(f"{door:<9} {name:<36} {elapsed:7.3f}  {' '.join(message.split())[:150]}")

        # The control: the same door with a good intent does trade (so "no orders" above means something).
        rc, _, err = await _exec(temporal_start(address, "position-good-1", j()))
        assert rc == 0, err
        good = stack.client.get_workflow_handle("position-good-1")
        state = await _settled(good)
        assert state["status"] == "OPEN", state
        await good.execute_update("close", {})
        await asyncio.wait_for(good.result(), 15)

    assert len(CASES) >= 20
    assert orders == [] and algos == [], (orders, algos)
    assert view.book.reservations == {} and view.granted_total == 0 and view.denied_total == 0, view
    assert not problems, "\n".join(problems)
    assert len(stack.exchange.admin("GET", "orders")) == 2  # the control's entry and exit


async def test_missing_or_extra_input_argument_fails_fast(stack: Stack) -> None:
    """`--input` forgotten, or given twice: the workflow gets 0 or 2 arguments instead of 1, and fails
    at once (its first workflow task fails the workflow, nothing is waited on)."""
    address = stack.settings.temporal_address
    results: dict[str, tuple[float, str, list[str]]] = {}
    async with stack.workers():
        for name, inputs in (("no --input", ()), ("two --input", (j(), j()))):
            wf_id = f"position-argc-{len(results)}"
            started = time.monotonic()
            rc, _, err = await _exec(temporal_start(address, wf_id, *inputs))
            assert rc == 0, err
            handle = stack.client.get_workflow_handle(wf_id)
            elapsed, message = await _failure(handle, started)
            results[name] = (elapsed, message, await _not_at_once(handle))
    print()
    for name, (elapsed, message, _) in results.items():
        print(f"temporal  {name:<14} {elapsed:6.3f}  {' '.join(message.split())[:160]}")
    assert stack.exchange.admin("GET", "orders") == []
    for name, (_, message, not_at_once) in results.items():
        assert "input" in message and not not_at_once, (name, message, not_at_once)
