"""One view of the system, rebuilt once per interval while anybody watches, shared by every watcher.

The build queries Temporal (the portfolio and each position) and Redis; doing that once per browser tab
would multiply the load on the workers by the number of tabs, and doing it with nobody watching would
load them for nothing. So the hub builds only while a stream is subscribed, and a plain request gets
the latest build while it is fresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

log = logging.getLogger("qtrader.dashboard")

Source = Callable[[], Awaitable[dict[str, Any]]]


def to_json(data: dict[str, Any]) -> str:
    """Compact JSON; anything not JSON-native (Decimal, datetime) as its text. NaN has no JSON form
    (the browser's JSON.parse refuses it), so the source must give None instead; this checks it."""
    return json.dumps(data, default=str, separators=(",", ":"), allow_nan=False)


class SnapshotHub:
    def __init__(
        self,
        source: Source,
        interval: float = 1.0,
        on_build: Callable[[float, bool], None] | None = None,
        on_subscribers: Callable[[int], None] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval}")
        self._source = source
        self.interval = interval
        self._on_build = on_build or (lambda seconds, ok: None)
        self._on_subscribers = on_subscribers or (lambda n: None)
        self._cond = asyncio.Condition()
        self._build_lock = asyncio.Lock()
        self._seq = 0
        self._data = ""
        self._built_at = -1e18
        self._subscribers = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def subscribers(self) -> int:
        return self._subscribers

    async def _build(self) -> str:
        async with self._build_lock:
            started = time.monotonic()
            ok = True
            try:
                data = to_json(await self._source())
            except Exception as err:  # the page must say what is wrong, not go silent
                log.exception("dashboard view not built")
                ok = False
                data = to_json({"time_ms": int(time.time() * 1000), "error": str(err) or type(err).__name__})
            self._on_build(time.monotonic() - started, ok)
            async with self._cond:
                self._seq += 1
                self._data = data
                self._built_at = time.monotonic()
                self._cond.notify_all()
            return data

    async def refresh(self) -> str:
        """Build a view now (after a control changed the system) and send it to every watcher."""
        return await self._build()

    async def latest(self) -> str:
        """The newest view, rebuilt first when it is older than one interval."""
        if time.monotonic() - self._built_at < self.interval and self._data:
            return self._data
        return await self._build()

    async def _loop(self) -> None:
        while self._subscribers > 0 and not self._closed:
            await self._build()
            await asyncio.sleep(self.interval)

    async def subscribe(self) -> AsyncIterator[str]:
        """Every view built from now on (the newest one first) until the hub closes."""
        if self._closed:
            return
        self._subscribers += 1
        self._on_subscribers(self._subscribers)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="dashboard-hub")
        # A view older than one interval (built for a plain request long ago) is skipped: the loop's
        # next build follows at once.
        seen = self._seq if time.monotonic() - self._built_at >= self.interval else self._seq - 1
        try:
            while True:
                async with self._cond:
                    while not self._closed and not (self._seq > seen and self._data):
                        await self._cond.wait()
                    if self._closed:
                        return
                    seen, data = self._seq, self._data
                yield data
        finally:
            self._subscribers -= 1
            self._on_subscribers(self._subscribers)

    async def close(self) -> None:
        """End every subscription (their streams finish) and stop building."""
        self._closed = True
        async with self._cond:
            self._cond.notify_all()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
