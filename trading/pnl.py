"""Realized and unrealized PnL of one position, computed from its fills (fees included)."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from trading.intents import Side

ZERO = Decimal(0)


class Fill(BaseModel):
    """One execution as the exchange reported it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_order_id: str
    side: Literal["BUY", "SELL"]
    price: Decimal = Field(gt=0)
    qty: Decimal = Field(gt=0)
    fee: Decimal = Field(ge=0)
    # The asset the fee was charged in (`commissionAsset`): BNB when the account pays fees in BNB. The
    # default keeps fills serialized before the asset was carried (all charged in USDT) loading unchanged.
    fee_asset: str = "USDT"
    time_ms: int = 0
    order_id: int | None = None
    trade_id: int | None = None
    maker: bool = False


class OverfillError(ValueError):
    """A fill would close more than is open: the position would reverse."""


class PositionTally(BaseModel):
    """Fees count only in the margin asset (the one PnL is settled in); a fee in another asset (BNB) is
    kept apart in `other_fees`, not added as if it were margin asset, nor dropped."""

    model_config = ConfigDict(extra="forbid")

    side: Side
    margin_asset: str = "USDT"
    open_qty: Decimal = ZERO
    entry_qty: Decimal = ZERO
    entry_notional: Decimal = ZERO
    exit_qty: Decimal = ZERO
    exit_notional: Decimal = ZERO
    cost_basis: Decimal = ZERO  # entry notional still open (average-cost method)
    realized_gross: Decimal = ZERO
    fees: Decimal = ZERO  # in the margin asset
    other_fees: dict[str, Decimal] = Field(default_factory=dict)  # asset → fees charged in it

    @property
    def avg_entry(self) -> Decimal:
        return self.entry_notional / self.entry_qty if self.entry_qty else ZERO

    @property
    def avg_exit(self) -> Decimal:
        return self.exit_notional / self.exit_qty if self.exit_qty else ZERO

    @property
    def open_entry_price(self) -> Decimal:
        return self.cost_basis / self.open_qty if self.open_qty else ZERO

    @property
    def realized_net(self) -> Decimal:
        return self.realized_gross - self.fees

    def unrealized(self, mark: Decimal) -> Decimal:
        return (mark * self.open_qty - self.cost_basis) * self.side.sign

    def add(self, fill: Fill) -> None:
        if fill.fee_asset == self.margin_asset:
            self.fees += fill.fee
        elif fill.fee:
            self.other_fees[fill.fee_asset] = self.other_fees.get(fill.fee_asset, ZERO) + fill.fee
        if fill.side == self.side.entry_order_side:
            self.open_qty += fill.qty
            self.entry_qty += fill.qty
            self.entry_notional += fill.price * fill.qty
            self.cost_basis += fill.price * fill.qty
            return
        if fill.qty > self.open_qty:
            raise OverfillError(
                f"fill {fill.client_order_id} closes {fill.qty} but only {self.open_qty} is open"
            )
        released = self.cost_basis * fill.qty / self.open_qty
        self.realized_gross += (fill.price * fill.qty - released) * self.side.sign
        self.cost_basis -= released
        self.open_qty -= fill.qty
        self.exit_qty += fill.qty
        self.exit_notional += fill.price * fill.qty


def tally(side: Side, fills: Iterable[Fill], margin_asset: str = "USDT") -> PositionTally:
    """The position's figures from its fills; `margin_asset` is the symbol's (its quote asset: USDC for a
    USDC-margined symbol)."""
    result = PositionTally(side=side, margin_asset=margin_asset)
    for fill in fills:
        result.add(fill)
    return result


def cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"))
