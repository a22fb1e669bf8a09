"""`qtrader data download` at work: every argument checked before any request (a bad one exits 2 with
the problem named), then one job per kind and symbol, progress on stderr, a summary on stdout.
Exit status: 0 done, 1 a download failed (network, a refused checksum; nothing half-written),
2 a bad argument or a symbol the archive does not know."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import httpx

from signals.data import DATA_DIR_ENV
from signals.download.errors import DownloadError, UnknownSymbolError
from signals.download.fetch import Archive, Http
from signals.download.job import STATE_DIR, Job, Request
from signals.download.layout import KINDS, SYMBOL_RE, iso, normalize_timeframe
from signals.download.rest import RestTail
from trading.config import Settings

RETRIES = 3  # per request, on connection errors, 5xx and 429
BACKOFF_S = 1.0  # before the first retry; doubles


class UsageError(ValueError):
    """A bad argument, found before any request."""


@dataclass(frozen=True)
class Plan:
    kinds: tuple[str, ...]
    symbols: tuple[str, ...]
    timeframe: str
    start: date
    end: date
    out: Path
    archive_url: str
    rest_url: str | None


def _day(flag: str, text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{flag}: {text!r} is not a date (YYYY-MM-DD)") from None


def _url(flag: str, text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise UsageError(f"{flag}: {text!r} is not an http(s) URL")
    return text.rstrip("/")


def default_out_dir(settings: Settings) -> Path:
    """$QT_DATA_DIR, else $QT_HOME/data: never the repository's data/ unless asked (it holds a small
    sample and is committed; downloads would bloat it)."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else settings.qt_home / "data"


def check(args: argparse.Namespace, settings: Settings, today: date) -> Plan:
    kinds = tuple(k.strip().lower() for k in args.kind.split(",") if k.strip())
    bad_kinds = [k for k in kinds if k not in KINDS]
    if not kinds or bad_kinds:
        raise UsageError(f"--kind: {', '.join(bad_kinds) or 'none given'}: choose from {', '.join(KINDS)}")
    symbols = tuple(dict.fromkeys(s.strip().upper() for s in args.symbols.split(",") if s.strip()))
    if not symbols:
        raise UsageError("--symbols: give at least one symbol, e.g. BTCUSDT")
    for s in symbols:
        if not SYMBOL_RE.match(s):
            raise UsageError(
                f"--symbols: {s!r} is not a Binance USDⓈ-M symbol (letters and digits ending in USDT, "
                "USDC or BUSD, e.g. BTCUSDT)"
            )
    try:
        timeframe = normalize_timeframe(args.timeframe)
    except ValueError as exc:
        raise UsageError(f"--timeframe: {exc}") from None
    start, end = _day("--start", args.start), _day("--end", args.end)
    for flag, d in (("--start", start), ("--end", end)):
        if d > today:
            raise UsageError(f"{flag} {d} is in the future (today is {today} UTC)")
    if end < start:
        raise UsageError(f"--end {end} is before --start {start}")
    archive_url = _url("--archive-url", args.archive_url or settings.binance_archive_url)
    rest_url = None if args.no_rest else _url("--rest-url", args.rest_url or settings.live_rest_url)
    out = args.out or default_out_dir(settings)
    return Plan(kinds, symbols, timeframe, start, end, out, archive_url, rest_url)


def run(args: argparse.Namespace, settings: Settings) -> int:
    now_ms = int(time.time() * 1000)
    try:
        plan = check(args, settings, datetime.fromtimestamp(now_ms / 1000, UTC).date())
    except UsageError as exc:
        print(f"qtrader data download: {exc}", file=sys.stderr)
        return 2
    return download(plan, now_ms=now_ms, log=lambda line: print(line, file=sys.stderr, flush=True))


def download(
    plan: Plan,
    *,
    now_ms: int,
    log: Callable[[str], None],
    retries: int | None = None,
    backoff_s: float | None = None,
    client: httpx.Client | None = None,
) -> int:
    """Every kind × symbol of the plan; the exit status (see the module's docstring)."""
    retries = RETRIES if retries is None else retries
    backoff_s = BACKOFF_S if backoff_s is None else backoff_s
    own = client is None
    client = client or httpx.Client(
        timeout=httpx.Timeout(60.0, connect=15.0),
        follow_redirects=True,
        headers={"User-Agent": "quantum-trader data download"},
    )
    http = Http(client, retries=retries, backoff_s=backoff_s)
    archive = Archive(plan.archive_url, plan.out / STATE_DIR / "archive", http)
    rest = RestTail(plan.rest_url, http) if plan.rest_url else None
    job = Job(plan.out, archive, rest, now_ms, log)
    status = 0
    try:
        for kind in plan.kinds:
            for symbol in plan.symbols:
                tf = None if kind == "funding" else plan.timeframe
                req = Request(kind, symbol, tf, plan.start, plan.end)
                try:
                    outcome = job.run(req)
                except UnknownSymbolError as exc:
                    print(f"qtrader data download: {exc}", file=sys.stderr)
                    status = max(status, 2)
                    continue
                except DownloadError as exc:
                    print(f"qtrader data download: {req.label}: {exc}", file=sys.stderr)
                    print(
                        "  the same command again resumes (verified files are kept); --no-rest stops where "
                        "the archive ends",
                        file=sys.stderr,
                    )
                    return 1
                for w in outcome.warnings:
                    log(f"warning: {w}")
                if outcome.rows:
                    span = f"{iso(outcome.first_ms or 0)} → {iso(outcome.last_ms or 0)} UTC"
                    verb = "wrote" if outcome.written else "unchanged"
                    print(
                        f"{verb} {outcome.path}: {outcome.rows:,} rows ({outcome.added:+,}), {span}; "
                        f"archive files: {outcome.downloaded} downloaded, {outcome.cached} cached; "
                        f"REST rows: {outcome.rest_rows}"
                    )
    finally:
        if own:
            client.close()
    if os.environ.get(DATA_DIR_ENV) != str(plan.out):
        print(f"to use these files: export {DATA_DIR_ENV}={plan.out.resolve()}")
    return status
