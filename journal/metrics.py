"""Performance gauges from the journal: equity, realized PnL, drawdown and rolling Sharpe.

The lifecycle worker serves them (PERFORMANCE_METRICS_PORT, beside its Temporal metrics port) and
recomputes them from the journal's rows whenever a trade is journaled and once at start, so a
restarted worker shows the same figures and a retried write never counts twice.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server
from pydantic import BaseModel

from trading.records import (
    DAY_MS,
    TradeRecord,
    current_drawdown,
    max_drawdown,
    sharpe,
    total_pnl,
)

SHARPE_WINDOW_DAYS = 30


class PerformanceFigures(BaseModel):
    trades: int
    equity: float
    realized_pnl: float
    drawdown_usdt: float
    drawdown_pct: float
    max_drawdown_pct: float
    rolling_sharpe: float  # NaN while undefined (fewer than two days, or no variation)


def performance_figures(
    records: list[TradeRecord], capital: Decimal, now_ms: int, window_days: int = SHARPE_WINDOW_DAYS
) -> PerformanceFigures:
    pnl = total_pnl(records)
    now_dd = current_drawdown(records, capital)
    start = now_ms - window_days * DAY_MS + DAY_MS  # the window is `window_days` days, today included
    recent = sharpe(records, capital, start_ms=start, end_ms=now_ms)
    return PerformanceFigures(
        trades=len(records),
        equity=float(capital + pnl),
        realized_pnl=float(pnl),
        drawdown_usdt=float(now_dd.usdt),
        drawdown_pct=now_dd.pct * 100,
        max_drawdown_pct=max_drawdown(records, capital).pct * 100,
        rolling_sharpe=math.nan if recent is None else recent,
    )


class PerformanceGauges:
    """The gauges, labelled with the trading mode (paper, testnet, live) they describe, in a registry of
    their own (the Temporal runtime's meter refuses negative gauge values, and PnL and Sharpe go below
    zero), served by the lifecycle worker on PERFORMANCE_METRICS_PORT."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.equity = Gauge("quantum_equity_usdt", "Starting equity plus journaled PnL", ["mode"], registry=r)
        self.pnl = Gauge("quantum_realized_pnl_usdt", "Net PnL of the journaled trades", ["mode"], registry=r)
        self.drawdown = Gauge("quantum_drawdown_usdt", "Equity below its peak so far", ["mode"], registry=r)
        self.drawdown_pct = Gauge(
            "quantum_drawdown_pct", "Equity below its peak so far, % of the peak", ["mode"], registry=r
        )
        self.max_drawdown_pct = Gauge(
            "quantum_max_drawdown_pct", "Largest drawdown of the equity, % of its peak", ["mode"], registry=r
        )
        self.sharpe = Gauge(
            "quantum_rolling_sharpe",
            "Annualised Sharpe of daily returns over the window (NaN while undefined)",
            ["mode", "window"],
            registry=r,
        )
        self.trades = Gauge("quantum_journal_trades", "Closed trades in the journal", ["mode"], registry=r)

    def set(self, mode: str, figures: PerformanceFigures) -> None:
        self.equity.labels(mode).set(figures.equity)
        self.pnl.labels(mode).set(figures.realized_pnl)
        self.drawdown.labels(mode).set(figures.drawdown_usdt)
        self.drawdown_pct.labels(mode).set(figures.drawdown_pct)
        self.max_drawdown_pct.labels(mode).set(figures.max_drawdown_pct)
        self.sharpe.labels(mode, f"{SHARPE_WINDOW_DAYS}d").set(figures.rolling_sharpe)
        self.trades.labels(mode).set(figures.trades)

    def serve(self, port: int, host: str = "127.0.0.1") -> Any:
        """Serve `/metrics` from a daemon thread (prometheus_client's own server); returns the server."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server
