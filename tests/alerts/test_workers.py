"""A worker down, seen as Temporal sees it: the task queue's pollers. A real dev server (its idle long
poll shortened to 2 s, so that a live worker polls often and a short staleness limit is safe), a real
worker started and stopped, the server itself stopped; each change told once, also across a restart of
the notifier."""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from alerts.service import Notifier
from alerts.sources import CONDITIONS_KEY
from tests.alerts.conftest import Receiver, RedisServer, alert_settings, running, wait_for
from workers.devservers import start_temporal

QUEUE = "alerts-test-queue"


@activity.defn
async def nothing() -> None:
    return None


def _worker(client: Client) -> Worker:
    return Worker(client, task_queue=QUEUE, activities=[nothing])


async def test_worker_down_and_back_and_the_server_down(
    tmp_path: Path, redis_server: RedisServer, receiver: Receiver
) -> None:
    temporal, address = start_temporal(
        tmp_path, "--dynamic-config-value", 'matching.longPollExpirationInterval="2s"'
    )
    r = redis_server.client
    settings = alert_settings(
        tmp_path,
        redis_server.port,
        receiver,
        temporal_address=address,
        alert_task_queues=QUEUE,
        alert_worker_stale_seconds=6,
        alert_check_interval_seconds=0.5,
    )
    try:
        client = await Client.connect(address)

        async def state() -> bytes | None:
            return await r.hget(CONDITIONS_KEY, f"queue:{QUEUE}")

        async with running(Notifier(settings, r)):
            await wait_for(lambda: _is(state(), b"absent"), what="no worker yet: nothing to tell")
            worker = _worker(client)
            task = asyncio.create_task(worker.run())
            await wait_for(lambda: _is(state(), b"up"), what="the worker seen polling")
            assert receiver.requests == []  # a worker appearing is no news
            await worker.shutdown()
            await task
            down = await wait_for(lambda: receiver.texts(), what="the worker-down alert")
        assert f"Workers of task queue {QUEUE}: DOWN" in down[0] and "🚨 CRITICAL" in down[0]
        assert "No worker has polled task queue" in down[0]

        async with running(Notifier(settings, r)):  # a restart while it is down: no second alert
            await asyncio.sleep(2.0)
            assert len(receiver.delivered()) == 1
            worker = _worker(client)
            task = asyncio.create_task(worker.run())
            await wait_for(lambda: len(receiver.delivered()) >= 2, what="the worker-back alert")
            assert f"Workers of task queue {QUEUE}: back" in receiver.texts()[1]
            await worker.shutdown()
            await task
            temporal.stop()  # the server itself
            await wait_for(
                lambda: any("Temporal server" in t for t in receiver.texts()), what="the server-down alert"
            )
        texts = receiver.texts()
        assert f"Temporal server {address}: DOWN" in texts[-1] and "Unreachable since" in texts[-1]
        assert len([t for t in texts if ": DOWN" in t and QUEUE in t]) == 1
    finally:
        temporal.stop()


async def _is(value_coro, expected: bytes) -> bool:  # type: ignore[no-untyped-def]
    return (await value_coro) == expected
