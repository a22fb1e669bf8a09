"""The trade journal's record of one closed position, and attribution over a list of them.

The same record comes from a position workflow (paper, testnet, live) and from a backtest, so every
result is compared with the same functions. Money stays `Decimal`; ratios (win rate, Sharpe,
drawdown %) are floats because they are statistics, not amounts.

Conventions (what a trader reading the report should know):
- equity is `capital` plus the cumulative net PnL of the trades, in order of closing;
- drawdown is measured from the highest equity so far, in USDT and as a fraction of that peak;
- Sharpe is annualised (√365: crypto trades every day) from daily returns, each day's net PnL over
  the equity at the start of that UTC day, days without a closed trade counting as 0 %; fewer than two
  days, or no variation at all, has no Sharpe (None).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from trading.intents import Side, TradeIntent
from trading.pnl import PositionTally

ZERO = Decimal(0)
DAY_MS = 86_400_000
DAYS_PER_YEAR = 365


class RecordMode(StrEnum):
    PAPER = "paper"
    TESTNET = "testnet"
    LIVE = "live"
    BACKTEST = "backtest"


class ClosedTrade(BaseModel):
    """What a position (or a backtest) knows of its closed trade; the journal adds where it ran."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trade_id: str = Field(min_length=1)
    symbol: str = Field(min_length=1)
    side: Side
    strategy: str = Field(min_length=1)
    regime: str | None = None
    model_version: str | None = None
    source: str = Field(min_length=1)  # signal / model, manual, adopted
    quantity: Decimal = Field(gt=0)
    entry_price: Decimal = Field(gt=0)
    exit_price: Decimal = Field(ge=0)
    opened_at_ms: int = Field(ge=0)
    closed_at_ms: int = Field(ge=0)
    realized_pnl: Decimal  # net: gross − fees + funding
    gross_pnl: Decimal
    fees: Decimal  # commissions paid (a maker rebate makes them negative)
    funding: Decimal = ZERO  # received (+) or paid (−)
    exit_reason: str = Field(min_length=1)
    exit_controller: str | None = None


class TradeRecord(ClosedTrade):
    """One row of the trade journal: trade_id is the position workflow id (or `{run_id}:{n}` for a
    backtest), run_id is "paper" / "testnet" / "live" for the stack or a backtest's run id."""

    run_id: str = Field(min_length=1)
    mode: RecordMode


def closed_trade(
    trade_id: str,
    intent: TradeIntent,
    tally: PositionTally,
    *,
    opened_at_ms: int,
    closed_at_ms: int,
    exit_reason: str | None,
    exit_controller: str | None,
) -> ClosedTrade:
    """The record of a position that traded, from its intent and the tally of its fills."""
    return ClosedTrade(
        trade_id=trade_id,
        symbol=intent.symbol,
        side=intent.side,
        strategy=intent.strategy,
        regime=None if intent.regime == "unknown" else intent.regime,
        # Intents may carry the model version that produced them (signal layer); manual ones do not.
        model_version=getattr(intent, "model_version", None),
        source=intent.source.value,
        quantity=tally.entry_qty,
        entry_price=tally.avg_entry,
        exit_price=tally.avg_exit,
        opened_at_ms=opened_at_ms,
        closed_at_ms=closed_at_ms,
        realized_pnl=tally.realized_net,
        gross_pnl=tally.realized_gross,
        fees=tally.fees,
        exit_reason=exit_reason or "closed",
        exit_controller=exit_controller,
    )


# ------------------------------------------------------------------------------------ attribution
GROUP_KEYS = (
    "strategy",
    "regime",
    "symbol",
    "model_version",
    "exit_reason",
    "exit_controller",
    "side",
    "source",
    "mode",
    "run_id",
)
NO_VALUE = "-"


class Drawdown(BaseModel):
    usdt: Decimal = ZERO
    pct: float = 0.0  # fraction of the peak equity (0.1 = 10 %)


class PerformanceSummary(BaseModel):
    trades: int
    pnl: Decimal
    gross_pnl: Decimal
    fees: Decimal
    funding: Decimal
    win_rate: float | None
    sharpe: float | None
    max_drawdown: Drawdown


def in_closing_order(records: Iterable[TradeRecord]) -> list[TradeRecord]:
    return sorted(records, key=lambda r: (r.closed_at_ms, r.trade_id))


def total_pnl(records: Iterable[TradeRecord]) -> Decimal:
    return sum((r.realized_pnl for r in records), ZERO)


def win_rate(records: Sequence[TradeRecord]) -> float | None:
    """Share of trades with a positive net PnL; None without trades."""
    if not records:
        return None
    return sum(1 for r in records if r.realized_pnl > 0) / len(records)


