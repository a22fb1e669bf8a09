"""A throw-away local stack for the benchmarks: Temporal dev server, Redis and the paper exchange as real
processes on free loopback ports (stopped by PID), plus the lifecycle and exchange workers in this
process (or the lifecycle worker as a process of its own: `start_lifecycle`), the portfolio started the
way the stack starts it.

Unlike the test harness (tests/workflows/conftest.py) the venue's and the client's rate limits are
raised, so a benchmark measures our path and not Binance's order-count limits (see `BIG`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError
from temporalio.worker import Worker

from exchange.client import BinanceFuturesClient
from trading.config import Settings, load_settings
from trading.governor import RiskPolicy
from workers.devservers import REPO, PaperExchange, start_paper_exchange, start_redis, start_temporal
from workers.exchange_worker import exchange_worker
from workers.lifecycle import lifecycle_worker
from workers.processes import ManagedProcess
from workers.temporal_client import connect
from workflows.messages import DEFAULT_PORTFOLIO_ID, LIFECYCLE_TASK_QUEUE, PortfolioInput

BIG = 10_000_000  # venue and client rate limits for a benchmark (weight / orders per window)


def start_venue(tmp: Path, extra_symbols: int) -> PaperExchange:
    """The paper exchange with a deep account and rate limits out of the way."""
    return start_paper_exchange(
        tmp,
        "--extra-symbols",
        str(extra_symbols),
        "--start-balance",
        "100000000",
        "--weight-limit",
        str(BIG),
        "--order-limit-10s",
        str(BIG),
        "--order-limit-1m",
        str(BIG),
    )


@dataclass
class LocalStack:
    tmp: Path
    processes: dict[str, ManagedProcess]
    venue: PaperExchange
    settings: Settings
    client: Client
    redis: aioredis.Redis
    exchange_client: BinanceFuturesClient | None = None
    workers: list[Worker] = field(default_factory=list)

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.processes.items()}


@contextlib.asynccontextmanager
async def local_stack(
    tmp: Path,
    *,
    extra_symbols: int = 90,
    extra_workers: Sequence[Any] = (),
    log: Any = None,
    lifecycle: bool = True,
    **overrides: Any,
) -> AsyncIterator[LocalStack]:
    """Start everything, yield, stop everything we started (by PID), whatever happens in between.

    `extra_workers`: callables `client -> Worker` run next to the two lifecycle workers.
    `lifecycle`: False runs no lifecycle worker here (the benchmark starts one as a process).
    `overrides`: Settings fields (risk limits etc.)."""
    say = log or (lambda _msg: None)
    tmp.mkdir(parents=True, exist_ok=True)
    started: dict[str, ManagedProcess] = {}
    try:
        temporal, address = start_temporal(tmp)
        started["temporal"] = temporal
        redis_proc, redis_port = start_redis(tmp)
        started["redis"] = redis_proc
        venue = start_venue(tmp, extra_symbols)
        started["paper-exchange"] = venue.process
        say(
            f"stack up: temporal pid {temporal.pid} {address}, redis pid {redis_proc.pid} :{redis_port}, "
            f"paper exchange pid {venue.process.pid} {venue.base_url} ({extra_symbols} extra symbols)"
        )
        base: dict[str, Any] = dict(
            temporal_address=address,
            redis_port=redis_port,
            paper_rest_url=venue.base_url,
            binance_api_key=venue.api_key,
            binance_api_secret=venue.api_secret,
            apply_allowlist=["*"],
            gov_max_exec_per_hour=1000,
            gov_max_exec_per_5min=1000,
            gov_symbol_cooldown_seconds=0,
            binance_weight_limit_1m=BIG,
            qt_home=tmp / "qt",  # the trade journal of benchmark trades stays in the run's folder
        )
        base.update(overrides)
        settings = load_settings(**base)
        client = await connect(settings)
        redis = aioredis.Redis(port=redis_port)
        stack = LocalStack(tmp, started, venue, settings, client, redis)
        try:
            async with contextlib.AsyncExitStack() as es:
                venue_client = await es.enter_async_context(
                    BinanceFuturesClient.from_settings(settings, order_limit_10s=BIG, order_limit_1m=BIG)
                )
                await venue_client.sync_time()
                stack.exchange_client = venue_client
                market = await es.enter_async_context(
                    BinanceFuturesClient(venue.base_url, None, None, weight_limit_1m=BIG)
                )
                workers = [
                    exchange_worker(client, venue_client),
                    *([lifecycle_worker(client, settings, redis, market)] if lifecycle else []),
                    *(make(client) for make in extra_workers),
                ]
                for w in workers:
                    await es.enter_async_context(w)
                stack.workers = workers
                # The stack starts the portfolio before any position (else: signal-with-start).
                await client.start_workflow(
                    "PortfolioWorkflow",
                    PortfolioInput(
                        policy=RiskPolicy.from_settings(settings),
                        holder_check_seconds=settings.portfolio_holder_check_seconds,
                    ),
                    id=DEFAULT_PORTFOLIO_ID,
                    task_queue=LIFECYCLE_TASK_QUEUE,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                )
                yield stack
        finally:
            await redis.aclose()
    finally:
        for name, proc in reversed(list(started.items())):
            proc.stop()
            say(f"stopped {name} pid {proc.pid}")


def start_service(
    stack: LocalStack, name: str, *argv: str, keys: bool = False, env: dict[str, str] | None = None
) -> ManagedProcess:
    """A `qtrader` service (e.g. `watcher`, `user-stream`) as a child process wired to this stack;
    `keys`: it gets the venue's API key and secret in its environment; `env`: more settings."""
    s = stack.settings
    environ = {
        **os.environ,
        "TEMPORAL_ADDRESS": s.temporal_address,
        "REDIS_PORT": str(s.redis_port),
        "PAPER_REST_URL": stack.venue.base_url,
        "BINANCE_WEIGHT_LIMIT_1M": str(s.binance_weight_limit_1m),
    }
    if keys:
        environ.update(BINANCE_API_KEY=stack.venue.api_key, BINANCE_API_SECRET=stack.venue.api_secret)
    proc = ManagedProcess(
        name=name,
        argv=[sys.executable, "-m", "workers.cli", *argv, "--metrics-port", "0"],
        log_path=stack.tmp / f"{name}.log",
        env={**environ, **(env or {})},
        cwd=REPO,
    )
    proc.start()
    return proc


