"""The paper exchange's HTTP and WebSocket front: Binance USDⓈ-M REST paths around a PaperEngine.

`create_app(config)` returns one ASGI application:
- `/fapi/...` is served by a lean dispatcher (one dict lookup, no per-request logging): rate limits,
  fault injection, authentication, then the engine method, Binance-shaped JSON and headers;
- `/admin/...` (paper key in `X-MBX-APIKEY`) and the lifespan are a small Starlette app;
- `GET /metrics` is the Prometheus text exposition of this app's own registry (metrics.py), no auth;
- every WebSocket goes to the StreamHub (streams.py).

The engine is synchronous and runs on the event loop thread, so requests, the background
`advance()` ticker and stream fan-out are serialized without locks. The ticker also places the
orders the `late_execution` fault held back once their time has come (faults.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.websockets import WebSocket

from exchange.paper import auth
from exchange.paper.auth import API_KEY, NONE, SIGNED, Authenticator
from exchange.paper.config import PaperConfig
from exchange.paper.errors import ApiError
from exchange.paper.faults import LOST_ANSWER_MSG, FaultConfigError, Faults
from exchange.paper.limits import LimitError, RateLimiter
from exchange.paper.metrics import CONTENT_TYPE, OTHER_PATH, PaperMetrics
from exchange.paper.outages import Outage
from exchange.paper.streams import StreamHub

log = logging.getLogger("exchange.paper.server")

try:  # optional speed-up; the stdlib is the fallback
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj, default=_default)
except ImportError:  # pragma: no cover - depends on the environment

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), default=_default).encode()


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


UNKNOWN_ERROR = ApiError(-1000, "An unknown error occured while processing the request.", 500)
_JSON = (b"content-type", b"application/json")
_WEIGHT_HEADER = b"x-mbx-used-weight-1m"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
METRICS_PATH = "/metrics"
ORDER_PATH = "/fapi/v1/order"

Weight = int | Callable[[dict[str, str]], int]


def _symbol_weight(with_symbol: int, without: int) -> Callable[[dict[str, str]], int]:
    return lambda p: with_symbol if p.get("symbol") else without


def _klines_weight(p: dict[str, str]) -> int:
    try:
        limit = int(p.get("limit") or 500)
    except ValueError:
        return 1
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


class _Route:
    __slots__ = ("fn", "places_order", "security", "weight")

    def __init__(
        self, fn: Callable[[dict[str, str]], Any], security: int, weight: Weight, places_order: bool = False
    ) -> None:
        self.fn = fn
        self.security = security
        self.weight = weight
        self.places_order = places_order


def build_routes(engine: Any) -> dict[tuple[str, str], _Route]:
    """(method, path) → route: the engine method, security type and request weight (notes §1)."""
    e = engine
    r: dict[tuple[str, str], _Route] = {}

    def add(
        method: str,
        path: str,
        fn: Callable[[dict[str, str]], Any],
        security: int,
        weight: Weight,
        places_order: bool = False,
    ) -> None:
        r[(method, path)] = _Route(fn, security, weight, places_order)

    # public market data
    add("GET", "/fapi/v1/ping", lambda p: {}, NONE, 1)
    add("GET", "/fapi/v1/time", e.server_time, NONE, 1)
    add("GET", "/fapi/v1/exchangeInfo", e.exchange_info, NONE, 1)
    add("GET", "/fapi/v1/klines", e.klines, NONE, _klines_weight)
    add("GET", "/fapi/v1/premiumIndex", e.premium_index, NONE, _symbol_weight(1, 10))
    add("GET", "/fapi/v1/ticker/price", e.ticker_price, NONE, _symbol_weight(1, 2))
    add("GET", "/fapi/v2/ticker/price", e.ticker_price, NONE, _symbol_weight(1, 2))
    add("GET", "/fapi/v1/ticker/bookTicker", e.book_ticker, NONE, _symbol_weight(2, 5))
    add("GET", "/fapi/v1/ticker/24hr", e.ticker_24hr, NONE, _symbol_weight(1, 40))
    # orders
    add("POST", "/fapi/v1/order", e.new_order, SIGNED, 0, places_order=True)
    add("GET", "/fapi/v1/order", e.query_order, SIGNED, 1)
    add("DELETE", "/fapi/v1/order", e.cancel_order, SIGNED, 1)
    add("GET", "/fapi/v1/openOrders", e.open_orders, SIGNED, _symbol_weight(1, 40))
    add("GET", "/fapi/v1/allOrders", e.all_orders, SIGNED, 5)
    add("POST", "/fapi/v1/algoOrder", e.new_algo_order, SIGNED, 0, places_order=True)
    add("GET", "/fapi/v1/algoOrder", e.query_algo_order, SIGNED, 1)
    add("DELETE", "/fapi/v1/algoOrder", e.cancel_algo_order, SIGNED, 1)
    add("GET", "/fapi/v1/openAlgoOrders", e.open_algo_orders, SIGNED, _symbol_weight(1, 40))
    # account settings
    add("POST", "/fapi/v1/leverage", e.change_leverage, SIGNED, 1)
    add("POST", "/fapi/v1/marginType", e.change_margin_type, SIGNED, 1)
    add("GET", "/fapi/v1/leverageBracket", e.leverage_bracket, SIGNED, 1)
    add("GET", "/fapi/v1/positionSide/dual", e.position_side_dual, SIGNED, 30)
    add("POST", "/fapi/v1/positionSide/dual", e.position_side_dual, SIGNED, 1)
    # account state
    add("GET", "/fapi/v2/positionRisk", lambda p: e.position_risk(p, 2), SIGNED, 5)
    add("GET", "/fapi/v3/positionRisk", lambda p: e.position_risk(p, 3), SIGNED, 5)
    add("GET", "/fapi/v2/account", lambda p: e.account(p, 2), SIGNED, 5)
    add("GET", "/fapi/v3/account", lambda p: e.account(p, 3), SIGNED, 5)
    add("GET", "/fapi/v2/balance", lambda p: e.balance(p, 2), SIGNED, 5)
    add("GET", "/fapi/v3/balance", lambda p: e.balance(p, 3), SIGNED, 5)
    add("GET", "/fapi/v1/userTrades", e.user_trades, SIGNED, 5)
    add("GET", "/fapi/v1/income", e.income, SIGNED, 30)
    # user data stream
    add("POST", "/fapi/v1/listenKey", lambda p: e.new_listen_key(), API_KEY, 1)
    add("PUT", "/fapi/v1/listenKey", e.keepalive_listen_key, API_KEY, 1)
    add("DELETE", "/fapi/v1/listenKey", e.close_listen_key, API_KEY, 1)
    return r


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
        self.admin = Starlette(routes=self._admin_routes(), lifespan=self._lifespan)
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

    # ---- admin -----------------------------------------------------------------------------
    def _admin_ok(self, request: Request) -> Response | None:
        if self.auth.key_matches(request.headers.get("x-mbx-apikey")):
            return None
        return _json_response({"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}, 401)

    def _admin_routes(self) -> list[Route]:
        async def faults(request: Request) -> Response:
            if (denied := self._admin_ok(request)) is not None:
                return denied
            now = self.engine.wall_ms()
            if request.method == "GET":
                return _json_response(self.faults.snapshot(now))
            if request.method == "DELETE":
                return _json_response(self.faults.clear(now))
            try:
                changes = json.loads(await request.body() or b"{}")
                return _json_response(self.faults.update(changes, now))
            except (ValueError, FaultConfigError) as exc:
                return _json_response({"code": -1102, "msg": str(exc)}, 400)

        async def ws_drop(request: Request) -> Response:
            if (denied := self._admin_ok(request)) is not None:
                return denied
            return _json_response({"dropped": self.hub.drop_all()})

        async def expire_keys(request: Request) -> Response:
            if (denied := self._admin_ok(request)) is not None:
                return denied
            return self._engine_call(self.engine.expire_listen_keys)

        async def price(request: Request) -> Response:
            if (denied := self._admin_ok(request)) is not None:
                return denied
            try:
                data = json.loads(await request.body() or b"{}")
                symbol = str(data["symbol"]).upper()
                value = Decimal(str(data["price"]))
                if not value.is_finite() or value <= 0:
                    raise ValueError("price must be positive")
            except (ValueError, KeyError, TypeError, InvalidOperation) as exc:
                return _json_response({"code": -1102, "msg": f"expected {{symbol, price}}: {exc}"}, 400)
            return self._engine_call(lambda: self.engine.set_price(symbol, value))

        async def transfer(request: Request) -> Response:
            if (denied := self._admin_ok(request)) is not None:
                return denied
            try:
                data = json.loads(await request.body() or b"{}")
                amount = Decimal(str(data["amount"]))
            except (ValueError, KeyError, TypeError, InvalidOperation) as exc:
                return _json_response({"code": -1102, "msg": f"expected {{amount}}: {exc}"}, 400)
            return self._engine_call(lambda: self.engine.transfer(amount))

        async def orders(request: Request) -> Response:
            if (denied := self._admin_ok(request)) is not None:
                return denied
            symbol = request.query_params.get("symbol") or None
            return self._engine_call(lambda: self.engine.admin_orders(symbol))

        async def algo_orders(request: Request) -> Response:
            if (denied := self._admin_ok(request)) is not None:
                return denied
            symbol = request.query_params.get("symbol") or None
            return self._engine_call(lambda: self.engine.admin_algo_orders(symbol))

        async def advance(request: Request) -> Response:
            if (denied := self._admin_ok(request)) is not None:
                return denied
            return self._engine_call(self.engine.advance)

        async def status(request: Request) -> Response:
            if (denied := self._admin_ok(request)) is not None:
                return denied
            faults = self.faults.snapshot(self.engine.wall_ms())
            return _json_response({"ws_connections": self.hub.connection_count, "faults": faults})

        return [
            Route("/admin/faults", faults, methods=["GET", "POST", "DELETE"]),
            Route("/admin/ws/drop", ws_drop, methods=["POST"]),
            Route("/admin/listen-keys/expire", expire_keys, methods=["POST"]),
            Route("/admin/price", price, methods=["POST"]),
            Route("/admin/transfer", transfer, methods=["POST"]),
            Route("/admin/orders", orders, methods=["GET"]),
            Route("/admin/algo-orders", algo_orders, methods=["GET"]),
            Route("/admin/advance", advance, methods=["POST"]),
            Route("/admin/status", status, methods=["GET"]),
        ]

    @staticmethod
    def _engine_call(fn: Callable[[], Any]) -> Response:
        try:
            result = fn()
        except ApiError as exc:
            return _json_response(exc.body(), exc.http_status)
        except Exception:
            log.exception("admin call failed")
            return _json_response(UNKNOWN_ERROR.body(), 500)
        return _json_response({} if result is None else result)

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


def _json_response(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json")


def create_app(config: PaperConfig, engine: Any = None, store_path: Path | None = None) -> PaperServer:
    """The paper exchange as one ASGI app; builds the engine from `config` unless one is given."""
    if engine is None:
        from exchange.paper.engine import PaperEngine
        from exchange.paper.prices import build_price_source

        engine = PaperEngine(config, build_price_source(config), store_path)
    return PaperServer(config, engine)
