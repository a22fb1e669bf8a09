"""Request-weight and order-count limits with Binance's headers, 429s and the 418 ban.

Windows are rolling (per-second buckets), so a test never straddles a fixed minute boundary:
- REQUEST_WEIGHT per client IP over 60 s (default 2400);
- ORDERS per account over 10 s (300) and 60 s (1200).

Over the weight limit the client gets 429 -1003 with `Retry-After`; a client that keeps sending
while told to wait escalates to 418 (an IP ban of `ban_s`, default 2 minutes).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from exchange.paper.errors import ApiError


class LimitError(ApiError):
    """An ApiError that also carries response headers (`Retry-After`)."""

    def __init__(self, code: int, msg: str, http_status: int, retry_after_s: int) -> None:
        super().__init__(code, msg, http_status)
        self.retry_after_s = max(1, int(retry_after_s))


class _Window:
    """Sum of (second, amount) buckets over the last `span_s` seconds."""

    __slots__ = ("buckets", "span_s", "total")

    def __init__(self, span_s: int) -> None:
        self.span_s = span_s
        self.buckets: deque[list[int]] = deque()
        self.total = 0

    def used(self, now_s: int) -> int:
        horizon = now_s - self.span_s
        buckets = self.buckets
        while buckets and buckets[0][0] <= horizon:
            self.total -= buckets.popleft()[1]
        return self.total

    def add(self, now_s: int, amount: int) -> None:
        if amount <= 0:
            return
        buckets = self.buckets
        if buckets and buckets[-1][0] == now_s:
            buckets[-1][1] += amount
        else:
            buckets.append([now_s, amount])
        self.total += amount

    def seconds_until_below(self, now_s: int, limit: int) -> int:
        """Seconds until the window's total falls to `limit - 1` or less (at least 1)."""
        total = self.total
        for sec, amount in self.buckets:
            total -= amount
            if total < limit:
                return max(1, sec + self.span_s - now_s + 1)
        return self.span_s


@dataclass
class _IpState:
    weight: _Window = field(default_factory=lambda: _Window(60))
    limited_until_ms: int = 0
    strikes: int = 0
    banned_until_ms: int = 0


class RateLimiter:
    def __init__(
        self,
        weight_limit_1m: int = 2400,
        order_limit_10s: int = 300,
        order_limit_1m: int = 1200,
        ban_s: int = 120,
        strikes_to_ban: int = 3,
    ) -> None:
        self.weight_limit = weight_limit_1m
        self.order_limit_10s = order_limit_10s
        self.order_limit_1m = order_limit_1m
        self.ban_s = ban_s
        self.strikes_to_ban = strikes_to_ban
        self._ips: dict[str, _IpState] = {}
        self._orders_10s = _Window(10)
        self._orders_1m = _Window(60)

    def used_weight(self, ip: str, now_ms: int) -> int:
        st = self._ips.get(ip)
        return st.weight.used(now_ms // 1000) if st else 0

    def _ban_error(self, ip: str, st: _IpState, now_ms: int) -> LimitError:
        return LimitError(
            -1003,
            f"Way too many requests; IP({ip}) banned until {st.banned_until_ms}. "
            "Please use WebSocket Streams for live updates to avoid bans.",
            418,
            -(-(st.banned_until_ms - now_ms) // 1000),
        )

    def _limit_error(self, ip: str, retry_after_s: int) -> LimitError:
        return LimitError(
            -1003,
            f"Too many requests; current limit of IP({ip}) request weight per minute is "
            f"{self.weight_limit}. Please use WebSocket Streams for live updates to avoid polling the API.",
            429,
            retry_after_s,
        )

    def charge(self, ip: str, weight: int, now_ms: int) -> int:
        """Count `weight` for `ip`; the weight used over the last minute, or raise LimitError."""
        st = self._ips.get(ip)
        if st is None:
            st = self._ips[ip] = _IpState()
        if st.banned_until_ms > now_ms:
            raise self._ban_error(ip, st, now_ms)
        now_s = now_ms // 1000
        if st.limited_until_ms > now_ms:
            # Told to wait and did not: a few more of these and the IP is banned.
            st.strikes += 1
            if st.strikes >= self.strikes_to_ban:
                st.banned_until_ms = now_ms + self.ban_s * 1000
                st.limited_until_ms = 0
                st.strikes = 0
                raise self._ban_error(ip, st, now_ms)
            raise self._limit_error(ip, -(-(st.limited_until_ms - now_ms) // 1000))
        used = st.weight.used(now_s) + weight
        st.weight.add(now_s, weight)
        if used > self.weight_limit:
            retry = st.weight.seconds_until_below(now_s, self.weight_limit)
            st.limited_until_ms = now_ms + retry * 1000
            st.strikes = 1
            raise self._limit_error(ip, retry)
        st.strikes = 0
        return used

    def order_counts(self, now_ms: int) -> tuple[int, int]:
        now_s = now_ms // 1000
        return self._orders_10s.used(now_s), self._orders_1m.used(now_s)

    def charge_order(self, now_ms: int) -> tuple[int, int]:
        """Count one new order on the account; (count 10 s, count 1 min), or raise LimitError."""
        now_s = now_ms // 1000
        c10 = self._orders_10s.used(now_s)
        c60 = self._orders_1m.used(now_s)
        if c10 + 1 > self.order_limit_10s:
            raise LimitError(
                -1015,
                f"Too many new orders; current limit is {self.order_limit_10s} orders per TEN_SECONDS.",
                429,
                self._orders_10s.seconds_until_below(now_s, self.order_limit_10s),
            )
        if c60 + 1 > self.order_limit_1m:
            raise LimitError(
                -1015,
                f"Too many new orders; current limit is {self.order_limit_1m} orders per MINUTE.",
                429,
                self._orders_1m.seconds_until_below(now_s, self.order_limit_1m),
            )
        self._orders_10s.add(now_s, 1)
        self._orders_1m.add(now_s, 1)
        return c10 + 1, c60 + 1
