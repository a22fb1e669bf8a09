"""The inference worker (`qtrader worker inference`): task queue `inference` — the bar-close and universe
workflows and their activities (ensemble inference, decision streams, quote volumes). It can run on
any server that reaches Temporal and Redis (e.g. one with a GPU); it holds no API keys.

The process also runs the meta-strategy chooser's rewards consumer (`StrategyChooser.run`) as a
background task, so `quantum:stream:rl_rewards` is learned from continuously wherever an inference
worker runs; several workers share its consumer group (each reward applied once) and the state in
Redis, which every inference call re-reads. SIGTERM stops the worker, then the consumer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import redis.asyncio as aioredis
from temporalio.client import Client
from temporalio.worker import Worker

from activities.inference import InferenceActivities
from activities.learning import LearningActivities
from activities.universe import UniverseActivities
from signals.strategy_chooser import StrategyChooser
from trading.config import Settings, TradingMode
from workers.schedules import ensure_retrain_schedule, ensure_signal_schedules
from workflows.bar_close import BarCloseWorkflow
from workflows.messages import INFERENCE_TASK_QUEUE
from workflows.retrain import RetrainWorkflow
from workflows.universe import UniverseWorkflow

log = logging.getLogger("qtrader.worker.inference")


def strategy_chooser(redis: aioredis.Redis) -> StrategyChooser:
    """This process's chooser: its consumer name is unique per process, the group and state shared."""
    return StrategyChooser(redis, consumer=f"{socket.gethostname()}-{os.getpid()}")


@contextlib.asynccontextmanager
async def rewards_consumer(chooser: StrategyChooser, retry_s: float = 2.0) -> AsyncIterator[None]:
    """`chooser.run` in the background for the duration of the block; a Redis outage is logged and
    retried (unacknowledged rewards are read again), never the end of the consumer."""
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            try:
                await chooser.run(stop)
            except Exception as exc:
                log.warning("rewards consumer: %r; retrying in %.0fs", exc, retry_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), retry_s)
        log.info("rewards consumer stopped (%d rewards learned in all)", chooser.state.updates)

    task = asyncio.create_task(loop(), name="rewards-consumer")
    try:
        yield
    finally:
        stop.set()
        await task
        # leave the group tidy: this process's consumer name is never used again (a restart gets a new
        # pid); one still holding unacknowledged rewards stays, for another chooser to claim them
        with contextlib.suppress(Exception):
            mine = await chooser.redis.xpending_range(
                chooser.stream, chooser.group, "-", "+", 1, consumername=chooser.consumer
            )
            if not mine:
                await chooser.redis.xgroup_delconsumer(chooser.stream, chooser.group, chooser.consumer)


def inference_worker(
    client: Client,
    settings: Settings,
    redis: aioredis.Redis,
    registry_root: Path | None = None,
    chooser: StrategyChooser | None = None,
    workflow_task_executor: ThreadPoolExecutor | None = None,
) -> Worker:
    """`chooser`: picks each intent's strategy (default: one on `redis`; its rewards consumer is not
    started here, see `rewards_consumer`). `workflow_task_executor`: where its workflow activations run
    (workers/fresh_cache.py)."""
    inference = InferenceActivities(settings, redis, registry_root, chooser or strategy_chooser(redis))
    universe = UniverseActivities(redis, settings.rest_url)
    # continuous learning (workflows/retrain.py): synchronous, CPU-bound, so on a thread pool
    learning = LearningActivities(registry_root or settings.registry_dir, redis_url=settings.redis_url)
    return Worker(
        client,
        task_queue=INFERENCE_TASK_QUEUE,
        workflows=[BarCloseWorkflow, UniverseWorkflow, RetrainWorkflow],
        activities=[
            inference.infer_bar,
            inference.publish_decisions,
            universe.quote_volumes,
            universe.store_universe,
            *learning.activities(),
        ],
        activity_executor=ThreadPoolExecutor(4, thread_name_prefix="learning"),  # = max_concurrent_activities
        max_concurrent_activities=4,  # inference is CPU-bound: a few at a time on a small box
        graceful_shutdown_timeout=timedelta(seconds=10),
        workflow_task_executor=workflow_task_executor,
    )


async def run(settings: Settings, metrics_port: int | None) -> None:
    from workers.service import redis_client, run_until_sigterm
    from workers.temporal_client import connect, metrics_runtime

    client = await connect(settings, metrics_runtime(metrics_port, settings.prometheus_bind_host))
    redis = redis_client(settings, socket_timeout=5, socket_connect_timeout=2)
    chooser = strategy_chooser(redis)

    def worker(executor: ThreadPoolExecutor) -> Worker:
        return inference_worker(client, settings, redis, chooser=chooser, workflow_task_executor=executor)

    periods = await ensure_signal_schedules(client, settings)
    await ensure_retrain_schedule(client, settings)
    log.info("schedules: %s (mode %s)", periods, TradingMode(settings.trading_mode).value)
    async with rewards_consumer(chooser):
        await run_until_sigterm(worker, "inference", metrics_port, client)
    await redis.aclose()
