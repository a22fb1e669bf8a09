"""`qtrader data download`: its arguments. The work (and its import of httpx) lives in
`signals.download.command`, loaded only when the command runs, so other `qtrader` commands start fast."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trading.config import Settings

EPILOG = """\
Files are written as the loaders read them (data/README.md): binance-futures-<SYMBOL>-<tf>.csv.gz,
binance-futures-<SYMBOL>-<tf>-mark.csv.gz and binance-futures-<SYMBOL>-funding.csv.gz. Every archive
file is checked against its .CHECKSUM. Run it again to resume or extend: files already in place are
not fetched again. The folder defaults to $QT_DATA_DIR, else $QT_HOME/data (.qt/data): set
QT_DATA_DIR to that folder for the backtest, the paper exchange and training to read it."""


def add_subcommand(sub: Any) -> None:
    data = sub.add_parser("data", help="market data: download klines, mark prices and funding rates")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser(
        "download",
        help="Binance USDⓈ-M klines / mark-price klines / funding rates from Binance's public archive",
        description="Downloads from Binance's public data archive (monthly and daily zip files, each "
        "verified against its checksum) and, for the days the archive does not hold yet, the REST API.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--symbols", required=True, help="comma-separated, e.g. BTCUSDT,ETHUSDT")
    p.add_argument(
        "--timeframe",
        default="1h",
        help="1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1mo (1M) (default 1h; unused for funding)",
    )
    p.add_argument("--start", required=True, help="first day, UTC (YYYY-MM-DD)")
    p.add_argument("--end", required=True, help="last day, UTC, included (YYYY-MM-DD; today at most)")
    p.add_argument(
        "--kind",
        default="klines",
        help="klines, mark or funding; comma-separated for several (default klines)",
    )
    p.add_argument("--out", type=Path, help="folder to write to (default: $QT_DATA_DIR, else $QT_HOME/data)")
    p.add_argument(
        "--archive-url", help="archive base URL (default: BINANCE_ARCHIVE_URL, data.binance.vision)"
    )
    p.add_argument(
        "--rest-url",
        help="REST base for the days the archive lacks (default: LIVE_REST_URL, fapi.binance.com)",
    )
    p.add_argument("--no-rest", action="store_true", help="archive only: stop where the archive ends")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from signals.download.command import run

    return run(args, settings)
