"""`qtrader backtest`: its arguments. The work (and its imports of numpy, the models, the data) lives in
`backtest.command`, loaded only when the command runs, so other `qtrader` commands start fast."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trading.config import Settings


def _date(text: str) -> int:
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (2024-01-01 or 2024-01-01T12:00)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def add_subcommand(sub: Any) -> None:
    p = sub.add_parser(
        "backtest",
        help="replay the shipped klines through the live policies; report folder with metrics",
        description="Replays history through the portfolio gates, sizing and exit engine the workflows "
        "use, with the paper venue's fees, funding and liquidation. Within a bar that crosses both a "
        "stop and a target, the stop is taken.",
    )
    p.add_argument("--symbols", required=True, help="comma-separated, e.g. BTCUSDT,ETHUSDT")
    p.add_argument("--timeframe", default="1h", help="a shipped timeframe: 1m, 5m, 15m or 1h (default 1h)")
    p.add_argument(
        "--from",
        dest="start",
        type=_date,
        help="first bar (UTC date); default: the data's start (models: after their training)",
    )
    p.add_argument("--to", dest="end", type=_date, help="end, exclusive (UTC date); default: the data's end")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="NAME or NAME@VERSION from the model registry (walk-forward checked)")
    src.add_argument("--signal", help="a rule signal instead of a model: momentum (default) or every-bar")
    src.add_argument(
        "--walk-forward",
        metavar="KIND",
        help="retrain a model of this kind (xgboost, lightgbm, nhits, patchtst) before every fold, "
        "on the past only",
    )
    p.add_argument("--refit-days", type=int, default=30, help="fold length for --walk-forward (default 30)")
    p.add_argument(
        "--train-days", type=int, default=365, help="training window for --walk-forward (default 365)"
    )
    p.add_argument("--side", choices=("long", "short"), default="long", help="side for --signal every-bar")
    p.add_argument("--lookback", type=int, default=24, help="bars for --signal momentum (default 24)")
    p.add_argument(
        "--notional",
        type=_decimal,
        default=Decimal(200),
        help="USDT per trade for rule signals (default 200)",
    )
    p.add_argument("--leverage", type=int, default=5, help="isolated leverage for rule signals (default 5)")
    p.add_argument(
        "--balance", type=_decimal, default=Decimal(10_000), help="start equity USDT (default 10000)"
    )
    p.add_argument("--fee-bps", type=_decimal, help="taker fee in bps (default: the paper venue's, 4)")
    p.add_argument("--slippage-bps", type=_decimal, default=Decimal(2), help="per market order (default 2)")
    p.add_argument("--funding-rate", type=_decimal, help="per 8 h, constant (default: the venue's 0.0001)")
    p.add_argument(
        "--union",
        action="store_true",
        help="symbols whose files do not overlap: bar times are the union of theirs and each symbol trades "
        "only where it has bars (rule signals only)",
    )
    risk = p.add_argument_group(
        "risk layer",
        "On by default: the automatic emergency stop, symbol protections, heat, concentration by symbol "
        "and correlated cluster, and capital allocation caps (trading/risk.py; defaults there).",
    )
    risk.add_argument(
        "--no-risk", action="store_true", help="the governor's gates only (what the workflows decide today)"
    )
    risk.add_argument(
        "--no-protections", action="store_true", help="the risk layer without symbol protections"
    )
    risk.add_argument(
        "--risk-policy",
        type=Path,
        metavar="FILE",
        help="the risk layer's thresholds as JSON (fields of trading.risk.RiskLayerPolicy; null turns a "
        'part off, e.g. {"allocation": null}); default: its defaults',
    )
    risk.add_argument(
        "--ess-resume-hours",
        type=int,
        default=24,
        help="a backtest has no operator: one is assumed to move the emergency stop back to NORMAL this "
        "many hours after CRITICAL or HALTED (0: never; default 24)",
    )
    p.add_argument("--out", type=Path, help="report folder (default $QT_HOME/backtests/<run id>)")
    p.add_argument("--journal", action="store_true", help="also write the trades to the trade journal")
    p.add_argument("--run-id", help="run id for the report and the journal (default: backtest-<time>)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from backtest.command import run as run_backtest_command

    return run_backtest_command(args, settings)
