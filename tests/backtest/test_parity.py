"""Parity: one scripted price path through the live paper stack (position workflow, price watcher,
paper exchange, real processes) and through the backtester gives the same orders, quantities, prices
and PnL to the cent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal

import numpy as np
import pytest

from backtest.config import BacktestConfig, Costs
from backtest.engine import SignalSet, run_backtest
from signals.data import AlignedKlines
from tests.workflows.conftest import Stack
from tests.workflows.test_exits import WATCHER_ONLY, start_watcher, until, watched
from tests.workflows.test_position_lifecycle import start_position
from trading.intents import ExitOverrides, Side, TradeIntent
from trading.pnl import cents
from workflows.messages import PositionResult, PositionView

D = Decimal
T0 = 1_704_078_000_000  # 2024-01-01 03:00 UTC: the short path stays clear of any funding time
ROOM = {"gov_max_notional_per_trade_usdt": D(300)}
Check = Callable[[PositionView], bool] | None  # what the live position shows once it has reacted


def flat_bars(symbol: str, prices: list[str]) -> AlignedKlines:
    """One 1 m bar per scripted price, open = high = low = close (a tick is a bar with no range)."""
    p = np.array([float(x) for x in prices])[None]
    times = T0 + 60_000 * np.arange(p.shape[1], dtype=np.int64)
    return AlignedKlines((symbol,), "1m", times, p, p, p, p, np.ones_like(p))


async def live(
    stack: Stack, intent: TradeIntent, start: str, steps: list[tuple[str, Check]]
) -> PositionResult:
    stack.exchange.set_price(intent.symbol, start)
    await start_watcher(stack)
    async with stack.workers():
        handle = await start_position(stack, intent, options=WATCHER_ONLY)
        await watched(stack, handle.id)
        for price, check in steps:
            stack.exchange.set_price(intent.symbol, price)
            if check is not None:
                await until(handle, check)
            else:
                await asyncio.sleep(1.0)  # between the levels: nothing may happen (the backtest agrees)
        return await asyncio.wait_for(handle.result(), 15)


def backtest(intent: TradeIntent, start: str, steps: list[tuple[str, Check]]):
    bars = flat_bars(intent.symbol, [start, start, *(p for p, _ in steps)])
    sig = np.zeros((1, bars.n_bars), dtype=np.int8)
    sig[0, 0] = intent.side.sign  # decided at the first bar's close: the entry at the second's open
    cfg = BacktestConfig(
        symbols=(intent.symbol,),
        timeframe="1m",
        notional_usdt=intent.notional_usdt,
        leverage=intent.leverage,
        exits=intent.exits,
        policy={"allowlist": ("*",), "max_notional_per_trade_usdt": ROOM["gov_max_notional_per_trade_usdt"]},
        costs=Costs(slippage_bps=D(0)),  # the paper venue's own setting
    )
    (trade,) = run_backtest(cfg, bars, SignalSet(sig)).trades
    return trade


def assert_same(result: PositionResult, trade, orders: list[dict]) -> None:
    assert [(f.side, f.price, f.qty) for f in trade.fills] == [(f.side, f.price, f.qty) for f in result.fills]
    assert [cents(f.fee) for f in trade.fills] == [cents(f.fee) for f in result.fills]
    venue = [(o["side"], D(o["origQty"]), D(o["avgPrice"])) for o in orders if o["status"] == "FILLED"]
    assert venue == [(f.side, f.qty, f.price) for f in trade.fills]
    assert (trade.entry_price, trade.exit_price, trade.qty) == (
        result.entry_price,
        result.exit_price,
        result.quantity,
    )
    assert cents(trade.gross_pnl) == cents(result.gross_pnl)
    assert cents(trade.fees) == cents(result.fees)
    assert cents(trade.realized_pnl) == cents(result.realized_pnl)
    assert (trade.exit_reason, trade.exit_controller) == (result.exit_reason, result.exit_controller)
    assert trade.funding == 0


LONG_PATH: list[tuple[str, Check]] = [
    ("60650", lambda v: v.open_qty == D("0.003") and v.stop_kind == "breakeven_stop"),  # harvest 0.5 R
    ("60300", None),  # between the levels
    ("61200", lambda v: v.open_qty == D("0.002")),  # TP1
    ("62400", lambda v: v.open_qty == D("0.001") and v.stop_kind == "ratchet_stop"),  # TP2, ratchet
    ("63500", lambda v: v.stop_kind == "trailing_stop"),  # a new best moves the trailing stop
    ("61500", None),  # back through it: closed
]


@pytest.mark.parametrize("stack", [ROOM], indirect=True)
async def test_long_harvest_ladder_trailing_parity(stack: Stack) -> None:
    intent = TradeIntent(
        symbol="BTCUSDT",
        side=Side.LONG,
        notional_usdt=D(240),
        leverage=2,
        exits=ExitOverrides(profile={"trailing_pct": 3}),
    )
    result = await live(stack, intent, "60000", LONG_PATH)
    trade = backtest(intent, "60000", LONG_PATH)
    assert_same(result, trade, stack.exchange.admin("GET", "orders?symbol=BTCUSDT"))
    assert len(trade.fills) == 5 and cents(trade.realized_pnl) == D("5.56")  # the hand-checked figure


SHORT_PATH: list[tuple[str, Check]] = [
    ("2960", lambda v: v.open_qty == D("0.038") and v.stop_kind == "breakeven_stop"),  # harvest 0.5 R
    ("2990", None),
    ("3010", None),  # through the break-even stop
]


@pytest.mark.parametrize("stack", [ROOM], indirect=True)
async def test_short_harvest_breakeven_parity(stack: Stack) -> None:
    intent = TradeIntent(symbol="ETHUSDT", side=Side.SHORT, notional_usdt=D(150), leverage=5)
    result = await live(stack, intent, "3000", SHORT_PATH)
    trade = backtest(intent, "3000", SHORT_PATH)
    assert_same(result, trade, stack.exchange.admin("GET", "orders?symbol=ETHUSDT"))
    assert [(f.side, f.price) for f in trade.fills] == [("SELL", D(3000)), ("BUY", D(2960)), ("BUY", D(3010))]
    assert trade.exit_reason == "breakeven_stop"
