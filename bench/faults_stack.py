"""The fault explorer's stack: Temporal (on a SQLite file), Redis and the paper exchange from
workers/devservers.py and bench/stack.py, and the four services (lifecycle worker, exchange worker,
user-data stream, price watcher) each as its own child process (bench.stack.start_service), so that a
schedule can SIGKILL and restart any of them. Every process started is stopped by its PID at the end.

Also here: which faults the paper exchange accepts (POST /admin/faults answers 400 naming an unknown
key), and how a drawn venue fault becomes the fault set posted to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from bench.faults_schedule import ENDPOINTS, Event
from bench.stack import BIG, LocalStack, start_service, start_venue
from trading.config import load_settings
from workers.devservers import start_redis, start_redis_on, start_temporal
from workers.processes import ManagedProcess
from workers.temporal_client import connect

SERVICES: dict[str, tuple[str, ...]] = {
    "lifecycle": ("worker", "lifecycle"),
    "exchange": ("worker", "exchange"),
    "user-stream": ("user-stream",),
    "watcher": ("watcher",),
}
KEYED = frozenset({"exchange", "user-stream"})  # the processes that hold the API keys
# The log line each service writes once it is serving: a restart ends there, not at the spawn.
READY = {
    "lifecycle": "lifecycle worker polling task queue",
    "exchange": "exchange worker polling task queue",
    "user-stream": "ws connected key=",
    "watcher": "levels loaded reason=start",
}
RESERVED_SYMBOLS = 2  # T001, T002: the floor's lifecycles; seeds use the ones after


@dataclass(frozen=True)
class StackConfig:
    limit: int = 3  # GOV_MAX_OPEN_POSITIONS
    reconcile_interval_s: float = 5.0
    holder_check_s: float = 3.0
    client_timeout_s: float = 2.0  # BINANCE_TIMEOUT_S of the services (scaled from 10 s)
    extra_symbols: int = 64

    def service_env(self, qt_home: Path) -> dict[str, str]:
        return {
            "QT_HOME": str(qt_home),
            "APPLY_ALLOWLIST": "*",
            "GOV_MAX_OPEN_POSITIONS": str(self.limit),
            "GOV_MAX_EXEC_PER_HOUR": "100000",
            "GOV_MAX_EXEC_PER_5MIN": "100000",
            "GOV_SYMBOL_COOLDOWN_SECONDS": "0",
            "GOV_MAX_NOTIONAL_PER_TRADE_USDT": "1000",
            "GOV_MAX_TOTAL_NOTIONAL_USDT": "100000",
            "PORTFOLIO_HOLDER_CHECK_SECONDS": str(self.holder_check_s),
            "RECONCILE_INTERVAL_SECONDS": str(self.reconcile_interval_s),
            "BINANCE_TIMEOUT_S": str(self.client_timeout_s),
            "BINANCE_WEIGHT_BUDGET_ID": f"faults-{os.getpid()}",
        }


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read()
    except FileNotFoundError:
        return b""


def _stop(proc: ManagedProcess) -> None:
    """Stop one of our processes, only while it is still ours: one that has exited and been reaped no
    longer owns its PID, which another process may have been given since."""
    if proc.alive():
        with contextlib.suppress(Exception):
            proc.stop()


@contextlib.contextmanager
def _environ(extra: dict[str, str]) -> Iterator[None]:
    """bench.stack.start_service copies os.environ into the child: lend it our settings for the call."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class ExplorerStack:
    local: LocalStack
    cfg: StackConfig
    temporal_port: int
    temporal_db: Path
    redis_port: int
    say: Callable[[str], None]
    services: dict[str, ManagedProcess] = field(default_factory=dict)
    started: list[ManagedProcess] = field(default_factory=list)
    admin_http: httpx.AsyncClient | None = None
    restart_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def tmp(self) -> Path:
        return self.local.tmp

    @property
    def client(self) -> Any:
        return self.local.client

    # ------------------------------------------------------------ services
    def start_service(self, name: str) -> ManagedProcess:
        with _environ(self.cfg.service_env(self.tmp / "qt")):
            proc = start_service(self.local, name, *SERVICES[name], keys=name in KEYED)
        self.services[name] = proc
        self.started.append(proc)
        return proc

    def kill(self, name: str) -> None:
        """SIGKILL one service (its process only) and reap it."""
        proc = self.services[name]
        if proc.alive():
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.popen is not None
            proc.popen.wait(timeout=10)

    def ensure_services(self, skip: frozenset[str] = frozenset()) -> dict[str, int]:
        """Start again any service that is not running (but those in `skip`); returns their names with
        where their log stood (see `wait_ready`)."""
        restarted = {}
        for name, proc in list(self.services.items()):
            if not proc.alive() and name not in skip:
                restarted[name] = _size(proc.log_path)
                self.start_service(name)
        return restarted

    async def wait_ready(self, started: dict[str, int], timeout_s: float = 45.0) -> list[str]:
        """Wait until each service started at that log position has said it is serving, or has died (a
        kill of the schedule can hit a process this very restart started); returns the ones that did
        neither within the time. Waiting on for a dead one held the restart lock 45 s (seed 17)."""
        ends = asyncio.get_running_loop().time() + timeout_s
        waiting = dict(started)
        while waiting and asyncio.get_running_loop().time() < ends:
            for name, offset in list(waiting.items()):
                proc = self.services[name]
                if not proc.alive() or READY[name].encode() in _read_from(proc.log_path, offset):
                    del waiting[name]
            await asyncio.sleep(0.1)
        return sorted(waiting)

    async def restart_services(self, skip: Callable[[], frozenset[str]] = frozenset) -> dict[str, int]:
        """Start whatever is down (one caller at a time: never two of a service) and wait until it serves.
        `skip` is asked once the lock is held: a kill that lands while this call waits for it is kept."""
        async with self.restart_lock:
            started = await asyncio.to_thread(self.ensure_services, skip())
            if late := await self.wait_ready(started):
                self.say(f"not serving 45 s after a restart: {', '.join(late)}")
            return started

    def log_paths(self) -> list[Path]:
        return sorted({p.log_path for p in self.started if p.name in SERVICES})

    # ------------------------------------------------------------ Temporal and Redis
    def stop_temporal(self) -> None:
        """A crash (SIGKILL): its graceful stop waits out the workers' long polls (10 s and more), so a
        restart would be a long outage instead; the SQLite file keeps what was committed."""
        proc = self.local.processes["temporal"]
        if proc.alive():
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.popen is not None
            proc.popen.wait(timeout=10)

    def start_temporal(self) -> None:
        if self.local.processes["temporal"].alive():
            return
        proc, _ = start_temporal(self.tmp, "--db-filename", str(self.temporal_db), port=self.temporal_port)
        self.local.processes["temporal"] = proc
        self.started.append(proc)

    def stop_redis(self) -> None:
        _stop(self.local.processes["redis"])

    def start_redis(self) -> None:
        if self.local.processes["redis"].alive():
            return
        proc = start_redis_on(self.tmp, self.redis_port)
        self.local.processes["redis"] = proc
        self.started.append(proc)

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            _stop(proc)

    # ------------------------------------------------------------ the venue
    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        assert self.admin_http is not None
        resp = await self.admin_http.request(method, f"/admin/{path}", json=body)
        resp.raise_for_status()
        return resp.json() if resp.content else None

    async def set_price(self, symbol: str, price: Decimal) -> None:
        await self.admin("POST", "price", {"symbol": symbol, "price": str(price)})


