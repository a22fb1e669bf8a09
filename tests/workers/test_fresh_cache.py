"""A workflow worker drops its cache when the Temporal server crashes (workers/fresh_cache.py), across
a real dev server that is SIGKILLed and restarted on its SQLite file."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.client import Client
from temporalio.worker import Replayer, Worker

from workers.devservers import start_temporal
from workers.fresh_cache import CondemnableExecutor, FreshCacheWorker, StaleWorkerError
from workers.processes import ManagedProcess, free_port

QUEUE = "fresh-cache-test"
WAIT_S = 60.0  # an upper bound for a step on a loaded machine, not a figure under test


@workflow.defn(sandboxed=False)
class Counter:
    """Counts accepted updates; its loop wakes on each one, as the portfolio's does."""

    def __init__(self) -> None:
        self.count = 0
        self.seen = 0

    @workflow.run
    async def run(self) -> None:
        while True:
            await workflow.wait_condition(lambda: self.count != self.seen)
            self.seen = self.count
            await workflow.sleep(0.01)

    @workflow.update
    def bump(self) -> int:
        self.count += 1
        return self.count

    @workflow.query
    def value(self) -> int:
        return self.count


@dataclass
class Server:
    tmp: Path
    port: int
    proc: ManagedProcess

    def crash(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.popen is not None
        self.proc.popen.wait(timeout=10)

    async def restart(self) -> None:
        self.proc, _ = start_temporal(self.tmp, "--db-filename", str(self.tmp / "t.sqlite"), port=self.port)
        await self.healthy()

    async def healthy(self) -> None:
        """Its port opens before its frontend serves ("Frontend is not healthy yet", UNAVAILABLE), and a
        client gives up on that after about 10 s: on a loaded machine a restart on its SQLite file can
        take longer, so the test waits for the health check, as the worker itself does."""

        async def serving() -> bool:
            try:
                client = await Client.connect(f"127.0.0.1:{self.port}")
                return await client.service_client.check_health(timeout=timedelta(seconds=2))
            except Exception:
                return False

        await until(serving, "the server's frontend healthy")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    port = free_port()
    proc, _ = start_temporal(tmp_path, "--db-filename", str(tmp_path / "t.sqlite"), port=port)
    srv = Server(tmp_path, port, proc)
    try:
        await srv.healthy()
        yield srv
    finally:
        srv.proc.stop()


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT_S):
            while not await check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {WAIT_S} s") from None


@pytest.mark.asyncio
async def test_a_crashed_server_gets_a_fresh_worker_and_the_workflow_goes_on(server: Server) -> None:
    client = await Client.connect(f"127.0.0.1:{server.port}")
    built: list[Worker] = []

    def make(executor: ThreadPoolExecutor) -> Worker:
        worker = Worker(
            client,
            task_queue=QUEUE,
            workflows=[Counter],
            graceful_shutdown_timeout=timedelta(0),
            workflow_task_executor=executor,
        )
        built.append(worker)
        return worker

    runner = FreshCacheWorker(client, make)
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    try:
        handle = await client.start_workflow(Counter.run, id="counter", task_queue=QUEUE)
        for _ in range(3):
            await handle.execute_update(Counter.bump)
        assert runner.replaced == 0, "a server that answers must not cost a replay"

        server.crash()

        async def replaced() -> bool:
            return runner.replaced == 1

        await until(replaced, "the worker replaced")
        await server.restart()
        # The fresh worker (not the one that cached the workflow) takes it on from its history.
        assert await handle.execute_update(Counter.bump, rpc_timeout=timedelta(seconds=WAIT_S)) == 4
        assert await handle.query(Counter.value) == 4
        assert len(built) == 2 and runner.worker is built[1]
        assert not runner.executor.condemned
        await Replayer(workflows=[Counter]).replay_workflow(await handle.fetch_history())
    finally:
        stop.set()
        await asyncio.wait_for(running, WAIT_S)


@pytest.mark.asyncio
async def test_a_healthy_server_costs_no_replay_and_stop_ends_the_runner(server: Server) -> None:
    client = await Client.connect(f"127.0.0.1:{server.port}")
    runner = FreshCacheWorker(
        client, lambda ex: Worker(client, task_queue=QUEUE, workflows=[Counter], workflow_task_executor=ex)
    )
    stop = asyncio.Event()
    running = asyncio.create_task(runner.run(stop))
    await asyncio.sleep(0.5)  # a few probes of a healthy server
    stop.set()
    await asyncio.wait_for(running, WAIT_S)
    assert runner.replaced == 0


def _activation(*jobs: str) -> WorkflowActivation:
    act = WorkflowActivation(run_id="r")
    for job in jobs:
        getattr(act.jobs.add(), job).SetInParent()
    return act


def test_a_condemned_executor_refuses_every_task_but_an_eviction() -> None:
    """The old worker can still be handed a task by the server that came back, before its shutdown
    ends: once condemned, its executor fails that task unrun; an eviction still runs (else the
    shutdown waits for it forever)."""
    executor = CondemnableExecutor(max_workers=2)
    try:
        ran: list[str] = []
        assert executor.submit(ran.append, "before").result() is None
        executor.condemn()
        with pytest.raises(StaleWorkerError):
            executor.submit(ran.append, _activation("fire_timer")).result()
        executor.submit(ran.append, _activation("remove_from_cache")).result()
        assert ran[0] == "before" and len(ran) == 2 and ran[1].jobs[0].HasField("remove_from_cache")
    finally:
        executor.shutdown()
