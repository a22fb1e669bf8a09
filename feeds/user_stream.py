"""The user-data stream: the venue's own account events in, one `exchange_event` signal per event that
matters out, to the position workflow that owns the symbol.

- listenKey: created at start (`POST /fapi/v1/listenKey`), kept alive every `keepalive_s` (`PUT`,
  default 20 min, well inside its 60-minute life), replaced by a new one on -1125 from a keepalive,
  on a `listenKeyExpired` event, or when a check before a reconnect finds it gone; the socket then
  reconnects with the new key. Closed (`DELETE`) on shutdown. The key is a credential: it is never
  logged (only a 4-character fingerprint), nor are the API key and secret.
- connection: `<ws_url>/private/ws?listenKey=K`, reconnect with jittered backoff on any drop. After every
  (re)connect, and before the stream is trusted again (events that arrive meanwhile are held, at
  most `catchup_hold_s`), a catch-up asks REST what may have been missed: positionRisk v3 and open
  orders; every tracked symbol (snapshot status OPEN / CLOSING) gets a `position_snapshot` event with
  the venue's `positionAmt` ("0" when flat or absent). A failed catch-up is retried with backoff.
- routing: by symbol, through the Redis read model `quantum:position:snapshot:{symbol}` (`workflow_id`,
  `status`), cached for `route_ttl_s`, read again on a miss; a workflow that is not found (it ended)
  drops the cache entry and the event goes to the symbol's current owner if that changed. Events of
  one symbol are signalled in order; different symbols in parallel (at most `max_in_flight` RPCs), so
  one slow signal never delays another symbol. What is forwarded and the signal's shape:
  `feeds/user_events.py`.
- every raw event also goes to the Redis stream `quantum:stream:exchange.raw` and every forwarded one,
  normalized, to `quantum:stream:exchange.normalized` (background, pipelined, after the signals are on
  their way; dropped, and counted, when Redis is down).

Run: `python -m feeds.user_stream --metrics-port 9467` (settings from the environment, like every
process here: BINANCE_API_KEY / BINANCE_API_SECRET, TRADING_MODE, PAPER_WS_URL, REDIS_*, TEMPORAL_*),
or `run_user_stream(settings, metrics_port)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis
import websockets
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from redis.exceptions import RedisError
from temporalio.service import RPCError, RPCStatusCode

from exchange.client import BinanceFuturesClient
from exchange.errors import ExchangeError, RejectedError
from feeds.balance_tracker import BalanceMetrics, BalanceTracker
from feeds.user_events import (
    EXPIRED_EVENT,
    SNAPSHOT_PREFIX,
    Decoded,
    Route,
    decode,
    parse_route,
    snapshot_events,
    snapshot_key,
)
from workers.service import Service, run_feed, run_main, service_parser, wait_until_stopped

try:  # optional speed-up; the stdlib is the fallback
    import orjson

    _loads: Callable[[str | bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - depends on the environment
    _loads = json.loads

__all__ = [
    "NORMALIZED_STREAM",
    "RAW_STREAM",
    "SIGNAL_NAME",
    "UserStream",
    "UserStreamMetrics",
    "main",
    "run_user_stream",
]

log = logging.getLogger("feeds.user_stream")

SIGNAL_NAME = "exchange_event"
RAW_STREAM = "quantum:stream:exchange.raw"
NORMALIZED_STREAM = "quantum:stream:exchange.normalized"
UNKNOWN_KEY = -1125
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)
RETRYABLE_RPC = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.ABORTED,
        RPCStatusCode.INTERNAL,
    }
)


class UserStreamMetrics:
    """Prometheus metrics in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "user_stream_events_received", "User-data events received", ["type"], registry=r
        )
        self.signals = Counter(
            "user_stream_signals_sent", "exchange_event signals delivered", ["kind"], registry=r
        )
        self.signal_errors = Counter(
            "user_stream_signal_errors", "exchange_event signals that failed", ["reason"], registry=r
        )
        self.not_found = Counter(
            "user_stream_workflow_not_found",
            "Signals to a workflow that no longer runs (not an error)",
            registry=r,
        )
        self.unroutable = Counter(
            "user_stream_unroutable",
            "Events for a symbol with no OPEN / CLOSING position",
            ["kind"],
            registry=r,
        )
        self.malformed = Counter("user_stream_malformed", "Messages that could not be used", registry=r)
        self.dropped = Counter(
            "user_stream_events_dropped", "Events not signalled: too many pending", registry=r
        )
        self.reconnects = Counter("user_stream_reconnects", "WebSocket reconnects after a drop", registry=r)
        self.renewals = Counter(
            "user_stream_listen_key_renewals", "listenKeys replaced by a new one", ["reason"], registry=r
        )
        self.keepalives = Counter(
            "user_stream_listen_key_keepalives", "listenKey keepalives", ["result"], registry=r
        )
        self.catchups = Counter(
            "user_stream_catchup_runs", "REST catch-ups after a (re)connect", ["result"], registry=r
        )
        self.redis_errors = Counter(
            "user_stream_redis_errors", "Redis reads or writes that failed", ["op"], registry=r
        )
        self.stream_written = Counter(
            "user_stream_redis_stream_entries", "Entries written to Redis streams", registry=r
        )
        self.connected = Gauge("user_stream_connected", "1 while the user-data socket is open", registry=r)
        self.in_flight = Gauge(
            "user_stream_signals_in_flight", "exchange_event signals being sent", registry=r
        )
        self.pending = Gauge("user_stream_events_pending", "Events queued for a signal", registry=r)
        self.event_to_signal = Histogram(
            "user_stream_event_to_signal_seconds",
            "From the venue's event time (E) to completion of the signal RPC",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.receive_to_signal = Histogram(
            "user_stream_receive_to_signal_seconds",
            "From receipt of the message to completion of the signal RPC",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )


def fingerprint(key: str | None) -> str:
    return f"{key[:4]}…" if key else "-"


class UserStream:
    """The listenKey, the socket, the catch-up, the per-symbol signal lanes and the stream writer."""

    def __init__(
        self,
        *,
        ws_url: str,
        venue: Any,  # BinanceFuturesClient (listen keys, position_risk, open_orders)
        redis: aioredis.Redis,
        client: Any,  # temporalio.client.Client (get_workflow_handle(id).signal(...))
        keepalive_s: float = 1200.0,
        metrics: UserStreamMetrics | None = None,
        route_ttl_s: float = 1.0,
        max_in_flight: int = 64,
        max_pending: int = 100_000,
        signal_timeout_s: float = 5.0,
        signal_attempts: int = 3,
        catchup_hold_s: float = 5.0,
        backoff_min_s: float = 0.1,
        backoff_max_s: float = 10.0,
        publish_streams: bool = True,
        stream_maxlen: int = 100_000,
        balance: BalanceTracker | None = None,
    ) -> None:
        self.ws_url = ws_url.rstrip("/")
        self.venue = venue
        self.redis = redis
        self.client = client
        self.keepalive_s = keepalive_s
        self.metrics = metrics or UserStreamMetrics()
        self.route_ttl_s = route_ttl_s
        self.max_pending = max_pending
        self.signal_timeout = timedelta(seconds=signal_timeout_s)
        self.signal_attempts = max(1, signal_attempts)
        self.catchup_hold_s = catchup_hold_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.publish_streams = publish_streams
        self.stream_maxlen = stream_maxlen
        self.balance = balance  # read after each ACCOUNT_UPDATE and periodically (feeds/balance_tracker.py)
        self.key: str | None = None
        self._stale_reason: str | None = None  # set: the key must be replaced before the next connect
        self._key_lock = asyncio.Lock()
        self._ws: Any = None
        self._sem = asyncio.Semaphore(max_in_flight)
        self._routes: dict[str, tuple[str, float]] = {}  # symbol -> (workflow id, read at, monotonic)
        self._lanes: dict[str, deque[tuple[dict[str, Any], float, str | None]]] = {}
        self._lane_tasks: dict[str, asyncio.Task[None]] = {}
        self._queued = 0
        self._out: asyncio.Queue[tuple[str, dict[str, str]]] = asyncio.Queue(maxsize=50_000)
        self._tasks: list[asyncio.Task[Any]] = []
        self._catchups: set[asyncio.Task[Any]] = set()
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self.connected = asyncio.Event()
        self.caught_up = asyncio.Event()  # set after each successful catch-up (cleared on a drop)

    # ---- lifecycle -------------------------------------------------------------------------------
    async def run_until(self, stop: asyncio.Event) -> None:
        self._tasks = [
            asyncio.create_task(self._connection_loop(), name="user-ws"),
            asyncio.create_task(self._keepalive_loop(), name="listen-key"),
        ]
        if self.publish_streams:
            self._tasks.append(asyncio.create_task(self._stream_writer(), name="stream-writer"))
        if self.balance is not None:
            self._tasks.append(asyncio.create_task(self.balance.run(), name="balance"))
        try:
            await wait_until_stopped(stop, self._tasks)
        finally:
            await self.close()

    async def close(self, drain_s: float = 2.0) -> None:
        """Stop reading, let queued signals go out (bounded), flush the streams, close the listenKey."""
        writer = next((t for t in self._tasks if t.get_name() == "stream-writer"), None)
        for t in [*self._tasks, *self._catchups]:
            if t is not writer:
                t.cancel()
        for t in [*self._tasks, *self._catchups]:
            if t is not writer:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        if self._lane_tasks:
            await asyncio.wait(list(self._lane_tasks.values()), timeout=drain_s)
        for t in list(self._lane_tasks.values()):
            t.cancel()
        if writer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._out.join(), drain_s)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
        self._tasks = []
        if self.key is not None:
            try:
                await asyncio.wait_for(self.venue.close_listen_key(), 5)
                log.info("listenKey closed key=%s", fingerprint(self.key))
            except Exception as exc:
                log.warning("listenKey close failed error=%s", self._redact(exc))
            self.key = None

    # ---- listenKey -------------------------------------------------------------------------------
    def _redact(self, exc: BaseException | str) -> str:
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        return text.replace(self.key, "<listenKey>") if self.key else text

    def _mark_stale(self, reason: str) -> None:
        if self._stale_reason is None:
            self._stale_reason = reason

    async def _ensure_key(self) -> str:
        """The current key, or a new one if there is none or it was found dead (retries until it has
        one: nothing can be heard without it)."""
        async with self._key_lock:
            backoff = self.backoff_min_s
            while self.key is None or self._stale_reason is not None:
                try:
                    key = await self.venue.new_listen_key()
                except ExchangeError as exc:
                    log.warning("listenKey create failed error=%s; retry in %.1fs", exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.backoff_max_s)
                    continue
                if self.key is not None:
                    self.metrics.renewals.labels(self._stale_reason or "unknown").inc()
                    log.warning(
                        "listenKey renewed reason=%s old=%s new=%s",
                        self._stale_reason,
                        fingerprint(self.key),
                        fingerprint(key),
                    )
                else:
                    log.info("listenKey created key=%s", fingerprint(key))
                self.key = key
                self._stale_reason = None
            return self.key

    async def _keepalive(self) -> bool:
        """PUT the key; False if the venue no longer knows it (it is marked stale)."""
        try:
            await self.venue.keepalive_listen_key()
        except RejectedError as exc:
            if exc.code == UNKNOWN_KEY:
                self.metrics.keepalives.labels("unknown_key").inc()
                self._mark_stale("keepalive_1125")
                return False
            raise
        self.metrics.keepalives.labels("ok").inc()
        return True

    async def _keepalive_loop(self) -> None:
        delay = self.keepalive_s
        while True:
            await asyncio.sleep(delay)
            if self.key is None or self._stale_reason is not None:
                delay = min(self.keepalive_s, 1.0)
                continue
            try:
                if await self._keepalive():
                    delay = self.keepalive_s
                    continue
                log.warning("listenKey unknown to the venue (-1125): new key and reconnect")
                await self._ensure_key()
                await self._drop_socket()
                delay = self.keepalive_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # transport / rate limit: try again well inside the 60 min life
                self.metrics.keepalives.labels("error").inc()
                delay = min(self.keepalive_s, 30.0)
                log.warning("listenKey keepalive failed error=%s; retry in %.1fs", self._redact(exc), delay)

    async def _drop_socket(self) -> None:
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close(1000, "new listenKey")

    # ---- connection ------------------------------------------------------------------------------
    async def _connection_loop(self) -> None:
        backoff = self.backoff_min_s
        first = True
        while True:
            try:
                if not first and self._stale_reason is None and self.key is not None:
                    # the key may have died while the socket was down: check it first (weight 1)
                    try:
                        if not await self._keepalive():
                            log.warning("listenKey gone before reconnect: new key")
                    except ExchangeError as exc:
                        log.warning("listenKey check failed error=%s", exc)
                key = await self._ensure_key()
                async with websockets.connect(
                    f"{self.ws_url}/private/ws?listenKey={key}",
                    open_timeout=10,
                    ping_interval=20,
                    ping_timeout=20,
                    close_timeout=2,
                    max_size=2**22,
                    compression=None,
                ) as ws:
                    self._ws = ws
                    self.connected.set()
                    self.metrics.connected.set(1)
                    if not first:
                        self.metrics.reconnects.inc()
                    log.info("ws connected key=%s reconnect=%s", fingerprint(key), not first)
                    reason = "start" if first else "reconnect"
                    first = False
                    backoff = self.backoff_min_s
                    await self._read(ws, reason)
                code = getattr(ws, "close_code", None)
                reason_text = getattr(ws, "close_reason", "") or ""
                if code == 1008 and "listenKey" in reason_text:
                    self._mark_stale("refused")
                log.warning("ws closed code=%s reason=%s; reconnecting", code, self._redact(reason_text))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # OSError, handshake, ConnectionClosed, TimeoutError, REST errors
                log.warning("ws error=%s; reconnect in %.1fs", self._redact(exc), backoff)
            finally:
                self._ws = None
                self.connected.clear()
                self.caught_up.clear()
                self.metrics.connected.set(0)
            await asyncio.sleep(backoff * (0.8 + 0.4 * random.random()))
            backoff = min(backoff * 2, self.backoff_max_s)

    async def _read(self, ws: Any, reason: str) -> None:
        """Read until the socket closes; hold events until the catch-up has run (or `catchup_hold_s`)."""
        held: list[tuple[str | bytes, float]] = []
        trusted = False

        def trust(_: Any = None) -> None:
            nonlocal trusted
            if trusted:
                return
            trusted = True
            for raw, rx in held:
                if self.on_message(raw, rx):
                    self._side_tasks.add(t := asyncio.create_task(self._drop_socket()))
                    t.add_done_callback(self._side_tasks.discard)
                    break
            held.clear()

        catchup = asyncio.create_task(self._catch_up(reason), name="catch-up")
        self._catchups.add(catchup)
        catchup.add_done_callback(self._catchups.discard)
        first_ok = asyncio.create_task(self.caught_up.wait())
        first_ok.add_done_callback(trust)
        hold = asyncio.get_running_loop().call_later(self.catchup_hold_s, trust)
        try:
            async for raw in ws:
                rx = time.perf_counter()
                if not trusted:
                    held.append((raw, rx))
                    continue
                if self.on_message(raw, rx):
                    return  # listenKeyExpired: reconnect with a new key
        finally:
            hold.cancel()
            first_ok.cancel()
            catchup.cancel()

    async def _catch_up(self, reason: str) -> None:
        backoff = self.backoff_min_s
        while True:
            t0 = time.perf_counter()
            try:
                positions, orders = await asyncio.gather(self.venue.position_risk(), self.venue.open_orders())
                routes = await self._load_routes()
                now_ms = int(time.time() * 1000)
                rows = [(p.symbol, p.position_amt, p.entry_price) for p in positions]
                events = snapshot_events(routes, rows, now_ms, reason)
                rx = time.perf_counter()
                for wf, ev in events:
                    self._enqueue(ev, rx, wf)
                self.metrics.catchups.labels("ok").inc()
                self.caught_up.set()
                log.info(
                    "catch-up reason=%s tracked=%d venue_positions=%d open_orders=%d took_ms=%.1f",
                    reason,
                    len(routes),
                    sum(1 for p in positions if p.position_amt != 0),
                    len(orders),
                    (time.perf_counter() - t0) * 1000,
                )
                return
            except asyncio.CancelledError:
                raise
            except (ExchangeError, RedisError, OSError) as exc:
                self.metrics.catchups.labels("error").inc()
                log.warning("catch-up failed reason=%s error=%s; retry in %.1fs", reason, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max_s)

    async def _load_routes(self) -> list[Route]:
        """Every tracked position (snapshot status OPEN / CLOSING); refreshes the route cache."""
        keys = [k async for k in self.redis.scan_iter(match=SNAPSHOT_PREFIX + "*", count=500)]
        if not keys:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for k in keys:
            pipe.hmget(k, "workflow_id", "status")
        values = await pipe.execute()
        now = time.monotonic()
        routes: list[Route] = []
        for k, (wf, status) in zip(keys, values, strict=True):
            symbol = (k.decode() if isinstance(k, bytes) else str(k))[len(SNAPSHOT_PREFIX) :]
            r = parse_route(symbol, wf, status)
            if r is None:
                self._routes.pop(symbol, None)
            else:
                routes.append(r)
                self._routes[symbol] = (r.workflow_id, now)
        return routes

    # ---- events (the hot path) ---------------------------------------------------------------------
    def on_message(self, raw: str | bytes, received: float) -> bool:
        """One venue message (never raises); True when it says our listenKey expired."""
        try:
            msg = _loads(raw)
            if not isinstance(msg, dict):
                raise TypeError("not an object")
            if "e" not in msg and "data" not in msg:
                return False  # a control answer
            d: Decoded = decode(msg)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self.metrics.malformed.inc()
            log.warning("malformed venue message error=%r raw=%.200r", exc, raw)
            return False
        self.metrics.events.labels(d.etype).inc()
        for ev in d.events:
            self._enqueue(ev, received, None)
        if d.account_reason is not None and self.balance is not None:
            self.balance.poke(d.account_reason)
        if self.publish_streams:
            self._publish(raw, d)
        if d.etype == EXPIRED_EVENT:
            if d.expired_key is None or d.expired_key == self.key:
                self._mark_stale("expired_event")
                log.warning("listenKeyExpired: new key and reconnect")
                return True
        return False

    def _enqueue(self, ev: dict[str, Any], received: float, workflow_id: str | None) -> None:
        if self._queued >= self.max_pending:
            self.metrics.dropped.inc()
            log.warning("too many events pending; dropped kind=%s symbol=%s", ev["kind"], ev["symbol"])
            return
        symbol = ev["symbol"]
        lane = self._lanes.get(symbol)
        if lane is None:
            lane = self._lanes[symbol] = deque()
        lane.append((ev, received, workflow_id))
        self._queued += 1
        self.metrics.pending.set(self._queued)
        if symbol not in self._lane_tasks:
            self._lane_tasks[symbol] = asyncio.create_task(self._run_lane(symbol), name=f"lane-{symbol}")

    async def _run_lane(self, symbol: str) -> None:
        """Signals of one symbol, one at a time, in the order the venue sent them."""
        lane = self._lanes[symbol]
        try:
            while lane:
                ev, received, wf = lane.popleft()
                self._queued -= 1
                self.metrics.pending.set(self._queued)
                try:
                    await self._deliver(ev, received, wf)
                except asyncio.CancelledError:
                    raise
                except Exception:  # pragma: no cover - a bug must not stop the lane
                    log.exception("delivery failed symbol=%s kind=%s", symbol, ev.get("kind"))
        finally:
            self._lane_tasks.pop(symbol, None)
            if not lane:
                self._lanes.pop(symbol, None)

    async def _deliver(self, ev: dict[str, Any], received: float, wf: str | None) -> None:
        symbol = ev["symbol"]
        if wf is not None:  # a catch-up snapshot: already addressed
            await self._signal(wf, ev, received)
            return
        target = await self._resolve(symbol)
        if target is None:
            self.metrics.unroutable.labels(ev["kind"]).inc()
            log.debug(
                "unroutable kind=%s symbol=%s client_order_id=%s",
                ev["kind"],
                symbol,
                ev.get("client_order_id"),
            )
            return
        if await self._signal(target, ev, received) == "not_found":
            self._routes.pop(symbol, None)
            fresh = await self._resolve(symbol)
            if fresh is not None and fresh != target:
                await self._signal(fresh, ev, received)

    async def _resolve(self, symbol: str) -> str | None:
        cached = self._routes.get(symbol)
        now = time.monotonic()
        if cached is not None and now - cached[1] < self.route_ttl_s:
            return cached[0]
        try:
            wf, status = await self.redis.hmget(snapshot_key(symbol), "workflow_id", "status")
        except (RedisError, OSError) as exc:
            self.metrics.redis_errors.labels("route").inc()
            log.warning("route lookup failed symbol=%s error=%r", symbol, exc)
            return cached[0] if cached is not None else None  # a stale route beats none
        r = parse_route(symbol, wf, status)
        if r is None:
            self._routes.pop(symbol, None)
            return None
        self._routes[symbol] = (r.workflow_id, now)
        return r.workflow_id

    async def _signal(self, wf: str, ev: dict[str, Any], received: float) -> str:
        """'ok', 'not_found' or 'error'."""
        kind = ev["kind"]
        for attempt in range(1, self.signal_attempts + 1):
            async with self._sem:
                self.metrics.in_flight.inc()
                try:
                    await self.client.get_workflow_handle(wf).signal(
                        SIGNAL_NAME, ev, rpc_timeout=self.signal_timeout
                    )
                except RPCError as exc:
                    if exc.status == RPCStatusCode.NOT_FOUND:
                        self.metrics.not_found.inc()
                        log.info(
                            "workflow not found workflow_id=%s kind=%s symbol=%s", wf, kind, ev["symbol"]
                        )
                        return "not_found"
                    retry = exc.status in RETRYABLE_RPC and attempt < self.signal_attempts
                    self.metrics.signal_errors.labels(exc.status.name.lower()).inc()
                    log.warning(
                        "signal failed workflow_id=%s kind=%s attempt=%d retry=%s error=%s",
                        wf,
                        kind,
                        attempt,
                        retry,
                        exc,
                    )
                    if not retry:
                        return "error"
                except Exception as exc:
                    retry = attempt < self.signal_attempts
                    self.metrics.signal_errors.labels(type(exc).__name__.lower()).inc()
                    log.warning(
                        "signal failed workflow_id=%s kind=%s attempt=%d error=%r", wf, kind, attempt, exc
                    )
                    if not retry:
                        return "error"
                else:
                    done = time.perf_counter()
                    self.metrics.signals.labels(kind).inc()
                    self.metrics.receive_to_signal.observe(done - received)
                    if ev.get("event_ms"):
                        lag = max(0.0, time.time() - ev["event_ms"] / 1000)
                        self.metrics.event_to_signal.labels(kind).observe(lag)
                    log.info(
                        "exchange_event sent workflow_id=%s kind=%s symbol=%s status=%s exec=%s amt=%s "
                        "reason=%s receive_to_signal_ms=%.2f",
                        wf,
                        kind,
                        ev["symbol"],
                        ev.get("order_status"),
                        ev.get("exec_type"),
                        ev.get("position_amt"),
                        ev.get("reason"),
                        (done - received) * 1000,
                    )
                    return "ok"
                finally:
                    self.metrics.in_flight.dec()
            await asyncio.sleep(0.1 * 2 ** (attempt - 1))
        return "error"  # pragma: no cover - the loop always returns

    # ---- Redis streams (off the reaction path) -----------------------------------------------------
    def _publish(self, raw: str | bytes, d: Decoded) -> None:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        items: list[tuple[str, dict[str, str]]] = [
            (RAW_STREAM, {"type": d.etype, "event_ms": str(d.event_ms), "payload": text})
        ]
        for ev in d.events:
            items.append((NORMALIZED_STREAM, {k: "" if v is None else str(v) for k, v in ev.items()}))
        for item in items:
            try:
                self._out.put_nowait(item)
            except asyncio.QueueFull:
                self.metrics.redis_errors.labels("stream_queue_full").inc()

    async def _stream_writer(self) -> None:
        backoff = self.backoff_min_s
        q = self._out
        while True:
            batch = [await q.get()]
            while len(batch) < 500 and not q.empty():
                batch.append(q.get_nowait())
            try:
                pipe = self.redis.pipeline(transaction=False)
                for stream, fields in batch:
                    pipe.xadd(stream, fields, maxlen=self.stream_maxlen, approximate=True)
                await pipe.execute()
                self.metrics.stream_written.inc(len(batch))
                backoff = self.backoff_min_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.redis_errors.labels("stream_write").inc(len(batch))
                log.warning("stream write failed n=%d error=%r; retry in %.1fs", len(batch), exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max_s)
            finally:
                for _ in batch:
                    q.task_done()


