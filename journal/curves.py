"""Equity and drawdown over time from the trade journal, as the web dashboard draws them.

Equity is the capital plus the net PnL of the trades so far, in closing order, one point per closed
trade (the first point is the capital itself, at the first trade's opening). Drawdown is measured from
the highest equity so far (the conventions of `trading.records`, so the figures agree with
`qtrader report` and the performance gauges).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from pydantic import BaseModel

from trading.records import TradeRecord, in_closing_order


class EquityPoint(BaseModel):
    time_ms: int
    equity: Decimal
    drawdown_usdt: Decimal
    drawdown_pct: float  # % of the peak so far (5.0 = 5 %)


def equity_points(
    records: Sequence[TradeRecord], capital: Decimal, max_points: int = 500
) -> list[EquityPoint]:
    """The curve, thinned to at most `max_points` (the first and last points, and every deepest point
    of the drawdown between two kept ones, are always kept, so the chart never hides the worst dip)."""
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, not {max_points}")
    ordered = in_closing_order(records)
    if not ordered:
        return []
    points = [
        EquityPoint(
            time_ms=ordered[0].opened_at_ms, equity=capital, drawdown_usdt=Decimal(0), drawdown_pct=0.0
        )
    ]
    equity, peak = capital, capital
    for r in ordered:
        equity += r.realized_pnl
        peak = max(peak, equity)
        dd = peak - equity
        points.append(
            EquityPoint(
                time_ms=r.closed_at_ms,
                equity=equity,
                drawdown_usdt=dd,
                drawdown_pct=float(dd / peak * 100) if peak > 0 else 0.0,
            )
        )
    if len(points) <= max_points:
        return points
    # Buckets of consecutive points: keep each bucket's deepest drawdown point.
    inner = points[1:-1]
    buckets = max_points - 2
    size = len(inner) / buckets
    kept = [points[0]]
    for b in range(buckets):
        chunk = inner[int(b * size) : int((b + 1) * size)]
        if chunk:
            kept.append(max(chunk, key=lambda p: p.drawdown_usdt))
    kept.append(points[-1])
    return kept
