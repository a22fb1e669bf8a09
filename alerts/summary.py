"""The daily summary's text (pure): one UTC day of the trade journal, the equity it left, and the
portfolio as the read model shows it now."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal

from alerts.conditions import DAY_MS
from trading.records import TradeRecord, current_drawdown, max_drawdown, total_pnl, win_rate

__all__ = ["daily_summary_text", "day_name"]

CENT = Decimal("0.01")


def day_name(day: int) -> str:
    return datetime.fromtimestamp(day * DAY_MS / 1000, tz=UTC).strftime("%Y-%m-%d")


def _usdt(value: Decimal, signed: bool = False) -> str:
    q = value.quantize(CENT)
    return f"{'+' if signed and q > 0 else ''}{q:,}".replace(",", " ") + " USDT"


def daily_summary_text(
    day: int,
    records: Sequence[TradeRecord],
    capital: Decimal,
    portfolio: Mapping[str, str],
    mode: str,
    journal_error: str | None = None,
) -> str:
    """`records`: the run's trades (any days: those after `day` are left out); `portfolio`: the fields
    of `quantum:portfolio:state` (empty when unknown)."""
    end = (day + 1) * DAY_MS
    upto = [r for r in records if r.closed_at_ms < end]
    today = [r for r in upto if r.closed_at_ms >= day * DAY_MS]
    lines = [f"Daily summary {day_name(day)} (UTC), {mode}"]
    if journal_error is not None:
        lines.append(f"Trades: the journal could not be read ({journal_error})")
    elif not today:
        lines.append("Trades: none closed")
    else:
        wins = sum(1 for r in today if r.realized_pnl > 0)
        rate = win_rate(today) or 0.0
        fees = sum((r.fees for r in today), Decimal(0))
        funding = sum((r.funding for r in today), Decimal(0))
        lines.append(
            f"Trades: {len(today)} closed, {wins} won ({rate * 100:.0f} %); net PnL "
            f"{_usdt(total_pnl(today), signed=True)}, fees {_usdt(fees)}, "
            f"funding {_usdt(funding, signed=True)}"
        )
        best = max(today, key=lambda r: r.realized_pnl)
        worst = min(today, key=lambda r: r.realized_pnl)
        lines.append(
            f"Best {best.symbol} {_usdt(best.realized_pnl, signed=True)}, "
            f"worst {worst.symbol} {_usdt(worst.realized_pnl, signed=True)}"
        )
        reasons: dict[str, int] = {}
        for r in today:
            reasons[r.exit_reason] = reasons.get(r.exit_reason, 0) + 1
        lines.append(
            "Exits: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))
        )
    if journal_error is None:
        dd, worst_dd = current_drawdown(upto, capital), max_drawdown(upto, capital)
        lines.append(
            f"Equity {_usdt(capital + total_pnl(upto))} (capital {_usdt(capital)}), drawdown "
            f"{dd.pct * 100:.2f} % from the peak, max {worst_dd.pct * 100:.2f} %"
        )
    if portfolio:
        p = portfolio
        lines.append(
            f"Now: {p.get('slots_used', '?')}/{p.get('max_open_positions', '?')} positions open, "
            f"notional {p.get('notional_used', '?')} / {p.get('max_total_notional', '?')} USDT, "
            f"emergency {p.get('emergency', '?')}, "
            f"kill switch {'ON' if p.get('kill_switch') == 'true' else 'off'}"
        )
    else:
        lines.append("Now: the portfolio's state is not in Redis (is the lifecycle worker running?)")
    return "\n".join(lines)
