"""Throw-away servers for tests and benchmarks: a Temporal dev server (in memory, with the position
search attributes), a Redis without persistence and a paper exchange with manual prices, on free
loopback ports, stopped by PID."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from workers.processes import ManagedProcess, free_port, http_ok, port_open
from workers.stack import dev_server_argv, temporal_binary

REPO = Path(__file__).resolve().parents[1]


def start_temporal(tmp: Path, *extra: str, port: int | None = None) -> tuple[ManagedProcess, str]:
    """A dev server on `port` (a free one by default); pass `--db-filename` in `extra` to keep its state
    in a SQLite file across a restart."""
    port = port or free_port()
    proc = ManagedProcess(
        name="temporal",
        argv=dev_server_argv("127.0.0.1", port, "--headless", "--log-level", "error", *extra),
        log_path=tmp / "temporal.log",
    )
    proc.start()
    address = f"127.0.0.1:{port}"
    # The port opens before the frontend serves: a client connecting in between is refused with
    # "Frontend is not healthy yet" (a CI run failed so). Ready means the health check says SERVING.
    proc.wait_ready(lambda: port_open("127.0.0.1", port) and temporal_serving(address), 30, f"on port {port}")
    return proc, address


def temporal_serving(address: str) -> bool:
    """The frontend's gRPC health check says SERVING (`temporal operator cluster health`, ~60 ms; it
    works where an event loop already runs, unlike a client's connect from synchronous code)."""
    try:
        done = subprocess.run(
            [temporal_binary(), "operator", "cluster", "health", "--address", address],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0 and "SERVING" in done.stdout.split()  # not NOT_SERVING


def start_redis(tmp: Path) -> tuple[ManagedProcess, int]:
    port = free_port()
    return start_redis_on(tmp, port), port


def start_redis_on(tmp: Path, port: int) -> ManagedProcess:
    proc = ManagedProcess(
        name="redis",
        argv=[
            shutil.which("redis-server") or "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        log_path=tmp / "redis.log",
    )
    proc.start()
    proc.wait_ready(lambda: port_open("127.0.0.1", port), 10, f"on port {port}")
    return proc


@dataclass
class PaperExchange:
    """A running paper exchange process and the paper account's key pair."""

    process: ManagedProcess
    port: int
    api_key: str
    api_secret: str
    state_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def admin(self, method: str, path: str, json: Any = None) -> Any:
        """Call an `/admin/...` endpoint (prices, faults, clock), authenticated with the paper key."""
        resp = httpx.request(
            method,
            f"{self.base_url}/admin/{path.lstrip('/')}",
            json=json,
            headers={"X-MBX-APIKEY": self.api_key},
            timeout=10,
        )
        resp.raise_for_status()
        return resp.json() if resp.content else None

    def set_price(self, symbol: str, price: str) -> dict[str, Any]:
        """The answer's `eventTime` is the venue time of the trade tick published (null: no move)."""
        return self.admin("POST", "price", {"symbol": symbol, "price": price})

    def transfer(self, amount: str) -> dict[str, str]:
        """A deposit (positive) or withdrawal (negative) of USDT on the paper account."""
        return self.admin("POST", "transfer", {"amount": amount})

    def set_faults(self, **faults: Any) -> None:
        self.admin("POST", "faults", faults)

    def clear_faults(self) -> None:
        self.admin("DELETE", "faults")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the venue's Prometheus samples called `name` whose labels include `labels`."""
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"{self.base_url}/metrics", timeout=10).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )


def start_paper_exchange(
    tmp: Path,
    *extra: str,
    state_path: Path | None = None,
    port: int | None = None,
    api_key: str | None = None,
    api_secret: str | None = None,
) -> PaperExchange:
    port = port or free_port()
    api_key = api_key or secrets.token_hex(32)
    api_secret = api_secret or secrets.token_hex(32)
    state_path = state_path or tmp / "paper.sqlite"
    env = {**os.environ, "BINANCE_API_KEY": api_key, "BINANCE_API_SECRET": api_secret}
    proc = ManagedProcess(
        name="paper-exchange",
        argv=[
            sys.executable,
            "-m",
            "exchange.paper",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--state",
            str(state_path),
            "--prices",
            "manual",
            *extra,
        ],
        log_path=tmp / f"paper-{port}.log",
        env=env,
        cwd=REPO,
    )
    proc.start()
    proc.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/fapi/v1/time"), 30, "GET /fapi/v1/time")
    return PaperExchange(proc, port, api_key, api_secret, state_path)
