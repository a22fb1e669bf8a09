"""The fault model, one scenario per test, each reproduced against a real dev server and paper exchange:
the venue unreachable while a position is open, continue-as-new with an exit in flight, a flatten or
a cancel while the entry is in flight, a venue holding more than the workflow's tally, and a close
asked for just as the last exit fills. Each failed on the code before the fix."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from exchange.client import BinanceFuturesClient
from tests.workflows.conftest import Stack
from tests.workflows.drills import venue_positions, venue_record
from tests.workflows.test_portfolio import eventually, portfolio_view
from tests.workflows.test_position_lifecycle import start_position, wait_status
from tests.workflows.test_reconcile import adopted_position, reconcile_now
from trading.intents import ExitOverrides, Side, TradeIntent
from workflows.errors import ErrorType
from workflows.messages import (
    DEFAULT_PORTFOLIO_ID,
    ClosePositionRequest,
    CloseResult,
    FlattenRequest,
    PositionOptions,
    PositionResult,
    PositionStatus,
    PositionView,
)

D = Decimal
SLOW_ORDERS = {"latency_ms": 2500, "paths": ["/fapi/v1/order"]}


async def status_of(handle: WorkflowHandle) -> PositionStatus:
    return (await handle.query("state", result_type=PositionView)).status


async def wait_entering(handle: WorkflowHandle) -> None:
    await wait_status(handle, PositionStatus.ENTERING, timeout=30)


async def test_venue_unreachable_for_longer_than_the_read_retries_keeps_managing(stack: Stack) -> None:
    """Scenario 1: mark reads failing 35 s (longer than the ~26 s of read retries) used to fail the
    workflow and release its slot with the venue still long. Now the position stays OPEN, says it
    cannot reach the venue, holds its slot, and its stop still closes it once the venue answers."""
    stack.exchange.set_price("BTCUSDT", "60000")
    intent = TradeIntent(
        symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150), exits=ExitOverrides(stop_loss_pct=D(2))
    )
    async with stack.workers():
        handle = await start_position(stack, intent)
        await wait_status(handle, PositionStatus.OPEN)
        stack.exchange.set_faults(http_5xx_rate=1.0, paths=["/fapi/v1/premiumIndex"])
        unreachable_seen = False
        loop = asyncio.get_running_loop()
        until = loop.time() + 35
        while loop.time() < until:  # the outage's length, not an assertion on time
            view = await handle.query("state", result_type=PositionView)
            assert view.status == PositionStatus.OPEN
            assert (await portfolio_view(stack)).slots_used == 1
            unreachable_seen |= view.venue_unreachable_since_ms is not None
            await asyncio.sleep(1)
        assert unreachable_seen
        stack.exchange.clear_faults()
        stack.exchange.set_price("BTCUSDT", "58700")  # through the internal stop
        result = await asyncio.wait_for(handle.result(), 60)
        assert (await portfolio_view(stack)).slots_used == 0
    assert result.status == PositionStatus.CLOSED and result.exit_reason == "stop_loss"
    assert await venue_positions(stack) == {}


async def test_continue_as_new_with_an_exit_in_flight_answers_every_request(stack: Stack) -> None:
    """Scenario 2: history over its threshold while a close is in flight, then a flatten and another
    close: the hand-over used to wait for a queue only the waiting loop drains (no flatten order,
    the update never answered). Now every request is answered and the position closes."""
    stack.exchange.set_price("ETHUSDT", "3000")
    opts = PositionOptions(mark_check_seconds=0.3, max_history_events=100)
    async with stack.workers():
        handle = await start_position(
            stack, TradeIntent(symbol="ETHUSDT", side=Side.LONG, notional_usdt=D(150)), options=opts
        )
        await wait_status(handle, PositionStatus.OPEN)
        await asyncio.sleep(3)  # the mark timer grows the history past 100 events
        stack.exchange.set_faults(**SLOW_ORDERS)
        first = asyncio.ensure_future(
            handle.execute_update("close", ClosePositionRequest(quantity=D("0.01")), result_type=CloseResult)
        )
        await wait_status(handle, PositionStatus.CLOSING)
        await stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID).execute_update(
            "emergency_flatten", FlattenRequest(reason="test")
        )
        second = await asyncio.wait_for(
            handle.execute_update("close", ClosePositionRequest(), result_type=CloseResult), 60
        )
        assert (await asyncio.wait_for(first, 30)).closed_qty == D("0.01")
        assert second.remaining_qty == 0
        stack.exchange.clear_faults()
        result = await asyncio.wait_for(handle.result(follow_runs=True), 60)
    assert result.status == PositionStatus.CLOSED
    assert await venue_positions(stack) == {}


async def test_flatten_while_entering_closes_what_filled(stack: Stack) -> None:
    """Scenario 4: an emergency flatten while the entry order is in flight used to be ignored (the
    position opened afterwards with no close). Now it is remembered and the fill is closed."""
    stack.exchange.set_price("BTCUSDT", "60000")
    async with stack.workers():
        stack.exchange.set_faults(**SLOW_ORDERS)
        handle = await start_position(
            stack, TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150))
        )
        await wait_entering(handle)
        holders = await stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID).execute_update(
            "emergency_flatten", FlattenRequest(reason="test"), result_type=list[str]
        )
        assert holders == [handle.id]
        result = await asyncio.wait_for(handle.result(), 60)
    assert result.status == PositionStatus.CLOSED and result.exit_reason == "emergency_flatten"
    assert result.quantity > 0  # it had filled, and was closed
    assert await venue_positions(stack) == {}


async def test_cancel_while_entering_flattens_the_fill_and_leaves_no_stop(stack: Stack) -> None:
    """Scenario 8: cancelling during ENTERING cancelled the entry activity and left whatever filled
    unowned and without a stop. Now the entry is awaited, its fill closed, and nothing is left."""
    stack.exchange.set_price("BTCUSDT", "60000")
    async with stack.workers():
        stack.exchange.set_faults(**SLOW_ORDERS)
        handle = await start_position(
            stack, TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150))
        )
        await wait_entering(handle)
        await asyncio.sleep(0.5)  # the order is on its way
        await handle.cancel()
        await eventually(lambda: _closed(handle), timeout=60)
        assert (await portfolio_view(stack)).slots_used == 0
    assert await venue_positions(stack) == {}
    record = venue_record(stack, ["BTCUSDT"])
    assert [a for a in record.algo_orders if a["algoStatus"] in ("NEW", "WORKING")] == []


async def _closed(handle: WorkflowHandle) -> bool:
    desc = await handle.describe()
    return desc.status is not None and desc.status.name != "RUNNING"


async def test_venue_larger_than_the_tally_is_drift_and_the_excess_is_closed(stack: Stack) -> None:
    """Scenario 10: the venue holding more than the workflow's tally was never corrected, and a venue
    fill larger than the open quantity was dropped (the position ended CLOSED with open quantity and
    no journal row). Now the excess is closed, and a venue close of everything settles the position."""
    stack.exchange.set_price("BTCUSDT", "60000")
    async with stack.workers(), BinanceFuturesClient.from_settings(stack.settings) as venue:
        handle = await start_position(
            stack,
            TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150)),
            options=PositionOptions(mark_check_seconds=600),
        )
        await wait_status(handle, PositionStatus.OPEN)
        await venue.new_order("BTCUSDT", "BUY", "MARKET", D("0.002"), client_order_id="foreign-add-1")
        await handle.signal(
            "exchange_event", {"kind": "account_update", "symbol": "BTCUSDT", "position_amt": "0.004"}
        )

        async def corrected() -> bool:
            return (await venue_positions(stack)).get("BTCUSDT") == D("0.002")

        await eventually(corrected, timeout=30)
        assert (await handle.query("state", result_type=PositionView)).open_qty == D("0.002")
        # A second excess, then a close of everything by hand on the venue in one fill.
        await venue.new_order("BTCUSDT", "BUY", "MARKET", D("0.002"), client_order_id="foreign-add-2")
        await venue.new_order(
            "BTCUSDT", "SELL", "MARKET", D("0.004"), reduce_only=True, client_order_id="foreign-close"
        )
        await handle.signal(
            "exchange_event",
            {
                "kind": "order_update",
                "symbol": "BTCUSDT",
                "client_order_id": "foreign-close",
                "exec_type": "TRADE",
            },
        )
        result: PositionResult = await asyncio.wait_for(handle.result(), 30)
    assert result.status == PositionStatus.CLOSED
    assert result.exit_reason == "exchange_closed"
    closed = sum(f.qty for f in result.fills if f.side == "SELL")
    assert closed == result.quantity == D("0.002")  # the whole tally closed, no open quantity left


async def test_close_asked_while_the_last_exit_fills_is_answered(stack: Stack) -> None:
    """Scenario 11: a close update accepted while CLOSING, just as the stop-loss order filled, was never
    answered (the run returned first: "update was aborted"). Now it is answered: nothing left."""
    stack.exchange.set_price("BTCUSDT", "60000")
    intent = TradeIntent(
        symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150), exits=ExitOverrides(stop_loss_pct=D(2))
    )
    async with stack.workers():
        handle = await start_position(stack, intent)
        await wait_status(handle, PositionStatus.OPEN)
        stack.exchange.set_faults(**SLOW_ORDERS)
        stack.exchange.set_price("BTCUSDT", "58700")  # the stop-loss order goes out, slowly
        await wait_status(handle, PositionStatus.CLOSING)
        answer = await asyncio.wait_for(
            handle.execute_update("close", ClosePositionRequest(), result_type=CloseResult), 30
        )
        result = await asyncio.wait_for(handle.result(), 30)
    assert answer.noop and answer.remaining_qty == 0
    assert result.status == PositionStatus.CLOSED and result.exit_reason == "stop_loss"


@pytest.mark.parametrize(
    "ask",
    [
        {"quantity": "5"},  # more than is open
        {"quantity": "-1"},  # a bad field
        {"bogus": 1},  # an unknown field
    ],
)
async def test_every_refused_close_has_one_shape(stack: Stack, ask: dict) -> None:
    """Scenario 11, the refusals: each is an ApplicationError of type CloseRefused naming the problem."""
    stack.exchange.set_price("BTCUSDT", "60000")
    async with stack.workers():
        handle = await start_position(
            stack, TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150))
        )
        await wait_status(handle, PositionStatus.OPEN)
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await handle.execute_update("close", ask)
        cause = err.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == ErrorType.CLOSE_REFUSED, cause
        await handle.execute_update("close", {})
        await asyncio.wait_for(handle.result(), 30)
        with pytest.raises(Exception) as late:  # the workflow has finished: refused, same shape when it can
            await handle.execute_update("close", {})
        assert "close" in str(late.value).lower() or "complete" in str(late.value).lower()


async def test_entry_deadline_denies_and_releases_when_nothing_executed(stack: Stack) -> None:
    """Scenario 9: entries retried forever, so after a long outage an intent executed minutes later at
    a new price. Now an entry past its deadline is looked up and, as nothing executed, denied and its
    slot released; nothing reaches the venue even after the outage ends."""
    stack.exchange.set_price("BTCUSDT", "60000")
    async with stack.workers():
        stack.exchange.set_faults(http_5xx_rate=1.0, paths=["/fapi/v1/order"])
        handle = await start_position(
            stack,
            TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150)),
            options=PositionOptions(mark_check_seconds=0.3, entry_deadline_seconds=3),
        )
        await asyncio.sleep(8)  # the outage outlasts the deadline; nothing can be looked up meanwhile
        assert (await handle.query("state", result_type=PositionView)).status == PositionStatus.ENTERING
        stack.exchange.clear_faults()
        result = await asyncio.wait_for(handle.result(), 60)
        assert (await portfolio_view(stack)).slots_used == 0
    assert result.status == PositionStatus.REJECTED and result.rejection_gate == "entry_deadline"
    assert venue_record(stack, ["BTCUSDT"]).orders == []


async def test_a_position_whose_workflow_died_is_adopted_with_its_own_exits(stack: Stack) -> None:
    """Scenario 1, the aftermath: a position whose workflow ended with money on the venue was adopted
    with the default exit profile (the trade's 8 % exchange stop became 3 %). Now the adoption keeps
    that trade's exits."""
    stack.exchange.set_price("BTCUSDT", "60000")
    exits = ExitOverrides(stop_loss_pct=D(5), hard_stop_pct=D(8))
    async with stack.workers(holder_check_seconds=1):
        handle = await start_position(
            stack,
            TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150), exits=exits),
            options=PositionOptions(mark_check_seconds=600),
        )
        await wait_status(handle, PositionStatus.OPEN)
        await handle.terminate("the workflow died")  # no code of it runs: the position stays open

        async def freed() -> bool:
            return (await portfolio_view(stack)).slots_used == 0

        await eventually(freed)
        fixes = await reconcile_now(stack)
        assert [(f.kind, f.symbol) for f in fixes if f.kind == "adopt"] == [("adopt", "BTCUSDT")]
        adopted = await adopted_position(stack)
        view = await wait_status(adopted, PositionStatus.OPEN)
        assert (view.stop_loss_price, view.hard_stop_price) == (D("57000.0"), D("55200.0"))
        await adopted.execute_update("close", {})
        await asyncio.wait_for(adopted.result(), 30)
    assert await venue_positions(stack) == {}
