"""Outage drills: the Temporal server stopped and restarted (its SQLite file kept) while positions are
open → every workflow resumes and closes; Redis stopped for 30 s while positions open, close and are
refused → no decision lost, and the projections catch up once it is back."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest

from tests.workflows.conftest import Stack
from tests.workflows.drills import venue_positions
from tests.workflows.test_exits import until
from tests.workflows.test_portfolio import portfolio_view
from tests.workflows.test_position_lifecycle import start_position
from trading.intents import Side, TradeIntent
from workers.devservers import start_redis_on, start_temporal
from workflows.messages import ClosePositionRequest, PositionOptions, PositionResult, PositionStatus

D = Decimal
QUIET = PositionOptions(mark_check_seconds=600)
PRICES = {"BTCUSDT": "60000", "ETHUSDT": "3000", "SOLUSDT": "150", "BNBUSDT": "600"}


@pytest.mark.parametrize("stack", [{"temporal_db": True}], indirect=True)
async def test_temporal_restart_with_open_positions_resumes_every_workflow(stack: Stack) -> None:
    for sym, px in PRICES.items():
        stack.exchange.set_price(sym, px)
    async with stack.workers():
        handles = [
            await start_position(
                stack, TradeIntent(symbol=sym, side=Side.LONG, notional_usdt=D(150)), options=QUIET
            )
            for sym in PRICES
        ]
        for h in handles:
            await until(h, lambda v: v.status == PositionStatus.OPEN)

        address = stack.settings.temporal_address
        stack.temporal.stop()  # the server goes away with four positions open
        await asyncio.sleep(3.0)
        stack.temporal, again = start_temporal(
            stack.tmp, *stack.temporal_extra, port=int(address.rsplit(":", 1)[1])
        )
        assert again == address

        async def close(h) -> PositionResult:  # the client reconnects on its own; retry until it has
            async with asyncio.timeout(60):
                while True:
                    try:
                        await h.execute_update("close", ClosePositionRequest(reason="operator"))
                        return await h.result()
                    except Exception:
                        await asyncio.sleep(0.5)

        results = await asyncio.gather(*(close(h) for h in handles))
        view = await portfolio_view(stack)
    assert [r.status for r in results] == [PositionStatus.CLOSED] * len(PRICES)
    for sym in PRICES:
        orders = stack.exchange.admin("GET", f"orders?symbol={sym}")
        assert [o["side"] for o in orders] == ["BUY", "SELL"], sym
    assert await venue_positions(stack) == {}
    assert view.slots_used == 0


async def test_redis_down_30s_loses_no_decision_and_projections_catch_up(stack: Stack) -> None:
    for sym, px in PRICES.items():
        stack.exchange.set_price(sym, px)
    async with stack.workers():
        before = await start_position(
            stack, TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150)), options=QUIET
        )
        await until(before, lambda v: v.status == PositionStatus.OPEN)

        port = stack.settings.redis_port
        stack.redis_proc.stop()
        down_at = time.monotonic()
        # While Redis is down: one position closes, two open, one is refused (its symbol is taken).
        await before.execute_update("close", ClosePositionRequest(reason="operator"))
        opened = [
            await start_position(
                stack, TradeIntent(symbol=sym, side=Side.SHORT, notional_usdt=D(150)), options=QUIET
            )
            for sym in ("ETHUSDT", "SOLUSDT")
        ]
        for h in opened:
            await until(h, lambda v: v.status == PositionStatus.OPEN)
        refused = await start_position(
            stack, TradeIntent(symbol="ETHUSDT", side=Side.LONG, notional_usdt=D(150)), options=QUIET
        )
        refused_view = await until(refused, lambda v: v.status == PositionStatus.REJECTED)
        await until(before, lambda v: v.status == PositionStatus.CLOSED)
        view = await portfolio_view(stack)
        await asyncio.sleep(max(0.0, 30 - (time.monotonic() - down_at)))

        stack.redis_proc = start_redis_on(stack.tmp, port)  # back after 30 s
        try:
            async with asyncio.timeout(45):  # the projection activities retry until they land
                while not await _caught_up(stack, before.id, [h.id for h in opened]):
                    await asyncio.sleep(0.5)
        except TimeoutError:
            raise AssertionError(await _read_model(stack)) from None
        # A workflow finishes only once its projections have landed: now they have.
        closed_result: PositionResult = await asyncio.wait_for(before.result(), 15)
        refused_result: PositionResult = await asyncio.wait_for(refused.result(), 15)
        for h in opened:
            await h.execute_update("close", ClosePositionRequest(reason="operator"))
            await asyncio.wait_for(h.result(), 15)

    assert closed_result.status == PositionStatus.CLOSED
    assert refused_result.status == PositionStatus.REJECTED and refused_result.rejection_gate == "symbol_open"
    assert refused_view.reason and "open" in refused_view.reason
    assert view.slots_used == 2  # the decisions were made and kept without Redis


async def _caught_up(stack: Stack, closed_id: str, open_ids: list[str]) -> bool:
    closed = await stack.redis.xrange("quantum:stream:trade.closed")
    if [e[b"workflow_id"].decode() for _, e in closed] != [closed_id]:
        return False
    for sym, wf in zip(("ETHUSDT", "SOLUSDT"), open_ids, strict=True):
        snap = await stack.redis.hgetall(f"quantum:position:snapshot:{sym}")
        if snap.get(b"workflow_id", b"").decode() != wf or snap.get(b"status") != b"OPEN":
            return False
    state = await stack.redis.hgetall("quantum:portfolio:state")
    return state.get(b"slots_used") == b"2"


async def _read_model(stack: Stack) -> dict:
    return {
        "trade.closed": await stack.redis.xrange("quantum:stream:trade.closed"),
        **{
            sym: await stack.redis.hgetall(f"quantum:position:snapshot:{sym}")
            for sym in ("BTCUSDT", "ETHUSDT", "SOLUSDT")
        },
        "portfolio": await stack.redis.hgetall("quantum:portfolio:state"),
    }
