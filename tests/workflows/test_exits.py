"""The exit engine live: the paper exchange publishes ticks, the price watcher turns crossings into
signals, and the position workflow acts, one decision at a time."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from decimal import Decimal

import pytest

from tests.workflows.conftest import Stack
from tests.workflows.test_position_lifecycle import start_position
from trading.intents import ExitOverrides, Side, TradeIntent
from trading.pnl import cents
from workers.processes import ManagedProcess
from workflows.messages import PositionOptions, PositionResult, PositionStatus, PositionView

D = Decimal
WATCHER_ONLY = PositionOptions(mark_check_seconds=600)  # no timer: every reaction comes from the watcher
ROOM = {"gov_max_notional_per_trade_usdt": D(300)}


async def start_watcher(stack: Stack) -> ManagedProcess:
    return stack.start_worker_process("watcher")


async def watched(stack: Stack, workflow_id: str, timeout: float = 15) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            raw = await stack.redis.hget("quantum:exit:levels", workflow_id)
            if raw:
                return json.loads(raw)
            await asyncio.sleep(0.05)


async def until(handle, check, timeout: float = 15) -> PositionView:
    async with asyncio.timeout(timeout):
        while True:
            view = await handle.query("state", result_type=PositionView)
            if check(view):
                return view
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("stack", [ROOM], indirect=True)
async def test_scripted_path_harvest_be_tp1_ratchet_tp2_trailing(stack: Stack) -> None:
    stack.exchange.set_price("BTCUSDT", "60000")
    intent = TradeIntent(
        symbol="BTCUSDT",
        side=Side.LONG,
        quantity=D("0.004"),
        leverage=2,
        exits=ExitOverrides(profile={"trailing_pct": 3}),
    )
    await start_watcher(stack)
    async with stack.workers():
        handle = await start_position(stack, intent, options=WATCHER_ONLY)
        levels = await watched(stack, handle.id)
        assert (D(levels["above"]), D(levels["below"])) == (D(60600), D(58800))  # trailing arms; the stop

        stack.exchange.set_price("BTCUSDT", "60650")  # 0.5 R: harvest 25 %, stop to break-even
        v = await until(handle, lambda v: v.open_qty == D("0.003"))
        await until(handle, lambda v: v.stop_kind == "breakeven_stop" and v.hard_stop_price == D("59400.0"))
        stack.exchange.set_price("BTCUSDT", "61200")  # TP1
        await until(handle, lambda v: v.open_qty == D("0.002"))
        stack.exchange.set_price("BTCUSDT", "62400")  # TP2, ratchet to TP1
        v = await until(handle, lambda v: v.open_qty == D("0.001") and v.stop_kind == "ratchet_stop")
        assert v.stop_loss_price == D("61200.0")
        await until(handle, lambda v: v.hard_stop_price == D("60588.0"))
        stack.exchange.set_price("BTCUSDT", "63500")  # a new best: the trailing stop moves up
        v = await until(handle, lambda v: v.stop_kind == "trailing_stop")
        assert v.stop_loss_price == D("61595.0")
        stack.exchange.set_price("BTCUSDT", "61500")  # back through the trailing stop
        result: PositionResult = await asyncio.wait_for(handle.result(), 15)

    assert result.exit_reason == "trailing_stop" and result.exit_controller == "trailing"
    assert [(f.side, f.price, f.qty) for f in result.fills] == [
        ("BUY", D(60000), D("0.004")),
        ("SELL", D(60650), D("0.001")),
        ("SELL", D(61200), D("0.001")),
        ("SELL", D(62400), D("0.001")),
        ("SELL", D(61500), D("0.001")),
    ]
    gross = (D(650) + D(1200) + D(2400) + D(1500)) * D("0.001")  # 5.75
    fees = (D(240) + D("60.65") + D("61.2") + D("62.4") + D("61.5")) * D("0.0004")  # 0.1943
    assert cents(result.gross_pnl) == cents(gross) and cents(result.fees) == cents(fees)
    assert cents(result.realized_pnl) == D("5.56")
    orders = stack.exchange.admin("GET", "orders?symbol=BTCUSDT")
    assert [(o["side"], o["reduceOnly"], o["origQty"]) for o in orders] == [("BUY", False, "0.004")] + [
        ("SELL", True, "0.001")
    ] * 4
    algos = stack.exchange.admin("GET", "algo-orders?symbol=BTCUSDT")
    assert [D(a["triggerPrice"]) for a in algos] == [D(58200), D(59400), D(60588)]  # cancel-and-replace
    assert all(a["algoStatus"] in ("CANCELED", "EXPIRED") for a in algos)
    assert await stack.redis.hget("quantum:exit:levels", handle.id) is None  # the watcher forgets it


async def test_gap_through_internal_and_hard_stop_closes_once(stack: Stack) -> None:
    stack.exchange.set_price("BTCUSDT", "60000")
    await start_watcher(stack)
    async with stack.workers():
        handle = await start_position(
            stack, TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150)), options=WATCHER_ONLY
        )
        await watched(stack, handle.id)
        stack.exchange.set_price("BTCUSDT", "57000")  # through the 2 % stop and the 3 % hard stop at once
        result: PositionResult = await asyncio.wait_for(handle.result(), 15)
    orders = stack.exchange.admin("GET", "orders?symbol=BTCUSDT")
    filled_exits = [o for o in orders if o["side"] == "SELL" and o["status"] == "FILLED"]
    assert len(filled_exits) == 1, orders  # exactly one of the two stops closed it
    assert sum(f.qty for f in result.fills if f.side == "SELL") == D("0.002")
    assert result.exit_reason in ("hard_stop", "stop_loss")
    async with asyncio.timeout(5):
        while True:  # the venue is flat and nothing is left working there
            algos = stack.exchange.admin("GET", "algo-orders?symbol=BTCUSDT")
            if all(a["algoStatus"] not in ("NEW", "TRIGGERING") for a in algos):
                break
            await asyncio.sleep(0.1)


async def test_watcher_down_for_30s_the_timer_closes_and_restart_adds_nothing(stack: Stack) -> None:
    stack.exchange.set_price("ETHUSDT", "3000")
    watcher = await start_watcher(stack)
    async with stack.workers():
        handle = await start_position(
            stack,
            TradeIntent(symbol="ETHUSDT", side=Side.LONG, notional_usdt=D(150)),
            options=PositionOptions(mark_check_seconds=10),
        )
        await watched(stack, handle.id)
        os.kill(watcher.pid, signal.SIGKILL)
        watcher.popen.wait(5)  # type: ignore[union-attr]
        down_at = time.monotonic()
        stack.exchange.set_price("ETHUSDT", "2930")  # through the 2 % stop while nobody watches
        result: PositionResult = await asyncio.wait_for(handle.result(), 25)
        assert result.exit_reason == "stop_loss"
        await asyncio.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
        await start_watcher(stack)
        stack.exchange.set_price("ETHUSDT", "2900")
        await asyncio.sleep(3)
    orders = stack.exchange.admin("GET", "orders?symbol=ETHUSDT")
    assert [(o["side"], o["reduceOnly"]) for o in orders] == [("BUY", False), ("SELL", True)]


SYMS = [f"T{i:03d}USDT" for i in range(1, 11)]


def _says(err: BaseException, phrases: tuple[str, ...]) -> bool:
    text = f"{err} {getattr(err, 'cause', '')} {getattr(err, 'message', '')}"
    return any(p in text for p in phrases)


@pytest.mark.parametrize("stack", [{**ROOM, "exchange_args": ["--extra-symbols", "10"]}], indirect=True)
async def test_thousand_simultaneous_triggers_never_overfill(stack: Stack) -> None:
    """The seed's double close: harvest, take-profit, trailing and manual closes fire at once, 1,000
    times over 10 positions. Every close is reduce-only, nothing over-closes, nothing reverses."""
    for sym in SYMS:
        stack.exchange.set_price(sym, "100")
    async with stack.workers():
        handles = [
            await start_position(
                stack, TradeIntent(symbol=sym, side=Side.LONG, notional_usdt=D(200)), options=WATCHER_ONLY
            )
            for sym in SYMS
        ]
        for h in handles:
            await until(h, lambda v: v.status == PositionStatus.OPEN)
        for sym in SYMS:
            stack.exchange.set_price(sym, "107")  # past harvest, TP1, TP2, TP3 and the trailing arm at once

        async def burst(h, sym: str) -> int:
            triggers = [
                h.signal("price_crossed", {"symbol": sym, "price": str(D(101) + D(i) / 10)})
                for i in range(91)
            ]
            triggers += [
                h.execute_update("close", {"quantity": "0.5", "reason": f"manual {i}"}) for i in range(9)
            ]
            results = await asyncio.gather(*triggers, return_exceptions=True)
            # Every trigger got a definite answer: done, a no-op, or refused because the position was
            # already closed (by the others) — never an error.
            definite = ("not open", "exceeds", "completed")  # refused, a no-op, or the position is gone
            for r in results:
                if isinstance(r, Exception) and not _says(r, definite):
                    print("UNEXPECTED", type(r).__name__, repr(r), repr(getattr(r, "cause", None)))
            return sum(1 for r in results if not isinstance(r, Exception) or _says(r, definite))

        delivered = await asyncio.gather(*(burst(h, s) for h, s in zip(handles, SYMS, strict=True)))
        assert sum(delivered) == 1000
        for h in handles:  # whatever is left open is closed; every workflow ends cleanly
            view = await h.query("state", result_type=PositionView)
            if view.status == PositionStatus.OPEN:
                await h.execute_update("close", {})
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 60)
    orders = stack.exchange.admin("GET", "orders")
    for sym, result in zip(SYMS, results, strict=True):
        mine = [o for o in orders if o["symbol"] == sym]
        entries = [o for o in mine if not o["reduceOnly"]]
        exits = [o for o in mine if o["reduceOnly"]]
        assert len(entries) == 1 and entries[0]["side"] == "BUY"
        assert all(o["side"] == "SELL" for o in exits), "an exit order that is not reduce-only"
        closed = sum(D(o["executedQty"]) for o in exits)
        assert closed == D(entries[0]["executedQty"]), (
            f"{sym}: closed {closed} of {entries[0]['executedQty']}"
        )
        assert result.status == PositionStatus.CLOSED
        assert sum(f.qty for f in result.fills if f.side == "SELL") == D(entries[0]["executedQty"])


async def test_refused_hard_stop_does_not_leave_the_position_unprotected(stack: Stack) -> None:
    """The price falls past the hard stop while the entry order is in flight: the venue refuses the
    stop (-2021 "would immediately trigger"), and the position is closed at once by its internal stop."""
    stack.exchange.set_price("BTCUSDT", "60000")
    # The entry fills at once, but its answer comes back only after 5 s (the next order is normal).
    stack.exchange.set_faults(
        lost_answer_rate=1.0, lost_answer_mode="timeout", hang_s=5.0, paths=["/fapi/v1/order"], count=1
    )
    async with stack.workers():
        handle = await start_position(
            stack,
            TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150)),
            options=PositionOptions(mark_check_seconds=0.3),
        )
        # The entry order is at the venue, its answer not yet back (a fixed sleep raced the entry on a
        # loaded machine: a price moved before the entry filled made no stop-out at all).
        async with asyncio.timeout(60):
            while not stack.exchange.admin("GET", "orders?symbol=BTCUSDT"):
                await asyncio.sleep(0.05)
        stack.exchange.set_price("BTCUSDT", "57500")  # past the 3 % hard stop (58200)
        result: PositionResult = await asyncio.wait_for(handle.result(), 90)
    assert result.exit_reason == "stop_loss"
    algos = stack.exchange.admin("GET", "algo-orders?symbol=BTCUSDT")
    assert algos == []  # refused: the venue never held it
    orders = stack.exchange.admin("GET", "orders?symbol=BTCUSDT")
    assert [(o["side"], o["reduceOnly"], o["status"]) for o in orders] == [
        ("BUY", False, "FILLED"),
        ("SELL", True, "FILLED"),
    ]
