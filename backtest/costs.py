"""The paper venue's arithmetic for one isolated position: fill prices with slippage, taker fees,
funding and liquidation. Positions and their margin use the paper exchange's own `Position` and
`fill_effect`, so the numbers are the venue's, not a second implementation of them."""

from __future__ import annotations

from decimal import Decimal

from backtest.config import Costs
from trading.instruments import SymbolRules
from trading.margin import Position, fill_effect, liquidation_price

ZERO = Decimal(0)
ONE = Decimal(1)
TEN_K = Decimal(10_000)


def taker_price(market: Decimal, order_side: str, costs: Costs, rules: SymbolRules) -> Decimal:
    """Where a MARKET order fills: the market price moved against the taker by the slippage, on the tick
    grid (as the paper venue's `_taker_price`)."""
    if not costs.slippage_bps:
        return market
    factor = ONE + costs.slippage_bps / TEN_K if order_side == "BUY" else ONE - costs.slippage_bps / TEN_K
    return rules.round_price(market * factor)


def taker_fee(qty: Decimal, price: Decimal, costs: Costs) -> Decimal:
    return qty * price * costs.taker_fee


def apply_fill(
    pos: Position, order_side: str, qty: Decimal, price: Decimal, fee: Decimal, leverage: int
) -> Decimal:
    """Book a fill on the isolated position; returns the realized PnL (before fees)."""
    dq = qty if order_side == "BUY" else -qty
    eff = fill_effect(pos, dq, price, fee, leverage, True)
    pos.apply(eff)
    return eff.realized


def funding_payment(pos: Position, price: Decimal, costs: Costs, rate: Decimal | None = None) -> Decimal:
    """What the position receives (negative: pays) at a funding time, at `rate` (a historical rate) or
    the constant `costs.funding_rate`; it moves its isolated margin."""
    pay = -pos.amt * price * (costs.funding_rate if rate is None else rate)
    pos.iso_wallet += pay
    return pay


def liq_price(pos: Position, costs: Costs) -> Decimal:
    """The mark at which the isolated margin falls to maintenance (0: cannot be liquidated)."""
    return liquidation_price(pos.amt, pos.entry, pos.iso_wallet, costs.maint_margin_rate)


def liquidation_fee(pos: Position, qty: Decimal, price: Decimal, costs: Costs) -> Decimal:
    """The venue's liquidation fee, capped so the account never loses more than the margin left."""
    fee = qty * price * costs.liquidation_fee_rate
    realized = (price - pos.entry) * qty * (1 if pos.amt > 0 else -1)
    return max(ZERO, min(fee, pos.iso_wallet + realized))
