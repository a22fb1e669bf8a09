"""`qtrader report`: attribution from the trade journal (PnL, win rate, Sharpe, drawdown per group)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from journal.store import JournalError, open_journal
from trading.config import Settings
from trading.records import GROUP_KEYS, PerformanceSummary, RecordMode, attribution, summarize

_AGE = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> int:
    """`2024-01-01` (UTC midnight), `2024-01-01T12:00` (UTC unless it names a zone), or an age such
    as `7d`, `12h`, `30m`, `2w` → epoch milliseconds."""
    now = now or datetime.now(UTC)
    age = _AGE.match(text.strip())
    if age:
        return int((now - timedelta(**{_UNITS[age.group(2)]: int(age.group(1))})).timestamp() * 1000)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a date (2024-01-01, 2024-01-01T12:00) nor an age (30m, 12h, 7d, 2w)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when > now:
        raise argparse.ArgumentTypeError(f"{text!r} is in the future: no trade has closed since then")
    return int(when.timestamp() * 1000)


def _capital(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of USDT") from None
    if not value.is_finite() or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of USDT")
    return value


def add_subcommand(sub: Any) -> None:
    report = sub.add_parser(
        "report",
        help="PnL, win rate, Sharpe and drawdown from the trade journal, per strategy, symbol, ...",
        description="Attribution of the journaled trades. Sharpe: annualised (√365) from daily returns "
        "on the equity (capital + PnL so far); drawdown: from the highest equity so far.",
    )
    report.add_argument(
        "--since",
        type=parse_since,
        default=None,
        help="only trades closed since a date (2024-01-01) or within an age (7d, 12h)",
    )
    report.add_argument("--by", choices=GROUP_KEYS, default="strategy", help="group by (default: strategy)")
    report.add_argument(
        "--run-id",
        default=None,
        help="one run: paper, testnet, live or a backtest's run id (default: this stack's TRADING_MODE, "
        "unless --mode is given); 'all' for every run",
    )
    report.add_argument("--mode", choices=[m.value for m in RecordMode], default=None)
    report.add_argument(
        "--capital",
        type=_capital,
        default=None,
        help="equity the returns are measured on (default: START_EQUITY_USDT or PAPER_START_BALANCE_USDT)",
    )
    report.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    report.set_defaults(func=run_report)


def run_report(args: argparse.Namespace, settings: Settings) -> int:
    run_id = args.run_id
    if run_id is None and args.mode is None:
        run_id = settings.trading_mode.value
    if run_id == "all":
        run_id = None
    capital = args.capital or settings.start_equity_usdt or settings.paper_start_balance_usdt
    try:
        journal = open_journal(settings.database_url, settings.qt_home)
        records = journal.trades(since_ms=args.since, run_id=run_id, mode=args.mode)
    except (JournalError, OSError) as err:
        print(f"qtrader report: {err}", file=sys.stderr)
        return 1
    scope = _scope(run_id, args.mode, args.since)
    if not records:
        print(f"no closed trades in the journal ({journal.where}) for {scope}")
        return 0
    first, last = (_day(records[i].closed_at_ms) for i in (0, -1))
    scope += f", closed {first} .. {last}"
    rows = attribution(records, args.by, capital)
    total = summarize(records, capital)
    if args.json:
        print(
            json.dumps(
                {
                    "scope": scope,
                    "by": args.by,
                    "capital": str(capital),
                    "groups": [{args.by: name, **s.model_dump(mode="json")} for name, s in rows],
                    "total": total.model_dump(mode="json"),
                }
            )
        )
        return 0
    print(f"{len(records)} trades, {scope}, by {args.by}; capital {capital} USDT")
    print(render_table(args.by, rows, total))
    return 0


def _scope(run_id: str | None, mode: str | None, since_ms: int | None) -> str:
    parts = [f"run {run_id}" if run_id else "all runs"]
    if mode:
        parts.append(f"mode {mode}")
    if since_ms is not None:
        parts.append(f"since {datetime.fromtimestamp(since_ms / 1000, UTC):%Y-%m-%d %H:%M} UTC")
    return ", ".join(parts)


def _day(ms: int) -> str:
    return f"{datetime.fromtimestamp(ms / 1000, UTC):%Y-%m-%d}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_table(by: str, rows: list[tuple[str, PerformanceSummary]], total: PerformanceSummary) -> str:
    header = (by, "trades", "PnL USDT", "win rate", "Sharpe", "max DD USDT", "max DD", "fees USDT")
    lines = [
        (
            name,
            str(s.trades),
            f"{s.pnl:.2f}",
            _pct(s.win_rate),
            _ratio(s.sharpe),
            f"{s.max_drawdown.usdt:.2f}",
            _pct(s.max_drawdown.pct),
            f"{s.fees:.2f}",
        )
        for name, s in [*rows, ("TOTAL", total)]
    ]
    widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(len(header))]

    def fmt(row: tuple[str, ...]) -> str:
        cells = zip(row, widths, strict=True)
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *(fmt(r) for r in lines[:-1]), rule, fmt(lines[-1])])
