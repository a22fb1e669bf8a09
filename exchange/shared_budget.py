"""One request-weight budget per IP, shared in Redis by every exchange worker behind that IP.

Binance counts weight per IP, not per process: two workers that each stay under 80 % of 2,400 can
together draw a 429 and, if they keep sending, a 418 ban. Each request therefore reserves its weight
in a rolling 60 s window kept in one Redis hash (second → weight), atomically in a Lua script, and
waits when the reservation would pass the budget. A 429 / 418 answer blocks every worker until its
Retry-After, and the venue's own `X-MBX-USED-WEIGHT-1M` figure raises the shared count when the IP
is also used by something we do not see.

Redis is a bus, never a reason to stop trading: when it does not answer, the budget steps aside and
each worker paces on its local tracker alone (counted in `unavailable`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from exchange.errors import IpBannedError, RateLimitedError
from exchange.weights import Priority, current_priority, exit_headroom_pct

if TYPE_CHECKING:
    from trading.config import Settings

log = logging.getLogger(__name__)

KEY_PREFIX = "quantum:ratelimit"
WINDOW_S = 60
# One entry per IP ban (a 418 while the IP was not already banned), whichever worker saw it first;
# read by the notifier (alerts/).
BAN_STREAM = "quantum:stream:venue.ban"
BAN_STREAM_MAXLEN = 10_000

# KEYS: buckets hash, block key, venue floor key. ARGV: now_ms, weight, budget.
# Returns {status, value}: status 1 → reserved (value: weight used incl. this one);
# 0 → wait value ms; -1 → blocked by 429 for value ms; -2 → banned for value ms.
_RESERVE = """
local now_ms = tonumber(ARGV[1])
local weight = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local block = redis.call('HMGET', KEYS[2], 'until_ms', 'banned')
if block[1] and tonumber(block[1]) > now_ms then
  if block[2] == '1' then return {-2, tonumber(block[1]) - now_ms} end
  return {-1, tonumber(block[1]) - now_ms}