def equity_curve(records: Iterable[TradeRecord], capital: Decimal) -> list[Decimal]:
    """Equity after each trade, in closing order (the starting capital is not included)."""
    equity, curve = capital, []
    for r in in_closing_order(records):
        equity += r.realized_pnl
        curve.append(equity)
    return curve


def _drawdowns(records: Iterable[TradeRecord], capital: Decimal) -> tuple[Drawdown, Drawdown]:
    """(maximum, current) drawdown of the equity curve."""
    peak, worst, now = capital, Drawdown(), Drawdown()
    for equity in equity_curve(records, capital):
        peak = max(peak, equity)
        now = Drawdown(usdt=peak - equity, pct=float((peak - equity) / peak) if peak > 0 else 0.0)
        if now.usdt > worst.usdt:
            worst = now
    return worst, now


def max_drawdown(records: Iterable[TradeRecord], capital: Decimal) -> Drawdown:
    return _drawdowns(records, capital)[0]


def current_drawdown(records: Iterable[TradeRecord], capital: Decimal) -> Drawdown:
    return _drawdowns(records, capital)[1]


def daily_returns(
    records: Iterable[TradeRecord],
    capital: Decimal,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> list[float]:
    """One return per UTC day from the day of `start_ms` (default: the first close) to the day of
    `end_ms` (default: the last close); each is the day's net PnL over the equity that day began with."""
    ordered = in_closing_order(records)
    if not ordered and (start_ms is None or end_ms is None):
        return []
    first = (start_ms if start_ms is not None else ordered[0].closed_at_ms) // DAY_MS
    last = (end_ms if end_ms is not None else ordered[-1].closed_at_ms) // DAY_MS
    if last < first:
        return []
    per_day = [ZERO] * (last - first + 1)
    equity = capital
    for r in ordered:
        day = r.closed_at_ms // DAY_MS
        if day < first:
            equity += r.realized_pnl  # before the window: moves the base, not a return in it
        elif day <= last:
            per_day[day - first] += r.realized_pnl
    out = []
    for pnl in per_day:
        out.append(float(pnl / equity) if equity > 0 else 0.0)
        equity += pnl
    return out


def sharpe_ratio(returns: Sequence[float], periods_per_year: int = DAYS_PER_YEAR) -> float | None:
    """Annualised Sharpe of periodic returns (risk-free rate 0); None when it is undefined."""
    if len(returns) < 2:
        return None
    sd = statistics.stdev(returns)
    if sd == 0 or math.isnan(sd):
        return None
    return statistics.fmean(returns) / sd * math.sqrt(periods_per_year)


def sharpe(
    records: Iterable[TradeRecord],
    capital: Decimal,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> float | None:
    return sharpe_ratio(daily_returns(records, capital, start_ms=start_ms, end_ms=end_ms))


def _key(by: str) -> Callable[[TradeRecord], str]:
    if by not in GROUP_KEYS:
        raise ValueError(f"cannot group by {by!r}: choose one of {', '.join(GROUP_KEYS)}")

    def key(r: TradeRecord) -> str:
        value = getattr(r, by)
        return NO_VALUE if value is None else str(getattr(value, "value", value))

    return key


def group_by(records: Iterable[TradeRecord], by: str) -> dict[str, list[TradeRecord]]:
    key = _key(by)
    groups: dict[str, list[TradeRecord]] = {}
    for r in records:
        groups.setdefault(key(r), []).append(r)
    return groups


def count_by(records: Iterable[TradeRecord], by: str) -> dict[str, int]:
    return {k: len(v) for k, v in group_by(records, by).items()}


def summarize(
    records: Sequence[TradeRecord],
    capital: Decimal,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> PerformanceSummary:
    return PerformanceSummary(
        trades=len(records),
        pnl=total_pnl(records),
        gross_pnl=sum((r.gross_pnl for r in records), ZERO),
        fees=sum((r.fees for r in records), ZERO),
        funding=sum((r.funding for r in records), ZERO),
        win_rate=win_rate(records),
        sharpe=sharpe(records, capital, start_ms=start_ms, end_ms=end_ms),
        max_drawdown=max_drawdown(records, capital),
    )


def attribution(
    records: Sequence[TradeRecord], by: str, capital: Decimal
) -> list[tuple[str, PerformanceSummary]]:
    """One summary per value of `by`, best PnL first. Every group's Sharpe is taken over the same days
    (the whole selection's), so a strategy that sat out a week is not flattered by skipping it."""
    groups = group_by(records, by)
    if not records:
        return []
    start = min(r.closed_at_ms for r in records)
    end = max(r.closed_at_ms for r in records)
    rows = [(name, summarize(rs, capital, start_ms=start, end_ms=end)) for name, rs in groups.items()]
    return sorted(rows, key=lambda row: (-row[1].pnl, row[0]))
