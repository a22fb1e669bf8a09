"""The one service runner: how every long-running process here sets up its logging, serves its
Prometheus metrics, takes SIGTERM / SIGINT as a graceful stop and connects to Temporal and Redis.

Three shapes of process use it:

- the feeds (`feeds/`: price watcher, user-data stream, market data) and the notifier (`alerts/`):
  `run_service` runs the service's body with its connections, until SIGTERM / SIGINT or `stop`;
- the Temporal workers (lifecycle, exchange, inference): `run_until_sigterm` runs the worker until
  SIGTERM / SIGINT, then shuts it down gracefully (their metrics are the Temporal runtime's:
  `workers.temporal_client.metrics_runtime`);
- the uvicorn servers (the dashboard): `run_uvicorn` serves until SIGTERM / Ctrl-C.

`python -m feeds.…` entry points parse with `service_parser` and start through `run_main`; the
`qtrader` subcommands call `setup_logging` and `asyncio.run` the same service functions. The Temporal
connection factory is `workers.temporal_client`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, start_http_server
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.worker import Worker

from trading.config import ConfigError, Settings, load_settings
from workers.fresh_cache import CondemnableExecutor, FreshCacheWorker
from workers.gc_pauses import Freezer, GcPauses
from workers.lease import FeedLease, run_leased
from workers.temporal_client import connect_until_stopped

if TYPE_CHECKING:
    import uvicorn

__all__ = [
    "FEED_REDIS",
    "LOG_FORMAT",
    "JsonLogFormatter",
    "Service",
    "redis_client",
    "run_feed",
    "run_main",
    "run_service",
    "run_until_sigterm",
    "run_uvicorn",
    "serve_metrics",
    "service_parser",
    "setup_logging",
    "stop_on_signals",
    "wait_until_stopped",
]

log = logging.getLogger("qtrader.service")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The Redis connection of the feeds that signal workflows (`run_feed`).
FEED_REDIS: Mapping[str, Any] = {
    "socket_connect_timeout": 5,
    "socket_keepalive": True,
    "health_check_interval": 15,
}


# ---------------------------------------------------------------------------------------------------
# logging
class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "ts": round(record.created, 3),
                "level": record.levelname,
                "logger": record.name,
                "msg": record.getMessage(),
                **({"exc": self.formatException(record.exc_info)} if record.exc_info else {}),
            }
        )


def setup_logging(level: str = "INFO", *, json_lines: bool = False) -> None:
    """Log lines to stderr: `LOG_FORMAT`, or one JSON object per line."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter() if json_lines else logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])


# ---------------------------------------------------------------------------------------------------
# stop, metrics, Redis
def stop_on_signals(stop: asyncio.Event | None = None) -> asyncio.Event:
    """`stop` (or a new event), set by SIGTERM and SIGINT: a graceful stop instead of the default death.
    Where the loop cannot take signal handlers (not the main thread), `stop` is all there is."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def wait_until_stopped(stop: asyncio.Event, tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Until `stop` is set, or one of a service's `tasks` ends: with an exception, that is raised."""
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is not stopper and not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]  # a bug: the loops never end by themselves
    finally:
        stopper.cancel()


def serve_metrics(
    registry: CollectorRegistry, port: int | None, settings: Settings, service_log: logging.Logger = log
) -> None:
    """Serve `registry` on PROMETHEUS_BIND_HOST:`port` (None or 0: no endpoint)."""
    if not port:
        return
    start_http_server(port, addr=settings.prometheus_bind_host, registry=registry)
    service_log.info("metrics on port %d", port)


def redis_client(settings: Settings, **options: Any) -> aioredis.Redis:
    """Redis at REDIS_HOST:REDIS_PORT; `options` are the process's own timeouts."""
    return aioredis.Redis(host=settings.redis_host, port=settings.redis_port, **options)


# ---------------------------------------------------------------------------------------------------
# the feeds and the notifier
@dataclass
class Service:
    """What `run_service` hands the service's body."""

    settings: Settings
    stop: asyncio.Event  # set by SIGTERM / SIGINT: the body returns soon after
    client: Client | None  # Temporal, with `temporal=True`
    redis: aioredis.Redis  # with the `redis` options; closed by the runner


async def run_service(
    name: str,
    settings: Settings,
    body: Callable[[Service], Awaitable[None]],
    *,
    log: logging.Logger,
    redis: Mapping[str, Any],
    stop: asyncio.Event | None = None,
    registry: CollectorRegistry | None = None,
    metrics_port: int | None = None,
    temporal: bool = False,
) -> None:
    """Run `body` until SIGTERM / SIGINT (or `stop`): `registry` served on `metrics_port` first, then
    the stop signals taken, then Temporal connected (with `temporal`: retried with backoff until it
    answers; a stop meanwhile ends the service before the body), then Redis with the `redis` options.
    Redis is closed after the body, and "`name` stopped" logged on `log`."""
    if registry is not None:
        serve_metrics(registry, metrics_port, settings, log)
    stop = stop_on_signals(stop)
    client = None
    if temporal:
        client = await connect_until_stopped(settings, stop)
        if client is None:
            return
    conn = redis_client(settings, **redis)
    try:
        await body(Service(settings, stop, client, conn))
    finally:
        with contextlib.suppress(Exception):
            await conn.aclose()
        log.info("%s stopped", name)


