"""Exchange activities run in `ActivityEnvironment` against a real paper exchange process."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from activities.exchange import ExchangeActivities
from exchange.client import BinanceFuturesClient
from tests.conftest import PaperExchange

SYM = "BTCUSDT"


def attempt(number: int = 1, *, timeout_s: float = 60.0, server_skew_s: float = 0.0) -> ActivityEnvironment:
    """An activity attempt: its number, its start-to-close timeout, and the server's start time (as far
    from this process's clock as `server_skew_s`)."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        attempt=number,
        start_to_close_timeout=timedelta(seconds=timeout_s),
        schedule_to_close_timeout=None,
        started_time=datetime.now(UTC) + timedelta(seconds=server_skew_s),
    )
    return env


def orders_of(venue: PaperExchange, client_id: str) -> list[dict[str, Any]]:
    """Every order the venue holds under this client id (its own record, not the client's view)."""
    return [o for o in venue.admin("GET", f"orders?symbol={SYM}") if o["clientOrderId"] == client_id]


def algos_of(venue: PaperExchange, client_id: str) -> list[dict[str, Any]]:
    return [o for o in venue.admin("GET", f"algo-orders?symbol={SYM}") if o["clientAlgoId"] == client_id]


def fault_on_next_post(
    monkeypatch: pytest.MonkeyPatch, venue: PaperExchange, client: BinanceFuturesClient, **faults: Any
) -> None:
    """Arm a venue fault just before the next order POST (the injector matches paths, not methods, and
    the look-up before the send reads the same path)."""
    send: Callable[..., Awaitable[Any]] = client.new_order

    async def armed(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(client, "new_order", send)
        venue.set_faults(count=1, paths=["/fapi/v1/order"], **faults)
        return await send(*args, **kwargs)

    monkeypatch.setattr(client, "new_order", armed)


@pytest.fixture
async def client(paper_exchange: PaperExchange) -> AsyncIterator[BinanceFuturesClient]:
    paper_exchange.set_price(SYM, "60000")
    async with BinanceFuturesClient(
        paper_exchange.base_url, paper_exchange.api_key, paper_exchange.api_secret, timeout_s=5
    ) as c:
        await c.exchange_info()
        yield c


@pytest.fixture
def acts(client: BinanceFuturesClient) -> ExchangeActivities:
    return ExchangeActivities(client)