@contextlib.asynccontextmanager
async def explorer_stack(
    tmp: Path, cfg: StackConfig, say: Callable[[str], None]
) -> AsyncIterator[ExplorerStack]:
    """Start everything; whatever happens, stop exactly the processes started here (by PID)."""
    tmp.mkdir(parents=True, exist_ok=True)
    started: list[ManagedProcess] = []
    stack: ExplorerStack | None = None
    try:
        db = tmp / "temporal.sqlite"
        temporal, address = start_temporal(tmp, "--db-filename", str(db))
        started.append(temporal)
        redis_proc, redis_port = start_redis(tmp)
        started.append(redis_proc)
        venue = start_venue(tmp, cfg.extra_symbols)
        started.append(venue.process)
        settings = load_settings(
            temporal_address=address,
            redis_port=redis_port,
            paper_rest_url=venue.base_url,
            binance_api_key=venue.api_key,
            binance_api_secret=venue.api_secret,
            apply_allowlist=["*"],
            binance_weight_limit_1m=BIG,
            qt_home=tmp / "qt",
        )
        client = await connect(settings)
        redis = aioredis.Redis(port=redis_port)
        processes = {"temporal": temporal, "redis": redis_proc, "paper-exchange": venue.process}
        local = LocalStack(tmp, processes, venue, settings, client, redis)
        stack = ExplorerStack(
            local, cfg, int(address.rsplit(":", 1)[1]), db, redis_port, say, started=started
        )
        stack.admin_http = httpx.AsyncClient(
            base_url=venue.base_url, headers={"X-MBX-APIKEY": venue.api_key}, timeout=5
        )
        for name in SERVICES:
            stack.start_service(name)
        say(
            f"stack up: temporal pid {temporal.pid} {address} (db {db.name}), redis pid {redis_proc.pid} "
            f":{redis_port}, paper exchange pid {venue.process.pid} {venue.base_url}, "
            + ", ".join(f"{n} pid {p.pid}" for n, p in stack.services.items())
        )
        yield stack
    finally:
        if stack is not None:
            if stack.admin_http is not None:
                await stack.admin_http.aclose()
            with contextlib.suppress(Exception):
                await stack.local.redis.aclose()
        alive = [proc for proc in started if proc.alive()]
        for proc in reversed(alive):
            _stop(proc)
        say(f"stopped the {len(alive)} processes of this run still running ({len(started)} started in all)")


