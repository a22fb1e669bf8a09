"""The price watcher: venue ticks in, one `price_crossed` signal per crossed position level out.

Contract with the position workflows (see `feeds/watcher_levels.py` for the table itself):
- levels: Redis hash `quantum:exit:levels`, field = position workflow id, value JSON
  `{"workflow_id", "symbol", "above", "below", "version"}`; after every HSET / HDEL the writer
  PUBLISHes the workflow id on `quantum:exit:levels:changed`; the watcher reloads that field.
- trigger: a tick at or past `above` / `below` sends ONE Temporal signal `price_crossed` with
  `{"symbol", "price", "ts_ms", "levels_version", "source": "watcher"}` to that workflow; the same
  (workflow, version) is not signalled again for `resend_after_s` (a safety resend if the workflow has
  not republished its levels by then).
- ticks in: `<sym>@aggTrade` and `<sym>@markPrice@1s` on `<ws_url>/market/stream?streams=…`,
  `<sym>@bookTicker` on `<ws_url>/public/stream?streams=…` (Binance's split of the WS paths; the
  paper exchange accepts the same), symbols added and removed live with SUBSCRIBE / UNSUBSCRIBE as
  levels appear and disappear.
- ticks out: every trade and mark tick goes to the Redis stream `quantum:stream:market.tick`
  (`symbol, price, timestamp, bid, ask, volume`, strings; `timestamp` = venue event time in ms),
  `XADD MAXLEN ~ 100000`, written in pipelined batches by a background task after the signals of
  that tick have been fired, so Redis never sits on the reaction path.

The level test is on the level, not on an edge between two ticks: the first tick per symbol after a
(re)start evaluates every position of that symbol, so a restarted watcher catches up within one tick.
The whole hash is loaded at start, on every Redis reconnect, on every WebSocket reconnect and every
`full_reload_s` as a safety net against a lost pub/sub message.

Run: `python -m feeds.price_watcher --metrics-port 9466` (settings from the environment, like every
process here), or `run_watcher(settings, metrics_port)` from the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import redis.asyncio as aioredis
import websockets
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from redis.exceptions import RedisError
from temporalio.service import RPCError, RPCStatusCode

from feeds.stream_shards import StreamShards
from feeds.watcher_levels import LEVELS_CHANNEL, LEVELS_KEY, Crossing, Levels, LevelsError, LevelsTable
from workers.service import Service, run_feed, run_main, service_parser, wait_until_stopped

try:  # optional speed-up; the stdlib is the fallback
    import orjson

    _loads: Callable[[str | bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - depends on the environment
    _loads = json.loads

__all__ = [
    "LEVELS_CHANNEL",
    "LEVELS_KEY",
    "TICK_STREAM",
    "PriceWatcher",
    "WatcherMetrics",
    "main",
    "run_watcher",
]

log = logging.getLogger("feeds.price_watcher")

TICK_STREAM = "quantum:stream:market.tick"
SIGNAL_NAME = "price_crossed"
# stream suffixes per Binance WS category
MARKET_STREAMS = ("aggTrade", "markPrice@1s")
PUBLIC_STREAMS = ("bookTicker",)
MAX_STREAMS_PER_CONN = 1024
URL_STREAMS = 100  # at most this many in the connect URL; the rest by SUBSCRIBE frames
PARAMS_PER_FRAME = 100
CONTROL_FRAME_GAP_S = 0.15  # Binance: at most 10 incoming messages per second per connection
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)


# ---------------------------------------------------------------------------------------------------
class WatcherMetrics:
    """The watcher's Prometheus metrics, in a registry of their own (several watchers per process in
    tests do not collide)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.ticks = Counter(
            "price_watcher_ticks", "Ticks received from the venue", ["symbol", "kind"], registry=r
        )
        self.signals = Counter("price_watcher_signals", "price_crossed signals delivered", registry=r)
        self.signal_errors = Counter(
            "price_watcher_signal_errors", "price_crossed signals that failed", ["reason"], registry=r
        )
        self.signals_dropped = Counter(
            "price_watcher_signals_dropped", "Crossings not sent: too many signals in flight", registry=r
        )
        self.reconnects = Counter(
            "price_watcher_reconnects", "Reconnects after a lost connection", ["target"], registry=r
        )
        self.malformed = Counter(
            "price_watcher_malformed",
            "Messages or levels entries that could not be used",
            ["what"],
            registry=r,
        )
        self.ticks_written = Counter(
            "price_watcher_ticks_written", "Ticks written to the Redis tick stream", registry=r
        )
        self.ticks_dropped = Counter(
            "price_watcher_ticks_dropped", "Ticks not written to Redis (queue full or Redis down)", registry=r
        )
        self.positions = Gauge("price_watcher_positions_watched", "Positions with levels", registry=r)
        self.symbols = Gauge(
            "price_watcher_symbols_watched", "Symbols with at least one position", registry=r
        )
        self.streams = Gauge(
            "price_watcher_streams_subscribed", "Venue streams subscribed (all connections)", registry=r
        )
        self.signals_in_flight = Gauge(
            "price_watcher_signals_in_flight", "price_crossed signals being sent", registry=r
        )
        self.tick_to_signal = Histogram(
            "price_watcher_tick_to_signal_seconds",
            "From receipt of the crossing tick to completion of the signal RPC",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.venue_to_signal = Histogram(
            "price_watcher_venue_to_signal_seconds",
            "From the venue's event time of the crossing tick to completion of the signal RPC",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )


# ---------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Tick:
    symbol: str
    price: str
    event_ms: int
    volume: str
    kind: str  # "trade" | "mark"


class _StreamConnection:
    """One WebSocket to one Binance category (`market` or `public`): connect with the current
    streams, SUBSCRIBE / UNSUBSCRIBE live as the wanted set changes, reconnect with backoff."""

    def __init__(
        self,
        watcher: PriceWatcher,
        category: str,
        suffixes: Sequence[str],
    ) -> None:
        self.watcher = watcher
        self.category = category
        self.suffixes = tuple(suffixes)
        self.wanted: set[str] = set()
        self.subscribed: set[str] = set()
        self._changed = asyncio.Event()
        self._next_id = 0
        self.connected = asyncio.Event()

    def set_symbols(self, symbols: Iterable[str]) -> None:
        wanted = {f"{s.lower()}@{suffix}" for s in symbols for suffix in self.suffixes}
        if len(wanted) > MAX_STREAMS_PER_CONN:
            log.warning(
                "too many streams for one connection category=%s wanted=%d max=%d; extra symbols are "
                "not watched",
                self.category,
                len(wanted),
                MAX_STREAMS_PER_CONN,
            )
            wanted = set(sorted(wanted)[:MAX_STREAMS_PER_CONN])
        if wanted != self.wanted:
            self.wanted = wanted
            self._changed.set()

    def _url(self, initial: Sequence[str]) -> str:
        base = self.watcher.ws_url.rstrip("/")
        return f"{base}/{self.category}/stream?streams={'/'.join(initial)}"

    async def run(self) -> None:
        backoff = self.watcher.backoff_min_s
        first = True
        while True:
            if not self.wanted:
                self._changed.clear()
                await self._changed.wait()
                continue
            initial = sorted(self.wanted)[:URL_STREAMS]
            url = self._url(initial)
            try:
                async with websockets.connect(
                    url,
                    open_timeout=10,
                    ping_interval=20,
                    ping_timeout=20,
                    close_timeout=2,
                    max_size=2**22,
                    compression=None,
                ) as ws:
                    self.subscribed = set(initial)
                    self._publish_count()
                    log.info(
                        "ws connected category=%s streams=%d url=%s",
                        self.category,
                        len(initial),
                        url if len(url) < 200 else url[:200] + "…",
                    )
                    if not first:
                        self.watcher.metrics.reconnects.labels(f"ws_{self.category}").inc()
                        self.watcher.request_reload("ws reconnect")
                    first = False
                    backoff = self.watcher.backoff_min_s
                    self.connected.set()
                    control = asyncio.create_task(self._control(ws), name=f"ws-control-{self.category}")
                    try:
                        on_message = self.watcher.on_message
                        async for raw in ws:
                            on_message(raw, time.perf_counter())
                    finally:
                        control.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await control
                log.warning("ws closed by the venue category=%s; reconnecting", self.category)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # OSError, InvalidURI/Handshake, ConnectionClosed, TimeoutError
                log.warning("ws error category=%s error=%r; reconnect in %.1fs", self.category, exc, backoff)
            self.connected.clear()
            self.subscribed = set()
            self._publish_count()
            await asyncio.sleep(backoff * (0.8 + 0.4 * random.random()))
            backoff = min(backoff * 2, self.watcher.backoff_max_s)

    async def _control(self, ws: Any) -> None:
        """Bring `subscribed` to `wanted` with paced SUBSCRIBE / UNSUBSCRIBE frames."""
        while True:
            add = sorted(self.wanted - self.subscribed)
            remove = sorted(self.subscribed - self.wanted)
            if not add and not remove:
                self._changed.clear()
                await self._changed.wait()
                continue
            for method, names in (("UNSUBSCRIBE", remove), ("SUBSCRIBE", add)):
                for i in range(0, len(names), PARAMS_PER_FRAME):
                    chunk = names[i : i + PARAMS_PER_FRAME]
                    self._next_id += 1
                    await ws.send(json.dumps({"method": method, "params": chunk, "id": self._next_id}))
                    if method == "SUBSCRIBE":
                        self.subscribed.update(chunk)
                    else:
                        self.subscribed.difference_update(chunk)
                    self._publish_count()
                    log.info("ws %s category=%s streams=%s", method.lower(), self.category, ",".join(chunk))
                    await asyncio.sleep(CONTROL_FRAME_GAP_S)

    def _publish_count(self) -> None:
        self.watcher.update_stream_gauge()


# ---------------------------------------------------------------------------------------------------
class PriceWatcher:
    """Holds the levels table, the venue connections, the tick writer and the signal sender."""

    def __init__(
        self,
        *,
        ws_url: str,
        redis: aioredis.Redis,
        client: Any,  # temporalio.client.Client (anything with get_workflow_handle(id).signal(...))
        resend_after_s: float = 2.0,
        retry_after_s: float = 0.5,
        max_signals_in_flight: int = 64,
        max_signals_pending: int = 10_000,
        tick_queue_size: int = 100_000,
        tick_batch: int = 500,
        stream_maxlen: int = 100_000,
        full_reload_s: float = 30.0,
        signal_timeout_s: float = 5.0,
        metrics: WatcherMetrics | None = None,
        backoff_min_s: float = 0.2,
        backoff_max_s: float = 10.0,
        linger_s: float = 60.0,
    ) -> None:
        self.ws_url = ws_url
        self.redis = redis
        self.client = client
        self.table = LevelsTable(resend_after_s=resend_after_s, retry_after_s=retry_after_s)
        self.metrics = metrics or WatcherMetrics()
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.full_reload_s = full_reload_s
        self.signal_timeout = timedelta(seconds=signal_timeout_s)
        self.stream_maxlen = stream_maxlen
        self.tick_batch = tick_batch
        self.max_signals_pending = max_signals_pending
        self._sem = asyncio.Semaphore(max_signals_in_flight)
        self._pending: set[asyncio.Task[None]] = set()
        self._ticks: asyncio.Queue[Tick] = asyncio.Queue(maxsize=tick_queue_size)
        self._book: dict[str, tuple[str, str]] = {}  # symbol -> (bid, ask)
        self._symbols: frozenset[str] = frozenset()  # subscribed: held by a position, or lingering
        # A symbol whose last position went keeps its streams `linger_s` (symbol -> until, monotonic):
        # the next position on it is watched from its first tick. Unsubscribed at once, a re-entry was
        # blind until its SUBSCRIBE went through, and a crossing then waited for the next 1 s mark
        # price (bench.exits' one-open phase: p99 866 ms).
        self._lingering: dict[str, float] = {}
        self._held: frozenset[str] = frozenset()  # symbols with a position
        self.linger_s = linger_s
        self._reload = asyncio.Event()
        self._reload_reason = ""
        self.loaded = asyncio.Event()  # set once the whole table was loaded at least once
        # Per category its connections, and which symbols each watches (as many as the symbols need).
        self._shards = {
            category: (suffixes, StreamShards(MAX_STREAMS_PER_CONN // len(suffixes)))
            for category, suffixes in (("market", MARKET_STREAMS), ("public", PUBLIC_STREAMS))
        }
        self.conns = [
            _StreamConnection(self, category, suffixes) for category, (suffixes, _) in self._shards.items()
        ]
        self._tasks: list[asyncio.Task[Any]] = []

    # ---- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._levels_loop(), name="levels"),
            asyncio.create_task(self._tick_writer(), name="tick-writer"),
            *(self._run_connection(c) for c in self.conns),
        ]

    def _run_connection(self, conn: _StreamConnection) -> asyncio.Task[None]:
        return asyncio.create_task(conn.run(), name=f"ws-{conn.category}")

    async def run_until(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await wait_until_stopped(stop, self._tasks)
        finally:
            await self.close()

    async def close(self, drain_s: float = 2.0) -> None:
        """Stop reading, let the signals in flight finish and flush queued ticks (bounded wait)."""
        writer = next((t for t in self._tasks if t.get_name() == "tick-writer"), None)
        for t in self._tasks:
            if t is not writer:
                t.cancel()
        for t in self._tasks:
            if t is not writer:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=drain_s)
        if writer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ticks.join(), drain_s)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
        for t in list(self._pending):
            t.cancel()
        self._tasks = []

    # ---- levels ----------------------------------------------------------------------------------
    def request_reload(self, reason: str) -> None:
        self._reload_reason = reason
        self._reload.set()

    async def _levels_loop(self) -> None:
        backoff = self.backoff_min_s
        first = True
        while True:
            # Subscribe confirmations are kept: redis-py reconnects a pub/sub connection by itself and
            # re-subscribes, and that second confirmation is how a silent reconnect is noticed (a
            # change published while it was away would otherwise be missed).
            pubsub = self.redis.pubsub()
            confirmations = 0
            try:
                await pubsub.subscribe(LEVELS_CHANNEL)  # subscribe first, then load: nothing is missed
                await self._reload_all("start" if first else "redis reconnect")
                if not first:
                    self.metrics.reconnects.labels("redis").inc()
                first = False
                backoff = self.backoff_min_s
                next_full = time.monotonic() + self.full_reload_s
                while True:
                    if self._reload.is_set():
                        self._reload.clear()
                        await self._reload_all(self._reload_reason)
                    if time.monotonic() >= next_full:
                        await self._reload_all("periodic")
                        next_full = time.monotonic() + self.full_reload_s
                    self._end_lingering()
                    msg = await pubsub.get_message(timeout=0.5)
                    while msg is not None:
                        kind = msg.get("type")
                        if kind == "message":
                            await self._reload_one(msg.get("data"))
                        elif kind == "subscribe":
                            confirmations += 1
                            if confirmations > 1:
                                self.metrics.reconnects.labels("redis").inc()
                                await self._reload_all("redis reconnect")
                        msg = await pubsub.get_message(timeout=0)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("redis error in levels loop error=%r; reconnect in %.1fs", exc, backoff)
            except Exception:  # never die on a bug in one message; log it and start over
                log.exception("levels loop failed; restarting it")
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(backoff * (0.8 + 0.4 * random.random()))
            backoff = min(backoff * 2, self.backoff_max_s)

    async def _reload_all(self, reason: str) -> None:
        raw = await self.redis.hgetall(LEVELS_KEY)
        entries: list[Levels] = []
        for field, value in raw.items():
            wf = _text(field)
            try:
                entries.append(Levels.from_json(value, field=wf))
            except LevelsError as exc:
                self.metrics.malformed.labels("levels").inc()
                log.warning("bad levels entry workflow_id=%s error=%s", wf, exc)
        before = len(self.table)
        self.table.replace_all(entries)
        self._table_changed()
        self.loaded.set()
        log.info(
            "levels loaded reason=%s positions=%d before=%d symbols=%s",
            reason,
            len(self.table),
            before,
            ",".join(sorted(self._symbols)),
        )

    async def _reload_one(self, data: Any) -> None:
        wf = _text(data).strip()
        if not wf:
            self.metrics.malformed.labels("pubsub").inc()
            return
        value = await self.redis.hget(LEVELS_KEY, wf)
        if value is None:
            if self.table.remove(wf) is not None:
                log.info("levels removed workflow_id=%s", wf)
        else:
            try:
                lv = Levels.from_json(value, field=wf)
            except LevelsError as exc:
                self.metrics.malformed.labels("levels").inc()
                log.warning("bad levels entry workflow_id=%s error=%s", wf, exc)
                return
            self.table.upsert(lv)
            log.debug(
                "levels updated workflow_id=%s symbol=%s above=%s below=%s version=%d",
                wf,
                lv.symbol,
                lv.above,
                lv.below,
                lv.version,
            )
        self._table_changed()

    def _table_changed(self) -> None:
        self.metrics.positions.set(len(self.table))
        held = frozenset(self.table.symbols())
        self.metrics.symbols.set(len(held))
        now = time.monotonic()
        for sym in self._held - held:  # its last position went: keep its streams a while
            self._lingering[sym] = now + self.linger_s
        for sym in held & self._lingering.keys():
            del self._lingering[sym]
        self._held = held
        symbols = held | {sym for sym, until in self._lingering.items() if until > now}
        if symbols != self._symbols:
            self._symbols = symbols
            for category, (suffixes, shards) in self._shards.items():
                conns = [c for c in self.conns if c.category == category]
                for k, group in enumerate(shards.assign(symbols)):
                    if k == len(conns):
                        conns.append(_StreamConnection(self, category, suffixes))
                        self.conns.append(conns[k])
                        if self._tasks:  # started: the new connection runs as the others do
                            self._tasks.append(self._run_connection(conns[k]))
                    conns[k].set_symbols(group)

    def _end_lingering(self) -> None:
        now = time.monotonic()
        if any(until <= now for until in self._lingering.values()):
            self._lingering = {sym: until for sym, until in self._lingering.items() if until > now}
            self._table_changed()

    def update_stream_gauge(self) -> None:
        self.metrics.streams.set(sum(len(c.subscribed) for c in self.conns))

    # ---- ticks (the hot path) ----------------------------------------------------------------------
    def on_message(self, raw: str | bytes, received: float) -> None:
        """One venue message: never raises."""
        try:
            msg = _loads(raw)
            data = msg.get("data", msg) if isinstance(msg, dict) else None
            if not isinstance(data, dict):
                raise ValueError("not an object")
            etype = data.get("e")
            if etype is None:
                if "result" in msg or "id" in msg:
                    return  # control answer
                if "error" in msg:
                    log.warning("venue refused a control frame: %s", msg)
                    return
                raise ValueError("no event type")
            if etype == "bookTicker":
                self._book[data["s"]] = (str(data["b"]), str(data["a"]))
                return
            if etype == "aggTrade":
                ts = int(data.get("T") or data["E"])
                tick = Tick(data["s"], str(data["p"]), ts, str(data["q"]), "trade")
            elif etype == "markPriceUpdate":
                tick = Tick(data["s"], str(data["p"]), int(data["E"]), "0", "mark")
            else:
                return  # a stream we do not use
            price = Decimal(tick.price)
        except (ValueError, KeyError, TypeError, InvalidOperation, AttributeError) as exc:
            self.metrics.malformed.labels("ws").inc()
            log.warning("malformed venue message error=%r raw=%.200r", exc, raw)
            return
        try:
            self._on_tick(tick, price, received)
        except Exception:  # pragma: no cover - a bug must not kill the connection loop
            log.exception("tick handling failed symbol=%s", tick.symbol)

    def _on_tick(self, tick: Tick, price: Decimal, received: float) -> None:
        self.metrics.ticks.labels(tick.symbol, tick.kind).inc()
        if price > 0 and tick.symbol in self._symbols:
            for crossing in self.table.evaluate(tick.symbol, price):
                self._fire(crossing, tick, received)
        # ticks to Redis after the signals are on their way
        try:
            self._ticks.put_nowait(tick)
        except asyncio.QueueFull:
            with contextlib.suppress(asyncio.QueueEmpty, ValueError):
                self._ticks.get_nowait()
                self._ticks.task_done()
            self._ticks.put_nowait(tick)
            self.metrics.ticks_dropped.inc()

    def _fire(self, c: Crossing, tick: Tick, received: float) -> None:
        if len(self._pending) >= self.max_signals_pending:
            self.metrics.signals_dropped.inc()
            self.table.send_failed(c.workflow_id, c.version)
            return
        task = asyncio.create_task(self._send(c, tick, received))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, c: Crossing, tick: Tick, received: float) -> None:
        payload = {
            "symbol": c.symbol,
            "price": tick.price,
            "ts_ms": tick.event_ms,
            "levels_version": c.version,
            "source": "watcher",
        }
        async with self._sem:
            self.metrics.signals_in_flight.inc()
            try:
                await self.client.get_workflow_handle(c.workflow_id).signal(
                    SIGNAL_NAME, payload, rpc_timeout=self.signal_timeout
                )
            except RPCError as exc:
                gone = exc.status == RPCStatusCode.NOT_FOUND
                self.table.send_failed(c.workflow_id, c.version, gone=gone)
                self.metrics.signal_errors.labels("not_found" if gone else exc.status.name.lower()).inc()
                log.warning(
                    "signal failed workflow_id=%s version=%d gone=%s error=%s",
                    c.workflow_id,
                    c.version,
                    gone,
                    exc,
                )
                return
            except Exception as exc:
                self.table.send_failed(c.workflow_id, c.version)
                self.metrics.signal_errors.labels(type(exc).__name__.lower()).inc()
                log.warning("signal failed workflow_id=%s version=%d error=%r", c.workflow_id, c.version, exc)
                return
            finally:
                self.metrics.signals_in_flight.dec()
        done = time.perf_counter()
        self.metrics.signals.inc()
        self.metrics.tick_to_signal.observe(done - received)
        self.metrics.venue_to_signal.observe(max(0.0, time.time() - tick.event_ms / 1000))
        log.info(
            "price_crossed sent workflow_id=%s symbol=%s price=%s side=%s level=%s version=%d resend=%s "
            "tick_to_signal_ms=%.2f",
            c.workflow_id,
            c.symbol,
            tick.price,
            c.side,
            c.level,
            c.version,
            c.resend,
            (done - received) * 1000,
        )

    async def _tick_writer(self) -> None:
        backoff = self.backoff_min_s
        q = self._ticks
        while True:
            batch = [await q.get()]
            while len(batch) < self.tick_batch and not q.empty():
                batch.append(q.get_nowait())
            try:
                pipe = self.redis.pipeline(transaction=False)
                for t in batch:
                    bid, ask = self._book.get(t.symbol, (t.price, t.price))
                    pipe.xadd(
                        TICK_STREAM,
                        {
                            "symbol": t.symbol,
                            "price": t.price,
                            "timestamp": str(t.event_ms),
                            "bid": bid,
                            "ask": ask,
                            "volume": t.volume,
                        },
                        maxlen=self.stream_maxlen,
                        approximate=True,
                    )
                await pipe.execute()
                self.metrics.ticks_written.inc(len(batch))
                backoff = self.backoff_min_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # RedisError, OSError, or a bug: never lose the writer
                self.metrics.ticks_dropped.inc(len(batch))
                log.warning("tick write failed n=%d error=%r; retry in %.1fs", len(batch), exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max_s)
            finally:
                for _ in batch:
                    q.task_done()


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value) if value is not None else ""


