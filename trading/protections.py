"""Per-symbol locks from a symbol's recent closed trades (freqtrade's protections, per pair).

`symbol_lock(symbol, trades, policy, now_ms)` says whether the symbol is locked at `now_ms`, until when
and by which rule. It is stateless: a lock is recomputed from the trade history every time, so it cannot
be lost in a restart, and the same history always gives the same answer. The caller passes the symbol's
trades closed in the last `policy.history_ms` at least (older ones cannot matter).

The rules (each off when its limit is None or 0):

* `cooldown` (CooldownPeriod): after any closed trade the symbol rests `cooldown_seconds`. Re-entering
  at once after an exit is how one noisy symbol eats the whole rate budget.
* `stop_out_guard` (StoplossGuard, per pair): when a trade closes by a stop at a loss (`is_stop_out`)
  and, counting it, at least `stop_out_limit` such trades closed within `stop_out_lookback_seconds`
  (the window ending at that close), the symbol is locked `stop_out_lock_seconds` from that close. A
  symbol stopped out again and again is one the signal reads wrongly for now.
* `low_profit` (LowProfitPairs): when a trade closes and, counting it, at least `low_profit_min_trades`
  trades closed within `low_profit_lookback_seconds` with a summed profit ratio (each trade's net PnL
  over its entry notional) below `low_profit_required`, the symbol is locked `low_profit_lock_seconds`
  from that close. A symbol that keeps losing a little is a cost, not an opportunity.

Each rule is evaluated at every close, as freqtrade does when a trade exits; a lock taken then lasts its
duration whatever later trades do. Only trades closed at or before `now_ms` count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from trading.records import ClosedTrade

__all__ = [
    "STOP_OUT_REASONS",
    "ProtectionPolicy",
    "ProtectionRule",
    "SymbolLock",
    "is_stop_out",
    "locked_symbols",
    "profit_ratio",
    "symbol_lock",
    "symbol_locks",
]

ZERO = Decimal(0)

# Exit reasons of a stop (trading/exit_policy.py and the venue's own closes). A take-profit, a manual
# close or a time exit is not a stop-out, nor is ADL (it takes profitable positions).
STOP_OUT_REASONS: frozenset[str] = frozenset(
    {
        "stop_loss",
        "trailing_stop",
        "breakeven_stop",
        "ratchet_stop",
        "hard_stop",
        "emergency_max_unrealized_loss",
        "emergency_max_margin_loss",
        "liquidation",
    }
)


def is_stop_out(trade: ClosedTrade) -> bool:
    """Closed by a stop, at a net loss (a trailing stop locking in a profit is not a stop-out)."""
    return trade.exit_reason in STOP_OUT_REASONS and trade.realized_pnl < 0


def profit_ratio(trade: ClosedTrade) -> Decimal:
    """Net PnL over the entry notional (0.01 = 1 %)."""
    notional = trade.entry_price * trade.quantity
    return trade.realized_pnl / notional if notional > 0 else ZERO


class ProtectionRule(StrEnum):
    COOLDOWN = "cooldown"
    STOP_OUT_GUARD = "stop_out_guard"
    LOW_PROFIT = "low_profit"


class ProtectionPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cooldown_seconds: int = Field(0, ge=0)  # off by default: the governor already cools a released symbol
    stop_out_limit: int | None = Field(2, ge=1)
    stop_out_lookback_seconds: int = Field(3600, gt=0)
    stop_out_lock_seconds: int = Field(3600, gt=0)
    low_profit_min_trades: int | None = Field(3, ge=1)
    low_profit_lookback_seconds: int = Field(86_400, gt=0)
    low_profit_required: Decimal = Decimal(0)  # summed profit ratio the trades must reach
    low_profit_lock_seconds: int = Field(6 * 3600, gt=0)

    @property
    def history_ms(self) -> int:
        """How far back trades can still matter to a lock."""
        return 1000 * max(
            self.cooldown_seconds,
            self.stop_out_lookback_seconds + self.stop_out_lock_seconds,
            self.low_profit_lookback_seconds + self.low_profit_lock_seconds,
        )


class SymbolLock(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol: str
    until_ms: int
    rule: ProtectionRule
    reason: str


def _latest_trigger(
    closes: Sequence[ClosedTrade],
    lookback_ms: int,
    fires: Callable[[list[ClosedTrade]], bool],
) -> tuple[ClosedTrade, list[ClosedTrade]] | None:
    """The latest close at which `fires` held for the trades closed in the window ending there."""
    for i in range(len(closes) - 1, -1, -1):
        t = closes[i].closed_at_ms
        window = [c for c in closes[: i + 1] if c.closed_at_ms > t - lookback_ms]
        if fires(window):
            return closes[i], window
    return None


def symbol_locks(
    symbol: str, trades: Iterable[ClosedTrade], policy: ProtectionPolicy, now_ms: int
) -> list[SymbolLock]:
    """Every lock active on `symbol` at `now_ms` (at most one per rule), the longest first."""
    closes = sorted(
        (t for t in trades if t.symbol == symbol and t.closed_at_ms <= now_ms),
        key=lambda t: (t.closed_at_ms, t.trade_id),
    )
    if not closes:
        return []
    locks: list[SymbolLock] = []

    if policy.cooldown_seconds:
        last = closes[-1]
        until = last.closed_at_ms + policy.cooldown_seconds * 1000
        if now_ms < until:
            locks.append(
                SymbolLock(
                    symbol=symbol,
                    until_ms=until,
                    rule=ProtectionRule.COOLDOWN,
                    reason=f"{symbol}: cooldown of {policy.cooldown_seconds} s after the trade closed "
                    f"at {last.closed_at_ms}",
                )
            )

    limit = policy.stop_out_limit
    if limit:
        stops = [t for t in closes if is_stop_out(t)]
        hit = _latest_trigger(stops, policy.stop_out_lookback_seconds * 1000, lambda w: len(w) >= limit)
        if hit is not None:
            last, window = hit
            until = last.closed_at_ms + policy.stop_out_lock_seconds * 1000
            if now_ms < until:
                locks.append(
                    SymbolLock(
                        symbol=symbol,
                        until_ms=until,
                        rule=ProtectionRule.STOP_OUT_GUARD,
                        reason=f"{symbol}: {len(window)} stop-outs within "
                        f"{policy.stop_out_lookback_seconds} s "
                        f"(limit {limit}), locked {policy.stop_out_lock_seconds} s from {last.closed_at_ms}",
                    )
                )

    min_trades = policy.low_profit_min_trades
    if min_trades:
        required = policy.low_profit_required

        def low(window: list[ClosedTrade]) -> bool:
            return len(window) >= min_trades and sum((profit_ratio(t) for t in window), ZERO) < required

        hit = _latest_trigger(closes, policy.low_profit_lookback_seconds * 1000, low)
        if hit is not None:
            last, window = hit
            until = last.closed_at_ms + policy.low_profit_lock_seconds * 1000
            if now_ms < until:
                total = sum((profit_ratio(t) for t in window), ZERO)
                locks.append(
                    SymbolLock(
                        symbol=symbol,
                        until_ms=until,
                        rule=ProtectionRule.LOW_PROFIT,
                        reason=f"{symbol}: {len(window)} trades within "
                        f"{policy.low_profit_lookback_seconds} s "
                        f"made {total * 100:.2f} % (required {required * 100:.2f} %), "
                        f"locked {policy.low_profit_lock_seconds} s from {last.closed_at_ms}",
                    )
                )
    return sorted(locks, key=lambda lock: (-lock.until_ms, lock.rule.value))


def symbol_lock(
    symbol: str, trades: Iterable[ClosedTrade], policy: ProtectionPolicy, now_ms: int
) -> SymbolLock | None:
    """The lock on `symbol` at `now_ms` that ends last, or None when the symbol is free."""
    locks = symbol_locks(symbol, trades, policy, now_ms)
    return locks[0] if locks else None


def locked_symbols(
    trades: Iterable[ClosedTrade], policy: ProtectionPolicy, now_ms: int
) -> dict[str, SymbolLock]:
    """Every locked symbol at `now_ms` with its longest lock."""
    by_symbol: dict[str, list[ClosedTrade]] = {}
    for t in trades:
        by_symbol.setdefault(t.symbol, []).append(t)
    out: dict[str, SymbolLock] = {}
    for symbol in sorted(by_symbol):
        lock = symbol_lock(symbol, by_symbol[symbol], policy, now_ms)
        if lock is not None:
            out[symbol] = lock
    return out
