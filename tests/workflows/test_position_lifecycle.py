"""A position's whole life against the real dev server, Redis and paper exchange."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import CancelledError

from exchange.client import BinanceFuturesClient
from tests.workflows.conftest import Stack
from trading.intents import ExitOverrides, Side, TradeIntent
from trading.pnl import cents
from workflows.messages import (
    DEFAULT_PORTFOLIO_ID,
    LIFECYCLE_TASK_QUEUE,
    ClosePositionRequest,
    CloseResult,
    PortfolioView,
    PositionInput,
    PositionOptions,
    PositionResult,
    PositionStatus,
    PositionView,
)

D = Decimal
FAST = PositionOptions(mark_check_seconds=0.3)


async def start_position(
    stack: Stack, intent: TradeIntent, wf_id: str | None = None, options: PositionOptions = FAST
) -> WorkflowHandle:
    return await stack.client.start_workflow(
        "PositionWorkflow",
        PositionInput(**intent.model_dump(), options=options),
        id=wf_id or f"position-{intent.symbol}-{uuid.uuid4().hex[:8]}",
        task_queue=LIFECYCLE_TASK_QUEUE,
        result_type=PositionResult,
    )


async def wait_status(handle: WorkflowHandle, status: PositionStatus, timeout: float = 60) -> PositionView:
    """An upper bound for a loaded machine, not a figure under test."""
    async with asyncio.timeout(timeout):
        while True:
            view = await handle.query("state", result_type=PositionView)
            if view.status == status:
                return view
            await asyncio.sleep(0.1)


async def test_open_partial_close_then_stop_loss(stack: Stack) -> None:
    stack.exchange.set_price("BTCUSDT", "60000")
    intent = TradeIntent(
        symbol="BTCUSDT",
        side=Side.LONG,
        notional_usdt=D(150),
        leverage=5,
        exits=ExitOverrides(stop_loss_pct=D(2)),
    )
    async with stack.workers():
        handle = await start_position(stack, intent)
        view = await wait_status(handle, PositionStatus.OPEN)
        assert view.open_qty == D("0.002") and view.entry_price == D("60000")
        assert view.stop_loss_price == D("58800.0") and view.hard_stop_price == D("58200.0")

        stack.exchange.set_price("BTCUSDT", "61000")
        partial = await handle.execute_update(
            "close", ClosePositionRequest(quantity=D("0.001")), result_type=CloseResult
        )
        assert partial.closed_qty == D("0.001") and partial.remaining_qty == D("0.001")

        stack.exchange.set_price("BTCUSDT", "58700")  # through the stop-loss; the mark check closes
        result = await asyncio.wait_for(handle.result(), 20)

    assert result.status == PositionStatus.CLOSED and result.exit_reason == "stop_loss"
    # Hand computation from the fills: taker fee 0.04 % of each fill's notional.
    entry_fee = D("60000") * D("0.002") * D("0.0004")  # 0.048
    partial_fee = D("61000") * D("0.001") * D("0.0004")  # 0.0244
    stop_fee = D("58700") * D("0.001") * D("0.0004")  # 0.02348
    gross = (D("61000") - D("60000")) * D("0.001") + (D("58700") - D("60000")) * D("0.001")  # -0.3
    assert [(f.side, f.price, f.qty) for f in result.fills] == [
        ("BUY", D("60000"), D("0.002")),
        ("SELL", D("61000"), D("0.001")),
        ("SELL", D("58700"), D("0.001")),
    ]
    assert cents(result.gross_pnl) == cents(gross)
    assert cents(result.fees) == cents(entry_fee + partial_fee + stop_fee)
    assert cents(result.realized_pnl) == cents(gross - entry_fee - partial_fee - stop_fee)
    # The exchange agrees: flat, exactly three orders, the hard stop cancelled.
    async with BinanceFuturesClient.from_settings(stack.settings) as venue:
        assert all(p.position_amt == 0 for p in await venue.position_risk("BTCUSDT"))
    orders = stack.exchange.admin("GET", "orders?symbol=BTCUSDT")
    assert [(o["side"], o["reduceOnly"], o["status"]) for o in orders] == [
        ("BUY", False, "FILLED"),
        ("SELL", True, "FILLED"),
        ("SELL", True, "FILLED"),
    ]
    algos = stack.exchange.admin("GET", "algo-orders?symbol=BTCUSDT")
    assert [a["orderType"] for a in algos] == ["STOP_MARKET"]
    assert algos[0]["algoStatus"] in {"CANCELED", "EXPIRED"}  # no live stop is left behind


async def test_three_close_requests_at_once_make_one_order(stack: Stack) -> None:
    stack.exchange.set_price("ETHUSDT", "3000")
    intent = TradeIntent(symbol="ETHUSDT", side=Side.SHORT, notional_usdt=D(150), leverage=3)
    async with stack.workers():
        handle = await start_position(stack, intent)
        await wait_status(handle, PositionStatus.OPEN)
        results = await asyncio.gather(
            *(
                handle.execute_update(
                    "close", ClosePositionRequest(reason=f"operator {i}"), result_type=CloseResult
                )
                for i in range(3)
            )
        )
        result = await asyncio.wait_for(handle.result(), 15)
    assert sorted(r.noop for r in results) == [False, True, True]
    assert sum(r.closed_qty for r in results) == D("0.050")
    assert result.status == PositionStatus.CLOSED
    orders = stack.exchange.admin("GET", "orders?symbol=ETHUSDT")
    assert [(o["side"], o["reduceOnly"]) for o in orders] == [("SELL", False), ("BUY", True)]
    async with BinanceFuturesClient.from_settings(stack.settings) as venue:
        assert [p.position_amt for p in await venue.position_risk("ETHUSDT")] in ([], [D(0)])


async def quiet_history_len(handle: WorkflowHandle, timeout: float = 60) -> int:
    """The history's length once nothing is in flight (the entry's projections and level publish done)
    and it stays put: a fixed sleep let a slow projection's completion land between two counts."""
    async with asyncio.timeout(timeout):
        last = -1
        while True:
            pending = (await handle.describe()).raw_description.pending_activities
            now = len((await handle.fetch_history()).events)
            if not pending and now == last:
                return now
            last = now
            await asyncio.sleep(0.3)


