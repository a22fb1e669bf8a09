"""One weight budget per IP shared in Redis: two clients (two workers behind one IP) against the paper
exchange's real per-IP limiter stop before the limit together, a 429 or 418 seen by one stops the
other, exits may use headroom entries may not, and a dead Redis does not stop trading."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from exchange.client import BinanceFuturesClient
from exchange.errors import IpBannedError, RateLimitedError
from exchange.shared_budget import SharedWeightBudget
from exchange.weights import exit_priority
from workers.devservers import PaperExchange, start_paper_exchange, start_redis
from workers.processes import ManagedProcess

LIMIT = 100  # the paper venue's weight per minute per IP
HEADROOM = 80.0


class Paused(Exception):
    """Raised by the test's sleep: the budget decided to wait."""


async def _refuse_to_wait(seconds: float) -> None:
    raise Paused(seconds)


@pytest.fixture
def venue(tmp_path: Path) -> Iterator[PaperExchange]:
    ex = start_paper_exchange(tmp_path, "--weight-limit", str(LIMIT))
    try:
        yield ex
    finally:
        ex.process.stop()


@pytest.fixture
async def redis_url(tmp_path: Path) -> AsyncIterator[tuple[ManagedProcess, aioredis.Redis]]:
    proc, port = start_redis(tmp_path)
    r = aioredis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        yield proc, r
    finally:
        await r.aclose()
        proc.stop()


def _client(venue: PaperExchange, shared: SharedWeightBudget | None) -> BinanceFuturesClient:
    # Local trackers that would each allow 80 of the 100: only the shared budget keeps two of them under.
    return BinanceFuturesClient(
        venue.base_url,
        venue.api_key,
        venue.api_secret,
        weight_limit_1m=LIMIT,
        headroom_pct=HEADROOM,
        shared_budget=shared,
        sleep=_refuse_to_wait,
    )


def _budget(r: aioredis.Redis, **kw: object) -> SharedWeightBudget:
    return SharedWeightBudget(r, "ip-under-test", weight_limit_1m=LIMIT, headroom_pct=HEADROOM, **kw)  # type: ignore[arg-type]


async def _burst(client: BinanceFuturesClient, n: int = 60) -> dict[str, int]:
    """`n` weight-1 requests at once (as a busy worker sends them): how many went out, waited, got 429."""

    async def one() -> str:
        try:
            await client.server_time()
        except Paused:
            return "waited"
        except RateLimitedError:
            return "429"
        return "sent"

    outcomes = await asyncio.gather(*(one() for _ in range(n)))
    return {k: outcomes.count(k) for k in ("sent", "waited", "429")}


async def test_two_workers_behind_one_ip_stop_together_before_the_limit(
    venue: PaperExchange, redis_url: tuple[ManagedProcess, aioredis.Redis]
) -> None:
    _, r = redis_url
    async with (
        _client(venue, _budget(r, sleep=_refuse_to_wait)) as a,
        _client(venue, _budget(r, sleep=_refuse_to_wait)) as b,
    ):
        got = await asyncio.gather(_burst(a), _burst(b))
        assert sum(g["sent"] for g in got) == int(LIMIT * HEADROOM / 100), got  # 80 in all, not 80 each
        assert all(g["sent"] > 0 for g in got)  # both were served
        assert sum(g["429"] for g in got) == 0  # the venue never had to say 429
        # An exit still fits in the headroom kept back from entries (80 → 90).
        with exit_priority():
            await a.server_time()


async def test_without_the_shared_budget_two_workers_draw_429s(
    venue: PaperExchange, redis_url: tuple[ManagedProcess, aioredis.Redis]
) -> None:
    """The contrast that makes the shared budget necessary: each worker alone keeps to 80 %."""
    async with _client(venue, None) as a, _client(venue, None) as b:
        got = await asyncio.gather(_burst(a), _burst(b))
        assert sum(g["429"] for g in got) > 0, got


async def test_a_ban_seen_by_one_worker_stops_the_other_until_it_ends(
    venue: PaperExchange, redis_url: tuple[ManagedProcess, aioredis.Redis]
) -> None:
    _, r = redis_url
    async with _client(venue, _budget(r)) as a, _client(venue, _budget(r)) as b:
        venue.set_faults(http_418_rate=1.0, retry_after_s=2, count=1)
        with pytest.raises(IpBannedError):
            await a.server_time()
        sent_before = _venue_requests(venue)
        with pytest.raises(IpBannedError) as info:
            await b.server_time()  # refused here, before anything is sent
        assert "another worker" in str(info.value) and info.value.retry_after_s <= 2
        assert _venue_requests(venue) == sent_before
        await asyncio.sleep(2.1)
        await b.server_time()  # the ban is over for everyone
        assert _venue_requests(venue) == sent_before + 1


async def test_a_stopped_redis_does_not_stop_requests(
    venue: PaperExchange, redis_url: tuple[ManagedProcess, aioredis.Redis]
) -> None:
    proc, r = redis_url
    shared = _budget(r)
    async with _client(venue, shared) as a:
        await a.server_time()
        proc.stop()
        for _ in range(3):
            await a.server_time()  # local pacing only
        assert shared.unavailable >= 1


def _venue_requests(venue: PaperExchange) -> int:
    """Requests the venue has answered on /fapi/v1/time (its own counter)."""
    return int(venue.metric("paper_exchange_requests_total", path="/fapi/v1/time"))


async def test_no_order_is_sent_after_the_callers_deadline(venue: PaperExchange) -> None:
    """A Temporal attempt that timed out while pacing must not send late: its retry is already looking
    the order up, and a late send would place it twice. Reads still go: they decide what happened."""
    import time
    from decimal import Decimal

    from exchange.errors import RetryableError
    from exchange.weights import send_before

    venue.set_price("BTCUSDT", "60000")
    qty, price = Decimal("0.002"), Decimal(60000)
    async with _client(venue, None) as a:
        await a.exchange_info()
        with send_before(time.monotonic() - 0.1):  # the deadline is on the monotonic clock
            with pytest.raises(RetryableError, match="not sent"):
                await a.new_order("BTCUSDT", "BUY", "MARKET", qty, client_order_id="late-1", price_hint=price)
            assert await a.find_order("BTCUSDT", "late-1") is None  # a read after the deadline goes
        with send_before(time.monotonic() + 30):
            order = await a.new_order("BTCUSDT", "BUY", "MARKET", qty, price_hint=price)
        assert order.status == "FILLED"
