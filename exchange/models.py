"""Typed views of Binance USDⓈ-M answers (decimals as Decimal; unknown extra fields are ignored)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from trading.pnl import Fill

__all__ = [
    "Account",
    "AccountAsset",
    "AccountPosition",
    "AlgoOrder",
    "Income",
    "Kline",
    "Leverage",
    "Order",
    "PositionRisk",
    "PremiumIndex",
    "Trade",
]


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


def _blank_to_none(value: Any) -> Any:
    return None if value == "" else value


def _blank_to_zero(value: Any) -> Any:
    return "0" if value == "" or value is None else value


class Order(_Model):
    """POST / GET / DELETE /fapi/v1/order (and openOrders rows)."""

    symbol: str
    order_id: int
    client_order_id: str
    side: str
    type: str
    status: str
    price: Decimal = Decimal(0)
    avg_price: Decimal = Decimal(0)
    orig_qty: Decimal = Decimal(0)
    executed_qty: Decimal = Decimal(0)
    cum_qty: Decimal | None = None  # POST / DELETE only
    cum_quote: Decimal = Decimal(0)
    time_in_force: str | None = None
    orig_type: str | None = None
    position_side: str = "BOTH"
    reduce_only: bool = False
    close_position: bool = False
    stop_price: Decimal | None = None
    working_type: str | None = None
    price_protect: bool = False
    price_match: str | None = None
    self_trade_prevention_mode: str | None = None
    good_till_date: int | None = None
    time: int | None = None  # GET only
    update_time: int | None = None

    _v = field_validator("stop_price", mode="before")(staticmethod(_blank_to_none))

    @property
    def is_final(self) -> bool:
        return self.status in ("FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH", "REJECTED")

    @property
    def is_filled(self) -> bool:
        return self.status == "FILLED"


class AlgoOrder(_Model):
    """POST / GET /fapi/v1/algoOrder and openAlgoOrders rows."""

    algo_id: int
    client_algo_id: str
    algo_type: str = "CONDITIONAL"
    order_type: str
    symbol: str
    side: str
    position_side: str = "BOTH"
    algo_status: str
    time_in_force: str | None = None
    quantity: Decimal | None = None
    trigger_price: Decimal | None = None
    price: Decimal | None = None
    working_type: str | None = None
    close_position: bool = False
    price_protect: bool = False
    reduce_only: bool = False
    activate_price: Decimal | None = None
    callback_rate: Decimal | None = None
    actual_order_id: str | int | None = None
    actual_price: Decimal | None = None
    create_time: int | None = None
    update_time: int | None = None
    trigger_time: int | None = None

    _v = field_validator(
        "quantity", "trigger_price", "price", "activate_price", "callback_rate", "actual_price", mode="before"
    )(staticmethod(_blank_to_none))

    @property
    def is_open(self) -> bool:
        return self.algo_status in ("NEW", "TRIGGERING")


class AlgoCancel(_Model):
    """DELETE /fapi/v1/algoOrder."""

    algo_id: int
    client_algo_id: str
    code: str | int | None = None
    msg: str | None = None


class PositionRisk(_Model):
    """GET /fapi/v3/positionRisk row (no leverage / marginType in v3)."""

    symbol: str
    position_side: str = "BOTH"
    position_amt: Decimal
    entry_price: Decimal = Decimal(0)
    break_even_price: Decimal = Decimal(0)
    mark_price: Decimal = Decimal(0)
    un_realized_profit: Decimal = Decimal(0)
    liquidation_price: Decimal = Decimal(0)
    isolated_margin: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)
    margin_asset: str = "USDT"
    isolated_wallet: Decimal = Decimal(0)
    initial_margin: Decimal = Decimal(0)
    maint_margin: Decimal = Decimal(0)
    position_initial_margin: Decimal = Decimal(0)
    open_order_initial_margin: Decimal = Decimal(0)
    adl: int = 0
    bid_notional: Decimal = Decimal(0)
    ask_notional: Decimal = Decimal(0)
    update_time: int = 0
    # v2 only (tolerated when a v2 answer is parsed)
    leverage: int | None = None
    margin_type: str | None = None


class AccountAsset(_Model):
    asset: str
    wallet_balance: Decimal
    unrealized_profit: Decimal = Decimal(0)
    margin_balance: Decimal = Decimal(0)
    maint_margin: Decimal = Decimal(0)
    initial_margin: Decimal = Decimal(0)
    position_initial_margin: Decimal = Decimal(0)
    open_order_initial_margin: Decimal = Decimal(0)
    cross_wallet_balance: Decimal = Decimal(0)
    cross_un_pnl: Decimal = Decimal(0)
    available_balance: Decimal = Decimal(0)
    max_withdraw_amount: Decimal = Decimal(0)
    update_time: int = 0


class AccountPosition(_Model):
    symbol: str
    position_side: str = "BOTH"
    position_amt: Decimal
    unrealized_profit: Decimal = Decimal(0)
    isolated_margin: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)
    isolated_wallet: Decimal = Decimal(0)
    initial_margin: Decimal = Decimal(0)
    maint_margin: Decimal = Decimal(0)
    update_time: int = 0


class Account(_Model):
    """GET /fapi/v3/account."""

    total_initial_margin: Decimal = Decimal(0)
    total_maint_margin: Decimal = Decimal(0)
    total_wallet_balance: Decimal = Decimal(0)
    total_unrealized_profit: Decimal = Decimal(0)
    total_margin_balance: Decimal = Decimal(0)
    total_position_initial_margin: Decimal = Decimal(0)
    total_open_order_initial_margin: Decimal = Decimal(0)
    total_cross_wallet_balance: Decimal = Decimal(0)
    total_cross_un_pnl: Decimal = Decimal(0)
    available_balance: Decimal = Decimal(0)
    max_withdraw_amount: Decimal = Decimal(0)
    assets: list[AccountAsset] = Field(default_factory=list)
    positions: list[AccountPosition] = Field(default_factory=list)

    def asset(self, name: str) -> AccountAsset | None:
        return next((a for a in self.assets if a.asset == name), None)


class Trade(_Model):
    """GET /fapi/v1/userTrades row."""

    symbol: str
    id: int
    order_id: int
    side: str
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    realized_pnl: Decimal = Decimal(0)
    commission: Decimal = Decimal(0)
    commission_asset: str = "USDT"
    buyer: bool = False
    maker: bool = False
    position_side: str = "BOTH"
    time: int

    def to_fill(self, client_order_id: str) -> Fill:
        """This execution as the position's record of it (the venue's trade row names only the order id)."""
        return Fill(
            client_order_id=client_order_id,
            side=self.side,
            price=self.price,
            qty=self.qty,  # type: ignore[arg-type]
            fee=self.commission,
            fee_asset=self.commission_asset,
            time_ms=self.time,
            order_id=self.order_id,
            trade_id=self.id,
            maker=self.maker,
        )


class Income(_Model):
    """GET /fapi/v1/income row."""

    symbol: str = ""
    income_type: str
    income: Decimal
    asset: str = "USDT"
    info: str = ""
    time: int
    tran_id: int
    trade_id: str = ""

    @field_validator("trade_id", "info", mode="before")
    @classmethod
    def _to_str(cls, value: Any) -> Any:
        return "" if value is None else str(value)


class Kline(_Model):
    """One /fapi/v1/klines row (Binance sends it as an array)."""

    open_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    close_time: int
    quote_volume: Decimal
    trades: int
    taker_buy_base: Decimal
    taker_buy_quote: Decimal

    @classmethod
    def from_row(cls, row: list[Any]) -> Kline:
        return cls(
            open_time=int(row[0]),
            open=row[1],
            high=row[2],
            low=row[3],
            close=row[4],
            volume=row[5],
            close_time=int(row[6]),
            quote_volume=row[7],
            trades=int(row[8]),
            taker_buy_base=row[9],
            taker_buy_quote=row[10],
        )


class PremiumIndex(_Model):
    """GET /fapi/v1/premiumIndex."""

    symbol: str
    mark_price: Decimal
    index_price: Decimal = Decimal(0)
    estimated_settle_price: Decimal = Decimal(0)
    last_funding_rate: Decimal = Decimal(0)
    interest_rate: Decimal = Decimal(0)
    next_funding_time: int = 0
    time: int = 0

    _v = field_validator(
        "index_price", "estimated_settle_price", "last_funding_rate", "interest_rate", mode="before"
    )(staticmethod(_blank_to_zero))


class Leverage(_Model):
    """POST /fapi/v1/leverage."""

    symbol: str
    leverage: int
    max_notional_value: Decimal | None = None
