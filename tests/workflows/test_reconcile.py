"""Exchange truth: the venue's own actions reach the workflows (pushed by the user-data stream, reconcile
on its schedule), positions opened outside the system are adopted, orphans are cancelled.

How fast the stream tells a workflow is a latency, measured by `python -m bench.truth`; here the test
asserts that the stream is what told it (no mark-price timer, no reconcile could have)."""

from __future__ import annotations

import asyncio
import os
import time
from decimal import Decimal

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle

from activities.reconcile import adoption_input
from exchange.client import BinanceFuturesClient
from tests.workflows.conftest import Stack
from tests.workflows.test_exits import start_watcher, until
from tests.workflows.test_position_lifecycle import start_position
from tests.workflows.test_replay import HISTORIES, replayer
from trading.intents import ExitOverrides, Side, TradeIntent
from trading.reconcile import Fix
from workflows.messages import (
    LIFECYCLE_TASK_QUEUE,
    PositionOptions,
    PositionResult,
    PositionStatus,
    PositionView,
    ReconcileInput,
)

D = Decimal
QUIET = PositionOptions(mark_check_seconds=600)  # no timer: only the venue's word can end these
# Only a broken path waits this long: QUIET's mark timer (600 s) and the reconcile schedule (not running
# in these tests) cannot end a position before it, so an end within it came from the user-data stream.
STREAM_GUARD_S = 60


async def venue_events_signalled(handle: WorkflowHandle) -> int:
    """How many `exchange_event` signals (the user-data stream's word) the workflow received."""
    return sum(
        1
        for e in (await handle.fetch_history()).events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        and e.workflow_execution_signaled_event_attributes.signal_name == "exchange_event"
    )


async def reconcile_now(stack: Stack, wid: str | None = None) -> list[Fix]:
    return await stack.client.execute_workflow(
        "ReconcileWorkflow",
        ReconcileInput(adopt_after_ms=0),
        id=wid or f"reconcile-test-{time.monotonic_ns()}",
        task_queue=LIFECYCLE_TASK_QUEUE,
        result_type=list[Fix],
    )


async def adopted_position(stack: Stack, timeout: float = 15) -> WorkflowHandle:
    """The running position workflow a reconcile started for a venue position, once visibility lists it."""
    async with asyncio.timeout(timeout):
        while True:
            async for wf in stack.client.list_workflows(
                "WorkflowType='PositionWorkflow' AND Source='adopted' AND ExecutionStatus='Running'"
            ):
                return stack.client.get_workflow_handle(wf.id, result_type=PositionResult)
            await asyncio.sleep(0.2)


async def test_hard_stop_fill_reaches_the_workflow_through_the_user_stream(stack: Stack) -> None:
    stack.exchange.set_price("BTCUSDT", "60000")
    stack.start_worker_process("user-stream")
    async with stack.workers():
        handle = await start_position(
            stack, TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150)), options=QUIET
        )
        await until(handle, lambda v: v.status == PositionStatus.OPEN)
        await asyncio.sleep(1.0)  # the stream has connected and routes BTCUSDT to this position
        stack.exchange.set_price("BTCUSDT", "58000")  # through the exchange's hard stop (58200)
        result: PositionResult = await asyncio.wait_for(handle.result(), STREAM_GUARD_S)
        told = await venue_events_signalled(handle)
    assert result.exit_reason == "hard_stop" and result.status == PositionStatus.CLOSED
    assert told >= 1, "the workflow learned of the hard stop without the user-data stream telling it"


async def test_liquidation_reaches_the_workflow_through_the_user_stream(stack: Stack) -> None:
    stack.exchange.set_price("ETHUSDT", "3000")
    async with BinanceFuturesClient.from_settings(stack.settings) as venue:
        await venue.set_margin_type("ETHUSDT", "ISOLATED")
    stack.start_worker_process("user-stream")
    intent = TradeIntent(
        symbol="ETHUSDT",
        side=Side.LONG,
        notional_usdt=D(150),
        leverage=50,
        exits=ExitOverrides(profile={"stop_pct": 40, "hard_stop_pct": 45, "max_margin_loss_pct": 1000}),
    )
    async with stack.workers():
        handle = await start_position(stack, intent, options=QUIET)
        await until(handle, lambda v: v.status == PositionStatus.OPEN)
        await asyncio.sleep(1.0)
        stack.exchange.set_price("ETHUSDT", "2925")  # -2.5 % at 50x: past the liquidation price
        result: PositionResult = await asyncio.wait_for(handle.result(), STREAM_GUARD_S)
        told = await venue_events_signalled(handle)
    assert result.exit_reason == "liquidation", result
    assert told >= 1, "the workflow learned of the liquidation without the user-data stream telling it"
    assert sum(f.qty for f in result.fills if f.side == "SELL") == D("0.050")


