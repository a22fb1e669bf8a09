"""MARKET orders filled in pieces spread over time: the fault's setting and one order's plan.

`{"partial_fills": {"pieces": 3, "interval_s": 0.5, "count": 1}}`: the next `count` (default 1)
MARKET orders accepted through POST /fapi/v1/order fill in `pieces` equal parts (rounded down to
the market step; the last part takes the rest), the first on arrival and each next one
`interval_s` later (default 0.5 s) at the then current price. Until the last part the order is
PARTIALLY_FILLED and open: GET /fapi/v1/order and openOrders show it, userTrades has one row per
part and the user-data stream sends one ORDER_TRADE_UPDATE (TRADE) per part. A part that can no
longer execute (reduce-only with nothing left to reduce, margin gone) expires the rest; canceling
the order, a liquidation or a restart stops it too. Too small an order fills in fewer parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from exchange.paper.fault_params import FaultConfigError, fields, integer, number

_KEYS = ("pieces", "interval_s", "count")
MAX_PIECES = 100


@dataclass(slots=True)
class PartialFills:
    pieces: int
    interval_s: float
    count: int

    @property
    def interval_ms(self) -> int:
        return round(self.interval_s * 1000)

    def show(self) -> dict[str, Any]:
        return {"pieces": self.pieces, "interval_s": self.interval_s, "count": self.count}


def parse_partial_fills(value: Any) -> PartialFills:
    obj = fields("partial_fills", value, _KEYS)
    if obj.get("pieces") is None:
        raise FaultConfigError("partial_fills.pieces is required (how many parts an order fills in)")
    pieces = integer("partial_fills.pieces", obj["pieces"], minimum=2, maximum=MAX_PIECES)
    interval_s = (
        0.5 if obj.get("interval_s") is None else number("partial_fills.interval_s", obj["interval_s"])
    )
    count = 1 if obj.get("count") is None else integer("partial_fills.count", obj["count"], minimum=1)
    return PartialFills(pieces, interval_s, count)


@dataclass(slots=True)
class SplitPlan:
    """What is left to fill of one order after its first part: `left` parts of `piece`, the last of
    them the whole `rest`; the next one due at `next_ms`."""

    piece: Decimal
    rest: Decimal
    left: int
    next_ms: int
    interval_ms: int

    def take(self) -> Decimal:
        """The next part's quantity (the plan moves on: one part fewer, the next due later)."""
        self.left -= 1
        qty = self.rest if self.left <= 0 else min(self.piece, self.rest)
        self.rest -= qty
        self.next_ms += self.interval_ms
        return qty

    @property
    def done(self) -> bool:
        return self.left <= 0


def plan_split(qty: Decimal, pieces: int, step: Decimal, now_ms: int, interval_ms: int) -> SplitPlan | None:
    """The plan to fill `qty` in `pieces` step-rounded parts (fewer when `qty` has too few steps),
    or None when it cannot be split at all. The first part, `piece`, fills now."""
    n = min(pieces, int(qty // step))
    if n < 2:
        return None
    piece = qty // (step * n) * step
    return SplitPlan(piece, qty - piece, n - 1, now_ms + interval_ms, interval_ms)
