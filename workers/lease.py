"""Active/standby for the feeds that signal workflows (the price watcher, the user-data stream): run as
many copies as you like, on as many machines; one at a time is active, by a lease in Redis, and the
others stand by and take over when it stops renewing.

Why a lease and not shards by symbol: a duplicate feed is harmless and a silent one is not. A position
workflow acts once per crossing of its levels version and once per fill (trade ids), so two active
watchers only double the signals; no active watcher leaves the exits to the workflows' own, slower
mark checks. So the rule is one-sided. The active gives the lease up only when Redis answers that
another process holds it; while Redis does not answer it keeps working (the lease may lapse and a
standby take over: two active for a while, never none). A standby takes the lease once it has
lapsed: a SIGKILLed active is replaced within `ttl_s` plus one poll. Shards would need a rebalance
on every death and join, and a symbol whose shard died would be silent until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.exceptions import RedisError

from workers.processes import pid_alive

if TYPE_CHECKING:
    from workers.service import Service

LEASE_KEY = "quantum:lease:{feed}"

# Renew when still ours; take it when it lapsed (a Redis outage longer than the lease); else 0.
_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
# Take it from a holder known to be dead (ARGV[3]), only if that one still holds it.
_TAKE = """
if redis.call('GET', KEYS[1]) == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
# Give it back only when it is ours (a stop after the lease passed to another must not free theirs).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def holder_identity() -> str:
    """HOST:PID, unique among the processes that share a Redis."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _dead_here(holder: str) -> bool:
    """True when `holder` (HOST:PID) names a process of this host that no longer runs."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    return not pid_alive(int(pid))


class FeedLease:
    """One feed's lease: `acquire` (standby), `renew` (active, every `ttl_s / 5`), `release` (stop)."""

    def __init__(self, redis: aioredis.Redis, feed: str, ttl_s: float, holder: str | None = None) -> None:
        if ttl_s <= 0:
            raise ValueError(f"a lease of {ttl_s} s: it must be positive")
        self.redis = redis
        self.key = LEASE_KEY.format(feed=feed)
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self.holder = holder or holder_identity()
        self.poll_s = ttl_s / 5

    async def acquire(self) -> bool:
        """True when the lease is ours now (free, lapsed, already ours, or held by a dead process on
        this host: a feed restarted after a crash need not wait for its own lease to lapse); False when
        another holds it or Redis did not answer."""
        try:
            if await self.redis.eval(_RENEW, 1, self.key, self.holder, str(self.ttl_ms)):  # type: ignore[misc]
                return True
            held_by = await self.holder_now()
            if held_by is None or not _dead_here(held_by):
                return False
            return bool(await self.redis.eval(_TAKE, 1, self.key, self.holder, str(self.ttl_ms), held_by))  # type: ignore[misc]
        except (RedisError, OSError):
            return False

    async def renew(self) -> bool:
        """False only when Redis answers that another process holds it: a Redis that does not answer
        keeps the active active (see the module's docstring)."""
        try:
            return bool(await self.redis.eval(_RENEW, 1, self.key, self.holder, str(self.ttl_ms)))  # type: ignore[misc]
        except (RedisError, OSError):
            return True

    async def holder_now(self) -> str | None:
        raw = await self.redis.get(self.key)
        return raw.decode() if isinstance(raw, bytes) else raw

    async def release(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.redis.eval(_RELEASE, 1, self.key, self.holder)  # type: ignore[misc]


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def run_leased(
    name: str,
    svc: Service,
    body: Callable[[Service], Awaitable[None]],
    lease: FeedLease,
    registry: CollectorRegistry,
    log: logging.Logger,
) -> None:
    """Stand by until the lease is ours, run `body` while it stays ours, stand by again when another
    process takes it; release it on stop. `body` returns once the stop it is handed is set."""
    active = Gauge(
        "feed_lease_active",
        "1 while this process holds its feed's lease and runs the feed, 0 while it stands by",
        registry=registry,
    )
    acquired = Counter("feed_lease_acquired", "times this process took its feed's lease", registry=registry)
    said_standby = False
    try:
        while not svc.stop.is_set():
            if not await lease.acquire():
                if not said_standby:
                    log.info("%s standing by: lease %s held by %s", name, lease.key, await _who(lease))
                    said_standby = True
                await _sleep_or_stop(svc.stop, lease.poll_s)
                continue
            acquired.inc()
            active.set(1)
            log.info("%s active: lease %s held by %s", name, lease.key, lease.holder)
            if await _run_while_held(name, svc, body, lease, log):
                return
            active.set(0)
            said_standby = False
    finally:
        active.set(0)
        await lease.release()


async def _run_while_held(
    name: str,
    svc: Service,
    body: Callable[[Service], Awaitable[None]],
    lease: FeedLease,
    log: logging.Logger,
) -> bool:
    """Run `body` until the service stops (True) or another process takes the lease (False)."""
    running = asyncio.Event()  # the body's stop: the service's, or the lease lost
    task = asyncio.create_task(body(replace(svc, stop=running)))
    stopped = True
    while not task.done():
        tick = asyncio.create_task(_sleep_or_stop(svc.stop, lease.poll_s))
        await asyncio.wait([task, tick], return_when=asyncio.FIRST_COMPLETED)
        tick.cancel()
        if task.done():
            break
        if svc.stop.is_set():
            running.set()
        elif not await lease.renew():
            stopped = False
            log.warning("%s: lease %s taken by %s: standing by", name, lease.key, await _who(lease))
            running.set()
    await task  # a body's own failure ends the service, as it did without a lease
    return stopped


async def _who(lease: FeedLease) -> str:
    try:
        return await lease.holder_now() or "nobody"
    except (RedisError, OSError) as err:
        return f"(Redis: {err})"
