"""Redis is a read model, never in the way: the seed's keys and streams are written, and a Redis
outage in the middle of a trade stops nothing (the projection catches up when Redis is back)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from tests.workflows.conftest import Stack
from tests.workflows.test_position_lifecycle import start_position, wait_status
from trading.intents import Side, TradeIntent
from workers.devservers import start_redis_on
from workflows.messages import DEFAULT_PORTFOLIO_ID, CloseResult, PortfolioView, PositionStatus

D = Decimal


async def test_projection_writes_the_seed_keys(stack: Stack) -> None:
    stack.exchange.set_price("BTCUSDT", "60000")
    async with stack.workers():
        handle = await start_position(
            stack, TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150))
        )
        await wait_status(handle, PositionStatus.OPEN)
        await handle.execute_update("close", {})
        await asyncio.wait_for(handle.result(), 15)
    snapshot = await stack.redis.hgetall("quantum:position:snapshot:BTCUSDT")
    assert snapshot[b"status"] == b"CLOSED" and snapshot[b"workflow_id"] == handle.id.encode()
    applied = await stack.redis.xrange("quantum:stream:apply.result")
    assert [e[b"action"] for _, e in applied] == [b"entry", b"exit"]
    closed = await stack.redis.xrange("quantum:stream:trade.closed")
    assert len(closed) == 1 and closed[0][1][b"workflow_id"] == handle.id.encode()
    ledger = await stack.redis.hgetall("quantum:ledger:BTCUSDT")
    assert ledger[b"trades"] == b"1"


async def test_redis_outage_does_not_stop_a_trade(stack: Stack) -> None:
    stack.exchange.set_price("ETHUSDT", "3000")
    async with stack.workers():
        port = stack.settings.redis_port
        stack.redis_proc.stop()  # Redis is down for the whole trade
        handle = await start_position(
            stack, TradeIntent(symbol="ETHUSDT", side=Side.SHORT, notional_usdt=D(90))
        )
        await wait_status(handle, PositionStatus.OPEN)
        closed = await handle.execute_update("close", {}, result_type=CloseResult)
        assert closed.remaining_qty == 0
        await wait_status(handle, PositionStatus.CLOSED)
        portfolio = await stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID).query(
            "state", result_type=PortfolioView
        )
        assert portfolio.slots_used == 0  # released without Redis
        orders = stack.exchange.admin("GET", "orders?symbol=ETHUSDT")
        assert [o["status"] for o in orders] == ["FILLED", "FILLED"]

        stack.redis_proc = start_redis_on(stack.tmp, port)  # back: the projections catch up
        await asyncio.wait_for(handle.result(), 40)
    closed_events = await stack.redis.xrange("quantum:stream:trade.closed")
    assert [e[b"workflow_id"] for _, e in closed_events] == [handle.id.encode()]
    assert len(await stack.redis.xrange("quantum:stream:apply.result")) == 2


async def test_portfolio_state_is_projected(stack: Stack) -> None:
    stack.exchange.set_price("BTCUSDT", "60000")
    async with stack.workers():
        handle = await start_position(
            stack, TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150))
        )
        await wait_status(handle, PositionStatus.OPEN)

        async def projected(slots: int, notional: str) -> bool:
            state = await stack.redis.hgetall("quantum:portfolio:state")
            return (int(state.get(b"slots_used", -1)), D(state.get(b"notional_used", b"-1").decode())) == (
                slots,
                D(notional),
            )

        # Granted 150 USDT, filled 0.002 BTC = 120 USDT: the reservation shrinks to the fill.
        async with asyncio.timeout(10):
            while not await projected(1, "120"):
                await asyncio.sleep(0.2)
        assert (await stack.redis.hget("quantum:portfolio:state", "kill_switch")) == b"false"
        await handle.execute_update("close", {})
        await asyncio.wait_for(handle.result(), 15)
        try:
            async with asyncio.timeout(10):
                while not await projected(0, "0"):
                    await asyncio.sleep(0.2)
        except TimeoutError:
            raise AssertionError(await stack.redis.hgetall("quantum:portfolio:state")) from None
