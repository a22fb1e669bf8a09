"""Request-weight and order-count tracking, and pacing that slows down *before* Binance's limits.

Binance counts IP request weight per minute (2400) and orders per account per 10 s (300) and per
minute (1200), and reports the used figures in `X-MBX-USED-WEIGHT-1M`, `X-MBX-ORDER-COUNT-10S` and
`X-MBX-ORDER-COUNT-1M` on its answers. The tracker keeps the latest figures (plus what we have sent
since, for requests still in flight), and `acquire()` sleeps until the window resets whenever this
request would take the count over `headroom_pct` of the limit. After a 429 / 418 with Retry-After
nothing is sent before that time: short waits are slept, long ones (and every ban) are refused.

Exits outrank entries: a request made under `exit_priority()` (closing orders, protective stops and
their cancels) may use the headroom between the entries' budget and the limit, so when the budget is
spent entries wait while exits keep going.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

from exchange.errors import IpBannedError, RateLimitedError

__all__ = [
    "ENDPOINT_WEIGHTS",
    "Priority",
    "WeightTracker",
    "current_priority",
    "exit_headroom_pct",
    "exit_priority",
    "klines_weight",
    "request_weight",
    "send_before",
    "send_deadline",
]


class Priority(StrEnum):
    NORMAL = "normal"  # entries and reads
    EXIT = "exit"  # anything that reduces risk: closing orders, hard stops, their cancels


_PRIORITY: contextvars.ContextVar[Priority] = contextvars.ContextVar(
    "request_priority", default=Priority.NORMAL
)


def current_priority() -> Priority:
    return _PRIORITY.get()


@contextlib.contextmanager
def exit_priority() -> Iterator[None]:
    """Requests made inside (in this task) are exits: they may use the headroom kept back from entries."""
    token = _PRIORITY.set(Priority.EXIT)
    try:
        yield
    finally:
        _PRIORITY.reset(token)


_SEND_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("send_deadline", default=None)


def send_deadline() -> float | None:
    return _SEND_DEADLINE.get()


@contextlib.contextmanager
def send_before(deadline: float | None) -> Iterator[None]:
    """Orders placed inside (in this task) are not sent after `deadline` (`time.monotonic()` seconds): a
    caller whose time is up (a Temporal attempt that timed out and is being retried elsewhere) must not
    send late, or the retry's look-up could miss the late order and both would be placed. Reads are not
    held back: the look-ups that decide what happened must still go."""
    token = _SEND_DEADLINE.set(deadline)
    try:
        yield
    finally:
        _SEND_DEADLINE.reset(token)


def exit_headroom_pct(headroom_pct: float) -> float:
    """Exits may go halfway from the entries' headroom to the limit (80 % → 90 %)."""
    return headroom_pct + (100.0 - headroom_pct) / 2


# (method, path) -> IP weight (notes §1). Paths not listed weigh 1.
ENDPOINT_WEIGHTS: dict[tuple[str, str], int] = {
    ("POST", "/fapi/v1/order"): 0,
    ("GET", "/fapi/v1/order"): 1,
    ("DELETE", "/fapi/v1/order"): 1,
    ("GET", "/fapi/v1/openOrders"): 1,
    ("POST", "/fapi/v1/algoOrder"): 0,
    ("GET", "/fapi/v1/algoOrder"): 1,
    ("DELETE", "/fapi/v1/algoOrder"): 1,
    ("GET", "/fapi/v1/openAlgoOrders"): 1,
    ("GET", "/fapi/v2/positionRisk"): 5,
    ("GET", "/fapi/v3/positionRisk"): 5,
    ("GET", "/fapi/v2/account"): 5,
    ("GET", "/fapi/v3/account"): 5,
    ("POST", "/fapi/v1/leverage"): 1,
    ("POST", "/fapi/v1/marginType"): 1,
    ("GET", "/fapi/v1/exchangeInfo"): 1,
    ("GET", "/fapi/v1/time"): 1,
    ("GET", "/fapi/v1/premiumIndex"): 1,
    ("GET", "/fapi/v1/userTrades"): 5,
    ("GET", "/fapi/v1/income"): 30,
    ("POST", "/fapi/v1/listenKey"): 1,
    ("PUT", "/fapi/v1/listenKey"): 1,
    ("DELETE", "/fapi/v1/listenKey"): 1,
}
# Endpoints that weigh more without a symbol.
_NO_SYMBOL_WEIGHTS: dict[tuple[str, str], int] = {
    ("GET", "/fapi/v1/openOrders"): 40,
    ("GET", "/fapi/v1/openAlgoOrders"): 40,
    ("GET", "/fapi/v1/premiumIndex"): 10,
}
# Endpoints that count against the account's order limits.
ORDER_ENDPOINTS = frozenset({("POST", "/fapi/v1/order"), ("POST", "/fapi/v1/algoOrder")})


