"""The lifecycle worker: position and portfolio workflows, plus the activities that talk to Temporal
itself and to Redis (task queue `trade-lifecycle`)."""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta

import redis.asyncio as aioredis
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from activities.market import MarketActivities
from activities.portfolio import PortfolioActivities, start_portfolio
from activities.projections import ProjectionActivities
from activities.reconcile import ReconcileActivities
from exchange.client import BinanceFuturesClient
from trading.config import Settings
from trading.governor import RiskPolicy
from workers.temporal_client import connect, ensure_search_attributes, metrics_runtime
from workflows.messages import LIFECYCLE_TASK_QUEUE
from workflows.portfolio import PortfolioWorkflow
from workflows.position import PositionWorkflow
from workflows.reconcile import ReconcileWorkflow

RECONCILE_SCHEDULE_ID = "reconcile-schedule"

log = logging.getLogger("qtrader.worker.lifecycle")


def lifecycle_worker(
    client: Client, settings: Settings, redis: aioredis.Redis, market: BinanceFuturesClient
) -> Worker:
    """`market` is a keyless exchange client: the lifecycle worker reads public market data only."""
    portfolio = PortfolioActivities(
        client, RiskPolicy.from_settings(settings), settings.portfolio_holder_check_seconds
    )
    projections = ProjectionActivities(redis)
    symbols = MarketActivities(market)
    reconciling = ReconcileActivities(client, redis)
    return Worker(
        client,
        task_queue=LIFECYCLE_TASK_QUEUE,
        workflows=[PositionWorkflow, PortfolioWorkflow, ReconcileWorkflow],
        activities=[
            portfolio.request_reservation,
            portfolio.deliver_decisions,
            portfolio.find_stopped_holders,
            projections.project_position,
            projections.project_portfolio,
            projections.publish_levels,
            symbols.check_symbol,
            reconciling.tracked_positions,
            reconciling.tell_position,
            reconciling.adopt_position,
            reconciling.record_reconcile,
        ],
        graceful_shutdown_timeout=timedelta(seconds=10),
    )


async def run(settings: Settings, metrics_port: int | None) -> None:
    client = await connect(settings, metrics_runtime(metrics_port, settings.prometheus_bind_host))
    await ensure_search_attributes(client)
    redis = aioredis.Redis(
        host=settings.redis_host, port=settings.redis_port, socket_timeout=2, socket_connect_timeout=2
    )
    async with BinanceFuturesClient(settings.rest_url, None, None) as market:
        worker = lifecycle_worker(client, settings, redis, market)
        await start_portfolio(
            client, RiskPolicy.from_settings(settings), settings.portfolio_holder_check_seconds
        )
        await run_until_sigterm(worker, "lifecycle", metrics_port)
    await redis.aclose()


async def ensure_reconcile_schedule(client: Client, every_s: float, *, run_now: bool) -> None:
    """The Temporal Schedule that runs ReconcileWorkflow every `every_s` (overlaps skipped); with
    `run_now`, one run at once (the startup reconcile the portfolio waits for)."""
    handle = client.get_schedule_handle(RECONCILE_SCHEDULE_ID)
    try:
        await handle.describe()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        await client.create_schedule(
            RECONCILE_SCHEDULE_ID,
            Schedule(
                action=ScheduleActionStartWorkflow(
                    "ReconcileWorkflow", id="reconcile", task_queue=LIFECYCLE_TASK_QUEUE
                ),
                spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=every_s))]),
                policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
            ),
        )
    if run_now:
        await handle.trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)


async def run_until_sigterm(worker: Worker, name: str, metrics_port: int | None) -> None:
    """Run the worker; SIGTERM or SIGINT shuts it down gracefully (in-flight tasks finish first)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(worker.run())
    print(
        f"{name} worker polling task queue {worker.task_queue!r}"
        + (f"; metrics on :{metrics_port}/metrics" if metrics_port else ""),
        flush=True,
    )
    done, _ = await asyncio.wait(
        {task, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
    )
    if task not in done:
        log.info("%s worker: shutting down", name)
        await worker.shutdown()
    await task
