"""WebSocket hub: Binance market streams and the user-data stream, fed by the engine's events.

Accepted paths (an optional `/public`, `/market` or `/private` prefix is ignored for routing):
- `/ws` and `/ws/<n>` (numeric suffix, ccxt pro): raw connection, streams added by SUBSCRIBE;
- `/ws/<stream>`: raw connection subscribed to one market stream;
- `/ws/<listenKey>` (legacy) and `/ws?listenKey=K`: the user-data stream;
- `/stream?streams=a/b` (+ `listenKey=K`): combined, every message `{"stream":name,"data":payload}`;
- `&events=A/B`: only these user-data event types (listenKeyExpired always passes).
Control frames: SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS / SET_PROPERTY / GET_PROPERTY.

The engine calls `on_event` synchronously; it only appends pre-encoded text to each connection's
bounded buffer, so a slow consumer never stalls the engine: when its buffer overflows, that
connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.websockets import WebSocket, WebSocketDisconnect

from exchange.paper.events import Event

log = logging.getLogger("exchange.paper.streams")

try:  # optional speed-up; the stdlib is the fallback
    import orjson

    def _dumps(obj: Any) -> str:
        return orjson.dumps(obj, default=str).decode()
except ImportError:  # pragma: no cover - depends on the environment

    def _dumps(obj: Any) -> str:
        return json.dumps(obj, separators=(",", ":"), default=str)


_CATEGORIES = ("public", "market", "private")
MAX_BUFFER = 5000  # messages waiting for one connection before it counts as too slow
MAX_STREAMS = 1024

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008


class Connection:
    """One WebSocket: its subscriptions and a bounded outgoing buffer with a single writer."""

    def __init__(self, ws: WebSocket, combined: bool, events: frozenset[str] | None) -> None:
        self.ws = ws
        self.combined = combined
        self.events = events
        self.listen_key: str | None = None
        self.streams: dict[str, str] = {}  # lower-cased name -> name as subscribed
        self.buf: deque[str] = deque()
        self.wake = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self.writer_task: asyncio.Task[None] | None = None
        self.max_buffer = MAX_BUFFER

    def push(self, text: str) -> None:
        if self.close_code is not None:
            return
        if len(self.buf) >= self.max_buffer:
            # Too slow: drop what it has not read and the connection itself. The writer may be
            # stuck in a send to a peer that does not read, so it is cancelled, not asked.
            self.buf.clear()
            self.kill(CLOSE_POLICY, "slow consumer")
            if self.writer_task is not None:
                self.writer_task.cancel()
            return
        self.buf.append(text)
        self.wake.set()

    def kill(self, code: int, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        self.wake.set()

    async def writer(self) -> None:
        ws = self.ws
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.buf:
                await ws.send_text(self.buf.popleft())
            if self.close_code is not None:
                with contextlib.suppress(Exception):
                    await ws.close(self.close_code, self.close_reason)
                return


class StreamHub:
    """Every open WebSocket of one paper exchange."""

    def __init__(self, listen_key_valid: Callable[[str], bool]) -> None:
        self._listen_key_valid = listen_key_valid
        self._conns: set[Connection] = set()
        self._by_stream: dict[str, set[Connection]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    def bind_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    # ---- engine side -------------------------------------------------------------------------
    def on_event(self, ev: Event) -> None:
        """The engine's listener: never blocks, never raises into the engine."""
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._dispatch, ev)
            return
        try:
            self._dispatch(ev)
        except Exception:  # pragma: no cover - a bug here must not break order handling
            log.exception("stream dispatch failed")

    def _dispatch(self, ev: Event) -> None:
        if not self._conns:
            return
        if ev.channel == "market":
            self._dispatch_market(ev)
        else:
            self._dispatch_user(ev.payload)

    def _dispatch_market(self, ev: Event) -> None:
        names = (ev.stream, *ev.extra_streams) if ev.extra_streams else (ev.stream,)
        raw: str | None = None
        for name in names:
            conns = self._by_stream.get(name.lower())
            if not conns:
                continue
            for conn in conns:
                if conn.combined:
                    conn.push(_dumps({"stream": conn.streams.get(name.lower(), name), "data": ev.payload}))
                else:
                    if raw is None:
                        raw = _dumps(ev.payload)
                    conn.push(raw)

    def _dispatch_user(self, payload: dict[str, Any]) -> None:
        etype = payload.get("e")
        expired = etype == "listenKeyExpired"
        target_key = payload.get("listenKey") if expired else None
        raw: str | None = None
        for conn in list(self._conns):
            key = conn.listen_key
            if key is None or (target_key and key != target_key):
                continue
            if not expired and conn.events is not None and etype not in conn.events:
                continue
            if conn.combined:
                conn.push(_dumps({"stream": key, "data": payload}))
            else:
                if raw is None:
                    raw = _dumps(payload)
                conn.push(raw)
            if expired:
                conn.kill(CLOSE_NORMAL, "listenKey expired")

    # ---- admin -----------------------------------------------------------------------------
    def drop_all(self, code: int = CLOSE_GOING_AWAY, reason: str = "dropped") -> int:
        n = 0
        for conn in list(self._conns):
            conn.buf.clear()
            conn.kill(code, reason)
            n += 1
        return n

    # ---- connection side ---------------------------------------------------------------------
    def _subscribe(self, conn: Connection, name: str) -> None:
        if not name:
            return
        if "@" not in name and self._listen_key_valid(name):
            conn.listen_key = name
            return
        low = name.lower()
        conn.streams[low] = name
        self._by_stream.setdefault(low, set()).add(conn)

    def _unsubscribe(self, conn: Connection, name: str) -> None:
        if conn.listen_key is not None and name == conn.listen_key:
            conn.listen_key = None
            return
        low = name.lower()
        conn.streams.pop(low, None)
        subs = self._by_stream.get(low)
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del self._by_stream[low]

    def _forget(self, conn: Connection) -> None:
        self._conns.discard(conn)
        for low in list(conn.streams):
            subs = self._by_stream.get(low)
            if subs is not None:
                subs.discard(conn)
                if not subs:
                    del self._by_stream[low]

    def _route(self, ws: WebSocket) -> tuple[Connection, list[str], str | None] | str:
        """(connection, initial streams, listenKey to check) or the reason to refuse."""
        parts = [p for p in ws.scope["path"].split("/") if p]
        if parts and parts[0] in _CATEGORIES:
            parts = parts[1:]
        if not parts or parts[0] not in ("ws", "stream"):
            return "unknown path"
        query = dict(parse_qsl(ws.scope.get("query_string", b"").decode("utf-8", "replace")))
        events = query.get("events")
        ev_filter = frozenset(e for e in events.split("/") if e) if events else None
        combined = parts[0] == "stream"
        streams: list[str] = []
        listen_key = query.get("listenKey")
        if combined:
            streams = [s for s in query.get("streams", "").split("/") if s]
            streams += parts[1:]
        else:
            for seg in parts[1:]:
                if seg.isdigit():
                    continue  # ccxt pro's connection number
                if "@" in seg:
                    streams.append(seg)
                elif self._listen_key_valid(seg):
                    listen_key = seg
                else:
                    return "invalid listenKey"
        conn = Connection(ws, combined, ev_filter)
        return conn, streams, listen_key

    async def serve(self, ws: WebSocket) -> None:
        routed = self._route(ws)
        await ws.accept()
        if isinstance(routed, str):
            await ws.close(CLOSE_POLICY, routed)
            return
        conn, streams, listen_key = routed
        if listen_key is not None:
            if not self._listen_key_valid(listen_key):
                await ws.close(CLOSE_POLICY, "invalid listenKey")
                return
            conn.listen_key = listen_key
        for name in streams[:MAX_STREAMS]:
            self._subscribe(conn, name)
        self._conns.add(conn)
        writer = conn.writer_task = asyncio.create_task(conn.writer())
        reader = asyncio.create_task(self._read(conn))
        try:
            done, pending = await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for task in done:
                if task.cancelled():
                    continue
                exc = task.exception()
                if exc is not None and not isinstance(exc, (WebSocketDisconnect, RuntimeError, OSError)):
                    log.warning("websocket task failed: %r", exc)
        finally:
            self._forget(conn)

    async def _read(self, conn: Connection) -> None:
        ws = conn.ws
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            text = msg.get("text")
            if text is None:
                data = msg.get("bytes")
                text = data.decode("utf-8", "replace") if data else ""
            self._control(conn, text)

    def _control(self, conn: Connection, text: str) -> None:
        try:
            req = json.loads(text)
        except ValueError:
            conn.push(_dumps({"error": {"code": 3, "msg": "Invalid JSON: expected value"}}))
            return
        if not isinstance(req, dict):
            conn.push(_dumps({"error": {"code": 2, "msg": "Invalid request: request must be an object"}}))
            return
        rid = req.get("id")
        method = req.get("method")
        params = req.get("params") or []
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                conn.push(
                    _dumps(
                        {"error": {"code": 2, "msg": "Invalid request: params must be strings"}, "id": rid}
                    )
                )
                return
            for name in params:
                if method == "SUBSCRIBE":
                    if len(conn.streams) < MAX_STREAMS:
                        self._subscribe(conn, name)
                else:
                    self._unsubscribe(conn, name)
            conn.push(_dumps({"result": None, "id": rid}))
        elif method == "LIST_SUBSCRIPTIONS":
            names = list(conn.streams.values())
            if conn.listen_key:
                names.append(conn.listen_key)
            conn.push(_dumps({"result": names, "id": rid}))
        elif method == "SET_PROPERTY":
            if isinstance(params, list) and len(params) == 2 and params[0] == "combined":
                conn.combined = bool(params[1])
            conn.push(_dumps({"result": None, "id": rid}))
        elif method == "GET_PROPERTY":
            conn.push(_dumps({"result": conn.combined, "id": rid}))
        else:
            conn.push(
                _dumps(
                    {"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}, "id": rid}
                )
            )
