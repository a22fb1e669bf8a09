"""Admission through the portfolio (workflows/portfolio_admission.py): intents decided before any workflow
exists for them, a PositionWorkflow started only for a grant, the refusals kept in the portfolio's
decisions, its stream and metrics; a retry never opens twice; a grant not from the portfolio is
ignored; admissions survive the portfolio's continue-as-new."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment

from activities.portfolio import PortfolioActivities, start_portfolio
from activities.projections import REFUSED_STREAM
from tests.workflows.conftest import Stack
from trading.governor import Grant, RiskPolicy
from trading.intents import Side
from workers.admission import BATCH_MAX, AdmissionError, admissions, admit_intents
from workflows.messages import (
    DEFAULT_PORTFOLIO_ID,
    LIFECYCLE_TASK_QUEUE,
    PortfolioInput,
    PortfolioView,
    PositionInput,
    PositionOptions,
    PositionResult,
    PositionStart,
    PositionStarts,
    PositionStatus,
    PositionView,
)
from workflows.portfolio_base import ADMIT_SLICE

D = Decimal
SYMBOLS = [f"T{i:03d}USDT" for i in range(1, 11)]
LIMITS = {
    "gov_max_open_positions": 5,
    "gov_max_total_notional_usdt": D(1000),
    "gov_max_notional_per_trade_usdt": D(200),
    "exchange_args": ["--extra-symbols", "10"],
}
QUIET = PositionOptions(mark_check_seconds=3600)
# The portfolio and a position it started, with admission (each file named by its workflow id).
HISTORIES = Path(__file__).parent / "histories" / "admission"


def intents(tag: str, n: int) -> list[tuple[str, PositionInput]]:
    return [
        (
            f"position-{tag}-{i}",
            PositionInput(
                symbol=SYMBOLS[i % len(SYMBOLS)],
                side=Side.LONG if i % 2 else Side.SHORT,
                notional_usdt=D(100),
                intent_id=f"{tag}-{i}",
                options=QUIET,
            ),
        )
        for i in range(n)
    ]


async def portfolio_view(stack: Stack) -> PortfolioView:
    return await stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID).query(
        "state", result_type=PortfolioView
    )


async def positions(stack: Stack, prefix: str) -> Counter[str]:
    query = f"WorkflowType='PositionWorkflow' AND WorkflowId STARTS_WITH '{prefix}'"
    out: Counter[str] = Counter()
    async for wf in stack.client.list_workflows(query):
        view = await stack.client.get_workflow_handle(wf.id).query("state", result_type=PositionView)
        out[view.status.value] += 1
    return out


async def refusals(stack: Stack) -> list[dict[str, str]]:
    rows = await stack.redis.xrange(REFUSED_STREAM)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in rows]


def signals_sent(history: WorkflowHistory) -> list[str]:
    """The names of the signals a workflow sent, in order."""
    return [
        e.signal_external_workflow_execution_initiated_event_attributes.signal_name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED
    ]


async def until(probe: Any, timeout: float = 60.0) -> Any:
    async with asyncio.timeout(timeout):
        while not (got := await probe()):
            await asyncio.sleep(0.1)
    return got


async def _runs_if_continued(stack: Stack) -> list[Any]:
    runs = [e async for e in stack.client.list_workflows(f"WorkflowId='{DEFAULT_PORTFOLIO_ID}'")]
    return runs if len(runs) > 1 else []


async def close_all(stack: Stack, ids: list[str]) -> None:
    """Closed before the workers stop."""
    for wid in ids:
        handle = stack.client.get_workflow_handle(wid)
        await handle.execute_update("close", {"reason": "test"})
        await asyncio.wait_for(handle.result(), 30)


async def open_count(stack: Stack, prefix: str) -> int:
    return (await positions(stack, prefix))["OPEN"]


def test_a_bad_intent_is_refused_before_anything_is_sent() -> None:
    good = ("position-a", {"symbol": "BTCUSDT", "side": "LONG", "notional_usdt": "100"})
    with pytest.raises(AdmissionError, match=r"intent #2 \(position-b\).*notional_usdt"):
        admissions([good, ("position-b", {"symbol": "BTCUSDT", "side": "LONG", "quantity": "0.01"})])
    with pytest.raises(AdmissionError, match=r"intent #1 \(bad id!\).*workflow_id"):
        admissions([("bad id!", good[1])])
    with pytest.raises(AdmissionError, match=r"intent #1.*side"):
        admissions([("position-c", {"symbol": "BTCUSDT", "side": "UP", "notional_usdt": "100"})])


@pytest.mark.parametrize("stack", [LIMITS], indirect=True)
async def test_the_portfolio_starts_a_position_only_for_a_grant(stack: Stack) -> None:
    for s in SYMBOLS:
        stack.exchange.set_price(s, "100")
    async with stack.workers():
        await start_portfolio(stack.client, RiskPolicy.from_settings(stack.settings), 30)
        batch = admissions(intents("adm", 30))
        await admit_intents(stack.client, batch)
        await until(lambda: _decided(stack, 30))
        await until(lambda: _open_is(stack, "position-adm-", 5))
        view = await portfolio_view(stack)
        refused = await refusals(stack)
        # the same intents again (a submitter's retry): nothing opens twice, nothing is refused twice
        await admit_intents(stack.client, batch)
        await until(lambda: _decided(stack, 55))  # the 5 granted are skipped, the 25 refused again
        again = await positions(stack, "position-adm-")
        refused_again = await refusals(stack)
        orders = stack.exchange.admin("GET", "orders")
        # the first granted position went straight to its entry: no reservation signal of its own
        granted = [d.holder_id for d in view.last_decisions if isinstance(d, Grant)]
        history = await stack.client.get_workflow_handle(granted[0]).fetch_history()
        await close_all(stack, granted)
        if os.environ.get("RECORD_HISTORIES"):  # replayed by tests/workflows/test_replay.py
            HISTORIES.mkdir(exist_ok=True)
            for wid in (DEFAULT_PORTFOLIO_ID, granted[0]):
                recorded = await stack.client.get_workflow_handle(wid).fetch_history()
                (HISTORIES / f"{wid}.json").write_text(recorded.to_json())
    assert view.slots_used == 5 and view.granted_total == 5 and view.denied_total == 25
    assert again == Counter({"OPEN": 5})  # no workflow at all for a refused intent
    assert len(refused) == 25 and len(refused_again) == 25
    assert Counter(r["gate"] for r in refused) == Counter({"symbol_open": 10, "max_open_positions": 15})
    assert {r["workflow_id"] for r in refused} == {wid for wid, _ in intents("adm", 30)} - set(granted)
    assert len(orders) == 5 and all(not o["reduceOnly"] for o in orders)
    assert "request_reservation" not in signals_sent(history)


async def _decided(stack: Stack, n: int) -> bool:
    view = await portfolio_view(stack)
    return view.granted_total + view.denied_total >= n


async def _open_is(stack: Stack, prefix: str, n: int) -> bool:
    return await open_count(stack, prefix) == n


@pytest.mark.parametrize("stack", [LIMITS], indirect=True)
async def test_an_admitted_id_that_ran_before_gives_its_slot_back_at_once(stack: Stack) -> None:
    stack.exchange.set_price("T001USDT", "100")
    async with stack.workers():
        await start_portfolio(stack.client, RiskPolicy.from_settings(stack.settings), 30)
        (one,) = admissions(intents("ran", 1))
        await admit_intents(stack.client, [one])
        await until(lambda: _open_is(stack, "position-ran-", 1))
        handle = stack.client.get_workflow_handle(one.workflow_id, result_type=PositionResult)
        await handle.execute_update("close", {"reason": "test"})
        await handle.result()
        await admit_intents(stack.client, [one])  # granted again, but that id ran: nothing starts
        await until(lambda: _decided(stack, 2))
        await asyncio.sleep(0.5)
        view = await portfolio_view(stack)
    assert view.granted_total == 2 and view.slots_used == 0
    assert len(stack.exchange.admin("GET", "orders?symbol=T001USDT")) == 2  # one entry, one exit


@pytest.mark.parametrize("stack", [LIMITS], indirect=True)
async def test_a_retried_start_keeps_the_running_position_and_starts_nothing_for_one_that_ran(
    stack: Stack,
) -> None:
    # The start activity's answer lost and the activity run again: the position it started is kept
    # (not a second one, not voided); once closed, its id starts nothing ever again.
    stack.exchange.set_price("T001USDT", "100")
    async with stack.workers():
        await start_portfolio(stack.client, RiskPolicy.from_settings(stack.settings), 30)
        (one,) = admissions(intents("again", 1))
        await admit_intents(stack.client, [one])
        await until(lambda: _open_is(stack, "position-again-", 1))
        starting = PortfolioActivities(stack.client, RiskPolicy.from_settings(stack.settings))
        batch = PositionStarts(
            starts=[PositionStart(workflow_id=one.workflow_id, position=one.position, summary="again")]
        )
        kept = await ActivityEnvironment().run(starting.start_positions, batch)
        handle = stack.client.get_workflow_handle(one.workflow_id, result_type=PositionResult)
        await handle.execute_update("close", {"reason": "test"})
        await handle.result()
        ran_before = await ActivityEnvironment().run(starting.start_positions, batch)
        runs = [w async for w in stack.client.list_workflows(f"WorkflowId='{one.workflow_id}'")]
    assert kept == [] and ran_before == [one.workflow_id] and len(runs) == 1
    assert len(stack.exchange.admin("GET", "orders?symbol=T001USDT")) == 2  # one entry, one exit


@pytest.mark.parametrize("stack", [LIMITS], indirect=True)
async def test_a_position_started_by_another_worker_asks_the_portfolio_once(stack: Stack) -> None:
    # Scaled out, the worker running a position's first task may not be the one whose start_positions
    # started it: nothing vouches for the grant there, so the position asks the portfolio, which
    # decides it like any request (here: the only slot it takes).
    stack.exchange.set_price("T001USDT", "100")
    async with stack.workers():
        await start_portfolio(stack.client, RiskPolicy.from_settings(stack.settings), 30)
        ((wid, position),) = intents("elsewhere", 1)
        granted = position.model_copy(update={"grant": Grant(holder_id=wid, notional_usdt=D(100))})
        elsewhere = PortfolioActivities(stack.client, RiskPolicy.from_settings(stack.settings))
        batch = PositionStarts(starts=[PositionStart(workflow_id=wid, position=granted, summary="x")])
        assert await ActivityEnvironment().run(elsewhere.start_positions, batch) == []
        await until(lambda: _open_is(stack, "position-elsewhere-", 1))
        view = await portfolio_view(stack)
        history = await stack.client.get_workflow_handle(wid).fetch_history()
        await close_all(stack, [wid])
    assert view.slots_used == 1 and view.granted_total == 1
    assert signals_sent(history).count("request_reservation") == 1
    assert len([o for o in stack.exchange.admin("GET", "orders") if not o["reduceOnly"]]) == 1


@pytest.mark.parametrize("stack", [LIMITS], indirect=True)
async def test_a_grant_typed_into_a_workflow_start_is_ignored(stack: Stack) -> None:
    stack.exchange.set_price("T001USDT", "100")
    async with stack.workers():
        await start_portfolio(stack.client, RiskPolicy.from_settings(stack.settings), 30)
        await stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID).execute_update(
            "set_kill_switch", {"on": True, "reason": "test"}
        )
        forged: WorkflowHandle[Any, PositionResult] = await stack.client.start_workflow(
            "PositionWorkflow",
            PositionInput(
                symbol="T001USDT",
                side=Side.LONG,
                notional_usdt=D(100),
                options=QUIET,
                grant=Grant(holder_id="position-forged", notional_usdt=D(100)),
            ),
            id="position-forged",
            task_queue=LIFECYCLE_TASK_QUEUE,
            result_type=PositionResult,
        )
        result = await asyncio.wait_for(forged.result(), 30)
    assert result.status == PositionStatus.REJECTED and result.rejection_gate == "kill_switch"
    assert stack.exchange.admin("GET", "orders") == []


@pytest.mark.parametrize("stack", [LIMITS], indirect=True)
async def test_admissions_survive_the_portfolios_continue_as_new(stack: Stack) -> None:
    for s in SYMBOLS:
        stack.exchange.set_price(s, "100")
    async with stack.workers():
        await stack.client.start_workflow(
            "PortfolioWorkflow",
            PortfolioInput(policy=RiskPolicy.from_settings(stack.settings), max_history_events=100),
            id=DEFAULT_PORTFOLIO_ID,
            task_queue=LIFECYCLE_TASK_QUEUE,
        )
        batch = admissions(intents("can", 60))
        for one in batch:  # one signal each: the history passes 100 events
            await admit_intents(stack.client, [one])
        await until(lambda: _decided(stack, 60), timeout=90)
        await until(lambda: _open_is(stack, "position-can-", 5))
        view = await portfolio_view(stack)
        refused = await refusals(stack)
        runs = await until(lambda: _runs_if_continued(stack))
        await close_all(stack, list(view.book.reservations))
    assert len(runs) > 1  # it did continue as new
    assert view.granted_total == 5 and view.denied_total == 55 and len(refused) == 55
    assert len([o for o in stack.exchange.admin("GET", "orders") if not o["reduceOnly"]]) == 5


@pytest.mark.parametrize("stack", [LIMITS], indirect=True)
async def test_ten_thousand_intents_at_once_are_all_decided_a_slice_per_task(stack: Stack) -> None:
    # Decided in one task, 5,000 intents made a task completion over gRPC's 4 MB and the server
    # terminated the portfolio; 10,000 refusals in one activity input pass the 2 MB payload limit.
    n = 10 * BATCH_MAX
    for s in SYMBOLS:
        stack.exchange.set_price(s, "100")
    async with stack.workers():
        await start_portfolio(stack.client, RiskPolicy.from_settings(stack.settings), 30)
        await admit_intents(stack.client, admissions(intents("many", n)))
        await until(lambda: _decided(stack, n), timeout=120)
        await until(lambda: _open_is(stack, "position-many-", 5))
        refused = await until(lambda: _refusals_are(stack, n - 5), timeout=60)
        view = await portfolio_view(stack)
        status = (await stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID).describe()).status
        events = [  # every run of it (the signals' size suggests a continue-as-new)
            e
            async for run in stack.client.list_workflows(f"WorkflowId='{DEFAULT_PORTFOLIO_ID}'")
            async for e in stack.client.get_workflow_handle(run.id, run_id=run.run_id).fetch_history_events()
        ]
        await close_all(stack, list(view.book.reservations))
    assert view.granted_total == 5 and view.denied_total == n - 5
    assert len({r["workflow_id"] for r in refused}) == n - 5
    assert status == WorkflowExecutionStatus.RUNNING
    # The server may fail a running task to flush the signals buffered meanwhile (over 2 MB of them:
    # FORCE_CLOSE_COMMAND, the task is redone); a payload or message too large is never benign.
    causes = {
        WorkflowTaskFailedCause.Name(e.workflow_task_failed_event_attributes.cause)
        for e in events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    }
    assert causes <= {"WORKFLOW_TASK_FAILED_CAUSE_FORCE_CLOSE_COMMAND"}
    published = [
        e
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "publish_refusals"
    ]
    assert len(published) >= n // ADMIT_SLICE  # a slice at a time, never all at once


async def _refusals_are(stack: Stack, n: int) -> list[dict[str, str]]:
    got = await refusals(stack)
    return got if len(got) >= n else []


@pytest.mark.parametrize("stack", [LIMITS], indirect=True)
async def test_an_intent_older_than_its_entry_deadline_is_refused_not_traded(stack: Stack) -> None:
    # A late or repeated submission (a bar close run again minutes later) never trades a stale signal.
    stack.exchange.set_price("T001USDT", "100")
    async with stack.workers():
        await start_portfolio(stack.client, RiskPolicy.from_settings(stack.settings), 30)
        made = int(time.time() * 1000) - 120_000  # two minutes ago; the entry deadline is 60 s
        await admit_intents(stack.client, admissions(intents("late", 1), at_ms=made))
        await until(lambda: _decided(stack, 1))
        (refused,) = await until(lambda: refusals(stack))
    assert refused["gate"] == "entry_deadline" and "not decided within 60 s" in refused["reason"]
    assert stack.exchange.admin("GET", "orders") == []


@pytest.mark.parametrize("stack", [LIMITS], indirect=True)
async def test_an_admitted_intent_on_an_unknown_symbol_gives_its_slot_back(stack: Stack) -> None:
    # The portfolio cannot ask the venue; the position it started finds the symbol unknown and gives
    # the slot back itself (the holder check, an hour away here, would have been the only other way).
    async with stack.workers():
        await start_portfolio(stack.client, RiskPolicy.from_settings(stack.settings), 3600)
        await admit_intents(
            stack.client,
            admissions([("position-nope", {"symbol": "NOPEUSDT", "side": "LONG", "notional_usdt": "100"})]),
        )
        handle = stack.client.get_workflow_handle("position-nope")
        await until(lambda: _decided(stack, 1))
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(_result_when_started(handle), 60)
        view = await until(lambda: _released(stack))
    assert view.granted_total == 1 and view.slots_used == 0


async def _result_when_started(handle: WorkflowHandle[Any, Any]) -> Any:
    while True:
        try:
            return await handle.result()
        except RPCError:  # not started yet
            await asyncio.sleep(0.1)


async def _released(stack: Stack) -> PortfolioView | None:
    view = await portfolio_view(stack)
    return view if view.slots_used == 0 else None
