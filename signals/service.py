"""What the long-running signal services (price watcher, user-data stream) share: connecting to
Temporal with backoff until told to stop, and one-JSON-object-per-line logging."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

log = logging.getLogger(__name__)


async def connect_temporal(settings: Any, stop: asyncio.Event) -> Client | None:
    """Retry with backoff (0.5 s doubling to 10 s); None when `stop` is set first."""
    backoff = 0.5
    while not stop.is_set():
        try:
            return await Client.connect(
                settings.temporal_address,
                namespace=settings.temporal_namespace,
                data_converter=pydantic_data_converter,
            )
        except Exception as exc:
            log.warning("temporal connect failed error=%r; retry in %.1fs", exc, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 10.0)
    return None


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
