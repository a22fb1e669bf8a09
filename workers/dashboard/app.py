"""The dashboard's web app (Starlette): the page, its JSON, the live stream, the controls, `/metrics`.

Routes:
- `GET /`: the page; `GET /static/...`: its script and style (shipped in the package; the page loads
  nothing from any other origin, and its Content-Security-Policy forbids it);
- `GET /api/state`: the current view as one JSON object;
- `GET /api/stream`: the same view as Server-Sent Events (`event: snapshot`), one per interval;
- `GET /api/auth`: 204 when the request carries the dashboard's token (the page checks a token here);
- `POST /api/kill-switch` `{"on": true, "reason": "..."}` and `POST /api/flatten` `{"reason": "..."}`:
  the portfolio workflow's validated updates; they need `Authorization: Bearer <DASHBOARD_TOKEN>`.
  Without a configured token they answer 403 (the dashboard is read-only), with a missing or wrong one
  401; a bad body 400 naming the field; a refusal by the workflow 409; Temporal unreachable 503;
- `GET /metrics`: Prometheus text exposition of this app's own registry.

The token is compared in constant time and never logged, echoed or put in a metric label.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workers.dashboard.gather import TemporalUnavailable
from workers.dashboard.hub import SnapshotHub, Source
from workers.trade_cli import CliError, UpdateRefused, describe_errors
from workflows.messages import FlattenRequest, KillSwitchRequest

log = logging.getLogger("qtrader.dashboard")

STATIC_DIR = Path(__file__).resolve().parent / "static"
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class Controls(Protocol):
    async def kill_switch(self, req: KillSwitchRequest) -> dict[str, Any]: ...
    async def flatten(self, req: FlattenRequest) -> dict[str, Any]: ...


class DashboardMetrics:
    """The dashboard's own registry (never the process-global one: tests run several apps)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.clients = Gauge("dashboard_stream_clients", "Browsers following the live stream", registry=r)
        self.builds = Counter(
            "dashboard_view_builds",
            "Views of the system built (outcome ok or error)",
            ["outcome"],
            registry=r,
        )
        self.build_seconds = Histogram(
            "dashboard_view_build_seconds",
            "Time to read the system for one view (Temporal queries, Redis, journal)",
            registry=r,
        )
        self.controls = Counter(
            "dashboard_control_requests",
            "Kill switch and flatten requests by outcome (ok, forbidden, unauthorized, bad_request, "
            "refused, unavailable, error)",
            ["action", "outcome"],
            registry=r,
        )

    def built(self, seconds: float, ok: bool) -> None:
        self.build_seconds.observe(seconds)
        self.builds.labels("ok" if ok else "error").inc()


class _SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP response (the page, its files, the API)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def create_app(
    source: Source,
    controls: Controls,
    token: str | None,
    *,
    interval: float = 1.0,
    metrics: DashboardMetrics | None = None,
    on_close: Callable[[], Awaitable[None]] | None = None,
) -> Starlette:
    """`source` builds one view (a JSON-able dict); `controls` runs the portfolio updates; `token`:
    the DASHBOARD_TOKEN (None: read-only). `app.state.hub` is the hub (close it to end every stream)."""
    metrics = metrics or DashboardMetrics()
    hub = SnapshotHub(source, interval, on_build=metrics.built, on_subscribers=metrics.clients.set)
    expected = token.encode() if token else None

    def authorize(request: Request, action: str) -> JSONResponse | None:
        if expected is None:
            metrics.controls.labels(action, "forbidden").inc()
            return _error(403, "the dashboard is read-only: DASHBOARD_TOKEN is not set on its server")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            metrics.controls.labels(action, "unauthorized").inc()
            return _error(
                401, "missing token: send Authorization: Bearer <token>", **{"WWW-Authenticate": "Bearer"}
            )
        if not hmac.compare_digest(given.strip().encode(), expected):
            metrics.controls.labels(action, "unauthorized").inc()
            log.warning(
                "%s refused: wrong token from %s", action, request.client.host if request.client else "?"
            )
            return _error(401, "invalid token", **{"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return None

    async def parse(request: Request, model: type[BaseModel], action: str) -> BaseModel | JSONResponse:
        try:
            raw = await request.json()
        except ValueError:
            metrics.controls.labels(action, "bad_request").inc()
            return _error(400, "body: not a JSON object")
        if not isinstance(raw, dict):
            metrics.controls.labels(action, "bad_request").inc()
            return _error(400, f"body: expected a JSON object, not {type(raw).__name__}")
        try:
            return model.model_validate(raw)
        except ValidationError as err:
            metrics.controls.labels(action, "bad_request").inc()
            return _error(400, describe_errors(err))

    async def control(
        request: Request, action: str, model: type[BaseModel], run: Callable[[Any], Awaitable[dict[str, Any]]]
    ) -> Response:
        refused = authorize(request, action)
        if refused is not None:
            return refused
        req = await parse(request, model, action)
        if isinstance(req, JSONResponse):
            return req
        who = request.client.host if request.client else "?"
        log.warning("%s requested from the dashboard (%s): %s", action, who, req.model_dump(mode="json"))
        try:
            result = await run(req)
        except UpdateRefused as err:
            metrics.controls.labels(action, "refused").inc()
            return _error(409, str(err))
        except TemporalUnavailable as err:
            metrics.controls.labels(action, "unavailable").inc()
            return _error(503, str(err))
        except CliError as err:
            metrics.controls.labels(action, "error").inc()
            return _error(502, str(err))
        metrics.controls.labels(action, "ok").inc()
        await hub.refresh()  # every watcher sees the change now, not at the next interval
        return JSONResponse(result)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def state(request: Request) -> Response:
        return Response(
            await hub.latest(), media_type="application/json", headers={"Cache-Control": "no-store"}
        )

    async def stream(request: Request) -> Response:
        async def events() -> AsyncIterator[str]:
            yield "retry: 2000\n\n"  # the browser reconnects 2 s after a dropped stream
            async for data in hub.subscribe():
                yield f"event: snapshot\ndata: {data}\n\n"

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def auth(request: Request) -> Response:
        refused = authorize(request, "auth")
        return refused if refused is not None else Response(status_code=204)

    async def kill_switch(request: Request) -> Response:
        return await control(request, "kill_switch", KillSwitchRequest, controls.kill_switch)

    async def flatten(request: Request) -> Response:
        return await control(request, "flatten", FlattenRequest, controls.flatten)

    async def metrics_page(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await hub.close()
            if on_close is not None:
                await on_close()

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/api/state", state),
            Route("/api/stream", stream),
            Route("/api/auth", auth),
            Route("/api/kill-switch", kill_switch, methods=["POST"]),
            Route("/api/flatten", flatten, methods=["POST"]),
            Route("/metrics", metrics_page),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        lifespan=lifespan,
    )
    app.state.hub = hub
    app.state.metrics = metrics
    app.add_middleware(_SecurityHeaders)
    return app
