"""Shared fixtures: real processes on free loopback ports, stopped by PID when the test ends."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from workers.processes import ManagedProcess, free_port, http_ok

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


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

    def set_price(self, symbol: str, price: str) -> None:
        self.admin("POST", "price", {"symbol": symbol, "price": price})

    def set_faults(self, **faults: Any) -> None:
        self.admin("POST", "faults", faults)

    def clear_faults(self) -> None:
        self.admin("DELETE", "faults")


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


@pytest.fixture
def paper_exchange(tmp_path: Path) -> Iterator[PaperExchange]:
    """A fresh paper exchange with manual prices (fixed until a test moves them)."""
    ex = start_paper_exchange(tmp_path)
    try:
        yield ex
    finally:
        ex.process.stop()
