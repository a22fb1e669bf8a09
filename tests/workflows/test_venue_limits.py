"""The venue's rate limits seen from the lifecycle: a 418 ban halts new entries (nothing sent, slot
given back) while an exit waits for the ban's end and then closes; a 429 storm on order placement
delays orders without a ban or a duplicate."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

from tests.workflows.conftest import Stack
from tests.workflows.test_exits import until
from tests.workflows.test_portfolio import portfolio_view
from tests.workflows.test_position_lifecycle import start_position
from trading.intents import Side, TradeIntent
from workflows.messages import ClosePositionRequest, PositionOptions, PositionResult, PositionStatus

D = Decimal
QUIET = PositionOptions(mark_check_seconds=600)  # no mark polling: the only requests are the test's
BAN_S = 5


def _orders(stack: Stack, symbol: str) -> list[dict]:
    return stack.exchange.admin("GET", f"orders?symbol={symbol}")


async def test_ban_halts_entries_while_an_exit_waits_its_turn(stack: Stack) -> None:
    stack.exchange.set_price("BTCUSDT", "60000")
    stack.exchange.set_price("ETHUSDT", "3000")
    stack.exchange.set_price("SOLUSDT", "150")
    async with stack.workers():
        held = await start_position(
            stack, TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150)), options=QUIET
        )
        await until(held, lambda v: v.status == PositionStatus.OPEN)

        # The next request to the venue draws a ban: it is the ETH entry's first one.
        stack.exchange.set_faults(http_418_rate=1.0, retry_after_s=BAN_S, count=1)
        banned_at = time.monotonic()
        first = await start_position(
            stack, TradeIntent(symbol="ETHUSDT", side=Side.LONG, notional_usdt=D(150)), options=QUIET
        )
        halted: PositionResult = await asyncio.wait_for(first.result(), 10)
        # The exit asked for during the ban: it keeps its place and goes when the ban ends.
        close = asyncio.create_task(held.execute_update("close", ClosePositionRequest(reason="operator")))
        second = await start_position(
            stack, TradeIntent(symbol="SOLUSDT", side=Side.SHORT, notional_usdt=D(150)), options=QUIET
        )
        # Both entries were decided inside the ban: each was refused for it (asserted below), never
        # sent (no ETH or SOL order on the venue). No wall-clock bound: a loaded machine is slower.
        refused: PositionResult = await asyncio.wait_for(second.result(), 10)
        closed: PositionResult = await asyncio.wait_for(held.result(), 30)
        closed_after = time.monotonic() - banned_at
        await close
        view = await portfolio_view(stack)

    for result in (halted, refused):
        assert result.status == PositionStatus.REJECTED
        assert result.rejection_gate == "venue_halt"
        assert "banned" in (result.rejection_reason or "")
    assert _orders(stack, "ETHUSDT") == [] and _orders(stack, "SOLUSDT") == []
    assert closed.status == PositionStatus.CLOSED and closed.exit_reason == "operator"
    assert closed_after >= BAN_S - 0.5, f"the exit went out {closed_after:.1f} s after the ban began"
    btc = _orders(stack, "BTCUSDT")
    assert [(o["side"], o["status"]) for o in btc] == [("BUY", "FILLED"), ("SELL", "FILLED")]
    assert view.slots_used == 0  # the halted entries gave their slots back


async def test_429_storm_on_orders_delays_without_ban_or_duplicate(stack: Stack) -> None:
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]
    prices = {"BTCUSDT": "60000", "ETHUSDT": "3000", "SOLUSDT": "150", "BNBUSDT": "600", "XRPUSDT": "0.6"}
    for sym in symbols:
        stack.exchange.set_price(sym, prices[sym])
    stack.exchange.set_faults(http_429_rate=0.5, retry_after_s=1, seed=7, paths=["/fapi/v1/order"])
    async with stack.workers():
        handles = [
            await start_position(
                stack, TradeIntent(symbol=s, side=Side.LONG, notional_usdt=D(150)), options=QUIET
            )
            for s in symbols
        ]
        for h in handles:
            await until(h, lambda v: v.status == PositionStatus.OPEN, timeout=40)
        await asyncio.gather(
            *(h.execute_update("close", ClosePositionRequest(reason="operator")) for h in handles)
        )
        results = await asyncio.gather(*(asyncio.wait_for(h.result(), 40) for h in handles))
    assert all(r.status == PositionStatus.CLOSED for r in results)
    for sym in symbols:
        assert [o["side"] for o in _orders(stack, sym)] == ["BUY", "SELL"], sym  # one entry, one exit
    assert stack.exchange.metric("paper_exchange_requests_total", status="429") > 0  # the storm happened
    assert stack.exchange.metric("paper_exchange_requests_total", status="418") == 0  # never a ban