# ---------------------------------------------------------------- venue faults
# Keys of the fault set the paper exchange knew when this was written (exchange/paper/faults.py).
BASE_KEYS = frozenset(
    {
        "latency_ms",
        "lost_answer_rate",
        "lost_answer_mode",
        "hang_s",
        "http_429_rate",
        "retry_after_s",
        "http_418_rate",
        "http_5xx_rate",
        "http_5xx_status",
        "http_5xx_msg",
        "count",
        "paths",
        "seed",
    }
)
# Newer keys looked for at start (the venue's snapshot lists what it knows; a POST probe confirms).
NATIVE_CANDIDATES = ("outage", "late_execution", "ban_at", "partial_fills")
SNAPSHOT_STATE = frozenset({"active", "fired", "bans", "late_pending"})  # what is in force, not keys


async def detect_fault_keys(stack: ExplorerStack) -> set[str]:
    """The fault keys the venue accepts: its snapshot's keys, then each candidate probed with a POST
    (400 naming the unknown key: not there), the fault set cleared after."""
    snapshot = await stack.admin("GET", "faults")
    known = {k for k in snapshot if k not in SNAPSHOT_STATE}
    for key in NATIVE_CANDIDATES:
        if key in known:
            continue
        resp = await stack.admin_http.post("/admin/faults", json={key: None})  # type: ignore[union-attr]
        if not (resp.status_code == 400 and "unknown" in resp.text.lower() and key in resp.text):
            known.add(key)
    await stack.admin("DELETE", "faults")
    return known


