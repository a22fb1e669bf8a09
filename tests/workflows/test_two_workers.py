"""Workers scale out by running more of them on the same task queues. Two lifecycle and two exchange
workers, each its own OS process as on separate machines, share a burst against one server; the
exchange worker holding an entry order in flight and the lifecycle worker that sent it are SIGKILLed
mid-burst, and no promise breaks: never more positions than the limit, one entry order per position,
every venue position held by exactly one open workflow with its hard stop."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import WorkflowHandle

from exchange.client import BinanceFuturesClient
from tests.workflows.conftest import Stack
from trading.intents import Side
from workers.processes import ManagedProcess
from workflows.messages import (
    DEFAULT_PORTFOLIO_ID,
    EXCHANGE_TASK_QUEUE,
    LIFECYCLE_TASK_QUEUE,
    PortfolioView,
    PositionInput,
    PositionOptions,
)
from workflows.search_attributes import SA_SYMBOL

D = Decimal
# Hang guards, not latency bounds: on a loaded machine four worker processes start and drain slowly.
GUARD_S = 240.0
SYMBOLS = [f"T{i:03d}USDT" for i in range(1, 31)]
INTENTS = 120
LIMIT = 6
LIMITS = {
    "gov_max_open_positions": LIMIT,
    "gov_max_total_notional_usdt": D(1200),
    "gov_max_notional_per_trade_usdt": D(200),
    "exchange_args": ["--extra-symbols", "30"],
}


def pid_of(identity: str) -> int:
    """A worker's default identity is `PID@HOST`."""
    return int(identity.split("@", 1)[0])


async def poller_pids(stack: Stack, queue: str, kind: TaskQueueType.ValueType) -> set[int]:
    resp = await stack.client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=stack.client.namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind
        )
    )
    return {pid_of(p.identity) for p in resp.pollers}


async def count(stack: Stack, status: str) -> int:
    query = f"WorkflowType='PositionWorkflow' AND PositionStatus='{status}'"
    return (await stack.client.count_workflows(query)).count


async def entry_in_flight(stack: Stack) -> tuple[WorkflowHandle[Any, Any], int, int]:
    """A position whose entry order is running on an exchange worker: (its handle, that exchange
    worker's pid, the pid of the lifecycle worker that ran its last workflow task)."""
    portfolio = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
    while True:
        try:
            holders = list((await portfolio.query("state", result_type=PortfolioView)).book.reservations)
        except Exception:  # not started yet
            holders = []
        for holder in holders:  # the granted positions (entering ones are not in visibility)
            handle = stack.client.get_workflow_handle(holder)
            described = await handle.describe()
            for pending in described.raw_description.pending_activities:
                if pending.activity_type.name == "open_entry" and pending.last_worker_identity:
                    history = await handle.fetch_history()
                    tasks = [
                        e.workflow_task_started_event_attributes.identity
                        for e in history.events
                        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
                    ]
                    return handle, pid_of(pending.last_worker_identity), pid_of(tasks[-1])
        await asyncio.sleep(0.02)


def identities(history: Any) -> tuple[set[int], list[tuple[int, int]]]:
    """From a history: the pids that ran its workflow tasks, and (pid, attempt) of each open_entry's
    attempt that finished (a history records only the last attempt's start)."""
    workflow_pids = {
        pid_of(e.workflow_task_started_event_attributes.identity)
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
    }
    scheduled = {
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "open_entry"
    }
    entries = [
        (
            pid_of(e.activity_task_started_event_attributes.identity),
            e.activity_task_started_event_attributes.attempt,
        )
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and e.activity_task_started_event_attributes.scheduled_event_id in scheduled
    ]
    return workflow_pids, entries


