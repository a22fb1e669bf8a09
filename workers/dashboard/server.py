"""`qtrader dashboard`: serve the web dashboard (uvicorn) until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
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
    from workers.service import run_uvicorn, setup_logging

    port = args.port or settings.dashboard_port
    if not 0 < port < 65536:
        print(f"qtrader dashboard: --port {port} is not a TCP port", file=sys.stderr)
        return 2
    if args.interval <= 0:
        print(f"qtrader dashboard: --interval {args.interval:g} must be positive", file=sys.stderr)
        return 2
    setup_logging()
    token = settings.dashboard_token.get_secret_value() if settings.dashboard_token else None

    def make_server() -> uvicorn.Server:
        view = SystemView(settings, args.portfolio_id)
        app = create_app(view, PortfolioControls(view), token, interval=args.interval, on_close=view.close)
        loop = asyncio.get_running_loop()

        class _Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: object) -> None:  # signal handler, main thread
                super().handle_exit(sig, frame)  # type: ignore[arg-type]
                # Open live streams would hold the graceful shutdown until its timeout: end them now.
                loop.call_soon_threadsafe(lambda: asyncio.ensure_future(app.state.hub.close()))

        return _Server(
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

    mode = "controls enabled (DASHBOARD_TOKEN set)" if token else "read-only (no DASHBOARD_TOKEN)"
    run_uvicorn(make_server, f"dashboard listening on http://{args.host}:{port} — {mode}")
    return 0
