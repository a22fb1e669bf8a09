"""Equity and drawdown points for the dashboard's charts: the journal's conventions (capital plus net
PnL in closing order, drawdown from the highest equity so far), thinned without hiding the worst dip."""

from __future__ import annotations

from decimal import Decimal

import pytest

from journal.curves import equity_points
from tests.trading.test_records import DAY_MS, T0, rec
from trading.records import max_drawdown

D = Decimal


def test_one_point_per_trade_from_the_capital() -> None:
    # closed out of order on purpose: the curve follows the closing time
    records = [rec(2, "-30", day=2), rec(1, "100", day=1), rec(3, "50", day=3)]
    points = equity_points(records, D(1000))
    assert [p.time_ms for p in points] == [T0, T0 + DAY_MS, T0 + 2 * DAY_MS, T0 + 3 * DAY_MS]
    assert [p.equity for p in points] == [D(1000), D(1100), D(1070), D(1120)]
    assert [p.drawdown_usdt for p in points] == [D(0), D(0), D(30), D(0)]
    assert points[2].drawdown_pct == pytest.approx(30 / 1100 * 100)
    assert equity_points([], D(1000)) == []


def test_thinning_keeps_the_ends_and_the_deepest_dip() -> None:
    pnls = ["10"] * 300 + ["-500"] + ["10"] * 300
    records = [rec(i, pnl, day=i / 10) for i, pnl in enumerate(pnls)]
    points = equity_points(records, D(10_000), max_points=50)
    full = equity_points(records, D(10_000), max_points=10_000)
    assert len(full) == len(records) + 1 and len(points) <= 50
    assert points[0] == full[0] and points[-1] == full[-1]
    assert max(p.drawdown_usdt for p in points) == max_drawdown(records, D(10_000)).usdt == D(500)
    assert [p.time_ms for p in points] == sorted(p.time_ms for p in points)
    with pytest.raises(ValueError, match="max_points"):
        equity_points(records, D(1), max_points=1)