@pytest.mark.parametrize("stack", [LIMITS], indirect=True)
async def test_two_lifecycle_and_two_exchange_workers_share_a_burst_and_survive_a_sigkill(
    stack: Stack,
) -> None:
    for symbol in SYMBOLS:
        stack.exchange.set_price(symbol, "100")
    procs: dict[int, ManagedProcess] = {}
    for kind in ("lifecycle", "lifecycle", "exchange", "exchange"):
        proc = stack.start_worker_process(kind, "--metrics-port", "0")
        procs[proc.pid] = proc
    lifecycle_pids = {pid for pid, p in procs.items() if p.name == "lifecycle-worker"}
    exchange_pids = {pid for pid, p in procs.items() if p.name == "exchange-worker"}
    async with asyncio.timeout(GUARD_S):  # every process connected and polling its queue
        while (
            await poller_pids(stack, LIFECYCLE_TASK_QUEUE, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW)
            != lifecycle_pids
            or await poller_pids(stack, EXCHANGE_TASK_QUEUE, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
            != exchange_pids
        ):
            dead = [p for p in procs.values() if not p.alive()]  # fail now, with its reason
            assert not dead, "\n".join(f"{p.name} exited:\n{p.log_tail()}" for p in dead)
            await asyncio.sleep(0.2)

    peaks = {"slots": 0, "notional": D(0)}
    done = asyncio.Event()

    async def watch_portfolio() -> None:
        portfolio = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
        while not done.is_set():
            try:
                view = await portfolio.query("state", result_type=PortfolioView)
            except Exception:  # its worker was just killed: the other answers the next query
                await asyncio.sleep(0.05)
                continue
            peaks["slots"] = max(peaks["slots"], view.slots_used)
            peaks["notional"] = max(peaks["notional"], view.notional_used)
            await asyncio.sleep(0.05)

    # Entry orders take three seconds at the venue, so the kill lands while one is in flight.
    stack.exchange.set_faults(latency_ms=3000, paths=["/fapi/v1/order"])
    watcher = asyncio.create_task(watch_portfolio())
    gate = asyncio.Semaphore(32)

    async def submit(i: int) -> None:
        intent = PositionInput(
            symbol=SYMBOLS[i % len(SYMBOLS)],
            side=Side.LONG if i % 2 else Side.SHORT,
            notional_usdt=D(200),
            intent_id=f"two-{i}",
            options=PositionOptions(mark_check_seconds=3600, entry_deadline_seconds=900),
        )
        async with gate:
            await stack.client.start_workflow(
                "PositionWorkflow", intent, id=f"position-two-{i}", task_queue=LIFECYCLE_TASK_QUEUE
            )

    submitting = asyncio.gather(*(submit(i) for i in range(INTENTS)))
    async with asyncio.timeout(GUARD_S):
        victim, exchange_pid, lifecycle_pid = await entry_in_flight(stack)
    for pid in (exchange_pid, lifecycle_pid):
        os.kill(pid, signal.SIGKILL)
        procs[pid].popen.wait(timeout=5)  # type: ignore[union-attr]
    await submitting
    async with asyncio.timeout(GUARD_S):
        while sum([await count(stack, s) for s in ("OPEN", "REJECTED", "FAILED")]) < INTENTS:
            await asyncio.sleep(0.5)
    stack.exchange.clear_faults()
    done.set()
    await watcher

    statuses = Counter({s: await count(stack, s) for s in ("OPEN", "REJECTED", "FAILED")})
    assert statuses == Counter({"OPEN": LIMIT, "REJECTED": INTENTS - LIMIT})
    assert peaks["slots"] == LIMIT and peaks["notional"] <= D(1200)

    # The load was shared: the position in flight at the kill was taken over by the other lifecycle
    # worker, and its entry attempt by the other exchange worker, which looked the order up first.
    workflow_pids, entries = identities(await victim.fetch_history())
    assert workflow_pids == lifecycle_pids
    ((entry_pid, attempt),) = entries
    assert entry_pid == (exchange_pids - {exchange_pid}).pop() and attempt >= 2
    victim_symbol = (await victim.describe()).typed_search_attributes.get(SA_SYMBOL)

    async with BinanceFuturesClient.from_settings(stack.settings) as venue:
        held = {p.symbol: p for p in await venue.position_risk() if p.position_amt != 0}
    orders = stack.exchange.admin("GET", "orders")
    stops = stack.exchange.admin("GET", "algo-orders")
    open_by_symbol = Counter(
        [
            wf.typed_search_attributes.get(SA_SYMBOL)
            async for wf in stack.client.list_workflows(
                "WorkflowType='PositionWorkflow' AND PositionStatus='OPEN'"
            )
        ]
    )
    assert len(held) == LIMIT and victim_symbol in held
    assert open_by_symbol == Counter({symbol: 1 for symbol in held})  # each managed, by one workflow
    assert sorted(o["symbol"] for o in orders) == sorted(held)  # one entry order each, none twice
    assert all(not o["reduceOnly"] for o in orders)
    live_stops = Counter(a["symbol"] for a in stops if a["algoStatus"] == "NEW")
    assert live_stops == Counter({symbol: 1 for symbol in held})  # each protected by its hard stop