async def run_feed(
    name: str,
    settings: Settings,
    body: Callable[[Service], Awaitable[None]],
    registry: CollectorRegistry,
    metrics_port: int | None,
    *,
    log: logging.Logger,
    stop: asyncio.Event | None = None,
) -> None:
    """`run_service` as the feeds that signal workflows run it (the price watcher, the user-data
    stream): Temporal retried until it answers, Redis with `FEED_REDIS`, and `body` run only while
    this process holds the feed's lease (workers/lease.py: one copy active, the others standing by)."""

    async def leased(svc: Service) -> None:
        lease = FeedLease(svc.redis, name.replace(" ", "-"), settings.feed_lease_seconds)
        await run_leased(name, svc, body, lease, registry, log)

    await run_service(
        name,
        settings,
        leased,
        log=log,
        stop=stop,
        registry=registry,
        metrics_port=metrics_port,
        temporal=True,
        redis=FEED_REDIS,
    )


def service_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """The parser of a `python -m feeds.…` entry point (described by the first line of its module's
    `doc`), with the options every one of them takes; the service adds its own."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    parser.add_argument("--metrics-port", type=int, default=None, help="Prometheus port (none: off)")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    return parser


def run_until_stopped_then_exit(main: Coroutine[Any, Any, None]) -> NoReturn:
    """Run a long-lived service process's `main` to its clean stop, then leave at once: the Temporal
    client's Rust threads can abort the interpreter's shutdown ("Fatal Python error:
    PyGILState_Release", temporalio/sdk-python#300), and a worker that stopped cleanly on SIGTERM then
    exited 134 with a fatal error in its log (seen on an exchange worker's stop)."""
    asyncio.run(main)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_main(args: argparse.Namespace, service: Callable[[Settings], Coroutine[Any, Any, None]]) -> int:
    """Logging as `args` say, the settings from the environment (2 when they are wrong), then `service`
    until it ends. Returns the exit status."""
    setup_logging(args.log_level, json_lines=args.log_json)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    run_until_stopped_then_exit(service(settings))


# ---------------------------------------------------------------------------------------------------
# the Temporal workers
async def run_until_sigterm(
    worker: Worker | Callable[[CondemnableExecutor], Worker],
    name: str,
    metrics_port: int | None,
    client: Client | None = None,
    gc_freeze_s: float = 0.0,
) -> None:
    """Run the worker; SIGTERM or SIGINT shuts it down gracefully (in-flight tasks finish first).
    A worker that hosts workflows is given as its factory with its `client`: whenever the Temporal server
    stops answering it is replaced by a fresh one (workers/fresh_cache.py says why). Its collector's
    pauses are measured, and with `gc_freeze_s` its survivors frozen that often (workers/gc_pauses.py)."""
    stop = stop_on_signals()
    owner = worker.client if isinstance(worker, Worker) else client
    runtime = (owner.service_client.config.runtime if owner else None) or Runtime.default()
    pauses = GcPauses(runtime.metric_meter, name=f"the {name} worker")
    freezing = asyncio.create_task(Freezer().run(gc_freeze_s)) if gc_freeze_s > 0 else None
    try:
        if isinstance(worker, Worker):
            task = asyncio.create_task(worker.run())
            queue = worker.task_queue
        else:
            assert client is not None, "a worker factory needs its client"
            dropped = runtime.metric_meter.create_counter(
                "quantum_worker_cache_dropped",
                "workers replaced (cache dropped): the server stopped answering",
            )
            runner = FreshCacheWorker(client, worker, on_replaced=lambda: dropped.add(1, {"worker": name}))
            task = asyncio.create_task(runner.run(stop))
            queue = runner.task_queue
        print(
            f"{name} worker polling task queue {queue!r}"
            + (f"; metrics on :{metrics_port}/metrics" if metrics_port else ""),
            flush=True,
        )
        done, _ = await asyncio.wait(
            {task, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        if task not in done:
            log.info("%s worker: shutting down", name)
            if isinstance(worker, Worker):
                await worker.shutdown()
        await task
    finally:
        if freezing is not None:
            freezing.cancel()
        pauses.remove()


# ---------------------------------------------------------------------------------------------------
# the uvicorn servers
def run_uvicorn(make_server: Callable[[], uvicorn.Server], ready: str) -> bool:
    """Serve until SIGTERM / Ctrl-C (uvicorn's own handlers: a graceful stop). `make_server` is called
    inside the event loop; `ready` is printed once the server listens. Returns whether it ever did."""
    started = False

    async def serve() -> None:
        nonlocal started
        server = make_server()
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn exposes a flag only
            await asyncio.sleep(0.01)
        if server.started:
            started = True
            print(ready, flush=True)
        await task

    if threading.current_thread() is threading.main_thread():
        # uvicorn re-raises the signal it caught after a graceful stop: make that a no-op so
        # asyncio.run() returns normally instead of dying by SIGTERM's default action.
        signal.signal(signal.SIGTERM, lambda sig, frame: None)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return started
