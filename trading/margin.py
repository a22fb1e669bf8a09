"""USD-M futures arithmetic shared by the paper exchange and the backtester, so that a backtest
charges exactly what the paper venue charges: positions (one-way mode), fills, margin, liquidation, and
the venue's default rates.

All money is `Decimal`. A position's amount is signed (long > 0, short < 0); its entry price is the
weighted average of the fills that opened it; a fill against it realizes PnL at the fill price.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

# Binance USD-M defaults (VIP 0): what the paper venue charges unless configured otherwise.
TAKER_FEE = Decimal("0.0004")
MAKER_FEE = Decimal("0.0002")
FUNDING_RATE = Decimal("0.0001")  # per funding interval
FUNDING_INTERVAL_HOURS = 8
MAINT_MARGIN_RATE = Decimal("0.004")
LIQUIDATION_FEE_RATE = Decimal("0.0125")

ZERO = Decimal(0)


@dataclass(slots=True)
class Position:
    symbol: str
    amt: Decimal = ZERO
    entry: Decimal = ZERO
    iso_wallet: Decimal = ZERO  # isolated margin (part of the wallet balance), 0 for cross
    open_fees: Decimal = ZERO  # opening fees still carried by the open amount (break-even price)
    cum_realized: Decimal = ZERO  # accumulated realized PnL of this symbol (ACCOUNT_UPDATE "cr")
    update_time: int = 0

    def unrealized(self, mark: Decimal) -> Decimal:
        return (mark - self.entry) * self.amt if self.amt else ZERO

    def break_even(self) -> Decimal:
        if not self.amt:
            return ZERO
        per_unit = self.open_fees / abs(self.amt)
        return self.entry + per_unit if self.amt > 0 else self.entry - per_unit

    def apply(self, eff: FillEffect) -> None:
        """Take a fill's effect (from `fill_effect`) into this position."""
        self.amt, self.entry, self.iso_wallet, self.open_fees = (
            eff.new_amt,
            eff.new_entry,
            eff.new_iso,
            eff.new_open_fees,
        )
        self.cum_realized += eff.realized

    def to_row(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "amt": str(self.amt),
            "entry": str(self.entry),
            "iso_wallet": str(self.iso_wallet),
            "open_fees": str(self.open_fees),
            "cum_realized": str(self.cum_realized),
            "update_time": self.update_time,
        }

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> Position:
        return cls(
            symbol=r["symbol"],
            amt=Decimal(r["amt"]),
            entry=Decimal(r["entry"]),
            iso_wallet=Decimal(r["iso_wallet"]),
            open_fees=Decimal(r["open_fees"]),
            cum_realized=Decimal(r["cum_realized"]),
            update_time=int(r["update_time"]),
        )


@dataclass(slots=True)
class FillEffect:
    """What a fill of signed quantity `dq` at `price` does to a position (computed, not applied)."""

    new_amt: Decimal
    new_entry: Decimal
    closed_qty: Decimal  # the part that reduced the old position
    opened_qty: Decimal  # the part that increased or opened (after a flip: the new side)
    realized: Decimal
    new_iso: Decimal
    new_open_fees: Decimal


def fill_effect(
    pos: Position, dq: Decimal, price: Decimal, fee: Decimal, leverage: int, isolated: bool
) -> FillEffect:
    a, e = pos.amt, pos.entry
    q = abs(dq)
    if a == 0 or (a > 0) == (dq > 0):
        new_a = a + dq
        new_e = (e * abs(a) + price * q) / abs(new_a)
        iso = pos.iso_wallet + (q * price / leverage if isolated else ZERO)
        return FillEffect(new_a, new_e, ZERO, q, ZERO, iso, pos.open_fees + fee)
    closed = min(abs(a), q)
    realized = (price - e) * closed * (1 if a > 0 else -1)
    sign = 1 if dq > 0 else -1
    new_a = a + sign * closed
    frac_left = (abs(a) - closed) / abs(a)
    iso = pos.iso_wallet * frac_left
    fees = pos.open_fees * frac_left
    opened = q - closed
    new_e = e if new_a else ZERO
    if opened:
        new_a = sign * opened
        new_e = price
        fee_open = fee * opened / q
        fees = fee_open
        if isolated:
            iso = opened * price / leverage
    return FillEffect(new_a, new_e, closed, opened, realized, iso if new_a else ZERO, fees if new_a else ZERO)


def liquidation_price(amt: Decimal, entry: Decimal, margin: Decimal, mmr: Decimal) -> Decimal:
    """The mark price at which `margin + amt·(P − entry) = mmr·|amt|·P` (0 when it cannot happen).

    `margin` is the isolated wallet for an isolated position, or for a cross position the cross
    wallet plus the other cross positions' unrealized PnL minus their maintenance margin."""
    if not amt:
        return ZERO
    denom = amt - mmr * abs(amt)
    p = (amt * entry - margin) / denom
    return p if p > 0 else ZERO
