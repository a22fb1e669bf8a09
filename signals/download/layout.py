"""The archive's layout (data.binance.vision, USDⓈ-M futures) and which of its files a range needs.

    data/futures/um/monthly/klines/<SYM>/<tf>/<SYM>-<tf>-YYYY-MM.zip           (+ .zip.CHECKSUM)
    data/futures/um/daily/klines/<SYM>/<tf>/<SYM>-<tf>-YYYY-MM-DD.zip
    data/futures/um/{monthly,daily}/markPriceKlines/<SYM>/<tf>/<SYM>-<tf>-<period>.zip
    data/futures/um/monthly/fundingRate/<SYM>/<SYM>-fundingRate-YYYY-MM.zip

Daily files exist for 1m … 1d only; 3d, 1w and 1mo (Binance's REST name: 1M) and funding rates come in
monthly files alone. The archive holds nothing of the current UTC day.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

KINDS = ("klines", "mark", "funding")
ARCHIVE_DIR = {"klines": "klines", "mark": "markPriceKlines", "funding": "fundingRate"}
REST_PATH = {
    "klines": "/fapi/v1/klines",
    "mark": "/fapi/v1/markPriceKlines",
    "funding": "/fapi/v1/fundingRate",
}
DAILY_TIMEFRAMES = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")
TIMEFRAMES = (*DAILY_TIMEFRAMES, "3d", "1w", "1mo")
# USDⓈ-M perpetuals: upper-case letters and digits ending in the quote asset (1000PEPEUSDT, BTCUSDC).
SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}(USDT|USDC|BUSD)$")
DAY_MS = 86_400_000


def rest_interval(timeframe: str) -> str:
    """The REST API's name of a timeframe: the month is "1M" there, "1mo" in the archive."""
    return "1M" if timeframe == "1mo" else timeframe


def normalize_timeframe(text: str) -> str:
    """ "1M" (REST's name) → "1mo"; anything not served by Binance is a ValueError naming it."""
    tf = "1mo" if text.strip() == "1M" else text.strip()
    if tf not in TIMEFRAMES:
        raise ValueError(f"{text!r} is not a timeframe Binance serves ({', '.join(TIMEFRAMES)}; 1M = 1mo)")
    return tf


def day_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True)
class Piece:
    """One archive file: its kind, symbol, timeframe (None for funding) and the time it covers."""

    kind: str
    symbol: str
    timeframe: str | None
    period: str  # "monthly" or "daily"
    label: str  # "2024-01" or "2024-01-05"
    start_ms: int
    end_ms: int  # exclusive

    @property
    def name(self) -> str:
        middle = "fundingRate" if self.kind == "funding" else self.timeframe
        return f"{self.symbol}-{middle}-{self.label}.zip"

    @property
    def rel_path(self) -> str:
        folder = f"data/futures/um/{self.period}/{ARCHIVE_DIR[self.kind]}/{self.symbol}"
        if self.timeframe is not None:
            folder += f"/{self.timeframe}"
        return f"{folder}/{self.name}"

    def url(self, base: str) -> str:
        return f"{base.rstrip('/')}/{self.rel_path}"

    def __str__(self) -> str:
        return f"{self.period} {self.label}"


def _month(d: date) -> tuple[date, date]:
    first = d.replace(day=1)
    nxt = (first + timedelta(days=32)).replace(day=1)
    return first, nxt


def month_piece(kind: str, symbol: str, timeframe: str | None, first: date) -> Piece:
    first, nxt = _month(first)
    return Piece(kind, symbol, timeframe, "monthly", f"{first:%Y-%m}", day_ms(first), day_ms(nxt))


def day_piece(kind: str, symbol: str, timeframe: str | None, d: date) -> Piece:
    return Piece(kind, symbol, timeframe, "daily", f"{d:%Y-%m-%d}", day_ms(d), day_ms(d + timedelta(days=1)))


def has_daily(kind: str, timeframe: str | None) -> bool:
    return kind != "funding" and timeframe in DAILY_TIMEFRAMES


def days_of(piece: Piece) -> list[Piece]:
    """A monthly piece as its daily pieces (the month's file is not published yet)."""
    d = datetime.fromtimestamp(piece.start_ms / 1000, UTC).date()
    out = []
    while day_ms(d) < piece.end_ms:
        out.append(day_piece(piece.kind, piece.symbol, piece.timeframe, d))
        d += timedelta(days=1)
    return out


def plan(kind: str, symbol: str, timeframe: str | None, start: date, end: date, today: date) -> list[Piece]:
    """Archive files for the days start … end (inclusive), before `today` (the archive's horizon):
    a monthly file for every month that has ended and lies wholly in the range (or that has no daily
    files), daily files for the other days. What is left (today, or the current month without daily
    files) is the REST tail's."""
    last = min(end, today - timedelta(days=1))
    pieces: list[Piece] = []
    d = start
    while d <= last:
        first, nxt = _month(d)
        ended = nxt <= today
        whole = first >= start and nxt - timedelta(days=1) <= end
        if ended and (whole or not has_daily(kind, timeframe)):
            pieces.append(month_piece(kind, symbol, timeframe, first))
            d = nxt
        elif has_daily(kind, timeframe):
            pieces.append(day_piece(kind, symbol, timeframe, d))
            d += timedelta(days=1)
        else:  # the current month of a timeframe without daily files: REST
            break
    return pieces


# The archive publishes a month's file a few days after the month and a day's file within a day or
# two; a piece missing for longer is missing for good (the symbol was not trading then).
MONTH_PUBLISH_DAYS = 7
DAY_PUBLISH_DAYS = 3


def maybe_unpublished(piece: Piece, today: date) -> bool:
    days = MONTH_PUBLISH_DAYS if piece.period == "monthly" else DAY_PUBLISH_DAYS
    return piece.end_ms > day_ms(today) - days * DAY_MS