async def test_close_more_than_open_is_refused_before_anything_is_recorded(stack: Stack) -> None:
    stack.exchange.set_price("BTCUSDT", "60000")
    async with stack.workers():
        quiet = PositionOptions(mark_check_seconds=600)  # no timer events while we count
        handle = await start_position(
            stack, TradeIntent(symbol="BTCUSDT", side=Side.LONG, quantity=D("0.002")), options=quiet
        )
        await wait_status(handle, PositionStatus.OPEN)
        history_before = await quiet_history_len(handle)
        try:
            await handle.execute_update("close", ClosePositionRequest(quantity=D("0.5")))
            raise AssertionError("an over-sized close was accepted")
        except WorkflowUpdateFailedError as err:
            assert "exceeds the open quantity 0.002" in str(err.cause)
        assert len((await handle.fetch_history()).events) == history_before
        view = await handle.query("state", result_type=PositionView)
        assert view.open_qty == D("0.002")
        await handle.execute_update("close", ClosePositionRequest(), result_type=CloseResult)
        await asyncio.wait_for(handle.result(), 15)


async def test_two_intents_for_one_symbol_open_one_position(stack: Stack) -> None:
    stack.exchange.set_price("BTCUSDT", "60000")
    intent = TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150))
    async with stack.workers():
        handles = await asyncio.gather(start_position(stack, intent), start_position(stack, intent))
        results = await asyncio.gather(*(asyncio.wait_for(_settle(h), 20) for h in handles))
    statuses = sorted(r for r in results)
    assert statuses == [PositionStatus.OPEN, PositionStatus.REJECTED]
    orders = stack.exchange.admin("GET", "orders?symbol=BTCUSDT")
    assert len(orders) == 1


async def _settle(handle: WorkflowHandle) -> PositionStatus:
    while True:
        view = await handle.query("state", result_type=PositionView)
        if view.status in (PositionStatus.OPEN, PositionStatus.REJECTED):
            if view.status == PositionStatus.REJECTED:
                result = await handle.result()
                assert result.rejection_gate == "symbol_open", result
            return view.status
        await asyncio.sleep(0.1)


async def test_long_lived_position_continues_as_new_and_keeps_its_state(stack: Stack) -> None:
    stack.exchange.set_price("BTCUSDT", "60000")
    busy = PositionOptions(mark_check_seconds=0.05, max_history_events=100)
    async with stack.workers():
        handle = await start_position(
            stack,
            TradeIntent(
                symbol="BTCUSDT",
                side=Side.LONG,
                notional_usdt=D(150),
                exits=ExitOverrides(take_profit_pct=D(5)),
            ),
            options=busy,
        )
        first = await wait_status(handle, PositionStatus.OPEN)
        first_run = (await handle.describe()).run_id

        async def continued() -> bool:
            return (await stack.client.get_workflow_handle(handle.id).describe()).run_id != first_run

        async with asyncio.timeout(30):
            while not await continued():
                await asyncio.sleep(0.2)
        latest = stack.client.get_workflow_handle(handle.id, result_type=PositionResult)
        view = await latest.query("state", result_type=PositionView)
        assert (view.open_qty, view.entry_price, view.take_profit_price) == (
            first.open_qty,
            first.entry_price,
            first.take_profit_price,
        )
        stack.exchange.set_price("BTCUSDT", "63100")  # through the take-profit
        result = await asyncio.wait_for(latest.result(), 20)
    assert result.exit_reason == "take_profit_1"
    assert [f.side for f in result.fills] == ["BUY", "SELL"]
    assert cents(result.gross_pnl) == cents((D("63100") - D("60000")) * D("0.002"))
    assert len(stack.exchange.admin("GET", "orders?symbol=BTCUSDT")) == 2


async def test_cancelled_position_is_flattened_and_released(stack: Stack) -> None:
    stack.exchange.set_price("BTCUSDT", "60000")
    async with stack.workers():
        handle = await start_position(
            stack, TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150))
        )
        await wait_status(handle, PositionStatus.OPEN)
        await handle.cancel()
        try:
            await asyncio.wait_for(handle.result(), 15)
            raise AssertionError("a cancelled position completed normally")
        except WorkflowFailureError as err:
            assert isinstance(err.cause, CancelledError)
        portfolio = await stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID).query(
            "state", result_type=PortfolioView
        )
    assert portfolio.slots_used == 0
    orders = stack.exchange.admin("GET", "orders?symbol=BTCUSDT")
    assert [(o["side"], o["reduceOnly"]) for o in orders] == [("BUY", False), ("SELL", True)]
