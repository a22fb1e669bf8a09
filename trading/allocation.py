"""Capital allocation targets: how much notional each symbol may hold, from its volatility and record.

`allocate(vols, budget, policy, trades_by_symbol)` gives every symbol a notional cap:

1. Inverse volatility: each symbol's score is 1 / its volatility, so a symbol twice as volatile gets
   half the notional and every symbol contributes about the same risk.
2. Tilt by recent risk-adjusted performance: the score is multiplied by a bounded multiplier from a
   Sharpe-like figure of the symbol's recent closed trades (mean over standard deviation of their profit
   ratios, per trade, not annualised): `1 + tilt_per_sharpe × sharpe`, clamped to [min_tilt, max_tilt].
   Too few trades (fewer than `tilt_min_trades`) or no variation gives 1: no evidence, no tilt. The
   bounds keep a lucky streak from taking the whole budget and a bad one from starving a symbol for ever.
3. Shares of the budget in proportion to the scores, each capped by `max_symbol_share` of the budget
   (and `max_symbol_usdt` when set). With `redistribute`, what a capped symbol cannot take is shared
   among the others in proportion to their scores (water-filling); without it, it stays unallocated.
4. Rounded DOWN to `quantum` (0.01 USDT), so the targets never sum above the budget.

A symbol whose volatility is missing, zero, negative or not finite gets 0 (a zero volatility would take
the whole budget). Pure: no clock, no I/O; the same inputs always give the same targets.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from decimal import ROUND_DOWN, Decimal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trading.protections import profit_ratio
from trading.records import ClosedTrade

__all__ = [
    "AllocationPolicy",
    "AllocationTarget",
    "allocate",
    "performance_multiplier",
    "realized_volatility",
    "trade_sharpe",
]

ZERO = Decimal(0)
ONE = Decimal(1)


class AllocationPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_symbol_share: Decimal = Field(Decimal("0.25"), gt=0, le=1)
    max_symbol_usdt: Decimal | None = Field(None, gt=0)
    tilt_per_sharpe: Decimal = Field(Decimal("0.5"), ge=0)
    min_tilt: Decimal = Field(Decimal("0.5"), gt=0, le=1)
    max_tilt: Decimal = Field(Decimal("1.5"), ge=1)
    tilt_min_trades: int = Field(5, ge=2)
    tilt_lookback_trades: int = Field(30, ge=2)
    redistribute: bool = True
    quantum: Decimal = Field(Decimal("0.01"), gt=0)

    @model_validator(mode="after")
    def _lookback_covers_minimum(self) -> AllocationPolicy:
        if self.tilt_lookback_trades < self.tilt_min_trades:
            raise ValueError("tilt_lookback_trades must be at least tilt_min_trades")
        return self


class AllocationTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol: str
    notional_usdt: Decimal
    volatility: float | None
    sharpe: float | None
    multiplier: Decimal
    capped: bool = False  # held at its cap
    note: str | None = None  # why it got nothing, when it did


def realized_volatility(returns: Sequence[float]) -> float | None:
    """Sample standard deviation of periodic returns; None with fewer than two."""
    if len(returns) < 2:
        return None
    return statistics.stdev(returns)


def trade_sharpe(trades: Sequence[ClosedTrade], lookback: int = 30) -> float | None:
    """Mean over standard deviation of the profit ratios of the last `lookback` trades (by close time);
    None with fewer than two trades or no variation."""
    recent = sorted(trades, key=lambda t: (t.closed_at_ms, t.trade_id))[-lookback:]
    if len(recent) < 2:
        return None
    ratios = [float(profit_ratio(t)) for t in recent]
    sd = statistics.stdev(ratios)
    if sd == 0 or not math.isfinite(sd):
        return None
    return statistics.fmean(ratios) / sd


def performance_multiplier(
    trades: Sequence[ClosedTrade], policy: AllocationPolicy
) -> tuple[Decimal, float | None]:
    """(multiplier, the Sharpe-like figure it came from); 1 without enough evidence."""
    if len(trades) < policy.tilt_min_trades:
        return ONE, None
    sharpe = trade_sharpe(trades, policy.tilt_lookback_trades)
    if sharpe is None:
        return ONE, None
    raw = ONE + policy.tilt_per_sharpe * Decimal(repr(sharpe))
    return min(policy.max_tilt, max(policy.min_tilt, raw)), sharpe


def _usable(vol: float | Decimal | None) -> bool:
    return vol is not None and math.isfinite(float(vol)) and float(vol) > 0


def allocate(
    vols: Mapping[str, float | Decimal | None],
    budget_usdt: Decimal,
    policy: AllocationPolicy,
    trades_by_symbol: Mapping[str, Sequence[ClosedTrade]] | None = None,
) -> dict[str, AllocationTarget]:
    """Every symbol of `vols` with its notional target (see the module docstring). The targets never
    exceed a symbol's cap, and never sum above `budget_usdt`."""
    trades_by_symbol = trades_by_symbol or {}
    budget = max(budget_usdt, ZERO)
    cap = policy.max_symbol_share * budget
    if policy.max_symbol_usdt is not None:
        cap = min(cap, policy.max_symbol_usdt)

    scores: dict[str, Decimal] = {}
    tilt: dict[str, tuple[Decimal, float | None]] = {}
    for symbol in sorted(vols):
        tilt[symbol] = performance_multiplier(trades_by_symbol.get(symbol, ()), policy)
        vol = vols[symbol]
        if _usable(vol):
            scores[symbol] = tilt[symbol][0] / Decimal(repr(float(vol)))  # type: ignore[arg-type]

    exact = _water_fill(scores, budget, cap) if policy.redistribute else _proportional(scores, budget, cap)
    floored = {
        s: (v.quantize(policy.quantum, rounding=ROUND_DOWN) if v > 0 else ZERO) for s, v in exact.items()
    }
    excess = sum(floored.values(), ZERO) - budget
    if excess > 0:  # cannot happen in exact arithmetic; guards rounding at Decimal's last digit
        largest = max(floored, key=lambda s: (floored[s], s))
        floored[largest] -= excess

    out: dict[str, AllocationTarget] = {}
    for symbol in sorted(vols):
        vol = vols[symbol]
        multiplier, sharpe = tilt[symbol]
        usable = _usable(vol)
        notional = floored.get(symbol, ZERO)
        out[symbol] = AllocationTarget(
            symbol=symbol,
            notional_usdt=notional,
            volatility=float(vol) if usable else None,  # type: ignore[arg-type]
            sharpe=sharpe,
            multiplier=multiplier,
            capped=usable and exact.get(symbol, ZERO) >= cap and cap > 0,
            note=None if usable else f"no usable volatility ({vol})",
        )
    return out


def _proportional(scores: Mapping[str, Decimal], budget: Decimal, cap: Decimal) -> dict[str, Decimal]:
    total = sum(scores.values(), ZERO)
    if total <= 0:
        return dict.fromkeys(scores, ZERO)
    return {s: min(cap, budget * v / total) for s, v in scores.items()}


def _water_fill(scores: Mapping[str, Decimal], budget: Decimal, cap: Decimal) -> dict[str, Decimal]:
    """Proportional shares; a symbol above its cap is held at it and the rest is shared again among the
    others (at most one round per symbol)."""
    out: dict[str, Decimal] = {}
    active = dict(scores)
    remaining = budget
    while active:
        total = sum(active.values(), ZERO)
        if total <= 0 or remaining <= 0:
            out.update(dict.fromkeys(active, ZERO))
            break
        share = {s: remaining * v / total for s, v in active.items()}
        over = [s for s, v in share.items() if v >= cap]
        if not over:
            out.update(share)
            break
        for s in over:
            out[s] = cap
            remaining -= cap
            del active[s]
    return out
