"""Chaos drill: 100 lifecycles while the lifecycle worker, the exchange worker, the user-data stream and
the price watcher are SIGKILLed at random moments (at least 20 kills) and restarted. At the end the
venue's positions equal the workflows' positions, no order was sent twice, no reservation leaked and
no workflow is stuck."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections import Counter

import pytest

from tests.workflows.conftest import Stack
from tests.workflows.drills import open_then_close, synthetic_symbols, venue_positions, venue_record
from trading.intents import Side
from workers.processes import ManagedProcess
from workers.schedules import RECONCILE_SCHEDULE_ID
from workflows.messages import DEFAULT_PORTFOLIO_ID, PortfolioView, PositionStatus

LIFECYCLES = 100
KILLS = 20
SYMBOLS = synthetic_symbols(30)
CONCURRENCY = 10
LIMITS = {
    "gov_max_open_positions": CONCURRENCY,
    "gov_max_total_notional_usdt": 100 * CONCURRENCY,
    "portfolio_holder_check_seconds": 5.0,
    "exchange_args": ["--extra-symbols", str(len(SYMBOLS))],
}
SERVICES = {
    "lifecycle": ("lifecycle", "--metrics-port", "0"),
    "exchange": ("exchange", "--metrics-port", "0"),
    "user-stream": ("user-stream", "--metrics-port", "0"),
    "watcher": ("watcher", "--metrics-port", "0"),
}


@pytest.mark.drill  # minutes: run with `pytest -m drill`, outside the suite
@pytest.mark.parametrize("stack", [LIMITS], indirect=True)
async def test_sigkill_every_service_during_100_lifecycles(stack: Stack) -> None:
    for sym in SYMBOLS:
        stack.exchange.set_price(sym, "100")
    procs: dict[str, ManagedProcess] = {
        name: stack.start_worker_process(*argv) for name, argv in SERVICES.items()
    }
    rng = random.Random(5)
    kills: Counter[str] = Counter()
    finished = asyncio.Event()

    async def chaos() -> None:
        await asyncio.sleep(2.0)
        order = list(SERVICES) * (KILLS // len(SERVICES))  # every service killed, in a random order
        rng.shuffle(order)
        for name in order:
            await asyncio.sleep(rng.uniform(0.5, 2.5))
            os.kill(procs[name].pid, signal.SIGKILL)
            procs[name].popen.wait(timeout=10)  # type: ignore[union-attr]
            kills[name] += 1
            await asyncio.sleep(rng.uniform(0.0, 1.0))  # down for a moment, then back
            procs[name] = stack.start_worker_process(*SERVICES[name])

    gate = asyncio.Semaphore(CONCURRENCY)
    busy: set[str] = set()

    async def one(i: int):
        async with gate:
            sym = rng.choice([s for s in SYMBOLS if s not in busy])
            busy.add(sym)
            try:
                return await open_then_close(stack, f"chaos-{i:03d}", sym, Side.LONG if i % 2 else Side.SHORT)
            finally:
                busy.discard(sym)

    monkey = asyncio.create_task(chaos())
    results = await asyncio.gather(*(one(i) for i in range(LIFECYCLES)))  # each bounded: none stuck
    await monkey
    finished.set()

    assert sum(kills.values()) >= KILLS and set(kills) == set(SERVICES)
    statuses = Counter(r.status for r in results)
    assert set(statuses) <= {PositionStatus.CLOSED, PositionStatus.REJECTED}, statuses
    assert statuses[PositionStatus.CLOSED] >= LIFECYCLES * 0.9, statuses
    record = venue_record(stack, SYMBOLS)
    assert record.duplicate_client_ids() == {}
    closed = [r for r in results if r.status == PositionStatus.CLOSED]
    assert len([o for o in record.orders if o["clientOrderId"].endswith(".entry")]) == len(closed)
    assert await venue_positions(stack) == {}  # every workflow ended flat, and so is the venue
    portfolio = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
    async with asyncio.timeout(30):
        while True:
            try:
                view = await portfolio.query("state", result_type=PortfolioView)
                break
            except Exception:
                await asyncio.sleep(0.5)
    held = {r.holder_id: r.symbol for r in view.book.reservations.values()}
    assert view.slots_used == 0, (held, await _statuses(stack, list(held)))  # no reservation leaked
    # Every venue position here was the system's own: reconcile adopted none of them a second time.
    adopted = [
        wf.id
        async for wf in stack.client.list_workflows("WorkflowType='PositionWorkflow' AND Source='adopted'")
    ]
    assert adopted == [], await _statuses(stack, adopted)
    # The lifecycle worker keeps the reconcile schedule, which ran through the drill (startup run included).
    schedule = await stack.client.get_schedule_handle(RECONCILE_SCHEDULE_ID).describe()
    assert schedule.info.num_actions >= 1


async def _statuses(stack: Stack, ids: list[str]) -> dict[str, str]:
    out = {}
    for wid in ids:
        desc = await stack.client.get_workflow_handle(wid).describe()
        status = desc.status.name if desc.status else None
        out[wid] = f"{status} {desc.search_attributes.get('PositionStatus')}"
    return out
