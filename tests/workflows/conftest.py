"""A whole local stack per test: Temporal dev server, Redis and the paper exchange as real processes on
free loopback ports, plus the two workers (in this process, or as child processes to kill)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from temporalio.client import Client

from exchange.client import BinanceFuturesClient
from tests.conftest import REPO, PaperExchange, start_paper_exchange
from trading.config import Settings, load_settings
from workers.devservers import start_redis, start_temporal
from workers.exchange_worker import exchange_worker
from workers.lifecycle import lifecycle_worker
from workers.processes import ManagedProcess, stop_all
from workers.temporal_client import connect


@dataclass
class Stack:
    tmp: Path
    temporal: ManagedProcess
    redis_proc: ManagedProcess
    exchange: PaperExchange
    settings: Settings
    client: Client
    redis: aioredis.Redis
    children: list[ManagedProcess] = field(default_factory=list)
    temporal_extra: tuple[str, ...] = ()  # the dev server's extra arguments, for a restart

    def env(self) -> dict[str, str]:
        """Environment for a worker child process."""
        policy = self.settings.risk_layer_policy
        risk = {"RISK_LAYER_POLICY": policy.model_dump_json()} if policy is not None else {}
        return {
            **os.environ,
            "TEMPORAL_ADDRESS": self.settings.temporal_address,
            "REDIS_PORT": str(self.settings.redis_port),
            "PAPER_REST_URL": self.exchange.base_url,
            "QT_HOME": str(self.settings.qt_home),  # the journal and other state: in the test folder
            "BINANCE_API_KEY": self.exchange.api_key,
            "BINANCE_API_SECRET": self.exchange.api_secret,
            "APPLY_ALLOWLIST": ",".join(self.settings.apply_allowlist),
            "GOV_MAX_OPEN_POSITIONS": str(self.settings.gov_max_open_positions),
            "GOV_MAX_EXEC_PER_HOUR": str(self.settings.gov_max_exec_per_hour),
            "GOV_MAX_EXEC_PER_5MIN": str(self.settings.gov_max_exec_per_5min),
            "GOV_SYMBOL_COOLDOWN_SECONDS": str(self.settings.gov_symbol_cooldown_seconds),
            "GOV_MAX_NOTIONAL_PER_TRADE_USDT": str(self.settings.gov_max_notional_per_trade_usdt),
            "GOV_MAX_TOTAL_NOTIONAL_USDT": str(self.settings.gov_max_total_notional_usdt),
            "PORTFOLIO_HOLDER_CHECK_SECONDS": str(self.settings.portfolio_holder_check_seconds),
            **risk,
        }

    def start_worker_process(self, kind: str, *extra: str) -> ManagedProcess:
        """`kind`: lifecycle or exchange (a worker), watcher (the price watcher) or user-stream."""
        command = [kind] if kind in ("watcher", "user-stream") else ["worker", kind]
        proc = ManagedProcess(
            name=f"{kind}-worker",
            argv=[sys.executable, "-m", "workers.cli", *command, *extra],
            log_path=self.tmp / f"{kind}-worker-{len(self.children)}.log",
            env=self.env(),
            cwd=REPO,
        )
        proc.start()
        self.children.append(proc)
        return proc

    @contextlib.asynccontextmanager
    async def workers(
        self, *, holder_check_seconds: float | None = None, lifecycle: bool = True, exchange: bool = True
    ) -> AsyncIterator[None]:
        """Both workers in this process (real gRPC to the dev server, real HTTP to the exchange)."""
        async with contextlib.AsyncExitStack() as stack:
            if exchange:
                venue = await stack.enter_async_context(BinanceFuturesClient.from_settings(self.settings))
                await stack.enter_async_context(exchange_worker(self.client, venue))
            if lifecycle:
                settings = self.settings
                if holder_check_seconds is not None:
                    settings = settings.model_copy(
                        update={"portfolio_holder_check_seconds": holder_check_seconds}
                    )
                market = await stack.enter_async_context(
                    BinanceFuturesClient(self.exchange.base_url, None, None)
                )
                await stack.enter_async_context(lifecycle_worker(self.client, settings, self.redis, market))
            yield


def stack_settings(temporal: str, redis_port: int, exchange: PaperExchange, **overrides: object) -> Settings:
    base = dict(
        temporal_address=temporal,
        redis_port=redis_port,
        paper_rest_url=exchange.base_url,
        binance_api_key=exchange.api_key,
        binance_api_secret=exchange.api_secret,
        apply_allowlist=["*"],
        gov_max_exec_per_hour=1000,
        gov_max_exec_per_5min=1000,
        gov_symbol_cooldown_seconds=0,
    )
    base.update(overrides)
    return load_settings(**base)


@pytest.fixture
async def stack(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    overrides = dict(getattr(request, "param", {}) or {})
    exchange_args = overrides.pop("exchange_args", [])
    # `temporal_db`: keep the dev server's state in a SQLite file, so a test can restart it.
    temporal_extra: tuple[str, ...] = ()
    if overrides.pop("temporal_db", False):
        temporal_extra = ("--db-filename", str(tmp_path / "temporal.sqlite"))
    # The three servers start side by side (one after another they took 1.2 s of every test's set-up).
    with ThreadPoolExecutor(3) as pool:
        starting = [
            pool.submit(start_temporal, tmp_path, *temporal_extra),
            pool.submit(start_redis, tmp_path),
            pool.submit(start_paper_exchange, tmp_path, *exchange_args),
        ]
        wait(starting)
    up = [f.result() for f in starting if f.exception() is None]
    started = [r.process if isinstance(r, PaperExchange) else r[0] for r in up]
    temporal_up = started[:1] if starting[0].exception() is None else []
    try:  # whatever was started is stopped, even when a later step of the set-up fails
        (temporal, address), (redis_proc, redis_port), exchange = (f.result() for f in starting)
        overrides.setdefault("qt_home", tmp_path / "qt")
        settings = stack_settings(address, redis_port, exchange, **overrides)
        client = await connect(settings)
    except BaseException:
        stop_all(started, kill=temporal_up)
        raise
    redis = aioredis.Redis(port=redis_port)
    s = Stack(
        tmp_path, temporal, redis_proc, exchange, settings, client, redis, temporal_extra=temporal_extra
    )
    try:
        yield s
    finally:
        stop_all(s.children)  # the workers first, while the servers they talk to still answer
        await redis.aclose()
        # The servers together, the dev server (in memory, or a file nothing reads afterwards) killed at
        # once: one after another, with its graceful stop, they took 1.5 s of every test's tear-down.
        stop_all([s.exchange.process, s.redis_proc, s.temporal], kill=[s.temporal])
