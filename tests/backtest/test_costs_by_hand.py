"""Fees, slippage, funding, the hard stop and the isolated liquidation on short scripted paths, checked
against numbers computed by hand (in the comments) to the cent."""

from __future__ import annotations

from decimal import Decimal

import numpy as np

from backtest.config import BacktestConfig, Costs
from backtest.engine import SignalSet, run_backtest
from signals.data import AlignedKlines
from trading.intents import ExitOverrides
from trading.pnl import cents

D = Decimal
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC: a funding time (every 8 h from midnight)
HOUR = 3_600_000


def path(bars: list[tuple[float, float, float, float]]) -> AlignedKlines:
    """1 h BTCUSDT bars (open, high, low, close); the first nine are flat at 60000 unless given."""
    a = np.array(bars, dtype=np.float64).T
    n = a.shape[1]
    return AlignedKlines(
        symbols=("BTCUSDT",),
        timeframe="1h",
        open_time_ms=T0 + HOUR * np.arange(n, dtype=np.int64),
        open=a[0][None],
        high=a[1][None],
        low=a[2][None],
        close=a[3][None],
        volume=np.ones((1, n)),
    )


FLAT = [(60000.0, 60000.0, 60000.0, 60000.0)] * 9  # bars 0..8; bar 8 opens at 08:00, a funding time


def once(side: int, n: int) -> SignalSet:
    sig = np.zeros((1, n), dtype=np.int8)
    sig[0, 0] = side  # decided at bar 0's close: enter at bar 1's open
    return SignalSet(sig)


def test_long_liquidated_after_funding_on_a_gap() -> None:
    bars = path([*FLAT, (59000.0, 59000.0, 59000.0, 59000.0), (59000.0,) * 4])
    cfg = BacktestConfig(symbols=("BTCUSDT",), leverage=50, costs=Costs(slippage_bps=D(0)))
    (t,) = run_backtest(cfg, bars, once(1, 11)).trades
    # entry: 200 USDT at 60000 → 0.003 BTC; fee 0.003·60000·0.0004 = 0.072; isolated margin 180/50 = 3.6
    # funding at 08:00: the long pays 0.003·60000·0.0001 = 0.018 → margin 3.582
    # liquidation price (180 − 3.582) / (0.003·(1 − 0.004)) = 59042.168… → 59042.2 on the tick
    # the 09:00 bar opens at 59000 (past it, not past the 3 % hard stop 58200): liquidated at 59042.2
    # gross (59042.2 − 60000)·0.003 = −2.8734; liquidation fee 0.003·59042.2·0.0125 = 2.214 capped at
    # the margin left 3.582 − 2.8734 = 0.7086; total −2.8734 − 0.072 − 0.7086 − 0.018 = −3.672
    assert (t.exit_reason, t.exit_controller) == ("liquidation", "exchange")
    assert [(f.side, f.price, f.qty) for f in t.fills] == [
        ("BUY", D(60000), D("0.003")),
        ("SELL", D("59042.2"), D("0.003")),
    ]
    assert t.fills[0].fee == D("0.072") and t.fills[1].fee == D("0.7086")
    assert t.funding == D("-0.018") and t.gross_pnl == D("-2.8734")
    assert cents(t.pnl) == D("-3.67")
    assert t.pnl == -(D("3.6") + D("0.072"))  # the whole margin and the entry fee, nothing more


def test_short_take_profit_with_slippage_and_funding_received() -> None:
    bars = path([*FLAT, (60000.0, 60000.0, 58000.0, 58500.0), (58500.0,) * 4])
    cfg = BacktestConfig(
        symbols=("BTCUSDT",),
        exits=ExitOverrides(
            take_profit_pct=D(2), profile={"trailing_enabled": False, "harvest_enabled": False}
        ),
        costs=Costs(slippage_bps=D(2)),
    )
    result = run_backtest(cfg, bars, once(-1, 11))
    (t,) = result.trades
    # entry: SELL 0.003 at 60000·(1 − 0.0002) = 59988.0; fee 0.003·59988·0.0004 = 0.0719856
    # funding at 08:00: the short receives 0.003·60000·0.0001 = 0.018
    # target 2 %: 59988·0.98 = 58788.24 → 58788.2; the 09:00 bar's low 58000 crosses it; BUY at
    # 58788.2·1.0002 = 58799.96 → 58800.0; fee 0.003·58800·0.0004 = 0.07056
    # gross (59988 − 58800)·0.003 = 3.564; net 3.564 − 0.0719856 − 0.07056 + 0.018 = 3.4394544
    assert (t.exit_reason, t.exit_controller) == ("take_profit_1", "tp_ladder")
    assert [(f.side, f.price) for f in t.fills] == [("SELL", D("59988.0")), ("BUY", D("58800.0"))]
    assert t.fees == D("0.0719856") + D("0.07056") and t.funding == D("0.018")
    assert t.pnl == D("3.4394544") and cents(t.pnl) == D("3.44")
    assert result.equity[-1] == float(D(10_000) + t.pnl)  # the curve ends where the ledger does
    assert t.exit_bar == 9 and t.entry_bar == 1


def test_gap_through_the_hard_stop_fills_at_the_open() -> None:
    bars = path([*FLAT[:3], (58000.0, 58100.0, 57900.0, 58000.0), (58000.0,) * 4])
    cfg = BacktestConfig(symbols=("BTCUSDT",), costs=Costs(slippage_bps=D(0)))
    (t,) = run_backtest(cfg, bars, once(1, 5)).trades
    # the 3 % hard stop of a 60000 long sits at 58200; the bar opens at 58000: the venue's stop fills
    # there. gross −2000·0.003 = −6; fees 0.072 + 0.003·58000·0.0004 = 0.0696; total −6.1416
    assert (t.exit_reason, t.exit_controller, t.exit_price) == ("hard_stop", "exchange", D(58000))
    assert t.pnl == D("-6.1416") and t.funding == 0
