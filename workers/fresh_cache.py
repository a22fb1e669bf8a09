"""A workflow worker that forgets what it cached whenever the Temporal server stops answering.

What this prevents (measured with a dev server SIGKILLed 30 times under a stream of updates): an
update is delivered in a speculative workflow task, the worker applies it and answers, and the server
dies before that task is persisted; 3 to 9 updates the worker had applied were missing from the history
afterwards (the client retries them and they land once). A worker that kept such a workflow cached holds
state the server does not have. With the server down, the old worker also ran a workflow task now and
then, and once in about fifteen restarts it ran a task from the server that came back, before its own
shutdown ended. Deciding from a cache of before a crash risks commands that the next replay does not
reproduce: a nondeterminism error, and a portfolio or position stuck until someone resets it. (The
portfolio's nondeterminism errors seen in `bench.faults` had another cause: see
`workflows/portfolio.py`, PATCH_TIMERS.)

So the worker is replaced by a fresh one (an empty workflow cache) when the server is found
unreachable, before it takes any workflow task from the server that came back. Cached workflows are
then replayed from the persisted history. Losing contact without a server restart costs only that
replay.

Shutting the old worker down is not enough by itself: its shutdown waits for running activities, and
meanwhile it can still be handed a workflow task by the server that came back, and run it on the
stale cache (seen once in about fifteen restarts). So the old worker's workflow tasks run
on a `CondemnableExecutor`; once condemned, every activation but an eviction fails at once (the
server records a failed task and hands it again, to the fresh worker)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

log = logging.getLogger("qtrader.worker.fresh_cache")

PROBE_EVERY_S = 0.1
PROBE_TIMEOUT_S = 2.0
# Health checks that must fail in a row: one slow answer on a loaded machine is not an outage. A server
# that crashed is seen sooner: its port refuses connections (cheap to ask every PROBE_EVERY_S).
FAILED_PROBES = 2
HEALTH_EVERY = 10  # one health check per this many port probes


async def port_refuses(client: Client, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """True when the server's address refuses a TCP connection (the process is gone)."""
    host, _, port = client.service_client.config.target_host.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
    except (OSError, TimeoutError, ValueError):
        return True
    writer.close()
    return False


async def reachable(client: Client, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    if await port_refuses(client, timeout_s):
        return False
    try:
        return await client.service_client.check_health(timeout=timedelta(seconds=timeout_s))
    except Exception:
        return False


class StaleWorkerError(RuntimeError):
    """A workflow task reached a worker replaced after the Temporal server stopped answering."""


def _is_eviction(args: tuple[Any, ...]) -> bool:
    # The SDK submits `(activate, activation)`; an eviction must still run, or its shutdown hangs.
    jobs = getattr(args[0], "jobs", ()) if args else ()
    return any(job.HasField("remove_from_cache") for job in jobs)


class CondemnableExecutor(ThreadPoolExecutor):
    """The thread pool a worker runs its workflow activations on (the SDK's default size), which can
    be condemned: from then on every activation but an eviction fails without running."""

    def __init__(self, max_workers: int = 500) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix="temporal_workflow_")
        self.condemned = False

    def condemn(self) -> None:
        self.condemned = True

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self.condemned and not _is_eviction(args):
            refused: Future[Any] = Future()
            refused.set_exception(StaleWorkerError("this worker's workflow cache predates a server outage"))
            return refused
        return super().submit(fn, *args, **kwargs)


class FreshCacheWorker:
    """Runs `make_worker(executor)`'s worker until `stop` is set; whenever the server stops answering,
    condemns its executor, shuts it down and, once the server answers again, runs a new one. The
    factory must pass `executor` to the Worker as its `workflow_task_executor`."""

    def __init__(
        self,
        client: Client,
        make_worker: Callable[[CondemnableExecutor], Worker],
        *,
        probe_every_s: float = PROBE_EVERY_S,
        probe_timeout_s: float = PROBE_TIMEOUT_S,
        on_replaced: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.make_worker = make_worker
        self.probe_every_s = probe_every_s
        self.probe_timeout_s = probe_timeout_s
        self.on_replaced = on_replaced
        self.replaced = 0  # workers replaced after the server stopped answering
        self.executor = CondemnableExecutor()
        self.worker = make_worker(self.executor)  # built here: a worker that cannot be built fails at start

    @property
    def task_queue(self) -> str:
        return self.worker.task_queue

    async def run(self, stop: asyncio.Event) -> None:
        worker = self.worker
        while not stop.is_set():
            self.worker = worker
            running = asyncio.create_task(worker.run())
            lost = await self._until_lost(stop, running)
            if lost:
                self.executor.condemn()  # before anything else: no task may run on this cache now
                log.warning(
                    "the Temporal server stopped answering: this worker drops its workflow cache and "
                    "starts afresh once the server answers (workflows are replayed from history)"
                )
            if not running.done():
                await worker.shutdown()
            if not lost:
                try:
                    await running  # stopped as asked; a worker that failed on its own fails the process
                finally:
                    self.executor.shutdown(wait=False)
                return
            with contextlib.suppress(Exception):
                await running  # a worker that failed during the outage is replaced all the same
            self.executor.shutdown(wait=False)
            self.replaced += 1
            if self.on_replaced is not None:
                self.on_replaced()
            while not stop.is_set() and not await reachable(self.client, self.probe_timeout_s):
                await _sleep_or(stop, self.probe_every_s)
            self.executor = CondemnableExecutor()
            worker = self.make_worker(self.executor)

    async def _until_lost(self, stop: asyncio.Event, running: asyncio.Task[None]) -> bool:
        """True when the server stopped answering; False when `stop` was set or the worker ended."""
        failed = 0
        probes = 0
        while not stop.is_set() and not running.done():
            if await port_refuses(self.client, self.probe_timeout_s):
                return True
            probes += 1
            if probes % HEALTH_EVERY == 0:  # a server that answers TCP but not requests
                failed = 0 if await reachable(self.client, self.probe_timeout_s) else failed + 1
                if failed >= FAILED_PROBES:
                    return True
            await _sleep_or(stop, self.probe_every_s, running)
        return False


async def _sleep_or(stop: asyncio.Event, seconds: float, *also: asyncio.Future[None]) -> None:
    waiter = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({waiter, *also}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
