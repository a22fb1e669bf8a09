"""Typed requests to the venue and what came back: the contract between workflows and exchange activities."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Literal

from pydantic import Field

from trading.instruments import SymbolRules
from trading.message_base import FrozenMsg
from trading.pnl import Fill

OrderSide = Literal["BUY", "SELL"]


class PrepareEntryInput(FrozenMsg):
    symbol: str


class EntryMarket(FrozenMsg):
    """The symbol's filters and the current mark price: what sizing needs."""

    rules: SymbolRules
    mark_price: Decimal


class SetLeverageInput(FrozenMsg):
    symbol: str
    leverage: int = Field(ge=1, le=125)


class PlaceOrderInput(FrozenMsg):
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


class OrderOutcome(FrozenMsg):
    """A MARKET order's final state with its fills (fees as the venue charged them)."""

    client_order_id: str
    order_id: int
    status: OrderStatus
    executed_qty: Decimal
    avg_price: Decimal
    fills: list[Fill] = Field(default_factory=list)
    # True when the first answer was lost and the order was found by its client id afterwards.
    recovered: bool = False


class PlaceStopInput(FrozenMsg):
    symbol: str
    side: OrderSide
    trigger_price: Decimal = Field(gt=0)
    client_algo_id: str
    working_type: Literal["MARK_PRICE", "CONTRACT_PRICE"] = "MARK_PRICE"


class StopOutcome(FrozenMsg):
    client_algo_id: str
    algo_id: int
    status: str
    trigger_price: Decimal


class CancelStopInput(FrozenMsg):
    symbol: str
    client_algo_id: str


class MarkPriceInput(FrozenMsg):
    symbol: str


class ExchangePositionInput(FrozenMsg):
    symbol: str


class ExchangePosition(FrozenMsg):
    symbol: str
    position_amt: Decimal  # signed: + long, − short
    entry_price: Decimal
    mark_price: Decimal


class SyncFillsInput(FrozenMsg):
    symbol: str
    since_ms: int
    order_ids: dict[int, str] = Field(default_factory=dict)  # known order id → client order id


class SymbolCheckInput(FrozenMsg):
    symbol: str
    want_price: bool = False
    # A position started with a grant: its workflow id, to learn whether this worker started it with
    # that grant (activities/vouchers.py).
    vouch_for: str | None = None


class SymbolCheck(FrozenMsg):
    rules: SymbolRules
    mark_price: Decimal | None = None
    vouched_notional: Decimal | None = None  # the grant this worker started `vouch_for` with, if any


class OpenEntryInput(FrozenMsg):
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


class OpenEntryOutcome(FrozenMsg):
    market: EntryMarket
    outcome: OrderOutcome | None = None  # None: below the venue's minimum, or expired; nothing was sent
    expired: bool = False  # the entry deadline passed with nothing executed under its client id
