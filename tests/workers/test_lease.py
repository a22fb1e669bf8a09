"""The feeds' lease (workers/lease.py) against a real redis-server: one holder at a time, a lapsed lease
taken over, a lease never freed for another, and an active that keeps working while Redis is away.
Across processes (two price watchers, two user-data streams, one SIGKILLed): tests/feeds."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from trading.config import load_settings
from workers.devservers import start_redis
from workers.lease import FeedLease, run_leased
from workers.processes import ManagedProcess
from workers.service import Service

TTL = 0.5
log = logging.getLogger("test-lease")


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[tuple[ManagedProcess, aioredis.Redis]]:
    proc, port = start_redis(tmp_path)
    conn = aioredis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        yield proc, conn
    finally:
        await conn.aclose()
        proc.stop()


async def test_one_holder_at_a_time_and_a_lapsed_lease_is_taken_over(
    redis_server: tuple[ManagedProcess, aioredis.Redis],
) -> None:
    _, conn = redis_server
    a = FeedLease(conn, "watcher", TTL, holder="a")
    b = FeedLease(conn, "watcher", TTL, holder="b")
    assert await a.acquire() and not await b.acquire()
    assert await a.renew() and await a.holder_now() == "a"
    await b.release()  # not b's to free
    assert await a.holder_now() == "a" and not await b.acquire()
    await asyncio.sleep(TTL * 2)  # a stops renewing (killed): the lease lapses
    assert await b.acquire() and await b.holder_now() == "b"
    assert not await a.renew()  # a comes back: told it lost the lease
    await b.release()
    assert await a.acquire()
    other = FeedLease(conn, "user-stream", TTL, holder="b")  # each feed its own lease
    assert await other.acquire()


async def test_an_active_keeps_working_while_redis_does_not_answer(
    redis_server: tuple[ManagedProcess, aioredis.Redis],
) -> None:
    proc, conn = redis_server
    a = FeedLease(conn, "watcher", TTL, holder="a")
    assert await a.acquire()
    proc.stop()
    assert await a.renew()  # no answer is not "taken": a silent feed is worse than a doubled one
    assert not await FeedLease(conn, "watcher", TTL, holder="b").acquire()


def test_a_lease_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        FeedLease(aioredis.Redis(), "watcher", 0)


async def test_run_leased_stands_by_takes_over_and_hands_back_on_loss(
    redis_server: tuple[ManagedProcess, aioredis.Redis], tmp_path: Path
) -> None:
    _, conn = redis_server
    settings = load_settings(qt_home=tmp_path)
    running: dict[str, int] = {"a": 0, "b": 0}
    started: dict[str, int] = {"a": 0, "b": 0}

    def body_for(name: str) -> Callable[[Service], Awaitable[None]]:
        async def body(svc: Service) -> None:
            started[name] += 1
            running[name] += 1
            try:
                await svc.stop.wait()
            finally:
                running[name] -= 1

        return body

    stops = {name: asyncio.Event() for name in "ab"}
    leases = {name: FeedLease(conn, "watcher", TTL, holder=name) for name in "ab"}
    tasks = {
        name: asyncio.create_task(
            run_leased(
                f"feed {name}",
                Service(settings, stops[name], None, conn),
                body_for(name),
                leases[name],
                CollectorRegistry(),
                log,
            )
        )
        for name in "ab"
    }
    async with asyncio.timeout(10):
        while running["a"] + running["b"] == 0:
            await asyncio.sleep(0.01)
    first, second = ("a", "b") if running["a"] else ("b", "a")
    for _ in range(10):  # renewed: the other stays on standby
        await asyncio.sleep(TTL / 5)
        assert (running[first], running[second]) == (1, 0)
    # Another process takes the lease (as after a long pause of the first): the first stands by.
    await conn.set(leases[first].key, "intruder", px=round(TTL * 1000))
    async with asyncio.timeout(10):
        while running[first]:
            await asyncio.sleep(0.01)
    # The intruder never renews: when its lease lapses one of the two takes over.
    async with asyncio.timeout(10):
        while running["a"] + running["b"] == 0:
            await asyncio.sleep(0.01)
    assert running["a"] + running["b"] == 1
    # A stop releases the lease at once: the other takes over without waiting for it to lapse.
    now_active = "a" if running["a"] else "b"
    stops[now_active].set()
    await tasks[now_active]
    other = "b" if now_active == "a" else "a"
    async with asyncio.timeout(10):
        while not running[other]:
            await asyncio.sleep(0.01)
    stops[other].set()
    await tasks[other]
    assert await leases[other].holder_now() is None
    assert started[first] >= 1 and started[second] >= 1 and sum(started.values()) >= 3


async def test_a_lease_held_by_a_dead_process_of_this_host_is_taken_at_once(
    redis_server: tuple[ManagedProcess, aioredis.Redis],
) -> None:
    # A feed restarted after a crash need not wait out its predecessor's lease.
    _, conn = redis_server
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()
    dead = FeedLease(conn, "watcher", 60, holder=f"{socket.gethostname()}:{gone.pid}")
    alive = FeedLease(conn, "user-stream", 60, holder=f"{socket.gethostname()}:{os.getppid()}")
    elsewhere = FeedLease(conn, "journal", 60, holder=f"other-host:{gone.pid}")
    for lease in (dead, alive, elsewhere):
        assert await lease.acquire()
    for feed in ("watcher", "user-stream", "journal"):
        assert (await FeedLease(conn, feed, 60).acquire()) == (feed == "watcher"), feed