# ---------------------------------------------------------------------------------------------------
async def run_user_stream(
    settings: Any,
    metrics_port: int | None = None,
    *,
    keepalive_s: float = 1200,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until SIGTERM / SIGINT (or `stop`): `settings` is a `trading.config.Settings`."""
    metrics = UserStreamMetrics()
    balance_metrics = BalanceMetrics(metrics.registry)

    async def stream_events(svc: Service) -> None:
        venue = BinanceFuturesClient.from_settings(settings)
        balance = BalanceTracker(
            venue=venue,
            redis=svc.redis,
            client=svc.client,
            metrics=balance_metrics,
            check_s=settings.balance_check_seconds,
        )
        stream = UserStream(
            ws_url=settings.ws_url,
            venue=venue,
            redis=svc.redis,
            client=svc.client,
            keepalive_s=keepalive_s,
            metrics=metrics,
            balance=balance,
        )
        log.info(
            "user stream starting rest=%s ws=%s redis=%s:%d temporal=%s keepalive_s=%g",
            settings.rest_url,
            settings.ws_url,
            settings.redis_host,
            settings.redis_port,
            settings.temporal_address,
            keepalive_s,
        )
        try:
            await stream.run_until(svc.stop)
        finally:
            with contextlib.suppress(Exception):
                await venue.aclose()

    await run_feed("user stream", settings, stream_events, metrics.registry, metrics_port, log=log, stop=stop)


KEEPALIVE_HELP = "seconds between listenKey keepalives (must stay well under 3600)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = service_parser("user-stream", __doc__)
    parser.add_argument("--keepalive", type=float, default=1200.0, help=KEEPALIVE_HELP)
    args = parser.parse_args(argv)
    if not 0 < args.keepalive < 3000:
        parser.error("--keepalive must be between 0 and 3000 seconds (a listenKey lives 60 minutes)")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its request lines would carry the listenKey
    return run_main(args, lambda s: run_user_stream(s, args.metrics_port, keepalive_s=args.keepalive))


if __name__ == "__main__":
    sys.exit(main())