async def test_position_opened_outside_is_adopted_and_closed_by_its_stop(stack: Stack) -> None:
    stack.exchange.set_price("BTCUSDT", "60000")
    async with BinanceFuturesClient.from_settings(stack.settings) as venue:
        await venue.new_order("BTCUSDT", "BUY", "MARKET", D("0.003"), client_order_id="by-hand-1")
    await start_watcher(stack)
    async with stack.workers():
        fixes = await reconcile_now(stack, "reconcile-adopt")
        assert [(f.kind, f.symbol) for f in fixes] == [("adopt", "BTCUSDT")]
        history = await stack.client.get_workflow_handle("reconcile-adopt").fetch_history()
        await replayer().replay_workflow(history)  # deterministic (and recorded with RECORD_HISTORIES=1)
        if os.environ.get("RECORD_HISTORIES"):
            (HISTORIES / "reconcile-adopt.json").write_text(history.to_json())
        adopted = await adopted_position(stack)
        view = await until(adopted, lambda v: v.status == PositionStatus.OPEN)
        assert (view.open_qty, view.entry_price, view.stop_loss_price) == (D("0.003"), D(60000), D(58800))
        assert await reconcile_now(stack) == []  # nothing left to fix
        stack.exchange.set_price("BTCUSDT", "58700")  # through the adopted position's stop
        result = await asyncio.wait_for(adopted.result(), 15)
    assert result.exit_reason == "stop_loss"
    orders = stack.exchange.admin("GET", "orders?symbol=BTCUSDT")
    assert (orders[0]["clientOrderId"], orders[0]["side"]) == ("by-hand-1", "BUY")
    assert [o["side"] for o in orders] == ["BUY", "SELL"]


async def test_position_closed_on_the_venue_ends_its_workflow(stack: Stack) -> None:
    stack.exchange.set_price("ETHUSDT", "3000")
    async with stack.workers():
        handle = await start_position(
            stack, TradeIntent(symbol="ETHUSDT", side=Side.SHORT, notional_usdt=D(90)), options=QUIET
        )
        view = await until(handle, lambda v: v.status == PositionStatus.OPEN)
        async with BinanceFuturesClient.from_settings(stack.settings) as venue:  # an operator on the venue
            await venue.new_order(
                "ETHUSDT", "BUY", "MARKET", view.open_qty, reduce_only=True, client_order_id="venue-ui-close"
            )
        fixes = await reconcile_now(stack)
        assert [(f.kind, f.workflow_id) for f in fixes] == [("close_gone", handle.id)]
        result: PositionResult = await asyncio.wait_for(handle.result(), 10)
    assert result.exit_reason == "exchange_closed" and result.status == PositionStatus.CLOSED
    assert [f.client_order_id for f in result.fills][-1] == "venue-ui-close"
    events = await stack.redis.xrange("quantum:stream:reconcile.events")
    assert [e[b"kind"] for _, e in events] == [b"close_gone"]


@pytest.mark.parametrize("stack", [{"reconcile_on_start": True}], indirect=True)
async def test_orphaned_stop_is_cancelled(stack: Stack) -> None:
    stack.exchange.set_price("BTCUSDT", "60000")
    async with BinanceFuturesClient.from_settings(stack.settings) as venue:
        await venue.new_order("BTCUSDT", "BUY", "MARKET", D("0.002"), client_order_id="by-hand-2")
        await venue.new_algo_order(
            "BTCUSDT", "SELL", "STOP_MARKET", D(55000), close_position=True, client_algo_id="left-behind"
        )
        await venue.new_order(
            "BTCUSDT", "SELL", "MARKET", D("0.002"), reduce_only=True, client_order_id="by-hand-3"
        )
        left = [a for a in await venue.open_algo_orders("BTCUSDT")]
    async with stack.workers():
        fixes = await reconcile_now(stack)
    if left:  # the venue may already have expired it with the position (Binance does)
        assert [(f.kind, f.client_id) for f in fixes] == [("cancel_orphan", "left-behind")]
    algos = stack.exchange.admin("GET", "algo-orders?symbol=BTCUSDT")
    assert all(a["algoStatus"] != "NEW" for a in algos)


async def test_an_adoption_of_a_managed_symbol_is_refused_and_sends_nothing(stack: Stack) -> None:
    """Defence behind reconcile's own care: if a venue position is ever put up for adoption while its
    workflow runs, the portfolio refuses it, so no second workflow manages (and closes) it."""
    stack.exchange.set_price("BTCUSDT", "60000")
    async with stack.workers():
        owner = await start_position(
            stack, TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150)), options=QUIET
        )
        view = await until(owner, lambda v: v.status == PositionStatus.OPEN)
        before = stack.exchange.admin("GET", "orders?symbol=BTCUSDT")
        fix = Fix(
            kind="adopt", symbol="BTCUSDT", field="position", venue_amt=view.open_qty, entry_price=D(60000)
        )
        second = await stack.client.start_workflow(
            "PositionWorkflow",
            adoption_input(fix, "position-BTCUSDT-adopted-twice"),
            id="position-BTCUSDT-adopted-twice",
            task_queue=LIFECYCLE_TASK_QUEUE,
            result_type=PositionResult,
        )
        adopted = await asyncio.wait_for(second.result(), 20)
        assert (adopted.status, adopted.rejection_gate) == (PositionStatus.REJECTED, "symbol_open")
        assert stack.exchange.admin("GET", "orders?symbol=BTCUSDT") == before
        assert (await owner.query("state", result_type=PositionView)).status == PositionStatus.OPEN
