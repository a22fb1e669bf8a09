"""Attribution over journal records, checked against hand computations."""

from __future__ import annotations

import math
import statistics
from decimal import Decimal

import pytest

from trading.intents import Side, TradeIntent
from trading.pnl import Fill, tally
from trading.records import (
    DAY_MS,
    TradeRecord,
    attribution,
    closed_trade,
    count_by,
    current_drawdown,
    daily_returns,
    equity_curve,
    max_drawdown,
    sharpe,
    summarize,
    total_pnl,
    win_rate,
)

D = Decimal
T0 = 1_700_006_400_000  # 2023-11-15 00:00 UTC, a day boundary


def rec(n: int, pnl: str, *, day: float = 0, strategy: str = "s1", **extra: object) -> TradeRecord:
    fields: dict[str, object] = dict(
        trade_id=f"bt:{n}",
        run_id="bt",
        mode="backtest",
        symbol="BTCUSDT",
        side=Side.LONG,
        strategy=strategy,
        source="model",
        quantity=D("0.01"),
        entry_price=D(60000),
        exit_price=D(60000),
        opened_at_ms=T0,
        closed_at_ms=T0 + int(day * DAY_MS),
        realized_pnl=D(pnl),
        gross_pnl=D(pnl) + D("0.5"),
        fees=D("0.5"),
        exit_reason="stop_loss",
    )
    fields.update(extra)
    return TradeRecord.model_validate(fields)


def test_pnl_win_rate_and_counts() -> None:
    rs = [rec(1, "10"), rec(2, "-4.5"), rec(3, "0"), rec(4, "2.25", strategy="s2")]
    assert total_pnl(rs) == D("7.75")
    assert win_rate(rs) == 0.5  # a flat trade is not a win
    assert win_rate([]) is None
    assert count_by(rs, "strategy") == {"s1": 3, "s2": 1}
    assert count_by(rs, "exit_controller") == {"-": 4}  # missing values are one group, not dropped
    with pytest.raises(ValueError, match="cannot group by 'colour'"):
        count_by(rs, "colour")


def test_equity_and_drawdown_follow_the_closing_order() -> None:
    # Given out of order: closing order is +100, -50, -100, +30 on 1000 of capital.
    rs = [rec(3, "-100", day=0.3), rec(1, "100", day=0.1), rec(4, "30", day=0.4), rec(2, "-50", day=0.2)]
    assert equity_curve(rs, D(1000)) == [D(1100), D(1050), D(950), D(980)]
    worst = max_drawdown(rs, D(1000))
    assert worst.usdt == D(150) and worst.pct == pytest.approx(150 / 1100)
    now = current_drawdown(rs, D(1000))
    assert now.usdt == D(120) and now.pct == pytest.approx(120 / 1100)
    # A loss from the very first trade is a drawdown from the starting capital.
    assert max_drawdown([rec(1, "-25")], D(1000)).usdt == D(25)
    assert max_drawdown([rec(1, "25")], D(1000)).usdt == D(0)


def test_daily_returns_and_sharpe_by_hand() -> None:
    # Day 0: +10; day 1: nothing; day 2: -5 and +15. Capital 1000.
    rs = [rec(1, "10", day=0.5), rec(2, "-5", day=2.1), rec(3, "15", day=2.9)]
    returns = daily_returns(rs, D(1000))
    assert returns == pytest.approx([10 / 1000, 0 / 1010, 10 / 1010])
    mean = (0.01 + 0 + 10 / 1010) / 3
    sd = math.sqrt(((0.01 - mean) ** 2 + mean**2 + (10 / 1010 - mean) ** 2) / 2)
    assert sharpe(rs, D(1000)) == pytest.approx(mean / sd * math.sqrt(365))
    # A window that starts later: earlier trades only move the equity the window starts with.
    assert daily_returns(rs, D(1000), start_ms=T0 + DAY_MS, end_ms=T0 + 3 * DAY_MS) == pytest.approx(
        [0.0, 10 / 1010, 0.0]
    )


def test_sharpe_is_none_when_undefined() -> None:
    assert sharpe([], D(1000)) is None
    assert sharpe([rec(1, "10"), rec(2, "5", day=0.5)], D(1000)) is None  # one day only
    # Two days of exactly the same return: no variation, no Sharpe (not infinity).
    assert sharpe([rec(1, "10"), rec(2, "10.1", day=1)], D(1000)) is None


def test_attribution_by_strategy_uses_one_span_for_every_group() -> None:
    rs = [
        rec(1, "20", day=0, strategy="trend"),
        rec(2, "-10", day=1, strategy="trend"),
        rec(3, "5", day=3, strategy="trend"),
        rec(4, "-30", day=0, strategy="revert"),
        rec(5, "12", day=1, strategy="revert"),
    ]
    rows = attribution(rs, "strategy", D(1000))
    assert [name for name, _ in rows] == ["trend", "revert"]  # best PnL first
    trend, revert = rows[0][1], rows[1][1]
    assert (trend.trades, trend.pnl, trend.fees) == (3, D(15), D("1.5"))
    assert trend.win_rate == pytest.approx(2 / 3)
    assert (revert.trades, revert.pnl, revert.win_rate) == (2, D(-18), 0.5)
    assert revert.max_drawdown.usdt == D(30)
    # revert traded on days 0 and 1 only, but is measured over days 0..3 like every group.
    revert_returns = [-30 / 1000, 12 / 970, 0.0, 0.0]
    expected = statistics.fmean(revert_returns) / statistics.stdev(revert_returns) * math.sqrt(365)
    assert revert.sharpe == pytest.approx(expected)
    total = summarize(rs, D(1000))
    assert total.trades == 5 and total.pnl == D(-3) and total.gross_pnl == D("-0.5")


def test_closed_trade_from_a_position_tally() -> None:
    intent = TradeIntent(
        symbol="ETHUSDT", side=Side.SHORT, notional_usdt=D(300), strategy="meanrev", regime="range"
    )
    fills = [
        Fill(client_order_id="e", side="SELL", price=D(3000), qty=D("0.1"), fee=D("0.12")),
        Fill(client_order_id="x1", side="BUY", price=D(2950), qty=D("0.04"), fee=D("0.05")),
        Fill(client_order_id="x2", side="BUY", price=D(2900), qty=D("0.06"), fee=D("0.07")),
    ]
    t = closed_trade(
        "position-ETHUSDT-1",
        intent,
        tally(Side.SHORT, fills),
        opened_at_ms=T0,
        closed_at_ms=T0 + 60_000,
        exit_reason=None,
        exit_controller="manual",
    )
    # gross: 0.04 × 50 + 0.06 × 100 = 8; fees 0.24; net 7.76; average exit (118 + 174) / 0.1 = 2920.
    assert (t.gross_pnl, t.fees, t.realized_pnl) == (D(8), D("0.24"), D("7.76"))
    assert (t.quantity, t.entry_price, t.exit_price) == (D("0.1"), D(3000), D(2920))
    assert (t.strategy, t.regime, t.source, t.exit_reason) == ("meanrev", "range", "manual", "closed")
    record = TradeRecord(**t.model_dump(), run_id="paper", mode="paper")
    assert record.trade_id == "position-ETHUSDT-1" and record.funding == 0
