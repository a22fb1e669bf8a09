"""`qtrader`: the one command-line entry point."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from trading.config import ConfigError, Settings, load_settings


def _cmd_stack_up(args: argparse.Namespace, settings: Settings) -> int:
    from workers import stack

    found = stack.up(
        settings, prices=args.prices, speed=args.speed, timeout=args.timeout, symbols=args.symbols
    )
    stack.print_addresses(found)
    return 0


def _cmd_stack_down(args: argparse.Namespace, settings: Settings) -> int:
    from workers import stack

    stopped = stack.down(settings)
    print("stack is down" if stopped else "nothing of the stack was running")
    return 0


def _cmd_stack_status(args: argparse.Namespace, settings: Settings) -> int:
    from workers import stack

    report = stack.status(settings)
    if args.json:
        print(json.dumps(report))
    else:
        stack.print_addresses({k: v for k, v in report.items() if isinstance(v, str)})
        for name, info in report["services"].items():  # type: ignore[union-attr]
            state = f"running (pid {info['pid']})" if info["running"] else "stopped"
            print(f"  {name:<9} {state}")
    running = [s["running"] for s in report["services"].values()]  # type: ignore[union-attr]
    return 0 if all(running) else 3


def _cmd_exchange_serve(args: argparse.Namespace, settings: Settings) -> int:
    from exchange.paper.__main__ import run

    argv = ["--host", args.host, "--port", str(args.port or settings.paper_exchange_port), *args.rest]
    return run(argv)


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from workers.service import run_until_stopped_then_exit, setup_logging

    setup_logging()
    if args.kind == "lifecycle":
        from workers import lifecycle

        run_until_stopped_then_exit(lifecycle.run(settings, args.metrics_port))
    elif args.kind == "inference":
        from workers import inference_worker

        run_until_stopped_then_exit(inference_worker.run(settings, args.metrics_port))
    else:
        from workers import exchange_worker

        run_until_stopped_then_exit(exchange_worker.run(settings, args.metrics_port))


def _cmd_watcher(args: argparse.Namespace, settings: Settings) -> int:
    from feeds.price_watcher import run_watcher
    from workers.service import run_until_stopped_then_exit, setup_logging

    setup_logging()
    run_until_stopped_then_exit(run_watcher(settings, args.metrics_port))


def _cmd_user_stream(args: argparse.Namespace, settings: Settings) -> int:
    from feeds.user_stream import run_user_stream
    from workers.service import run_until_stopped_then_exit, setup_logging

    setup_logging()
    run_until_stopped_then_exit(run_user_stream(settings, args.metrics_port))


def _cmd_market_data(args: argparse.Namespace, settings: Settings) -> int:
    from feeds.market_data import MarketDataError, run_market_data
    from workers.service import setup_logging

    setup_logging()
    try:
        asyncio.run(run_market_data(settings, args.metrics_port))
    except MarketDataError as exc:
        print(f"qtrader market-data: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_alerts(args: argparse.Namespace, settings: Settings) -> int:
    from alerts.service import AlertsConfigError, run_alerts, send_test
    from workers.service import setup_logging

    setup_logging()
    try:
        if args.test:
            outcomes = asyncio.run(send_test(settings))
            for name, outcome in outcomes.items():
                state = (
                    "delivered" if outcome and outcome.ok else f"FAILED ({outcome.error if outcome else '?'})"
                )
                print(f"{name:<10} {state}")
            return 0 if all(o and o.ok for o in outcomes.values()) else 1
        port = settings.alerts_metrics_port if args.metrics_port is None else args.metrics_port
        asyncio.run(run_alerts(settings, port))
    except AlertsConfigError as exc:
        print(f"qtrader alerts: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from workers import status_view

    return status_view.run(args, settings)


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from workers import demo, stack

    if not args.no_stack:
        stack.print_addresses(stack.up(settings, timeout=args.timeout))
    return asyncio.run(demo.paper_round_trip(settings, symbol=args.symbol, notional=args.notional))


def _cmd_trade(args: argparse.Namespace, settings: Settings) -> int:
    from workers import trade_cli

    return trade_cli.run_trade(args, settings)


def _cmd_portfolio(args: argparse.Namespace, settings: Settings) -> int:
    from workers import trade_cli

    return trade_cli.run_portfolio(args, settings)


def _symbol_list(text: str) -> list[str]:
    symbols = [part.strip().upper() for part in text.split(",") if part.strip()]
    if not symbols:
        raise argparse.ArgumentTypeError("expected symbols like BTCUSDT,ETHUSDT")
    return symbols


def _cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    if args.table:
        from workers.settings_table import render

        sys.stdout.write(render())
        return 0
    shown = settings.model_dump(mode="json", exclude={"binance_api_key", "binance_api_secret"})
    shown["binance_api_key"] = "set" if settings.binance_api_key else "not set"
    shown["binance_api_secret"] = "set" if settings.binance_api_secret else "not set"
    print(json.dumps(shown, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qtrader", description="Quantum Trader on Temporal")
    sub = parser.add_subparsers(dest="command", required=True)

    stack_p = sub.add_parser("stack", help="the local stack: Temporal dev server, Redis, paper exchange")
    stack_sub = stack_p.add_subparsers(dest="stack_command", required=True)
    up = stack_sub.add_parser(
        "up",
        help="start what is missing of the local stack and wait until every part answers",
        description="Start the local stack (Temporal dev server, Redis, paper exchange, the workers and "
        "services) under QT_HOME and wait until every part answers. Only what is missing is started: a "
        "service an earlier `stack up` started that is still running is left alone (`already running`), "
        "with the flags and settings it was started with; run `qtrader stack down` first to apply new "
        "ones. A port held by another program is an error naming its setting.",
    )
    up.add_argument(
        "--prices",
        choices=["replay", "synthetic", "manual"],
        default="replay",
        help="paper exchange price source (default: replay of the shipped real klines)",
    )
    up.add_argument("--speed", type=float, default=1.0, help="market clock speed of the replay")
    up.add_argument(
        "--symbols",
        type=_symbol_list,
        default=None,
        metavar="SYM,SYM",
        help="symbols the paper exchange lists, each with klines binance-futures-<SYMBOL>-<tf>.csv.gz in "
        "QT_DATA_DIR; BTCUSDT, the signal layer's context symbol, is added (default: PAPER_SYMBOLS, "
        "else the ten built-in symbols with data there)",
    )
    up.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for each service")
    up.set_defaults(func=_cmd_stack_up)
    stack_sub.add_parser("down", help="stop exactly the processes `stack up` started").set_defaults(
        func=_cmd_stack_down
    )
    st = stack_sub.add_parser("status", help="addresses and liveness of the stack")
    st.add_argument("--json", action="store_true", help="print one JSON object")
    st.set_defaults(func=_cmd_stack_status)

    ex = sub.add_parser("exchange", help="the paper exchange")
    ex_sub = ex.add_subparsers(dest="exchange_command", required=True)
    serve = ex_sub.add_parser(
        "serve",
        help="run the Binance-compatible paper exchange in the foreground",
        epilog="Further options of `python -m exchange.paper --help` (--prices, --state, --speed, ...) are "
        "passed through.",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="default: PAPER_EXCHANGE_PORT (8765)")
    serve.set_defaults(func=_cmd_exchange_serve, rest=[])

    worker = sub.add_parser(
        "worker", help="run a Temporal worker in the foreground (SIGTERM stops it gracefully)"
    )
    worker.add_argument(
        "kind",
        choices=["lifecycle", "exchange", "inference"],
        help="lifecycle: position + portfolio workflows; exchange: Binance activities; "
        "inference: bar-close + universe workflows, model activities",
    )
    worker.add_argument("--metrics-port", type=int, default=None, help="Prometheus endpoint port")
    worker.set_defaults(func=_cmd_worker)

    watcher = sub.add_parser(
        "watcher", help="the price watcher: venue ticks → exit triggers for open positions"
    )
    watcher.add_argument("--metrics-port", type=int, default=None, help="Prometheus endpoint port")
    watcher.set_defaults(func=_cmd_watcher)

    user_stream = sub.add_parser(
        "user-stream",
        help="the user-data stream: the venue's fills and position changes → position workflows",
    )
    user_stream.add_argument("--metrics-port", type=int, default=None, help="Prometheus endpoint port")
    user_stream.set_defaults(func=_cmd_user_stream)

    market = sub.add_parser(
        "market-data",
        help="closed bars, ticks and features into Redis (venue streams, or a replay of the shipped klines)",
    )
    market.add_argument("--metrics-port", type=int, default=None, help="Prometheus endpoint port")
    market.set_defaults(func=_cmd_market_data)

    alerts = sub.add_parser(
        "alerts",
        help="the notifier: emergency state, bans, liquidations, drift, workers down and a daily summary "
        "to webhooks / Telegram",
    )
    alerts.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="Prometheus endpoint port (default ALERTS_METRICS_PORT; 0: none)",
    )
    alerts.add_argument("--test", action="store_true", help="send one test alert to every target and exit")
    alerts.set_defaults(func=_cmd_alerts)

    status = sub.add_parser("status", help="live view of the portfolio, positions and decisions")
    status.add_argument("--once", action="store_true", help="print one frame and exit")
    status.add_argument("--json", action="store_true", help="print one JSON object and exit")
    status.add_argument("--interval", type=float, default=1.0, help="seconds between frames")
    status.add_argument("--portfolio-id", default="portfolio-default")
    status.set_defaults(func=_cmd_status)

    from workers.dashboard import server as dashboard_server  # `dashboard`: the web dashboard

    dashboard_server.add_parser(sub)

    from workers import run_paper  # `paper`: the whole system on replayed real klines

    run_paper.add_parser(sub)

    demo = sub.add_parser("demo", help="bring the stack up and run a paper round trip through the client")
    demo.add_argument("--symbol", default="BTCUSDT")
    demo.add_argument("--notional", type=float, default=200.0, help="USDT notional of the demo position")
    demo.add_argument("--no-stack", action="store_true", help="use an exchange that is already running")
    demo.add_argument("--timeout", type=float, default=90.0)
    demo.set_defaults(func=_cmd_demo)

    cfg = sub.add_parser("config", help="print the effective settings (secrets hidden) or what is wrong")
    cfg.add_argument(
        "--table",
        action="store_true",
        help="print the table of every setting (variable, default, type, description) instead",
    )
    cfg.set_defaults(func=_cmd_config)

    from workers import trade_cli  # `trade open|close|list|show`, `portfolio show|kill-switch|flatten|policy`

    trade_cli.add_subcommands(sub, trade=_cmd_trade, portfolio=_cmd_portfolio)

    from journal import cli as journal_cli  # `report`: attribution from the trade journal

    journal_cli.add_subcommand(sub)

    from backtest import cli as backtest_cli  # `backtest`: replay history through the live policies

    backtest_cli.add_subcommand(sub)

    from signals.download import cli as download_cli  # `data download`: klines, marks, funding rates

    download_cli.add_subcommand(sub)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        if getattr(args, "func", None) is not _cmd_exchange_serve:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        # Further options of `python -m exchange.paper` (--prices, --state, ...) pass through to it.
        args.rest = unknown
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"qtrader: {exc}", file=sys.stderr)
        return 2
    from workers.processes import StartupError
    from workers.stack import StackError

    try:
        return int(args.func(args, settings))
    except (StackError, StartupError) as exc:
        print(f"qtrader: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
