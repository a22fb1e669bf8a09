"""The entry activity: a ban halts it only when no order with its client id can exist on the venue, and
an entry past its deadline is looked up, never sent."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from temporalio.exceptions import ApplicationError

from activities.exchange import ExchangeActivities
from exchange.client import BinanceFuturesClient
from tests.activities.conftest import SYM, attempt, fault_on_next_post, orders_of
from tests.conftest import PaperExchange
from trading.execution import OpenEntryInput, OrderStatus
from workflows.errors import ErrorType

D = Decimal
CID = "position-BTCUSDT-test-1.entry"


def entry(**kw: object) -> OpenEntryInput:
    return OpenEntryInput(
        symbol=SYM,
        side="BUY",
        leverage=5,
        notional_usdt=D(150),
        client_order_id=CID,
        **kw,  # type: ignore[arg-type]
    )


async def test_a_ban_on_the_fills_read_after_the_entry_executed_does_not_halt(
    paper_exchange: PaperExchange, acts: ExchangeActivities
) -> None:
    """Halting here would give the slot back while the venue holds an unprotected position."""
    paper_exchange.set_faults(http_418_rate=1.0, retry_after_s=1, count=1, paths=["/fapi/v1/userTrades"])
    with pytest.raises(ApplicationError) as info:
        await attempt(1).run(acts.open_entry, entry())
    assert info.value.type == ErrorType.IP_BANNED and not info.value.non_retryable
    assert info.value.next_retry_delay == timedelta(seconds=1)  # the retry comes when the ban ends
    assert len(orders_of(paper_exchange, CID)) == 1  # the entry executed before the ban

    await asyncio.sleep(1.2)
    done = await attempt(2).run(acts.open_entry, entry())
    assert not done.expired and done.outcome is not None
    assert done.outcome.recovered and done.outcome.status == OrderStatus.FILLED
    assert done.outcome.fills and sum(f.qty for f in done.outcome.fills) == done.outcome.executed_qty > 0
    assert len(orders_of(paper_exchange, CID)) == 1


async def test_a_ban_before_the_order_halts_with_nothing_on_the_venue(
    paper_exchange: PaperExchange, acts: ExchangeActivities
) -> None:
    paper_exchange.set_faults(http_418_rate=1.0, retry_after_s=1, count=1)
    with pytest.raises(ApplicationError) as info:
        await attempt(1).run(acts.open_entry, entry())
    assert info.value.type == ErrorType.ENTRIES_HALTED and info.value.non_retryable
    assert orders_of(paper_exchange, CID) == []


async def test_a_ban_answering_the_order_post_halts(
    paper_exchange: PaperExchange,
    client: BinanceFuturesClient,
    acts: ExchangeActivities,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 418 is a refusal: the POST it answers placed nothing."""
    fault_on_next_post(monkeypatch, paper_exchange, client, http_418_rate=1.0, retry_after_s=1)
    with pytest.raises(ApplicationError) as info:
        await attempt(1).run(acts.open_entry, entry())
    assert info.value.type == ErrorType.ENTRIES_HALTED
    assert orders_of(paper_exchange, CID) == []


async def test_a_ban_on_a_retry_before_its_look_up_keeps_retrying(
    paper_exchange: PaperExchange, acts: ExchangeActivities
) -> None:
    """An earlier attempt may have sent the order, and nothing has looked it up yet."""
    paper_exchange.set_faults(http_418_rate=1.0, retry_after_s=1, count=1)
    with pytest.raises(ApplicationError) as info:
        await attempt(2).run(acts.open_entry, entry())
    assert info.value.type == ErrorType.IP_BANNED and not info.value.non_retryable


async def test_an_entry_past_its_deadline_sends_nothing(
    paper_exchange: PaperExchange, acts: ExchangeActivities
) -> None:
    """After a long outage the intent is stale: it must not execute hours later at another price."""
    done = await attempt(1).run(acts.open_entry, entry(deadline_ms=int(time.time() * 1000) - 1))
    assert done.expired and done.outcome is None
    assert orders_of(paper_exchange, CID) == []


async def test_an_entry_past_its_deadline_that_executed_is_returned(
    paper_exchange: PaperExchange, client: BinanceFuturesClient, acts: ExchangeActivities
) -> None:
    placed = await client.new_order(SYM, "BUY", "MARKET", D("0.002"), client_order_id=CID)
    done = await attempt(3).run(acts.open_entry, entry(deadline_ms=int(time.time() * 1000) - 1))
    assert not done.expired and done.outcome is not None
    assert done.outcome.recovered and done.outcome.order_id == placed.order_id
    assert done.outcome.executed_qty == D("0.002") and done.outcome.fills
    assert len(orders_of(paper_exchange, CID)) == 1


async def test_an_entry_before_its_deadline_is_sent(
    paper_exchange: PaperExchange, acts: ExchangeActivities
) -> None:
    done = await attempt(1).run(acts.open_entry, entry(deadline_ms=int(time.time() * 1000) + 60_000))
    assert not done.expired and done.outcome is not None
    assert done.outcome.status == OrderStatus.FILLED and not done.outcome.recovered
    assert len(orders_of(paper_exchange, CID)) == 1


async def test_an_entry_whose_deadline_passes_before_the_send_is_not_sent(
    paper_exchange: PaperExchange, acts: ExchangeActivities
) -> None:
    """The deadline passed while the attempt was on its way (here a slow leverage call; in life, pacing):
    the order is not sent, and the retry finds nothing and answers expired."""
    paper_exchange.set_faults(latency_ms=600, count=1, paths=["/fapi/v1/leverage"])
    late = entry(deadline_ms=int(time.time() * 1000) + 300)
    with pytest.raises(ApplicationError, match="not sent"):
        await attempt(1).run(acts.open_entry, late)
    done = await attempt(2).run(acts.open_entry, late)
    assert done.expired and done.outcome is None
    assert orders_of(paper_exchange, CID) == []
