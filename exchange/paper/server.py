"""The paper exchange's HTTP and WebSocket front: Binance USDⓈ-M REST paths around a PaperEngine.

`create_app(config)` returns one ASGI application:
- `/fapi/...` is served by a lean dispatcher (one dict lookup, no per-request logging): rate limits,
  fault injection, authentication, then the engine method (the route table is routes.py),
  Binance-shaped JSON and headers;
- `/admin/...` (paper key in `X-MBX-APIKEY`, admin.py) and the lifespan are a small Starlette app;
- `GET /metrics` is the Prometheus text exposition of this app's own registry (metrics.py), no auth;
- every WebSocket goes to the StreamHub (streams.py).

The engine is synchronous and runs on the event loop thread, so requests, the background
`advance()` ticker and stream fan-out are serialized without locks. The ticker also places the
orders the `late_execution` fault held back once their time has come (faults.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Route
from starlette.websockets import WebSocket

from exchange.paper import auth
from exchange.paper.admin import admin_routes
from exchange.paper.auth import SIGNED, Authenticator
from exchange.paper.config import PaperConfig
from exchange.paper.errors import ApiError
from exchange.paper.faults import LOST_ANSWER_MSG, Faults
from exchange.paper.limits import LimitError, RateLimiter
from exchange.paper.metrics import CONTENT_TYPE, OTHER_PATH, PaperMetrics
from exchange.paper.outages import Outage
from exchange.paper.responses import UNKNOWN_ERROR, dumps
from exchange.paper.routes import build_routes
from exchange.paper.streams import StreamHub

log = logging.getLogger("exchange.paper.server")

_JSON = (b"content-type", b"application/json")
_WEIGHT_HEADER = b"x-mbx-used-weight-1m"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
METRICS_PATH = "/metrics"
ORDER_PATH = "/fapi/v1/order"


async def _read_body(receive: Callable[[], Any]) -> bytes:
    chunks: list[bytes] = []
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            return b""
        chunk = msg.get("body", b"")
        if chunk:
            chunks.append(chunk)
        if not msg.get("more_body", False):
            break
    if not chunks:
        return b""
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class PaperServer:
    """ASGI application of one paper exchange (see module docstring)."""

    def __init__(self, config: PaperConfig, engine: Any) -> None:
        self.config = config
        self.engine = engine
        self.auth = Authenticator(config.api_key, config.api_secret)
        self.limits = RateLimiter(config.weight_limit_1m, config.order_limit_10s, config.order_limit_1m)
        self.faults = Faults()
        self.hub = StreamHub(engine.listen_key_valid)
        self.routes = build_routes(engine)
        self.routes[("POST", ORDER_PATH)].fn = self._new_order
        self.shutting_down = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False
        engine.add_listener(self.hub.on_event)
        self.metrics = PaperMetrics(engine, self.hub)
        self.admin = Starlette(routes=admin_routes(self), lifespan=self._lifespan)
        self._admin_paths = frozenset(r.path for r in self.admin.routes if isinstance(r, Route))

    # ---- ASGI entry ------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path.startswith("/admin/") or path == METRICS_PATH:
                await self._other(scope, receive, send)
            else:
                await self._fapi(scope, receive, send)
        elif kind == "websocket":
            await self.hub.serve(WebSocket(scope, receive, send))
        else:  # lifespan
            await self.admin(scope, receive, send)

    # ---- REST -----------------------------------------------------------------------------
    async def _other(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """`/admin/...` and `/metrics`, timed and counted like the REST paths."""
        started = time.perf_counter()
        method = scope["method"]
        path = scope["path"]
        status = 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if path == METRICS_PATH:
                if method in ("GET", "HEAD"):
                    body = self.metrics.render()
                    ctype = CONTENT_TYPE.encode()
                    status = 200
                else:
                    body, ctype, status = b"Method Not Allowed", b"text/plain", 405
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
                    }
                )
                await send({"type": "http.response.body", "body": body if method != "HEAD" else b""})
            else:
                await self.admin(scope, receive, send_status)
        finally:
            self.metrics.request(
                method if method in _METHODS else "OTHER",
                path if path == METRICS_PATH or path in self._admin_paths else OTHER_PATH,
                status,
                time.perf_counter() - started,
            )

    async def _fapi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = time.perf_counter()
        method = scope["method"]
        path = scope["path"]
        client = scope.get("client")
        ip = client[0] if client else "127.0.0.1"
        route = self.routes.get((method, path))
        engine = self.engine
        now = engine.wall_ms()
        headers: list[tuple[bytes, bytes]] = [_JSON]
        status = 200
        lost = None
        metrics = self.metrics
        rejected = 0  # the Binance code of an error answer the venue chose (not an injected fault)
        injected = False
        faults = self.faults
        try:
            # An open outage window or an injected ban refuses the request before anything else:
            # a venue that is down or has banned the IP must execute nothing, whatever was asked.
            if faults.armed and (block := faults.gate(path, ip, now)) is not None:
                metrics.fault(block.kind)
                if block.drop:
                    if block.outage is not None and block.outage.mode == "hang":
                        await self._hold(block.outage)
                    await _drop_connection(send)
                    return
                if block.retry_after_s:
                    headers.append((b"retry-after", str(block.retry_after_s).encode()))
                injected = True
                raise ApiError(block.code, block.msg, block.status)
            if route is None:
                try:
                    self.limits.charge(ip, 1, now)
                finally:
                    headers.append((_WEIGHT_HEADER, str(self.limits.used_weight(ip, now)).encode()))
                raise ApiError(-5000, f"Path {path}, Method {method} is invalid", 404)
            query: bytes = scope.get("query_string", b"")
            body = await _read_body(receive) if method != "GET" else b""
            params = auth.merge_params(query, body) if (query or body) else {}
            weight = route.weight if isinstance(route.weight, int) else route.weight(params)
            try:
                self.limits.charge(ip, weight, now)
            finally:
                headers.append((_WEIGHT_HEADER, str(self.limits.used_weight(ip, now)).encode()))
            if faults.active:
                decision = faults.decide(path, route.places_order and method == "POST", now, ip)
                if decision is not None:
                    metrics.fault(decision.kind or "latency")
                    if decision.latency_s:
                        await asyncio.sleep(decision.latency_s)
                    if decision.kind == "lost":
                        lost = decision
                    elif decision.kind is not None:
                        if decision.retry_after_s:
                            headers.append((b"retry-after", str(decision.retry_after_s).encode()))
                        injected = True
                        raise ApiError(decision.code, decision.msg, decision.status)
            security = route.security
            if security:
                key = None
                for name, value in scope["headers"]:
                    if name == b"x-mbx-apikey":
                        key = value
                        break
                if security == SIGNED:
                    self.auth.check_signed(key, query, body, params, now)
                else:
                    self.auth.check_key(key)
            if route.places_order:
                try:
                    c10, c60 = self.limits.charge_order(now)
                except LimitError:
                    c10, c60 = self.limits.order_counts(now)
                    raise
                finally:
                    headers.append((b"x-mbx-order-count-10s", str(c10).encode()))
                    headers.append((b"x-mbx-order-count-1m", str(c60).encode()))
                if (
                    lost is None
                    and faults.late.config is not None
                    and path == ORDER_PATH
                    and method == "POST"
                    and (held := faults.hold_back(params, now)) is not None
                ):
                    # Received, not executed: the ticker places it later (`_run_late_orders`).
                    metrics.fault("late_execution")
                    answer, hang_s = held
                    if answer == "timeout":
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self.shutting_down.wait(), hang_s)
                        await _drop_connection(send)
                        return
                    injected = True
                    raise ApiError(-1000, LOST_ANSWER_MSG, 503)
            result = route.fn(params)
            if route.places_order:
                metrics.order(params.get("symbol", ""), params.get("type", ""), params.get("side", ""))
            payload = dumps(result)
        except LimitError as exc:
            status = exc.http_status
            headers.append((b"retry-after", str(exc.retry_after_s).encode()))
            payload = dumps(exc.body())
            rejected = exc.code
        except ApiError as exc:
            status = exc.http_status
            payload = dumps(exc.body())
            if not injected:
                rejected = exc.code
        except Exception:
            log.exception("unexpected error on %s %s", method, path)
            status = 500
            payload = dumps(UNKNOWN_ERROR.body())
            rejected = UNKNOWN_ERROR.code
        if lost is not None:
            if lost.lost_mode == "timeout":
                # The order happened; hold the answer until the client has given up.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.shutting_down.wait(), lost.hang_s)
            else:
                status = 503
                payload = dumps({"code": lost.code, "msg": lost.msg})
                rejected = 0  # the answer is the injected one
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        if rejected:
            metrics.rejection(rejected)
        metrics.request(
            method if method in _METHODS else "OTHER",
            path if route is not None else OTHER_PATH,
            status,
            time.perf_counter() - started,
        )

    def _new_order(self, params: dict[str, str]) -> Any:
        """POST /fapi/v1/order: the engine's, but a MARKET order fills in parts while the
        `partial_fills` fault is armed (counted only when the order is accepted)."""
        split = self.faults.partial
        if split is None or params.get("type") != "MARKET":
            return self.engine.new_order(params)
        result = self.engine.new_order(params, pieces=split.pieces, interval_ms=split.interval_ms)
        self.faults.take_split()
        self.metrics.fault("partial_fills")
        return result

    async def _hold(self, outage: Outage) -> None:
        """Keep a request unanswered while its "hang" outage window is open (or until shutdown)."""
        while not self.shutting_down.is_set():
            left_ms = outage.end_ms - self.engine.wall_ms()
            if left_ms <= 0 or not self.faults.outages.is_open(outage, self.engine.wall_ms()):
                return
            # Short waits: a DELETE /admin/faults releases the held requests within a quarter second.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.shutting_down.wait(), min(left_ms / 1000, 0.25))

    def _run_late_orders(self) -> None:
        """Place the orders the `late_execution` fault held back whose time has come, exactly as if
        they had just been received; a refusal now (duplicate open clientOrderId, nothing left to
        reduce, margin) has no one to answer to and is only counted and logged."""
        for params in self.faults.late.due(self.engine.wall_ms()):
            try:
                self._new_order(params)
            except ApiError as exc:
                self.metrics.rejection(exc.code)
                log.info("late order %s refused: %s", params.get("newClientOrderId", ""), exc.msg)
            except Exception:
                log.exception("late order %s failed", params.get("newClientOrderId", ""))
            else:
                self.metrics.order(params.get("symbol", ""), params.get("type", ""), params.get("side", ""))

    # ---- lifecycle -------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.hub.bind_loop()
        self._ticker = asyncio.create_task(self._tick_loop(), name="paper-engine-ticker")
        try:
            yield
        finally:
            await self.aclose()

    async def _tick_loop(self) -> None:
        interval = self.config.tick_interval_ms / 1000.0
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += interval
            if self.faults.late.pending:
                self._run_late_orders()
            try:
                self.engine.advance()
            except Exception:
                log.exception("engine.advance failed")
            delay = next_at - loop.time()
            if delay < 0:  # fell behind: do not try to catch up with a burst
                next_at = loop.time()
                delay = 0
            await asyncio.sleep(delay)

    def begin_shutdown(self) -> None:
        """Release held answers and close sockets (called on SIGTERM, before connections drain)."""
        self.shutting_down.set()
        self.hub.drop_all(1001, "server shutting down")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.begin_shutdown()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        try:
            self.engine.close()
        except Exception:
            log.exception("engine.close failed")


async def _drop_connection(send: Any) -> None:
    """Close the client's connection without an HTTP answer (refused and hung requests).

    ASGI has no message for this, so the server's own transport is closed: uvicorn's `send` is a
    method of the request cycle that holds it. SO_LINGER 0 makes the close a reset, so the client
    sees a connection error at once rather than an orderly end of stream. Under another ASGI server
    (or in-process transports) the request fails with an exception instead."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise ConnectionAbortedError("connection dropped by the paper exchange's fault injector")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError, ValueError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # Let the server see the connection gone before this app returns: it must not try to send its
    # own "500 Internal Server Error" on the closed transport.
    for _ in range(3):
        await asyncio.sleep(0)


def create_app(config: PaperConfig, engine: Any = None, store_path: Path | None = None) -> PaperServer:
    """The paper exchange as one ASGI app; builds the engine from `config` unless one is given."""
    if engine is None:
        from exchange.paper.engine import PaperEngine
        from exchange.paper.prices import build_price_source

        engine = PaperEngine(config, build_price_source(config), store_path)
    return PaperServer(config, engine)