@dataclass(frozen=True)
class VenueFault:
    """What to post for one drawn venue fault: `config` (None: skipped), the label it is counted as,
    and `disarm` (posted at its end instead of clearing everything: late orders still pending must
    execute) with how long after the end it may still act (`tail_s`)."""

    config: dict[str, Any] | None
    label: str
    disarm: dict[str, Any] | None = None
    tail_s: float = 0.0


def venue_fault(ev: Event, known: set[str], client_timeout_s: float) -> VenueFault:
    """A drawn venue fault as a fault set of this venue. Where the venue lacks the fault drawn, the
    nearest one it has stands in (the label says so), or the fault is skipped (config None)."""
    p = ev.params
    paths = ENDPOINTS.get(str(p.get("endpoint", "all")))
    if ev.kind == "outage":
        if "outage" in known:
            window = {"paths": paths, "mode": p["mode"], "seconds": ev.duration_s}
            return VenueFault({"outage": window}, f"outage:{p['mode']}")
        label = "outage:5xx" if p["mode"] == "5xx" else f"outage:5xx(for {p['mode']})"
        return VenueFault({"http_5xx_rate": 1.0, "http_5xx_status": p["status"], "paths": paths}, label)
    if ev.kind == "ban":
        seconds = float(p["seconds"])
        if "ban_at" in known:
            trigger = {"path": p["path"], "after": p["after"], "seconds": seconds}
            return VenueFault({"ban_at": trigger}, "ban:418")
        retry = max(1, round(seconds))
        return VenueFault({"http_418_rate": 1.0, "retry_after_s": retry, "count": 1}, "ban:418(rate)")
    if ev.kind == "rate_limit":
        return VenueFault({"http_429_rate": p["rate"], "retry_after_s": 1, "paths": paths}, "rate_limit:429")
    if ev.kind == "lost_answers":
        cfg = {"lost_answer_rate": p["rate"], "lost_answer_mode": p["mode"], "hang_s": client_timeout_s + 1.5}
        return VenueFault(cfg, f"lost_answers:{p['mode']}")
    if ev.kind == "late_execution":
        delay = max(float(p["delay_s"]), client_timeout_s + 0.5)
        if "late_execution" in known:
            late = {
                "delay_s": delay,
                "count": p["count"],
                "answer": p["answer"],
                "hang_s": client_timeout_s + 1,
            }
            return VenueFault(
                {"late_execution": late},
                f"late_execution:{p['answer']}",
                disarm={"late_execution": None},
                tail_s=delay,
            )
        # An order held longer than the client waits, then executed: a late execution, roughly.
        return VenueFault(
            {"latency_ms": round(delay * 1000), "paths": ["/fapi/v1/order"]}, "late_execution:latency"
        )
    if ev.kind == "partial_fills":
        if "partial_fills" in known:
            split = {"pieces": p["pieces"], "interval_s": p["interval_s"], "count": p["count"]}
            return VenueFault(
                {"partial_fills": split},
                "partial_fills",
                disarm={"partial_fills": None},
                tail_s=p["pieces"] * p["interval_s"],
            )
        return VenueFault(None, "partial_fills")
    raise ValueError(f"not a venue fault: {ev.kind}")


async def post_faults(stack: ExplorerStack, config: dict[str, Any] | None) -> None:
    await stack.admin("DELETE", "faults")
    if config:
        await stack.admin("POST", "faults", config)


async def settle_late_orders(stack: ExplorerStack, timeout_s: float = 15.0) -> None:
    """Wait (bounded) until no late order is pending: clearing the fault set would drop them."""
    ends = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < ends:
        with contextlib.suppress(httpx.HTTPError):
            if not (await stack.admin("GET", "faults")).get("late_pending"):
                return
        await asyncio.sleep(0.25)


async def clear_faults(stack: ExplorerStack) -> None:
    for _ in range(20):
        try:
            await stack.admin("DELETE", "faults")
            return
        except httpx.HTTPError:
            await asyncio.sleep(0.25)