def klines_weight(limit: int | None) -> int:
    limit = 500 if limit is None else limit
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


def request_weight(method: str, path: str, params: Mapping[str, object] | None = None) -> int:
    """The IP weight of one request (notes §1)."""
    key = (method, path)
    if path == "/fapi/v1/klines":
        limit = params.get("limit") if params else None
        return klines_weight(int(limit) if limit is not None else None)  # type: ignore[call-overload]
    if key in _NO_SYMBOL_WEIGHTS and not (params and params.get("symbol")):
        return _NO_SYMBOL_WEIGHTS[key]
    return ENDPOINT_WEIGHTS.get(key, 1)


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


@dataclass
class _Window:
    """A fixed counting window aligned on multiples of `length_s` of the (server) clock."""

    length_s: float
    limit: int
    used: int = 0
    index: int = -1

    def roll(self, now: float) -> None:
        idx = int(now // self.length_s)
        if idx != self.index:
            self.index = idx
            self.used = 0

    def seconds_to_reset(self, now: float) -> float:
        return (self.index + 1) * self.length_s - now


class WeightTracker:
    """Tracks Binance's usage figures and paces requests to stay under `headroom_pct` of each limit.

    `clock()` gives the venue's time in seconds (the client feeds it local time + its clock offset);
    `sleep` is awaited for pauses. Both are injectable for tests.
    """

    def __init__(
        self,
        weight_limit_1m: int = 2400,
        headroom_pct: float = 80.0,
        *,
        order_limit_10s: int = 300,
        order_limit_1m: int = 1200,
        max_wait_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = _sleep,
    ) -> None:
        if not 0 < headroom_pct <= 100:
            raise ValueError("headroom_pct must be in (0, 100]")
        self.headroom_pct = headroom_pct
        self.clock = clock
        self.sleep = sleep
        self.max_wait_s = max_wait_s
        self._weight = _Window(60.0, weight_limit_1m)
        self._orders_10s = _Window(10.0, order_limit_10s)
        self._orders_1m = _Window(60.0, order_limit_1m)
        self.blocked_until: float = 0.0
        self.banned: bool = False
        self.pauses = 0
        self.paused_s = 0.0
        self.rate_limited = 0  # 429s received
        self.bans = 0  # 418s received

    # --- budgets ---
    def _budget(self, window: _Window) -> float:
        pct = self.headroom_pct
        if current_priority() is Priority.EXIT:
            pct = exit_headroom_pct(pct)
        return window.limit * pct / 100.0

    @property
    def weight_budget(self) -> float:
        return self._budget(self._weight)

    # --- before sending ---
    def delay_for(self, weight: int, orders: int = 0) -> float:
        """Seconds to wait before a request of this weight / order count may go (0: send now).

        Raises RateLimitedError / IpBannedError when a Retry-After block is too long to sleep through.
        """
        now = self.clock()
        if self.blocked_until > now:
            wait = self.blocked_until - now
            if self.banned:
                raise IpBannedError(
                    "IP banned by the venue; nothing is sent until the ban ends",
                    http_status=418,
                    retry_after_s=round(wait, 3),
                )
            if wait > self.max_wait_s:
                raise RateLimitedError(
                    "rate limited by the venue; nothing is sent until Retry-After",
                    http_status=429,
                    retry_after_s=round(wait, 3),
                )
            return wait
        self.banned = False
        delay = 0.0
        if weight:
            w = self._weight
            w.roll(now)
            if w.used and w.used + weight > self._budget(w):
                delay = max(delay, w.seconds_to_reset(now))
        if orders:
            for w in (self._orders_10s, self._orders_1m):
                w.roll(now)
                if w.used and w.used + orders > self._budget(w):
                    delay = max(delay, w.seconds_to_reset(now))
        return delay

    def reserve(self, weight: int, orders: int = 0) -> None:
        """Count a request we are sending now (until the venue's header tells us the real figure)."""
        now = self.clock()
        if weight:
            self._weight.roll(now)
            self._weight.used += weight
        if orders:
            self._orders_10s.roll(now)
            self._orders_10s.used += orders
            self._orders_1m.roll(now)
            self._orders_1m.used += orders

    async def acquire(self, weight: int, orders: int = 0) -> None:
        """Wait (if needed) until this request fits under the headroom, then count it."""
        while True:
            delay = self.delay_for(weight, orders)
            if delay <= 0:
                break
            self.pauses += 1
            self.paused_s += delay
            # A hair past the boundary so the next check lands in the new window.
            await self.sleep(delay + 0.005)
        self.reserve(weight, orders)

    # --- after the answer ---
    def update(self, headers: Mapping[str, str]) -> None:
        """Take the venue's figures from one response's headers."""
        used = headers.get("x-mbx-used-weight-1m")
        o10 = headers.get("x-mbx-order-count-10s")
        o1m = headers.get("x-mbx-order-count-1m")
        if used is None and o10 is None and o1m is None:
            return
        now = self.clock()
        for window, value in ((self._weight, used), (self._orders_10s, o10), (self._orders_1m, o1m)):
            if value is None:
                continue
            try:
                n = int(value)
            except ValueError:
                continue
            window.roll(now)
            # Answers can arrive out of order and our own count includes requests still in flight:
            # keep the larger figure within the window (the venue's count only grows in a window).
            if n > window.used:
                window.used = n

    def block(self, retry_after_s: float | None, *, banned: bool = False, counted: bool = True) -> None:
        """After a 429 / 418: send nothing before `retry_after_s` from now (default: next minute)."""
        now = self.clock()
        if retry_after_s is None:
            self._weight.roll(now)
            retry_after_s = self._weight.seconds_to_reset(now) if not banned else 120.0
        self.blocked_until = max(self.blocked_until, now + retry_after_s)
        self.banned = self.banned or banned
        if not counted:  # told by another worker, not by the venue
            return
        if banned:
            self.bans += 1
        else:
            self.rate_limited += 1

    # --- figures (for metrics) ---
    def snapshot(self) -> dict[str, float | int | bool]:
        now = self.clock()
        for w in (self._weight, self._orders_10s, self._orders_1m):
            w.roll(now)
        return {
            "used_weight_1m": self._weight.used,
            "weight_limit_1m": self._weight.limit,
            "weight_budget_1m": self.weight_budget,
            "order_count_10s": self._orders_10s.used,
            "order_count_1m": self._orders_1m.used,
            "blocked_for_s": max(0.0, self.blocked_until - now),
            "banned": self.banned and self.blocked_until > now,
            "pauses": self.pauses,
            "paused_s": self.paused_s,
            "rate_limited": self.rate_limited,
            "bans": self.bans,
        }

    @property
    def used_weight_1m(self) -> int:
        self._weight.roll(self.clock())
        return self._weight.used

    @property
    def order_count_10s(self) -> int:
        self._orders_10s.roll(self.clock())
        return self._orders_10s.used

    @property
    def order_count_1m(self) -> int:
        self._orders_1m.roll(self.clock())
        return self._orders_1m.used
