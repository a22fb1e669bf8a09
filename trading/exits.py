"""The plain exits of the lifecycle: stop-loss / take-profit levels from the intent, the hard exchange
stop, and the emergency close at MAX_UNREALIZED_LOSS_PCT_PER_POSITION. Pure functions of the state."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from trading.instruments import SymbolRules
from trading.intents import ExitOverrides, Side

HUNDRED = Decimal(100)


class ExitLevels(BaseModel):
    model_config = ConfigDict(frozen=True)

    stop_loss: Decimal | None
    take_profit: Decimal | None
    hard_stop: Decimal


class ExitSignal(BaseModel):
    model_config = ConfigDict(frozen=True)

    reason: str  # an ExitReason value
    level: Decimal | None
    mark: Decimal


def _away(entry: Decimal, pct: Decimal, side: Side, *, adverse: bool) -> Decimal:
    direction = -side.sign if adverse else side.sign
    return entry * (1 + direction * pct / HUNDRED)


def exit_levels(
    side: Side, entry: Decimal, rules: SymbolRules, overrides: ExitOverrides | None, hard_stop_pct: Decimal
) -> ExitLevels:
    """Price levels from the intent's overrides (absolute prices win over percentages), rounded to tick.
    The hard stop is never inside the stop-loss: it is the venue-side safety net behind it."""
    o = overrides or ExitOverrides()
    sl = o.stop_loss_price or (_away(entry, o.stop_loss_pct, side, adverse=True) if o.stop_loss_pct else None)
    tp = o.take_profit_price or (
        _away(entry, o.take_profit_pct, side, adverse=False) if o.take_profit_pct else None
    )
    hard = _away(entry, o.hard_stop_pct or hard_stop_pct, side, adverse=True)
    if sl is not None and (hard - sl) * side.sign > 0:  # hard stop would fire before the stop-loss
        hard = sl
    return ExitLevels(
        stop_loss=rules.round_price(sl) if sl is not None else None,
        take_profit=rules.round_price(tp) if tp is not None else None,
        hard_stop=rules.round_price(hard),
    )


def check_exit(
    side: Side,
    entry: Decimal,
    open_qty: Decimal,
    mark: Decimal,
    levels: ExitLevels,
    max_unrealized_loss_pct: Decimal,
) -> ExitSignal | None:
    """The first exit the mark price calls for, or None. Emergency first, then stop, then target."""
    if open_qty <= 0 or entry <= 0:
        return None
    loss_pct = (entry - mark) * side.sign / entry * HUNDRED
    if loss_pct >= max_unrealized_loss_pct:
        return ExitSignal(reason="emergency_max_unrealized_loss", level=None, mark=mark)
    if levels.stop_loss is not None and (levels.stop_loss - mark) * side.sign >= 0:
        return ExitSignal(reason="stop_loss", level=levels.stop_loss, mark=mark)
    if (levels.hard_stop - mark) * side.sign >= 0:  # the venue's stop should have fired: find out
        return ExitSignal(reason="hard_stop", level=levels.hard_stop, mark=mark)
    if levels.take_profit is not None and (mark - levels.take_profit) * side.sign >= 0:
        return ExitSignal(reason="take_profit", level=levels.take_profit, mark=mark)
    return None


def close_quantity(requested: Decimal | None, open_qty: Decimal, rules: SymbolRules) -> Decimal:
    """How much a close request really closes: never more than is open, on the step grid, and the
    whole position when the remainder would fall below the minimum quantity."""
    if open_qty <= 0:
        return Decimal(0)
    if requested is None or requested >= open_qty:
        return open_qty
    qty = rules.round_qty(requested, market=True)
    if qty <= 0:
        return Decimal(0)
    if open_qty - qty < rules.market_min_qty:
        return open_qty
    return qty


def entry_quantity(
    notional: Decimal, mark: Decimal, rules: SymbolRules, asked_qty: Decimal | None
) -> Decimal:
    """Quantity for a granted notional at the mark price, never above what was asked, on the step grid."""
    qty = rules.round_qty(notional / mark, market=True)
    if asked_qty is not None:
        qty = min(qty, rules.round_qty(asked_qty, market=True))
    return qty
