"""Archive CSVs → rows, and rows ↔ the loader's gzip CSV files (written atomically).

Archive klines / mark-price klines: `open_time,open,high,low,close,volume,close_time,quote_volume,
count,taker_buy_volume,taker_buy_quote_volume,ignore`; funding rates: `calc_time,
funding_interval_hours,last_funding_rate`. Newer files start with that header line, older ones do
not. Numbers are kept as the text Binance wrote (the loader reads them as float, the backtest as the
decimal written).
"""

from __future__ import annotations

import gzip
import io
import zipfile
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from pathlib import Path

from signals.data import FUNDING_HEADER, HEADER, bar_close_ms
from signals.download.errors import DownloadError
from signals.download.fetch import atomic_write

KlineRow = tuple[int, str, str, str, str, str]  # open_time_ms, open, high, low, close, volume
FundingRow = tuple[int, str]  # funding_time_ms, rate
Row = KlineRow | FundingRow

# Millisecond times stay below 10**13 until the year 2286; a time above 10**14 is in microseconds
# (the archive's spot files switched to them in 2025; read as ms they would land in year 50,000).
_MICROS = 10**14


def _ms(text: str) -> int:
    t = int(text)
    return t // 1000 if t >= _MICROS else t


def _number(text: str, *, positive: bool) -> str:
    value = Decimal(text)
    if not value.is_finite() or value < 0 or (positive and value == 0):
        raise ValueError(text)
    return text.strip()


def kline_row(fields: list[str]) -> KlineRow:
    """One bar from the archive's or REST's columns; a bar whose high / low do not bound its open and
    close (columns out of place) is refused."""
    t = _ms(fields[0])
    o, h, lo, c = (_number(x, positive=True) for x in fields[1:5])
    v = _number(fields[5], positive=False)
    do, dh, dl, dc = Decimal(o), Decimal(h), Decimal(lo), Decimal(c)
    if dh < max(do, dc, dl) or dl > min(do, dc):
        raise ValueError("high/low do not bound open/close")
    return (t, o, h, lo, c, v)


def funding_row(fields: list[str]) -> FundingRow:
    rate = fields[2] if len(fields) >= 3 else fields[1]
    value = Decimal(rate)
    if not value.is_finite():
        raise ValueError(rate)
    return (_ms(fields[0]), rate.strip())


def archive_rows(zip_bytes: bytes, zip_name: str, kind: str) -> list[Row]:
    """The rows of an archive zip (its one CSV), header line skipped when there is one."""
    try:
        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
            names = [n for n in zf.namelist() if n.endswith(".csv")]
            if len(names) != 1:
                raise DownloadError(f"{zip_name}: expected one CSV inside, found {names}")
            text = zf.read(names[0]).decode("ascii")
    except (zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise DownloadError(f"{zip_name}: not a readable zip of an ASCII CSV ({exc})") from None
    parse = funding_row if kind == "funding" else kline_row
    rows: list[Row] = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or (n == 1 and not line[0].isdigit()):
            continue  # the header line of newer files
        try:
            rows.append(parse(line.split(",")))
        except (ValueError, IndexError, InvalidOperation):
            raise DownloadError(f"{zip_name} line {n}: not a {kind} row: {line[:120]!r}") from None
    return rows


def read_output(path: Path, kind: str) -> list[Row]:
    """The rows of an existing output file (to extend it); a file in another format is refused, not
    overwritten."""
    header = FUNDING_HEADER if kind == "funding" else HEADER
    rows: list[Row] = []
    try:
        with gzip.open(path, "rt", encoding="ascii") as fh:
            first = fh.readline().strip()
            if first != header:
                raise DownloadError(f"{path}: unexpected header {first!r} (expected {header!r}); not touched")
            for n, line in enumerate(fh, start=2):
                parts = line.strip().split(",")
                try:
                    if kind == "funding":
                        rows.append((int(parts[0]), parts[1]))
                    else:
                        rows.append((int(parts[0]), parts[1], parts[2], parts[3], parts[4], parts[5]))
                except (ValueError, IndexError):
                    raise DownloadError(f"{path} line {n}: malformed row; not touched") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DownloadError(f"{path}: not readable as gzip CSV ({exc}); not touched") from None
    return rows


def render(rows: Iterable[Row], kind: str, timeframe: str | None) -> bytes:
    """The gzip bytes of an output file (gzip mtime 0: the same rows give the same bytes)."""
    lines = [FUNDING_HEADER if kind == "funding" else HEADER]
    for r in rows:
        if kind == "funding":
            lines.append(f"{r[0]},{r[1]}")
        else:
            assert timeframe is not None
            lines.append(",".join((str(r[0]), *r[1:], str(bar_close_ms(timeframe, r[0])))))  # type: ignore[arg-type]
    raw = ("\n".join(lines) + "\n").encode("ascii")
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw)
    return buf.getvalue()


def write_output(path: Path, rows: list[Row], kind: str, timeframe: str | None) -> None:
    atomic_write(path, render(rows, kind, timeframe))


def merge(*sources: Iterable[Row]) -> list[Row]:
    """Rows of all sources by time, one per time; a later source wins a time two of them hold."""
    by_time: dict[int, Row] = {}
    for src in sources:
        for r in src:
            by_time[r[0]] = r
    return [by_time[t] for t in sorted(by_time)]
