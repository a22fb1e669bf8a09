"""The account as the venue reports it, and the gates it drives (the balance tracker's half of the risk
layer; `trading.risk.assess` calls `balance_room`).

`AccountBalance` is one reading of the account (GET /fapi/v3/account after each ACCOUNT_UPDATE of the
user-data stream, and periodically): wallet balance, unrealized PnL, equity (the margin balance: wallet
plus unrealized), available balance, initial and maintenance margin, and the margin ratio (maintenance
margin over equity, Binance's figure; at 1 the account is liquidated).

`BalancePolicy` sizes against that equity instead of a figure from the settings:

* a grant is at most `max_trade_exposure` × equity of notional;
* all reservations together at most `max_total_exposure` × equity (on top of the governor's absolute
  `max_total_notional_usdt`, whichever is smaller);
* no new entry while the margin ratio is at or above `max_margin_ratio` (Gate.MARGIN_RATIO).

Until a first reading arrives the gates do nothing (the governor's absolute limits still hold).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ZERO = Decimal(0)


class AccountBalance(BaseModel):
    """One reading of the account (a risk event: it also marks the emergency stop's equity)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["balance"] = "balance"
    at_ms: int = Field(ge=0)
    wallet: Decimal
    unrealized: Decimal
    equity: Decimal = Field(ge=0)
    available: Decimal
    initial_margin: Decimal = Field(ge=0)
    maint_margin: Decimal = Field(ge=0)
    reason: str = "check"  # what prompted the reading: the ACCOUNT_UPDATE's reason, or "check"

    @property
    def margin_ratio(self) -> Decimal:
        return self.maint_margin / self.equity if self.equity > 0 else Decimal(1)


class BalancePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_trade_exposure: Decimal = Field(Decimal("0.5"), gt=0, le=125)
    max_total_exposure: Decimal = Field(Decimal("3"), gt=0, le=125)
    max_margin_ratio: Decimal = Field(Decimal("0.5"), gt=0, le=1)


def margin_refusal(balance: AccountBalance, policy: BalancePolicy) -> str | None:
    """Why no entry may open now (None: it may)."""
    ratio = balance.margin_ratio
    if ratio >= policy.max_margin_ratio:
        return (
            f"margin ratio {ratio:.4f} (maintenance {balance.maint_margin} / equity {balance.equity} USDT) "
            f"≥ {policy.max_margin_ratio}"
        )
    return None


def balance_room(balance: AccountBalance, policy: BalancePolicy, held_usdt: Decimal) -> tuple[Decimal, str]:
    """The largest grant the equity allows now, and the figures that set it."""
    per_trade = policy.max_trade_exposure * balance.equity
    total = policy.max_total_exposure * balance.equity - held_usdt
    if per_trade <= total:
        return per_trade, f"equity {balance.equity} USDT × {policy.max_trade_exposure} per trade"
    room = max(total, ZERO)
    return room, (
        f"equity {balance.equity} USDT × {policy.max_total_exposure} in all, {held_usdt} USDT reserved"
    )
