"""`qtrader dashboard`: serve the web dashboard (uvicorn) until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
from typing import Any

from trading.config import Settings
from workflows.messages import DEFAULT_PORTFOLIO_ID

log = logging.getLogger("qtrader.dashboard")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "dashboard",
        help="the web dashboard: positions, trades, equity, decisions, reconcile, kill switch and flatten",
        description="Serves the web dashboard. Read-only unless DASHBOARD_TOKEN is set; the page then "
        "asks for the token before it enables the kill switch and flatten-all.",
    )
    p.add_argument("--port", type=int, default=None, help="default: DASHBOARD_PORT (8080)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default loopback; 0.0.0.0 in a container)",
    )
    p.add_argument("--interval", type=float, default=1.0, help="seconds between live updates (default 1)")
    p.add_argument("--portfolio-id", default=DEFAULT_PORTFOLIO_ID)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from workers.dashboard.app import create_app
    from workers.dashboard.gather import PortfolioControls, SystemView

    port = args.port or settings.dashboard_port
    if not 0 < port < 65536:
        print(f"qtrader dashboard: --port {port} is not a TCP port", file=sys.stderr)
        return 2
    if args.interval <= 0:
        print(f"qtrader dashboard: --interval {args.interval:g} must be positive", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token = settings.dashboard_token.get_secret_value() if settings.dashboard_token else None

    async def serve() -> None:
        view = SystemView(settings, args.portfolio_id)
        app = create_app(view, PortfolioControls(view), token, interval=args.interval, on_close=view.close)
        loop = asyncio.get_running_loop()

        class _Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: object) -> None:  # signal handler, main thread
                super().handle_exit(sig, frame)  # type: ignore[arg-type]
                # Open live streams would hold the graceful shutdown until its timeout: end them now.
                loop.call_soon_threadsafe(lambda: asyncio.ensure_future(app.state.hub.close()))

        server = _Server(
            uvicorn.Config(
                app,
                host=args.host,
                port=port,
                log_level="warning",
                lifespan="on",
                access_log=False,
                timeout_graceful_shutdown=5,
            )
        )
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn exposes a flag only
            await asyncio.sleep(0.01)
        if server.started:
            mode = "controls enabled (DASHBOARD_TOKEN set)" if token else "read-only (no DASHBOARD_TOKEN)"
            print(f"dashboard listening on http://{args.host}:{port} — {mode}", flush=True)
        await task

    if threading.current_thread() is threading.main_thread():
        # uvicorn re-raises the signal it caught after a graceful stop: make that a no-op so run()
        # returns normally instead of dying by SIGTERM's default action.
        signal.signal(signal.SIGTERM, lambda sig, frame: None)
    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0
