"""Orders and algo (conditional) orders of the paper exchange, and the rules that fire them."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

ZERO = Decimal(0)
OPEN_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})
ALGO_OPEN_STATUSES = frozenset({"NEW", "TRIGGERING"})


@dataclass(slots=True)
class Order:
    order_id: int
    symbol: str
    client_id: str
    side: str  # BUY / SELL
    type: str  # MARKET / LIMIT / LIQUIDATION
    tif: str  # GTC / IOC / FOK / GTX
    qty: Decimal
    price: Decimal  # ZERO for MARKET
    reduce_only: bool
    time: int
    update_time: int
    orig_type: str = ""
    stop_price: Decimal = ZERO
    close_position: bool = False
    working_type: str = "CONTRACT_PRICE"
    price_protect: bool = False
    status: str = "NEW"
    executed: Decimal = ZERO
    cum_quote: Decimal = ZERO
    stp: str = "EXPIRE_MAKER"
    gtd: int = 0

    def __post_init__(self) -> None:
        if not self.orig_type:
            self.orig_type = self.type

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.executed

    @property
    def avg_price(self) -> Decimal:
        return self.cum_quote / self.executed if self.executed else ZERO

    def to_row(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "symbol": self.symbol,
            "client_id": self.client_id,
            "side": self.side,
            "type": self.type,
            "tif": self.tif,
            "qty": str(self.qty),
            "price": str(self.price),
            "reduce_only": self.reduce_only,
            "time": self.time,
            "update_time": self.update_time,
            "orig_type": self.orig_type,
            "stop_price": str(self.stop_price),
            "close_position": self.close_position,
            "working_type": self.working_type,
            "price_protect": self.price_protect,
            "status": self.status,
            "executed": str(self.executed),
            "cum_quote": str(self.cum_quote),
            "stp": self.stp,
            "gtd": self.gtd,
        }

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> Order:
        d = dict(r)
        for k in ("qty", "price", "stop_price", "executed", "cum_quote"):
            d[k] = Decimal(d[k])
        return cls(**d)


@dataclass(slots=True)
class AlgoOrder:
    algo_id: int
    symbol: str
    client_algo_id: str
    side: str
    order_type: str  # STOP_MARKET / TAKE_PROFIT_MARKET / STOP / TAKE_PROFIT / TRAILING_STOP_MARKET
    tif: str
    qty: Decimal | None  # None with closePosition
    price: Decimal  # ZERO for the *_MARKET types
    trigger_price: Decimal
    working_type: str
    close_position: bool
    reduce_only: bool
    price_protect: bool
    create_time: int
    update_time: int
    status: str = "NEW"
    trigger_time: int = 0
    actual_order_id: int | None = None
    actual_price: Decimal = ZERO
    actual_qty: Decimal = ZERO
    activate_price: Decimal | None = None
    callback_rate: Decimal | None = None
    extreme: Decimal | None = None  # trailing stop: best price seen since activation
    stp: str = "EXPIRE_MAKER"
    gtd: int = 0
    reject_reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_open(self) -> bool:
        return self.status in ALGO_OPEN_STATUSES

    @property
    def child_type(self) -> str:
        return "LIMIT" if self.order_type in ("STOP", "TAKE_PROFIT") else "MARKET"

    def should_trigger(self, price: Decimal) -> bool:
        """Binance's rules: STOP* BUY at price ≥ trigger, SELL at ≤; TAKE_PROFIT* the reverse."""
        if self.order_type == "TRAILING_STOP_MARKET":
            return self._trailing(price)
        if self.order_type.startswith("STOP"):
            return price >= self.trigger_price if self.side == "BUY" else price <= self.trigger_price
        return price <= self.trigger_price if self.side == "BUY" else price >= self.trigger_price

    def _trailing(self, price: Decimal) -> bool:
        assert self.callback_rate is not None
        if self.extreme is None:
            act = self.activate_price
            if act is not None and (price > act if self.side == "BUY" else price < act):
                return False
            self.extreme = price
        if self.side == "SELL":
            self.extreme = max(self.extreme, price)
            return price <= self.extreme * (1 - self.callback_rate / 100)
        self.extreme = min(self.extreme, price)
        return price >= self.extreme * (1 + self.callback_rate / 100)

    def to_row(self) -> dict[str, Any]:
        def s(v: Decimal | None) -> str | None:
            return None if v is None else str(v)

        return {
            "algo_id": self.algo_id,
            "symbol": self.symbol,
            "client_algo_id": self.client_algo_id,
            "side": self.side,
            "order_type": self.order_type,
            "tif": self.tif,
            "qty": s(self.qty),
            "price": str(self.price),
            "trigger_price": str(self.trigger_price),
            "working_type": self.working_type,
            "close_position": self.close_position,
            "reduce_only": self.reduce_only,
            "price_protect": self.price_protect,
            "create_time": self.create_time,
            "update_time": self.update_time,
            "status": self.status,
            "trigger_time": self.trigger_time,
            "actual_order_id": self.actual_order_id,
            "actual_price": str(self.actual_price),
            "actual_qty": str(self.actual_qty),
            "activate_price": s(self.activate_price),
            "callback_rate": s(self.callback_rate),
            "extreme": s(self.extreme),
            "stp": self.stp,
            "gtd": self.gtd,
            "reject_reason": self.reject_reason,
        }

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> AlgoOrder:
        d = dict(r)
        for k in ("price", "trigger_price", "actual_price", "actual_qty"):
            d[k] = Decimal(d[k])
        for k in ("qty", "activate_price", "callback_rate", "extreme"):
            d[k] = None if d[k] is None else Decimal(d[k])
        return cls(**d)
