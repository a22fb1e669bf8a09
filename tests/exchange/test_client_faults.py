"""Each fault mode of the paper exchange produces the typed error it should."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from exchange.client import BinanceFuturesClient
from exchange.errors import (
    ClockSkewError,
    IpBannedError,
    RateLimitedError,
    RejectedError,
    RetryableError,
    UnknownOutcomeError,
)
from tests.conftest import PaperExchange

D = Decimal
SYM = "BTCUSDT"


@pytest.fixture
async def client(paper_exchange: PaperExchange) -> AsyncIterator[BinanceFuturesClient]:
    paper_exchange.set_price(SYM, "60000")
    async with BinanceFuturesClient(
        paper_exchange.base_url, paper_exchange.api_key, paper_exchange.api_secret, timeout_s=5
    ) as c:
        await c.exchange_info()
        yield c


async def test_429_is_rate_limited_with_retry_after_and_the_client_waits(
    paper_exchange: PaperExchange, client: BinanceFuturesClient
) -> None:
    paper_exchange.set_faults(http_429_rate=1.0, retry_after_s=1, count=1)
    with pytest.raises(RateLimitedError) as info:
        await client.account()
    err = info.value
    assert type(err) is RateLimitedError and err.http_status == 429 and err.code == -1003
    assert err.retry_after_s == 1
    started = time.monotonic()
    await client.account()  # nothing is sent before Retry-After has passed
    assert time.monotonic() - started >= 0.9


async def test_418_is_an_ip_ban_and_nothing_is_sent_during_it(
    paper_exchange: PaperExchange, client: BinanceFuturesClient
) -> None:
    paper_exchange.set_faults(http_418_rate=1.0, retry_after_s=2, count=1, paths=["/fapi/v1/order"])
    with pytest.raises(IpBannedError) as info:
        await client.new_order(SYM, "BUY", "MARKET", D("0.002"), client_order_id="ban-1")
    assert info.value.http_status == 418 and info.value.retry_after_s == 2
    with pytest.raises(IpBannedError):  # refused locally while banned
        await client.server_time()
    await asyncio.sleep(2.1)
    assert await client.find_order(SYM, "ban-1") is None  # the banned order was never executed


async def test_5xx_service_unavailable_is_retryable_and_gets_are_retried(
    paper_exchange: PaperExchange, client: BinanceFuturesClient
) -> None:
    paper_exchange.set_faults(http_5xx_rate=1.0, count=1, paths=["/fapi/v1/order"])
    with pytest.raises(RetryableError) as info:
        await client.new_order(SYM, "BUY", "MARKET", D("0.002"), client_order_id="svc-1")
    assert type(info.value) is RetryableError and info.value.http_status == 503
    assert await client.find_order(SYM, "svc-1") is None  # certain failure: nothing executed
    # a read hit by one 503 is retried by the client itself
    paper_exchange.set_faults(http_5xx_rate=1.0, count=1)
    assert (await client.account()).assets


async def test_lost_answer_503_is_unknown_outcome_and_the_order_is_found(
    paper_exchange: PaperExchange, client: BinanceFuturesClient
) -> None:
    paper_exchange.set_faults(lost_answer_rate=1.0, lost_answer_mode="503", count=1)
    with pytest.raises(UnknownOutcomeError) as info:
        await client.new_order(SYM, "BUY", "MARKET", D("0.002"), client_order_id="lost-503")
    assert info.value.client_order_id == "lost-503" and info.value.http_status == 503
    found = await client.find_order(SYM, "lost-503")
    assert found is not None and found.status == "FILLED" and found.executed_qty == D("0.002")


async def test_lost_answer_timeout_is_unknown_outcome_and_the_order_is_found(
    paper_exchange: PaperExchange,
) -> None:
    paper_exchange.set_price(SYM, "60000")
    async with BinanceFuturesClient(
        paper_exchange.base_url, paper_exchange.api_key, paper_exchange.api_secret, timeout_s=1.0
    ) as c:
        await c.exchange_info()
        paper_exchange.set_faults(lost_answer_rate=1.0, lost_answer_mode="timeout", hang_s=5, count=1)
        # The client's own timeout (1 s) ended it, not the venue's 5 s hang (that would end in a dropped
        # connection, "connection failed mid-request"): asserted by the error, not by wall time.
        with pytest.raises(UnknownOutcomeError, match="no answer before the timeout") as info:
            await c.new_order(SYM, "SELL", "MARKET", D("0.002"), client_order_id="lost-timeout")
        assert info.value.client_order_id == "lost-timeout" and info.value.http_status is None
        found = await c.find_order(SYM, "lost-timeout")
        assert found is not None and found.status == "FILLED"


async def test_latency_is_felt(paper_exchange: PaperExchange, client: BinanceFuturesClient) -> None:
    paper_exchange.set_faults(latency_ms=300)
    started = time.monotonic()
    await client.server_time()
    assert time.monotonic() - started >= 0.3
    paper_exchange.clear_faults()


async def test_wrong_secret_is_rejected_with_1022(paper_exchange: PaperExchange) -> None:
    async with BinanceFuturesClient(paper_exchange.base_url, paper_exchange.api_key, "0" * 64) as c:
        with pytest.raises(RejectedError) as info:
            await c.account()
    assert info.value.code == -1022
    assert paper_exchange.api_key not in str(info.value)


async def test_old_timestamp_is_resynced_and_retried_once(
    paper_exchange: PaperExchange, client: BinanceFuturesClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="exchange.client")
    client.offset_ms = -60_000.0  # our clock is a minute behind: every timestamp is too old
    t0 = time.time()
    acct = await client.account()
    round_trip_ms = (time.time() - t0) * 1000
    assert acct.assets
    # Resynced: the venue and we share one clock, so what is left is within the resync's round trip (a
    # part of this call's), however slow a loaded machine makes it; the injected minute is gone.
    assert abs(client.offset_ms) <= round_trip_ms + 5, (client.offset_ms, round_trip_ms)
    assert any("resyncing" in r.getMessage() for r in caplog.records)
    # an order placed with a skewed clock also gets through (the venue refused it before executing)
    client.offset_ms = -60_000.0
    order = await client.new_order(SYM, "BUY", "MARKET", D("0.002"), client_order_id="skew-1")
    assert order.status == "FILLED"


async def test_clock_skew_that_resync_cannot_fix_raises(
    paper_exchange: PaperExchange, client: BinanceFuturesClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_sync() -> float:
        client.offset_ms = -60_000.0
        return client.offset_ms

    monkeypatch.setattr(client, "sync_time", broken_sync)
    client.offset_ms = -60_000.0
    with pytest.raises(ClockSkewError) as info:
        await client.account()
    assert info.value.code == -1021


async def test_the_client_knows_how_long_the_venue_has_not_answered(
    paper_exchange: PaperExchange, client: BinanceFuturesClient
) -> None:
    """The emergency stop's outage input: unanswered requests (a 5xx, no connection) start it; any
    answer ends it."""
    assert client.unreachable_s() == 0.0
    paper_exchange.set_faults(outage={"mode": "5xx", "seconds": 30})
    with pytest.raises(RetryableError):
        await client.new_order(SYM, "BUY", "MARKET", D("0.002"), client_order_id="down-1")
    first = client.unreachable_s()
    await asyncio.sleep(0.05)
    assert client.unreachable_s() > first > 0  # counting from the first unanswered request
    paper_exchange.clear_faults()
    assert await client.find_order(SYM, "down-1") is None  # an answer: the venue is there (nothing executed)
    assert client.unreachable_s() == 0.0
