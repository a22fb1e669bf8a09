"""Where alerts come from: the streams the system writes, read through one Redis consumer group, and
the notifier's own observations (workers, the Temporal server, the daily summary), which it writes to a
stream of its own first so that they are delivered, acknowledged and resumed exactly like the others.

| source | stream | written by |
|---|---|---|
| emergency | `quantum:stream:portfolio.emergency` | `project_portfolio` (activities/projections.py) |
| ban | `quantum:stream:venue.ban` | the shared weight budget (exchange/shared_budget.py) on a 418 |
| liquidation | `quantum:stream:exchange.normalized` | the user-data stream (feeds/user_stream.py) |
| drift | `quantum:stream:reconcile.events` | `record_reconcile` (activities/reconcile.py) |
| observed | `quantum:stream:alerts.observed` | `TaskQueueWatch`, `DailySummary` below |

The group is created at the end of each stream (`$`) the first time, so a first start does not replay
history; from then on the group remembers what was read, and an entry read but not acknowledged (the
notifier stopped mid-delivery) is read again at the next start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from activities.projections import EMERGENCY_STREAM, PORTFOLIO_KEY
from activities.reconcile import RECONCILE_STREAM
from alerts.conditions import (
    Health,
    Poller,
    consequence,
    latest_due_day,
    queue_health,
    step,
    summary_offset_ms,
)
from alerts.events import Kind, utc
from alerts.metrics import AlertMetrics
from alerts.summary import daily_summary_text
from exchange.shared_budget import BAN_STREAM
from feeds.user_stream import NORMALIZED_STREAM
from journal.store import open_journal

__all__ = [
    "CONDITIONS_KEY",
    "GROUP",
    "OBSERVED_STREAM",
    "STREAMS",
    "SUMMARY_DAY_KEY",
    "DailySummary",
    "Entry",
    "StreamReader",
    "TaskQueueWatch",
    "record_observation",
]

log = logging.getLogger("alerts.sources")

OBSERVED_STREAM = "quantum:stream:alerts.observed"
CONDITIONS_KEY = "quantum:alerts:conditions"  # condition → the Health last told
SUMMARY_DAY_KEY = "quantum:alerts:summary:last_day"  # the latest UTC day summarized (days since epoch)
GROUP = "alerts"
CONSUMER = "notifier"
OBSERVED_MAXLEN = 10_000

STREAMS: dict[str, str] = {
    "emergency": EMERGENCY_STREAM,
    "ban": BAN_STREAM,
    "liquidation": NORMALIZED_STREAM,
    "drift": RECONCILE_STREAM,
    "observed": OBSERVED_STREAM,
}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class Entry:
    source: str  # a key of STREAMS
    stream: str
    id: str
    fields: dict[str, str]

    @property
    def ref(self) -> str:
        return f"{self.stream}:{self.id}"


class StreamReader:
    def __init__(self, redis: aioredis.Redis, streams: Mapping[str, str] = STREAMS) -> None:
        self.redis = redis
        self.streams = dict(streams)
        self._source = {stream: source for source, stream in self.streams.items()}

    async def ensure_groups(self, start: str = "$") -> None:
        for stream in self.streams.values():
            try:
                await self.redis.xgroup_create(stream, GROUP, id=start, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read(self, *, pending: bool, count: int = 100, block_ms: int | None = None) -> list[Entry]:
        """`pending`: the entries this consumer read before and never acknowledged (a restart resumes
        them); else new ones, waiting up to `block_ms`."""
        ids = {stream: "0" if pending else ">" for stream in self.streams.values()}
        while True:
            try:
                got = await self.redis.xreadgroup(
                    GROUP, CONSUMER, ids, count=count, block=None if pending else block_ms
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # The stream was deleted (and the group with it): what is there now is all new.
                await self.ensure_groups(start="0")
                return []
            out, trimmed = [], 0
            for stream, entries in got or []:
                name = _text(stream)
                for entry_id, fields in entries:
                    if not fields:  # pending, but trimmed away from the stream since: nothing to tell
                        await self.ack(Entry(self._source[name], name, _text(entry_id), {}))
                        trimmed += 1
                        continue
                    out.append(
                        Entry(
                            self._source[name],
                            name,
                            _text(entry_id),
                            {_text(k): _text(v) for k, v in fields.items()},
                        )
                    )
            if out or not trimmed:  # (only trimmed ones: read the pending list on)
                return out

    async def ack(self, entry: Entry) -> None:
        await self.redis.xack(entry.stream, GROUP, entry.id)


# KEYS: conditions hash (or the summary day key), observed stream ; ARGV: field, expected ("" = none),
# new, maxlen, then the entry's field/value pairs ("" pairs: record without an entry). Records the new
# state and the entry in one step, and only if the state is still what the caller saw: two notifiers,
# or one retrying, never tell a change twice.
_RECORD = """
local plain = ARGV[1] == ''
local cur
if plain then cur = redis.call('GET', KEYS[1]) else cur = redis.call('HGET', KEYS[1], ARGV[1]) end
if (cur or '') ~= ARGV[2] then return 0 end
if plain then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
if #ARGV > 4 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, 5))
end
return 1
"""


async def record_observation(
    redis: aioredis.Redis,
    key: str,
    field: str,
    expected: str | None,
    new: str,
    entry: Mapping[str, str] | None,
) -> bool:
    """Set `key` (a hash's `field`, or a plain key when `field` is "") from `expected` to `new` and, with
    it, add `entry` to the observed stream. False when the value had changed meanwhile."""
    args = [field, expected or "", new, str(OBSERVED_MAXLEN)]
    for k, v in (entry or {}).items():
        args += [k, v]
    done = await redis.eval(_RECORD, 2, key, OBSERVED_STREAM, *args)
    return bool(done)


# --- a worker down --------------------------------------------------------------------------------
TEMPORAL_CONDITION = "temporal"


class TaskQueueWatch:
    """Every check: each watched task queue's pollers (workflow and activity) from the Temporal server,
    and whether the server answers at all; a change of state is recorded with its alert."""

    def __init__(
        self,
        redis: aioredis.Redis,
        metrics: AlertMetrics,
        *,
        address: str,
        namespace: str,
        task_queues: list[str],
        stale_s: float,
        clock: Callable[[], float] = time.time,
        connect: Callable[[], Any] | None = None,
    ) -> None:
        self.redis = redis
        self.metrics = metrics
        self.address = address
        self.namespace = namespace
        self.task_queues = task_queues
        self.stale_s = stale_s
        self.clock = clock
        self._connect = connect or (lambda: Client.connect(address, namespace=namespace))
        self._client: Client | None = None
        self._failing_since: float | None = None
        self._absent_since: dict[str, float] = {}

    async def _pollers(self, client: Client, queue: str) -> list[Poller]:
        out = []
        for kind in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
            resp = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=self.namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind
                ),
                timeout=timedelta(seconds=10),
            )
            out += [Poller(p.identity, p.last_access_time.ToMilliseconds()) for p in resp.pollers]
        return out

    async def check(self) -> None:
        now = self.clock()
        stored = {
            _text(k): Health(_text(v))
            for k, v in (await self.redis.hgetall(CONDITIONS_KEY)).items()
            if _text(v) in Health.__members__.values()
        }
        try:
            if self._client is None:
                self._client = await asyncio.wait_for(self._connect(), 10)
            seen = {q: await self._pollers(self._client, q) for q in self.task_queues}
        except Exception as exc:
            self.metrics.source_errors.labels("temporal").inc()
            if self._failing_since is None:
                self._failing_since = now
                log.warning("temporal unreachable at %s: %r", self.address, exc)
            if now - self._failing_since >= self.stale_s:
                await self._tell(
                    TEMPORAL_CONDITION,
                    stored.get(TEMPORAL_CONDITION),
                    Health.DOWN,
                    f"Temporal server {self.address}",
                    [
                        f"Unreachable since {utc(int(self._failing_since * 1000))}.",
                        "No workflow makes progress: no entry, no exit decision (the venue's hard stops "
                        "still stand).",
                    ],
                    now,
                )
            return
        self._failing_since = None
        await self._tell(
            TEMPORAL_CONDITION,
            stored.get(TEMPORAL_CONDITION),
            Health.UP,
            f"Temporal server {self.address}",
            [],
            now,
        )
        now_ms = int(now * 1000)
        for queue, pollers in seen.items():
            observed = queue_health(pollers, now_ms, self.stale_s)
            if observed is Health.ABSENT:
                self._absent_since.setdefault(queue, now)
            else:
                self._absent_since.pop(queue, None)
            self.metrics.queue_up.labels(queue).set(1 if observed is Health.UP else 0)
            last = max(pollers, key=lambda p: p.last_access_ms, default=None)
            details = [consequence(queue)]
            if last is not None:
                silent_s = (now_ms - last.last_access_ms) / 1000
                details.insert(
                    0,
                    f"No worker has polled task queue {queue} for {silent_s:.0f} s "
                    f"(last: {last.identity} at {utc(last.last_access_ms)}).",
                )
            else:
                details.insert(0, f"No worker polls task queue {queue}.")
            up_details = [f"Polled by {', '.join(sorted({p.identity for p in pollers}))}."] if pollers else []
            await self._tell(
                f"queue:{queue}",
                stored.get(f"queue:{queue}"),
                observed,
                f"Workers of task queue {queue}",
                details,
                now,
                absent_for_s=now - self._absent_since.get(queue, now),
                up_details=up_details,
            )

    async def _tell(
        self,
        condition: str,
        stored: Health | None,
        observed: Health,
        what: str,
        details: list[str],
        now: float,
        *,
        absent_for_s: float = 0.0,
        up_details: list[str] | None = None,
    ) -> None:
        new, kind = step(stored, observed, absent_for_s=absent_for_s, stale_s=self.stale_s)
        if new is stored:
            return
        entry = None
        if kind is not None:
            lines = details if kind is Kind.WORKER_DOWN else (up_details or [])
            entry = {
                "kind": kind.value,
                "condition": condition,
                "what": what,
                "details": "\n".join(lines),
                "at_ms": str(int(now * 1000)),
            }
            log.warning("%s: %s", what, "down" if kind is Kind.WORKER_DOWN else "back")
        await record_observation(
            self.redis, CONDITIONS_KEY, condition, None if stored is None else stored.value, new.value, entry
        )


# --- the daily summary ----------------------------------------------------------------------------
class DailySummary:
    """Once a day, after the configured UTC time: the previous day's summary. The first start only
    notes which day is the latest due (no backlog is sent); a notifier that was down across the
    summary time sends it when it is back."""

    def __init__(
        self,
        redis: aioredis.Redis,
        metrics: AlertMetrics,
        *,
        at: str,
        journal_url: Any,
        home: Any,
        run_id: str,
        capital: Decimal,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.metrics = metrics
        self.offset_ms = summary_offset_ms(at)
        self.journal_url = journal_url
        self.home = home
        self.run_id = run_id
        self.capital = capital
        self.clock = clock

    def _trades(self) -> list[Any]:
        return open_journal(self.journal_url, self.home).trades(run_id=self.run_id)

    async def check(self) -> None:
        now_ms = int(self.clock() * 1000)
        due = latest_due_day(now_ms, self.offset_ms)
        raw = await self.redis.get(SUMMARY_DAY_KEY)
        last = None if raw is None else _text(raw)
        if last is None:
            await record_observation(self.redis, SUMMARY_DAY_KEY, "", None, str(due), None)
            return
        if int(last) >= due:
            return
        error = None
        try:
            records = await asyncio.to_thread(self._trades)
        except Exception as exc:  # a journal that cannot be read costs the figures, never the summary
            self.metrics.source_errors.labels("journal").inc()
            records, error = [], f"{type(exc).__name__}: {exc}"
        portfolio = {_text(k): _text(v) for k, v in (await self.redis.hgetall(PORTFOLIO_KEY)).items()}
        text = daily_summary_text(due, records, self.capital, portfolio, self.run_id, error)
        await record_observation(
            self.redis,
            SUMMARY_DAY_KEY,
            "",
            last,
            str(due),
            {"kind": Kind.DAILY_SUMMARY.value, "day": str(due), "text": text, "at_ms": str(now_ms)},
        )
