"""Quantities for entries and manual closes, on the symbol's step grid (the exit policies themselves
live in trading/exit_policy.py)."""

from __future__ import annotations

from decimal import Decimal

from trading.instruments import SymbolRules


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
