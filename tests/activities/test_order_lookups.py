"""Never a duplicate order: every attempt looks its client id up before it sends, sends only while a late
send can no longer meet the next attempt's look-up, and decides an unknown outcome only once the
request can no longer execute."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from temporalio.exceptions import ApplicationError

from activities.exchange import ExchangeActivities
from exchange.client import BinanceFuturesClient
from exchange.paper.faults import LOST_ANSWER_MSG
from tests.activities.conftest import SYM, algos_of, attempt, fault_on_next_post, orders_of
from tests.conftest import PaperExchange
from trading.execution import OrderStatus, PlaceOrderInput, PlaceStopInput

D = Decimal
CID = "position-BTCUSDT-test-1.exit1"
RECV_WINDOW_MS = 2000
# 503 "Unknown error, ...": the outcome is unknown to the client, and the venue did not execute it.
NOT_EXECUTED_UNKNOWN = {"http_5xx_rate": 1.0, "http_5xx_status": 503, "http_5xx_msg": LOST_ANSWER_MSG}


def order(cid: str = CID) -> PlaceOrderInput:
    return PlaceOrderInput(symbol=SYM, side="BUY", quantity=D("0.002"), client_order_id=cid)


@pytest.fixture
async def quick(paper_exchange: PaperExchange) -> AsyncIterator[BinanceFuturesClient]:
    """A client with a short HTTP timeout and recvWindow, so unknown outcomes settle in seconds."""
    paper_exchange.set_price(SYM, "60000")
    async with BinanceFuturesClient(
        paper_exchange.base_url,
        paper_exchange.api_key,
        paper_exchange.api_secret,
        timeout_s=0.5,
        recv_window_ms=RECV_WINDOW_MS,
    ) as c:
        await c.exchange_info()
        yield c


# --- (c) look up on every attempt, the first one included (a workflow reset re-runs attempt 1) ---
async def test_an_order_already_filled_is_returned_on_attempt_1_without_a_second_order(
    paper_exchange: PaperExchange, client: BinanceFuturesClient, acts: ExchangeActivities
) -> None:
    placed = await client.new_order(SYM, "BUY", "MARKET", D("0.002"), client_order_id=CID)
    out = await attempt(1).run(acts.place_order, order())
    assert out.recovered and out.order_id == placed.order_id and out.status == OrderStatus.FILLED
    assert sum(f.qty for f in out.fills) == D("0.002")
    assert len(orders_of(paper_exchange, CID)) == 1


async def test_a_hard_stop_already_placed_is_returned_on_attempt_1(
    paper_exchange: PaperExchange, client: BinanceFuturesClient, acts: ExchangeActivities
) -> None:
    await client.new_order(SYM, "BUY", "MARKET", D("0.002"), client_order_id="position-open")
    stop_id = "position-BTCUSDT-test-1.hstop1"
    placed = await client.new_algo_order(
        SYM, "SELL", "STOP_MARKET", D("55000"), close_position=True, client_algo_id=stop_id
    )
    stop = PlaceStopInput(symbol=SYM, side="SELL", trigger_price=D("55000"), client_algo_id=stop_id)
    out = await attempt(1).run(acts.place_stop, stop)
    assert out.algo_id == placed.algo_id
    assert len(algos_of(paper_exchange, stop_id)) == 1


# --- (a) + (b) the send deadline: HTTP timeout + recvWindow before the attempt's end, on one clock ---
@pytest.mark.parametrize("server_skew_s", [-3600.0, 0.0, 3600.0])
async def test_nothing_is_sent_with_less_than_the_http_timeout_and_recv_window_left(
    paper_exchange: PaperExchange, acts: ExchangeActivities, server_skew_s: float
) -> None:
    """The client waits 5 s for an answer and the venue accepts a request 5 s old: an attempt of 10 s
    must not send at all, whatever the Temporal server's clock says about when it started."""
    with pytest.raises(ApplicationError, match="not sent"):
        await attempt(1, timeout_s=10, server_skew_s=server_skew_s).run(acts.place_order, order())
    assert orders_of(paper_exchange, CID) == []


@pytest.mark.parametrize("server_skew_s", [-3600.0, 3600.0])
async def test_the_send_deadline_is_measured_on_this_process_clock(
    paper_exchange: PaperExchange, acts: ExchangeActivities, server_skew_s: float
) -> None:
    """The server's start time and this host's clock disagree by an hour: the attempt still has its time."""
    out = await attempt(1, timeout_s=30, server_skew_s=server_skew_s).run(acts.place_order, order())
    assert out.status == OrderStatus.FILLED and not out.recovered
    assert len(orders_of(paper_exchange, CID)) == 1


# --- (d) an unknown outcome is decided once the request can no longer execute ---
async def test_a_lost_answer_executed_late_is_found_not_sent_twice(
    paper_exchange: PaperExchange, quick: BinanceFuturesClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client gives up after 0.5 s; the venue executes the order at 1.8 s, inside its recvWindow."""
    fault_on_next_post(monkeypatch, paper_exchange, quick, latency_ms=1800)
    started = time.monotonic()
    out = await attempt(1).run(ExchangeActivities(quick).place_order, order())
    assert out.recovered and out.status == OrderStatus.FILLED
    assert time.monotonic() - started >= RECV_WINDOW_MS / 1000
    assert len(orders_of(paper_exchange, CID)) == 1


async def test_an_unknown_outcome_that_did_not_execute_is_sent_again_once_expired(
    paper_exchange: PaperExchange, quick: BinanceFuturesClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    fault_on_next_post(monkeypatch, paper_exchange, quick, **NOT_EXECUTED_UNKNOWN)
    started = time.monotonic()
    out = await attempt(1).run(ExchangeActivities(quick).place_order, order())
    assert time.monotonic() - started >= RECV_WINDOW_MS / 1000  # not resent before the first expired
    assert out.status == OrderStatus.FILLED and not out.recovered
    assert len(orders_of(paper_exchange, CID)) == 1


async def test_no_resend_after_the_attempts_send_deadline(
    paper_exchange: PaperExchange, quick: BinanceFuturesClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The expiry wait ran past the send deadline: the retry looks up and sends, not this attempt."""
    fault_on_next_post(monkeypatch, paper_exchange, quick, **NOT_EXECUTED_UNKNOWN)
    window_s = 1.0  # the margin is 0.5 s HTTP timeout + 2 s recvWindow + the dispatch allowance
    acts = ExchangeActivities(quick)
    with pytest.raises(ApplicationError, match="not sent"):
        await attempt(1, timeout_s=acts.send_margin_s() + window_s).run(acts.place_order, order())
    assert orders_of(paper_exchange, CID) == []


async def test_a_cancelled_attempt_ends_only_once_its_post_can_no_longer_execute(
    paper_exchange: PaperExchange, quick: BinanceFuturesClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker shutting down cancels the attempt mid-POST; the retry comes as soon as it ends, and its
    look-up must not run while that POST may still execute."""
    fault_on_next_post(monkeypatch, paper_exchange, quick, latency_ms=400)
    env = attempt(1)
    task = asyncio.ensure_future(env.run(ExchangeActivities(quick).place_order, order()))
    await asyncio.sleep(0.2)
    env.cancel()
    cancelled_at = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - cancelled_at >= RECV_WINDOW_MS / 1000
