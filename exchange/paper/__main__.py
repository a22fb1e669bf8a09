"""`python -m exchange.paper`: run the paper exchange (Binance USDⓈ-M compatible) on one port.

The paper account's key pair comes from BINANCE_API_KEY / BINANCE_API_SECRET, the same variables
the trading client reads. SIGTERM or Ctrl-C shuts down gracefully (state is saved by the engine).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from decimal import Decimal, InvalidOperation
from pathlib import Path

from trading.paths import SHIPPED_DATA_DIR

DEFAULT_DATA_DIR = SHIPPED_DATA_DIR  # the repository's `data/`; QT_DATA_DIR points elsewhere


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    env_data = os.environ.get("QT_DATA_DIR")
    data = Path(env_data) if env_data else DEFAULT_DATA_DIR
    default_data = data if data.is_dir() else None
    qt_home = Path(os.environ.get("QT_HOME", ".qt"))
    p = argparse.ArgumentParser(
        prog="python -m exchange.paper",
        description="Binance USD-M compatible paper exchange (REST + WebSocket). "
        "Keys: BINANCE_API_KEY / BINANCE_API_SECRET.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument(
        "--state",
        default=str(qt_home / "paper" / "state.sqlite"),
        help="SQLite file keeping orders and positions across restarts "
        "(':memory:' keeps nothing; default: $QT_HOME/paper/state.sqlite)",
    )
    p.add_argument(
        "--prices",
        choices=["manual", "replay", "synthetic"],
        default="replay" if default_data else "synthetic",
        help="price source (default: replay when the data folder exists, else synthetic)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=default_data,
        help=f"folder of kline files (default: $QT_DATA_DIR, else {DEFAULT_DATA_DIR}; when present)",
    )
    p.add_argument("--speed", type=float, default=1.0, help="market clock speed vs wall time")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--slippage-bps", type=_decimal, default=Decimal("0"))
    p.add_argument("--funding-rate", type=_decimal, default=Decimal("0.0001"))
    p.add_argument("--start-balance", type=_decimal, default=Decimal("10000"))
    p.add_argument(
        "--symbols",
        default=None,
        help="comma-separated symbols to list, e.g. BTCUSDT,PEPEUSDT (default: the ten built-in ones). "
        "Each needs a kline file binance-futures-<SYMBOL>-<tf>.csv.gz in the data folder (under "
        "manual or synthetic prices the built-in ones do not); one without built-in filters gets "
        "filters scaled to its prices",
    )
    p.add_argument(
        "--extra-symbols",
        type=int,
        default=0,
        metavar="N",
        help="also list N synthetic perpetuals T001USDT..TNNNUSDT for load tests (generic "
        "filters, start price 100.00; constant under --prices replay; 0..9999, T1000USDT on)",
    )
    p.add_argument("--tick-ms", type=int, default=100, help="engine tick interval in ms")
    p.add_argument("--weight-limit", type=int, default=2400, help="request weight per minute per IP")
    p.add_argument("--order-limit-10s", type=int, default=300)
    p.add_argument("--order-limit-1m", type=int, default=1200)
    return p


def run(argv: list[str] | None = None) -> int:
    """Parse flags, build the engine and serve until SIGTERM / Ctrl-C. Returns the exit status."""
    args = build_parser().parse_args(argv)
    api_key = os.environ.get("BINANCE_API_KEY", "")
    api_secret = os.environ.get("BINANCE_API_SECRET", "")
    for name, value in (("BINANCE_API_KEY", api_key), ("BINANCE_API_SECRET", api_secret)):
        if not value:
            print(
                f"paper exchange: environment variable {name} is not set; it holds the paper "
                "account's API key pair (any non-empty value, the client must use the same).",
                file=sys.stderr,
            )
            return 2

    import uvicorn
    from pydantic import ValidationError

    from exchange.paper.config import PaperConfig
    from exchange.paper.prices import SymbolChoiceError
    from exchange.paper.server import create_app

    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()] if args.symbols else None
    try:
        config = PaperConfig(
            api_key=api_key,
            api_secret=api_secret,
            prices=args.prices,
            data_dir=args.data_dir,
            symbols=symbols,
            extra_symbols=args.extra_symbols,
            speed=args.speed,
            seed=args.seed,
            slippage_bps=args.slippage_bps,
            funding_rate=args.funding_rate,
            start_balance=args.start_balance,
            tick_interval_ms=args.tick_ms,
            weight_limit_1m=args.weight_limit,
            order_limit_10s=args.order_limit_10s,
            order_limit_1m=args.order_limit_1m,
        )
    except ValidationError as exc:
        print(f"paper exchange: bad setting: {exc}", file=sys.stderr)
        return 2
    state = None if args.state in ("", ":memory:") else Path(args.state)
    if state is not None:
        state.parent.mkdir(parents=True, exist_ok=True)
    try:
        app = create_app(config, store_path=state)
    except SymbolChoiceError as exc:
        print(f"paper exchange: {exc}", file=sys.stderr)
        return 2

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:  # signal handler, main thread
            super().handle_exit(sig, frame)  # type: ignore[arg-type]
            loop = getattr(self, "_qt_loop", None)
            if loop is not None:
                loop.call_soon_threadsafe(app.begin_shutdown)

    server = _Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level="warning",
            lifespan="on",
            access_log=False,
            ws_ping_interval=180.0,
            ws_ping_timeout=600.0,
            timeout_graceful_shutdown=5,
        )
    )

    async def serve() -> None:
        server._qt_loop = asyncio.get_running_loop()  # type: ignore[attr-defined]
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn exposes a flag only
            await asyncio.sleep(0.01)
        if server.started:
            print(f"paper exchange listening on http://{args.host}:{args.port}", flush=True)
        await task

    if threading.current_thread() is threading.main_thread():
        # uvicorn re-raises the signal it caught after a graceful stop: make that a no-op so
        # run() returns normally instead of dying by SIGTERM's default action.
        signal.signal(signal.SIGTERM, lambda sig, frame: None)
    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0 if server.started else 1


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