end
local now_s = math.floor(now_ms / 1000)
local horizon = now_s - 60
local raw = redis.call('HGETALL', KEYS[1])
local used = 0
local buckets = {}
for i = 1, #raw, 2 do
  local sec = tonumber(raw[i])
  local w = tonumber(raw[i + 1])
  if sec <= horizon then
    redis.call('HDEL', KEYS[1], raw[i])
  else
    used = used + w
    buckets[#buckets + 1] = {sec, w}
  end
end
local floor = tonumber(redis.call('GET', KEYS[3]) or '0')
if weight > 0 and used > 0 and math.max(used, floor) + weight > budget then
  if floor > used then return {0, 1000} end
  table.sort(buckets, function(a, b) return a[1] < b[1] end)
  local left = used
  for _, b in ipairs(buckets) do
    left = left - b[2]
    if left + weight <= budget then
      return {0, math.max(1, (b[1] + 61) * 1000 - now_ms)}
    end
  end
  return {0, 60000}
end
if weight > 0 then
  redis.call('HINCRBY', KEYS[1], now_s, weight)
  redis.call('PEXPIRE', KEYS[1], 61000)
end
return {1, used + weight}
"""

# KEYS: block key, ban stream. ARGV: until_ms, banned (0/1), now_ms, maxlen, budget id, endpoint,
# retry_after_s. Keeps the later deadline; a ban sticks to it. A ban that starts (the IP was not banned
# already) is also told once on the ban stream, however many workers see the 418.
_BLOCK = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'until_ms') or '0')
local was_banned = redis.call('HGET', KEYS[1], 'banned') == '1' and cur > tonumber(ARGV[3])
local until_ms = tonumber(ARGV[1])
if until_ms > cur then
  redis.call('HSET', KEYS[1], 'until_ms', until_ms)
end
if ARGV[2] == '1' then redis.call('HSET', KEYS[1], 'banned', '1') end
redis.call('PEXPIREAT', KEYS[1], math.max(until_ms, cur))
if ARGV[2] == '1' and not was_banned then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'budget_id', ARGV[5], 'until_ms',
    math.max(until_ms, cur), 'seen_ms', ARGV[3], 'endpoint', ARGV[6], 'retry_after_s', ARGV[7])
end
return 1
"""

# KEYS: floor key. ARGV: used, ttl_ms. The venue's figure, kept while it can still matter.
_FLOOR = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
return 1
"""


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


class SharedWeightBudget:
    """The IP's weight budget in Redis. `budget_id` names the IP (all workers behind one address share
    it); `headroom_pct` of `weight_limit_1m` is the entries' share, exits may go further."""

    def __init__(
        self,
        redis: aioredis.Redis,
        budget_id: str,
        *,
        weight_limit_1m: int = 2400,
        headroom_pct: float = 80.0,
        max_wait_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = _sleep,
    ) -> None:
        if not budget_id or any(c.isspace() for c in budget_id):
            raise ValueError(f"budget id must be a non-empty word, got {budget_id!r}")
        self.redis = redis
        self.budget_id = budget_id
        self.weight_limit_1m = weight_limit_1m
        self.headroom_pct = headroom_pct
        self.max_wait_s = max_wait_s
        self.clock = clock
        self.sleep = sleep
        base = f"{KEY_PREFIX}:{budget_id}"
        self.keys = (f"{base}:weight", f"{base}:block", f"{base}:venue_used")
        self._reserve = redis.register_script(_RESERVE)
        self._block = redis.register_script(_BLOCK)
        self._floor = redis.register_script(_FLOOR)
        self.pauses = 0
        self.paused_s = 0.0
        self.unavailable = 0
        self.last_used = 0
        self._skip_until = 0.0  # after Redis fails, leave it alone for a few seconds
        # One script call at a time per worker: each takes well under a millisecond, and a burst of
        # requests must not open a Redis connection each.
        self._lock = asyncio.Lock()

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._skip_until

    def budget(self) -> float:
        pct = self.headroom_pct
        if current_priority() is Priority.EXIT:
            pct = exit_headroom_pct(pct)
        return self.weight_limit_1m * pct / 100.0

    async def acquire(self, weight: int) -> None:
        """Reserve `weight` in the shared window, waiting while it would pass the budget. Raises
        IpBannedError while the IP is banned and RateLimitedError when a 429 block is too long to wait."""
        while self.available:
            try:
                async with self._lock:
                    status, value = await self._reserve(
                        keys=self.keys, args=[int(self.clock() * 1000), weight, self.budget()]
                    )
            except (RedisError, OSError) as exc:
                self._step_aside(exc)
                return
            status, value = int(status), int(value)
            if status == 1:
                self.last_used = value
                return
            wait = value / 1000
            if status == -2:
                raise IpBannedError(
                    "IP banned by the venue (seen by another worker); nothing is sent until the ban ends",
                    http_status=418,
                    retry_after_s=round(wait, 3),
                )
            if status == -1 and wait > self.max_wait_s:
                raise RateLimitedError(
                    "rate limited by the venue (seen by another worker); nothing is sent until Retry-After",
                    http_status=429,
                    retry_after_s=round(wait, 3),
                )
            self.pauses += 1
            self.paused_s += wait
            await self.sleep(wait + 0.005)

    async def block(self, retry_after_s: float | None, *, banned: bool, endpoint: str = "") -> None:
        """After a 429 / 418: every worker sends nothing until Retry-After (default: a minute / two).
        A ban that starts here is written to BAN_STREAM (`endpoint`: the request that drew it)."""
        seconds = retry_after_s if retry_after_s is not None else (120.0 if banned else 60.0)
        now_ms = int(self.clock() * 1000)
        until_ms = now_ms + int(seconds * 1000)
        if not self.available:
            return
        try:
            async with self._lock:
                await self._block(
                    keys=[self.keys[1], BAN_STREAM],
                    args=[
                        until_ms,
                        1 if banned else 0,
                        now_ms,
                        BAN_STREAM_MAXLEN,
                        self.budget_id,
                        endpoint,
                        "" if retry_after_s is None else f"{retry_after_s:g}",
                    ],
                )
        except (RedisError, OSError) as exc:
            self._step_aside(exc)

    async def observe(self, used_weight_1m: int) -> None:
        """The venue's count for the IP: the shared window never believes in less than that."""
        if used_weight_1m <= self.last_used or not self.available:
            return
        try:
            async with self._lock:
                await self._floor(keys=[self.keys[2]], args=[used_weight_1m, WINDOW_S * 1000])
        except (RedisError, OSError) as exc:
            self._step_aside(exc)

    def _step_aside(self, exc: BaseException) -> None:
        self.unavailable += 1
        self._skip_until = time.monotonic() + 5.0
        if self.unavailable == 1 or self.unavailable % 100 == 0:
            log.warning("shared weight budget unavailable (%r): pacing on this worker's count alone", exc)

    def snapshot(self) -> dict[str, float | int]:
        return {
            "shared_pauses": self.pauses,
            "shared_paused_s": self.paused_s,
            "shared_unavailable": self.unavailable,
            "shared_used_weight_1m": self.last_used,
        }


def budget_from_settings(settings: Settings, redis: aioredis.Redis) -> SharedWeightBudget | None:
    """The IP budget named by BINANCE_WEIGHT_BUDGET_ID (None when it is empty: local pacing only)."""
    if not settings.binance_weight_budget_id:
        return None
    return SharedWeightBudget(
        redis,
        settings.binance_weight_budget_id,
        weight_limit_1m=settings.binance_weight_limit_1m,
        headroom_pct=settings.binance_weight_headroom_pct,
    )
