"""Exactly-once orders when the venue executes an order and the answer is lost (30 % of order requests,
HTTP 503 "Unknown error"): 200 lifecycles, each opened and closed exactly once, no client id ever
sent twice to a new order, and every workflow's PnL what the venue's own trades add up to."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from tests.workflows.conftest import Stack
from tests.workflows.drills import (
    open_then_close,
    pnl_matches_venue,
    synthetic_symbols,
    venue_positions,
    venue_record,
)
from trading.intents import Side
from workflows.messages import PositionStatus

LIFECYCLES = 200
SYMBOLS = synthetic_symbols(40)
CONCURRENCY = 20
LIMITS = {
    "gov_max_open_positions": CONCURRENCY,
    "gov_max_total_notional_usdt": 100 * CONCURRENCY,
    "exchange_args": ["--extra-symbols", str(len(SYMBOLS))],
}


@pytest.mark.drill  # minutes: run with `pytest -m drill`, outside the suite
@pytest.mark.parametrize("stack", [LIMITS], indirect=True)
async def test_lost_answers_on_30_percent_of_orders_make_no_duplicate(stack: Stack) -> None:
    for sym in SYMBOLS:
        stack.exchange.set_price(sym, "100")
    stack.exchange.set_faults(lost_answer_rate=0.3, lost_answer_mode="503", seed=11)
    rng = random.Random(3)
    gate = asyncio.Semaphore(CONCURRENCY)
    busy: set[str] = set()  # one lifecycle per symbol at a time, so no intent is refused for its symbol

    async def one(i: int):
        async with gate:
            sym = rng.choice([s for s in SYMBOLS if s not in busy])
            busy.add(sym)
            try:
                side = Side.LONG if i % 2 else Side.SHORT
                return await open_then_close(stack, f"lost-{i:03d}", sym, side)
            finally:
                busy.discard(sym)

    async with stack.workers():
        results = await asyncio.gather(*(one(i) for i in range(LIFECYCLES)))
    lost = stack.exchange.metric("paper_exchange_faults_injected_total", kind="lost")
    stack.exchange.clear_faults()

    record = venue_record(stack, SYMBOLS)
    assert record.duplicate_client_ids() == {}
    assert Counter(r.status for r in results) == {PositionStatus.CLOSED: LIFECYCLES}
    entries = [o for o in record.orders if o["clientOrderId"].endswith(".entry")]
    exits = [o for o in record.orders if not o["clientOrderId"].endswith(".entry")]
    assert len(entries) == LIFECYCLES and len(exits) == LIFECYCLES  # opened once, closed once each
    assert all(o["status"] == "FILLED" for o in record.orders)
    assert await venue_positions(stack) == {}
    trades: dict = {}  # each symbol's trades read once
    mismatched = [r.workflow_id for r in results if not await pnl_matches_venue(stack, r, record, trades)]
    assert mismatched == []
    # The fault really fired: about 30 % of the ~600 order placements (entries, stops, exits).
    assert lost >= 100, lost
