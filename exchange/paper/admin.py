"""The paper exchange's admin API (`/admin/...`, the paper API key in `X-MBX-APIKEY`): fault
injection, dropping the WebSockets, expiring the listen key, manual prices, transfers, every order and
algo order, a manual `advance()` and the status; a small Starlette app (server.py serves it)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from exchange.paper.errors import ApiError
from exchange.paper.faults import FaultConfigError
from exchange.paper.responses import UNKNOWN_ERROR, _json_response

if TYPE_CHECKING:
    from exchange.paper.server import PaperServer

log = logging.getLogger("exchange.paper.server")


def _admin_ok(server: PaperServer, request: Request) -> Response | None:
    if server.auth.key_matches(request.headers.get("x-mbx-apikey")):
        return None
    return _json_response({"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}, 401)


def admin_routes(server: PaperServer) -> list[Route]:
    """The admin API's routes, served by `server`'s Starlette app."""

    async def faults(request: Request) -> Response:
        if (denied := _admin_ok(server, request)) is not None:
            return denied
        now = server.engine.wall_ms()
        if request.method == "GET":
            return _json_response(server.faults.snapshot(now))
        if request.method == "DELETE":
            return _json_response(server.faults.clear(now))
        try:
            changes = json.loads(await request.body() or b"{}")
            return _json_response(server.faults.update(changes, now))
        except (ValueError, FaultConfigError) as exc:
            return _json_response({"code": -1102, "msg": str(exc)}, 400)

    async def ws_drop(request: Request) -> Response:
        if (denied := _admin_ok(server, request)) is not None:
            return denied
        return _json_response({"dropped": server.hub.drop_all()})

    async def expire_keys(request: Request) -> Response:
        if (denied := _admin_ok(server, request)) is not None:
            return denied
        return _engine_call(server.engine.expire_listen_keys)

    async def price(request: Request) -> Response:
        if (denied := _admin_ok(server, request)) is not None:
            return denied
        try:
            data = json.loads(await request.body() or b"{}")
            symbol = str(data["symbol"]).upper()
            value = Decimal(str(data["price"]))
            if not value.is_finite() or value <= 0:
                raise ValueError("price must be positive")
        except (ValueError, KeyError, TypeError, InvalidOperation) as exc:
            return _json_response({"code": -1102, "msg": f"expected {{symbol, price}}: {exc}"}, 400)
        return _engine_call(lambda: server.engine.set_price(symbol, value))

    async def transfer(request: Request) -> Response:
        if (denied := _admin_ok(server, request)) is not None:
            return denied
        try:
            data = json.loads(await request.body() or b"{}")
            amount = Decimal(str(data["amount"]))
        except (ValueError, KeyError, TypeError, InvalidOperation) as exc:
            return _json_response({"code": -1102, "msg": f"expected {{amount}}: {exc}"}, 400)
        return _engine_call(lambda: server.engine.transfer(amount))

    async def orders(request: Request) -> Response:
        if (denied := _admin_ok(server, request)) is not None:
            return denied
        symbol = request.query_params.get("symbol") or None
        return _engine_call(lambda: server.engine.admin_orders(symbol))

    async def algo_orders(request: Request) -> Response:
        if (denied := _admin_ok(server, request)) is not None:
            return denied
        symbol = request.query_params.get("symbol") or None
        return _engine_call(lambda: server.engine.admin_algo_orders(symbol))

    async def advance(request: Request) -> Response:
        if (denied := _admin_ok(server, request)) is not None:
            return denied
        return _engine_call(server.engine.advance)

    async def status(request: Request) -> Response:
        if (denied := _admin_ok(server, request)) is not None:
            return denied
        faults = server.faults.snapshot(server.engine.wall_ms())
        return _json_response({"ws_connections": server.hub.connection_count, "faults": faults})

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


def _engine_call(fn: Callable[[], Any]) -> Response:
    try:
        result = fn()
    except ApiError as exc:
        return _json_response(exc.body(), exc.http_status)
    except Exception:
        log.exception("admin call failed")
        return _json_response(UNKNOWN_ERROR.body(), 500)
    return _json_response({} if result is None else result)
