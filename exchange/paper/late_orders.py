"""Late execution: an order whose answer is lost and which executes only some seconds later.

`{"late_execution": {"delay_s": 5, "count": 1, "answer": "503" | "timeout", "hang_s": 30}}`: the
next `count` (default 1) POST /fapi/v1/order requests that pass authentication are NOT executed on
arrival. The client gets HTTP 503 -1000 "Unknown error, ..." ("503", the default) or no answer at
all ("timeout": the request is held `hang_s` seconds, default 30, past the client's timeout, then
the connection is closed). Meanwhile the order does not exist: GET /fapi/v1/order by its
origClientOrderId answers -2013 "Order does not exist.". `delay_s` seconds after arrival it is
placed and matched exactly as if it had just been received: a MARKET order fills at the then
current price, reduceOnly is judged against the position at that moment (nothing left to reduce:
rejected, silently, as is any other refusal at that point).

This is the fault that defeats look-up-before-resend. If the client sends the same
clientOrderId again before the late copy executes, the venue's duplicate rule applies when the late
copy arrives: while an order with that clientOrderId is open (NEW or PARTIALLY_FILLED) the late
copy is refused (-4116 "clientOrderId is duplicated."); once that order is filled, canceled or
expired the late copy IS executed, a second order with the same clientOrderId, which is exactly the
double order the trading system must prevent.

Pending late orders live in memory only (a restart loses them) and `DELETE /admin/faults` drops them.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from exchange.paper.fault_params import FaultConfigError, choice, fields, integer, number

ANSWERS = ("503", "timeout")
_KEYS = ("delay_s", "count", "answer", "hang_s")


@dataclass(slots=True)
class LateExecution:
    delay_s: float
    count: int
    answer: str
    hang_s: float

    def show(self) -> dict[str, Any]:
        return {"delay_s": self.delay_s, "count": self.count, "answer": self.answer, "hang_s": self.hang_s}


@dataclass(order=True, slots=True)
class LateOrder:
    due_ms: int
    seq: int  # arrival order among orders due the same millisecond
    params: dict[str, str] = field(compare=False)


def parse_late_execution(value: Any) -> LateExecution:
    obj = fields("late_execution", value, _KEYS)
    if obj.get("delay_s") is None:
        raise FaultConfigError("late_execution.delay_s is required (seconds until the order executes)")
    delay_s = number("late_execution.delay_s", obj["delay_s"])
    count = 1 if obj.get("count") is None else integer("late_execution.count", obj["count"], minimum=1)
    answer = "503" if obj.get("answer") is None else choice("late_execution.answer", obj["answer"], ANSWERS)
    hang_s = 30.0 if obj.get("hang_s") is None else number("late_execution.hang_s", obj["hang_s"])
    return LateExecution(delay_s, count, answer, hang_s)


class LateOrders:
    """The armed setting and the orders waiting to execute."""

    def __init__(self) -> None:
        self.config: LateExecution | None = None
        self.pending: list[LateOrder] = []
        self._seq = 0

    def arm(self, config: LateExecution | None) -> None:
        self.config = config

    def clear(self) -> None:
        self.config = None
        self.pending = []

    def take(self, params: dict[str, str], now_ms: int) -> LateExecution | None:
        """Hold this order back if the fault is armed: the setting it was held under, or None."""
        cfg = self.config
        if cfg is None:
            return None
        cfg.count -= 1
        if cfg.count <= 0:
            self.config = None
        self._seq += 1
        bisect.insort(self.pending, LateOrder(now_ms + round(cfg.delay_s * 1000), self._seq, dict(params)))
        return cfg

    def due(self, now_ms: int) -> list[dict[str, str]]:
        """The held orders whose time has come, in arrival order (removed from the queue)."""
        n = 0
        while n < len(self.pending) and self.pending[n].due_ms <= now_ms:
            n += 1
        if not n:
            return []
        ready, self.pending = self.pending[:n], self.pending[n:]
        return [o.params for o in ready]

    def show(self, now_ms: int) -> list[dict[str, Any]]:
        return [
            {
                "symbol": o.params.get("symbol", ""),
                "clientOrderId": o.params.get("newClientOrderId", ""),
                "executes_in_s": round(max(0, o.due_ms - now_ms) / 1000, 3),
            }
            for o in self.pending
        ]