# ---------------------------------------------------------------------------------------------------
async def run_watcher(
    settings: Any,
    metrics_port: int | None = None,
    *,
    resend_after_s: float = 2.0,
    linger_s: float = 60.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until SIGTERM / SIGINT (or `stop`): `settings` is a `trading.config.Settings`."""
    metrics = WatcherMetrics()

    async def watch(svc: Service) -> None:
        watcher = PriceWatcher(
            ws_url=settings.ws_url,
            redis=svc.redis,
            client=svc.client,
            resend_after_s=resend_after_s,
            linger_s=linger_s,
            metrics=metrics,
        )
        log.info(
            "price watcher starting ws_url=%s redis=%s:%d temporal=%s",
            settings.ws_url,
            settings.redis_host,
            settings.redis_port,
            settings.temporal_address,
        )
        await watcher.run_until(svc.stop)

    await run_feed("price watcher", settings, watch, metrics.registry, metrics_port, log=log, stop=stop)


RESEND_AFTER_HELP = "seconds before the same (workflow, levels version) is signalled again"
LINGER_HELP = "seconds a symbol stays subscribed after its last position's levels went (default 60)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = service_parser("price-watcher", __doc__)
    parser.add_argument("--resend-after", type=float, default=2.0, help=RESEND_AFTER_HELP)
    parser.add_argument("--linger", type=float, default=60.0, help=LINGER_HELP)
    args = parser.parse_args(argv)
    return run_main(
        args,
        lambda s: run_watcher(s, args.metrics_port, resend_after_s=args.resend_after, linger_s=args.linger),
    )


if __name__ == "__main__":
    sys.exit(main())
