"""A local receiver for alerts (a tiny HTTP server on a free loopback port that records every request,
and can fail the first N), a real redis-server, and a notifier run in this process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from alerts.service import Notifier
from alerts.sources import GROUP, OBSERVED_STREAM
from trading.config import Settings, load_settings
from workers.devservers import start_redis
from workers.processes import ManagedProcess

TOKEN = "7012345678:AAHk3xQ9vLr2mZpT8bYwN5cJfGdE1sUoIaQ"  # shaped like a real bot token
CHAT_ID = "-1001234567890"
API_KEY = "k" * 8 + "A1b2C3d4" * 7  # 64 characters, like a Binance key
API_SECRET = "s" * 8 + "Z9y8X7w6" * 7


@dataclass
class Request:
    path: str
    body: Any
    raw: str
    headers: dict[str, str]
    status: int  # what the receiver answered


@dataclass
class Receiver:
    """Answers `fail_status` to the first `fail_first` requests (with `retry_after` as Retry-After when
    set), 200 after that; `fail_first = -1` fails every request."""

    fail_first: int = 0
    fail_status: int = 500
    retry_after: str | None = None
    fail_body: bytes = b'{"ok": false}'
    requests: list[Request] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                with receiver._lock:
                    failing = receiver.fail_first < 0 or len(receiver.requests) < receiver.fail_first
                    status = receiver.fail_status if failing else 200
                    try:
                        body = json.loads(raw)
                    except json.JSONDecodeError:
                        body = None
                    receiver.requests.append(Request(self.path, body, raw, dict(self.headers), status))
                self.send_response(status)
                if failing and receiver.retry_after is not None:
                    self.send_header("Retry-After", receiver.retry_after)
                answer = b'{"ok": true}' if status == 200 else receiver.fail_body
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def set(self, **kw: Any) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self, k, v)
            if "fail_first" in kw and kw["fail_first"] >= 0:
                self.fail_first = len(self.requests) + kw["fail_first"]  # counted from now

    def delivered(self, path_prefix: str = "") -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.status == 200 and r.path.startswith(path_prefix)]

    def texts(self, path_prefix: str = "") -> list[str]:
        return [r.body.get("text", "") for r in self.delivered(path_prefix)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    try:
        yield r
    finally:
        r.stop()


@dataclass
class RedisServer:
    proc: ManagedProcess
    port: int
    client: aioredis.Redis


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    proc, port = start_redis(tmp_path)
    client = aioredis.Redis(port=port, socket_timeout=5)
    try:
        yield RedisServer(proc, port, client)
    finally:
        await client.aclose()
        proc.stop()


def alert_settings(tmp_path: Path, redis_port: int, receiver: Receiver, **overrides: object) -> Settings:
    """One webhook on the receiver, fast retries, no worker watch and no daily summary unless asked."""
    base: dict[str, object] = dict(
        redis_port=redis_port,
        qt_home=tmp_path / "qt",
        alert_webhook_urls=f"{receiver.url}/hooks/slack-like",
        alert_retry_base_seconds=0.05,
        alert_retry_max_seconds=0.2,
        alert_max_attempts=4,
        alert_task_queues="",
        alert_daily_summary_at="off",
        alert_check_interval_seconds=0.2,
    )
    base.update(overrides)
    return load_settings(**base)


class Clock:
    """A clock a test moves by hand (starts at the wall clock)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def running(notifier: Notifier) -> AsyncIterator[Notifier]:
    """The notifier's loop in this process until the block ends (its SIGTERM path: `stop`)."""
    stop = asyncio.Event()
    task = asyncio.create_task(notifier.run(stop))

    async def grouped() -> bool:  # events written before the group exists are not for it (`$`)
        if task.done():
            task.result()  # a start-up failure is the test's failure
        try:
            groups = await notifier.redis.xinfo_groups(OBSERVED_STREAM)
        except ResponseError:
            return False
        return any(g["name"] == GROUP.encode() for g in groups)

    try:
        await wait_for(grouped, what="the notifier's consumer group")
        yield notifier
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll until `check()` is truthy (sync or async); generous timeouts, no wall-clock assertions."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
