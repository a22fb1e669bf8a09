"""Typed requests to the venue and what came back: the contract between workflows and exchange activities."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from trading.instruments import SymbolRules
from trading.pnl import Fill

OrderSide = Literal["BUY", "SELL"]


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrepareEntryInput(_Msg):
    symbol: str


class EntryMarket(_Msg):
    """The symbol's filters and the current mark price: what sizing needs."""

    rules: SymbolRules
    mark_price: Decimal


class SetLeverageInput(_Msg):
    symbol: str
    leverage: int = Field(ge=1, le=125)


class PlaceOrderInput(_Msg):
    symbol: str
    side: OrderSide
    quantity: Decimal = Field(gt=0)
    client_order_id: str
    reduce_only: bool = False
    # When the intent was made (the workflow's start), for the intent-to-order latency metric.
    intent_at_ms: int | None = None


class OrderStatus(StrEnum):
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    EXPIRED_IN_MATCH = "EXPIRED_IN_MATCH"
    REJECTED = "REJECTED"


class OrderOutcome(_Msg):
    """A MARKET order's final state with its fills (fees as the venue charged them)."""

    client_order_id: str
    order_id: int
    status: OrderStatus
    executed_qty: Decimal
    avg_price: Decimal
    fills: list[Fill] = Field(default_factory=list)
    # True when the first answer was lost and the order was found by its client id afterwards.
    recovered: bool = False


class PlaceStopInput(_Msg):
    symbol: str
    side: OrderSide
    trigger_price: Decimal = Field(gt=0)
    client_algo_id: str
    working_type: Literal["MARK_PRICE", "CONTRACT_PRICE"] = "MARK_PRICE"


class StopOutcome(_Msg):
    client_algo_id: str
    algo_id: int
    status: str
    trigger_price: Decimal


class CancelStopInput(_Msg):
    symbol: str
    client_algo_id: str


class MarkPriceInput(_Msg):
    symbol: str


class ExchangePositionInput(_Msg):
    symbol: str


class ExchangePosition(_Msg):
    symbol: str
    position_amt: Decimal  # signed: + long, − short
    entry_price: Decimal
    mark_price: Decimal


class SyncFillsInput(_Msg):
    symbol: str
    since_ms: int
    order_ids: dict[int, str] = Field(default_factory=dict)  # known order id → client order id


class SymbolCheckInput(_Msg):
    symbol: str
    want_price: bool = False


class SymbolCheck(_Msg):
    rules: SymbolRules
    mark_price: Decimal | None = None


class OpenEntryInput(_Msg):
    """Everything the entry needs in one exchange activity: size at the mark, leverage, the order."""

    symbol: str
    side: OrderSide
    leverage: int = Field(ge=1, le=125)
    notional_usdt: Decimal = Field(gt=0)
    quantity: Decimal | None = Field(None, gt=0)
    client_order_id: str
    intent_at_ms: int | None = None
    # Epoch ms after which nothing is sent: an attempt that starts later looks the order up and, if
    # nothing executed, answers `expired` (an intent must not execute hours later at another price).
    deadline_ms: int | None = None


class OpenEntryOutcome(_Msg):
    market: EntryMarket
    outcome: OrderOutcome | None = None  # None: below the venue's minimum, or expired; nothing was sent
    expired: bool = False  # the entry deadline passed with nothing executed under its client id