def start_lifecycle(stack: LocalStack, **env: str) -> ManagedProcess:
    """The lifecycle worker as its own process, as deployed (its memory and its collector's pauses its
    own, not shared with the benchmark's), with the stack's limits; `env`: more settings."""
    s = stack.settings
    limits = {
        "QT_HOME": str(s.qt_home),
        "APPLY_ALLOWLIST": "*",
        "GOV_MAX_OPEN_POSITIONS": str(s.gov_max_open_positions),
        "GOV_MAX_TOTAL_NOTIONAL_USDT": str(s.gov_max_total_notional_usdt),
        "GOV_MAX_NOTIONAL_PER_TRADE_USDT": str(s.gov_max_notional_per_trade_usdt),
        "GOV_MAX_EXEC_PER_HOUR": str(s.gov_max_exec_per_hour),
        "GOV_MAX_EXEC_PER_5MIN": str(s.gov_max_exec_per_5min),
        "GOV_SYMBOL_COOLDOWN_SECONDS": str(s.gov_symbol_cooldown_seconds),
        "LIFECYCLE_CACHED_WORKFLOWS": str(s.lifecycle_cached_workflows),
    }
    return start_service(stack, "lifecycle", "worker", "lifecycle", env={**limits, **env})


async def until_served(stack: LocalStack, timeout: float = 120.0) -> None:
    """Until a lifecycle worker answers the portfolio's query (it is up and polling)."""
    deadline = time.monotonic() + timeout
    portfolio = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
    while True:
        try:
            await portfolio.query("state", rpc_timeout=timedelta(seconds=5))
            return
        except (RPCError, WorkflowQueryFailedError) as err:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the lifecycle worker did not answer: {err}") from err
            await asyncio.sleep(0.5)


GC_PAUSE = re.compile(r"gc paused .*? (\d+) ms")


def gc_pauses(log_path: Path, offset: int) -> tuple[list[int], int]:
    """The worker's logged collector pauses (ms, workers/gc_pauses.py) after byte `offset` of its log,
    and the log's end (the next offset)."""
    with open(log_path, "rb") as fh:
        fh.seek(offset)
        text = fh.read().decode(errors="replace")
    return [int(m.group(1)) for m in GC_PAUSE.finditer(text)], offset + len(text.encode())


def run_in_temp_dir(
    name: str, run: Callable[[Path], Coroutine[Any, Any, dict[str, Any]]], log: Callable[[str], None]
) -> dict[str, Any] | None:
    """`run(tmp)` in a fresh temporary folder (`qt-bench-NAME-...`, removed afterwards); on failure the
    error and the last lines of every log the run left there go to `log`, and None comes back. A
    SIGTERM (a `timeout`) interrupts it like Ctrl-C, so every process it started is still stopped."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix=f"qt-bench-{name}-") as tmp:
        try:
            return asyncio.run(run(Path(tmp)))
        except Exception as exc:
            log(f"failed: {type(exc).__name__}: {exc}")
            for log_file in sorted(Path(tmp).rglob("*.log")):
                tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-10:])
                if tail:
                    log(f"{log_file.relative_to(tmp)} tail:\n{tail}")
            return None
