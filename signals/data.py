"""Shipped Binance USD-M klines (`data/`, gzip CSV) as numpy arrays, per symbol and aligned.

File layout: `binance-futures-<SYMBOL>-<tf>.csv.gz` with the header
`open_time_ms,open,high,low,close,volume,close_time_ms`; mark-price klines in
`binance-futures-<SYMBOL>-<tf>-mark.csv.gz` (same header) and funding rates in
`binance-futures-<SYMBOL>-funding.csv.gz` (`funding_time_ms,funding_rate`). The folder is `QT_DATA_DIR`
when set, else the repository's own `data/` (a sample; data/README.md lists its ranges). Nothing is
downloaded here: `qtrader data download` (signals/download/) fetches more.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path

import numpy as np

from trading.config import SHIPPED_DATA_DIR

DATA_DIR_ENV = "QT_DATA_DIR"
HEADER = "open_time_ms,open,high,low,close,volume,close_time_ms"
FUNDING_HEADER = "funding_time_ms,funding_rate"
_FILE_RE = re.compile(r"^binance-futures-([A-Z0-9]+)-(\d+[mhdw]|1mo)\.csv\.gz$")
_TF_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
MONTH = "1mo"  # Binance's 1M bar, named as its archive names it ("1M" and "1m" clash on some disks)


class DataError(RuntimeError):
    """A kline file is missing, malformed or not on its interval grid."""


def timeframe_ms(timeframe: str) -> int:
    """Milliseconds of one bar, e.g. "1h" → 3_600_000. A month ("1mo") has no fixed length."""
    m = re.fullmatch(r"(\d+)([mhdw])", timeframe)
    if not m:
        raise ValueError(f"unknown timeframe {timeframe!r}")
    return int(m.group(1)) * _TF_MS[m.group(2)]


def month_start_ms(when_ms: int, months_ahead: int = 0) -> int:
    """The first instant (UTC) of the month holding `when_ms`, moved `months_ahead` months."""
    d = datetime.fromtimestamp(when_ms / 1000, UTC)
    y, m = divmod(d.year * 12 + d.month - 1 + months_ahead, 12)
    return int(datetime(y, m + 1, 1, tzinfo=UTC).timestamp() * 1000)


def bar_close_ms(timeframe: str, open_ms: int) -> int:
    """A bar's close time, Binance's definition: the next bar's open minus 1 ms."""
    if timeframe == MONTH:
        return month_start_ms(open_ms, 1) - 1
    return open_ms + timeframe_ms(timeframe) - 1


def default_data_dir() -> Path:
    """`QT_DATA_DIR` when set, else the repository's `data/` (whatever the current directory)."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else SHIPPED_DATA_DIR


def kline_path(symbol: str, timeframe: str, data_dir: Path | None = None) -> Path:
    return (data_dir or default_data_dir()) / f"binance-futures-{symbol}-{timeframe}.csv.gz"


def mark_path(symbol: str, timeframe: str, data_dir: Path | None = None) -> Path:
    """Mark-price klines: same format as the trade klines, a name `available()` does not list."""
    return (data_dir or default_data_dir()) / f"binance-futures-{symbol}-{timeframe}-mark.csv.gz"


def funding_path(symbol: str, data_dir: Path | None = None) -> Path:
    return (data_dir or default_data_dir()) / f"binance-futures-{symbol}-funding.csv.gz"


def available(data_dir: Path | None = None) -> list[tuple[str, str]]:
    """(symbol, timeframe) pairs present in the data folder, sorted."""
    folder = data_dir or default_data_dir()
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        m = _FILE_RE.match(p.name)
        if m:
            out.append((m.group(1), m.group(2)))
    return sorted(out)


@dataclass(frozen=True)
class Klines:
    """One symbol's bars; prices/volume float64, times int64 (bar open, epoch ms, UTC)."""

    symbol: str
    timeframe: str
    open_time_ms: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return int(self.open_time_ms.shape[0])

    def slice(self, start: int | None = None, stop: int | None = None) -> Klines:
        s = slice(start, stop)
        return Klines(
            self.symbol,
            self.timeframe,
            self.open_time_ms[s],
            self.open[s],
            self.high[s],
            self.low[s],
            self.close[s],
            self.volume[s],
        )


@dataclass(frozen=True)
class AlignedKlines:
    """Several symbols on common bar open times: every price array is [symbols, bars]."""

    symbols: tuple[str, ...]
    timeframe: str
    open_time_ms: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @property
    def n_bars(self) -> int:
        return int(self.open_time_ms.shape[0])

    def slice(self, start: int | None = None, stop: int | None = None) -> AlignedKlines:
        s = slice(start, stop)
        return AlignedKlines(
            self.symbols,
            self.timeframe,
            self.open_time_ms[s],
            self.open[:, s],
            self.high[:, s],
            self.low[:, s],
            self.close[:, s],
            self.volume[:, s],
        )

    def index(self, symbol: str) -> int:
        return self.symbols.index(symbol)

    def sha256(self) -> str:
        """Hash of the exact arrays (symbols, times, OHLCV) — the training-data fingerprint."""
        h = hashlib.sha256()
        h.update(",".join(self.symbols).encode())
        h.update(self.timeframe.encode())
        for a in (self.open_time_ms, self.open, self.high, self.low, self.close, self.volume):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


def _read(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"kline file not found: {path}")
    st = path.stat()
    # Keyed by size and mtime too: a file rewritten by `qtrader data download` in this process must not
    # be answered from the cache of its old contents.
    return _read_cached(path, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=32)
def _read_cached(path: Path, size: int, mtime_ns: int) -> np.ndarray:
    with gzip.open(path, "rt") as fh:
        header = fh.readline().strip()
        if header != HEADER:
            raise DataError(f"{path.name}: unexpected header {header!r}")
        arr = np.loadtxt(fh, delimiter=",", dtype=np.float64, ndmin=2)
    if arr.shape[1] != 7:
        raise DataError(f"{path.name}: expected 7 columns, got {arr.shape[1]}")
    arr.setflags(write=False)
    return arr


def load_klines(
    symbol: str,
    timeframe: str = "1h",
    data_dir: Path | None = None,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> Klines:
    """Bars with `start_ms <= open_time_ms < end_ms` (either bound optional). Checks the interval grid."""
    return _load(kline_path(symbol, timeframe, data_dir), symbol, timeframe, start_ms, end_ms)


def load_mark_klines(
    symbol: str,
    timeframe: str = "1h",
    data_dir: Path | None = None,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> Klines:
    """Mark-price bars (`mark_path`), as `load_klines` reads trade bars; volume is 0 (there is none)."""
    return _load(mark_path(symbol, timeframe, data_dir), symbol, timeframe, start_ms, end_ms)


def _on_grid(t: np.ndarray, timeframe: str) -> bool:
    """Open times strictly increasing, each a whole number of bars after the previous one."""
    if t.shape[0] < 2:
        return True
    d = np.diff(t)
    if np.any(d <= 0):
        return False
    if timeframe == MONTH:
        return all(month_start_ms(int(x)) == int(x) for x in t)
    return not np.any(d % timeframe_ms(timeframe))


def _load(path: Path, symbol: str, timeframe: str, start_ms: int | None, end_ms: int | None) -> Klines:
    arr = _read(path)
    t = arr[:, 0].astype(np.int64)
    mask = np.ones(t.shape[0], dtype=bool)
    if start_ms is not None:
        mask &= t >= start_ms
    if end_ms is not None:
        mask &= t < end_ms
    if timeframe != MONTH:
        timeframe_ms(timeframe)  # an unknown timeframe is a ValueError, as before
    if not _on_grid(t, timeframe):
        raise DataError(f"{symbol} {timeframe}: open times not strictly increasing on the {timeframe} grid")
    sel = arr[mask]
    return Klines(
        symbol=symbol,
        timeframe=timeframe,
        open_time_ms=t[mask].copy(),
        open=sel[:, 1].copy(),
        high=sel[:, 2].copy(),
        low=sel[:, 3].copy(),
        close=sel[:, 4].copy(),
        volume=sel[:, 5].copy(),
    )


@dataclass(frozen=True)
class FundingRates:
    """One symbol's funding history: at `time_ms[i]` (epoch ms, UTC) longs paid `rate[i]` × notional
    to shorts (negative: shorts paid longs). Rates stay Decimal: they are money."""

    symbol: str
    time_ms: np.ndarray  # int64, strictly increasing
    rate: tuple[Decimal, ...]

    def __len__(self) -> int:
        return int(self.time_ms.shape[0])


def load_funding(symbol: str, data_dir: Path | None = None) -> FundingRates:
    """The funding file of `symbol` (`funding_path`); DataError when missing or malformed."""
    path = funding_path(symbol, data_dir)
    if not path.is_file():
        raise DataError(f"funding file not found: {path}")
    times: list[int] = []
    rates: list[Decimal] = []
    with gzip.open(path, "rt") as fh:
        header = fh.readline().strip()
        if header != FUNDING_HEADER:
            raise DataError(f"{path.name}: unexpected header {header!r}")
        for n, line in enumerate(fh, start=2):
            parts = line.strip().split(",")
            try:
                if len(parts) != 2:
                    raise ValueError
                t, r = int(parts[0]), Decimal(parts[1])
            except (ValueError, InvalidOperation):
                bad = line.strip()
                raise DataError(f"{path.name} line {n}: expected time_ms,rate, got {bad!r}") from None
            if not r.is_finite() or (times and t <= times[-1]):
                raise DataError(f"{path.name} line {n}: rate not finite or time not increasing")
            times.append(t)
            rates.append(r)
    return FundingRates(symbol, np.asarray(times, dtype=np.int64), tuple(rates))


def align(klines: Sequence[Klines]) -> AlignedKlines:
    """Keep only the bar open times every symbol has (intersection), in time order."""
    if not klines:
        raise ValueError("align needs at least one symbol")
    tfs = {k.timeframe for k in klines}
    if len(tfs) != 1:
        raise ValueError(f"cannot align different timeframes: {sorted(tfs)}")
    common = klines[0].open_time_ms
    for k in klines[1:]:
        common = np.intersect1d(common, k.open_time_ms, assume_unique=True)
    cols: dict[str, list[np.ndarray]] = {n: [] for n in ("open", "high", "low", "close", "volume")}
    for k in klines:
        idx = np.searchsorted(k.open_time_ms, common)
        for n, lst in cols.items():
            lst.append(getattr(k, n)[idx])
    return AlignedKlines(
        symbols=tuple(k.symbol for k in klines),
        timeframe=klines[0].timeframe,
        open_time_ms=common.astype(np.int64),
        **{n: np.stack(v) for n, v in cols.items()},
    )


def load_aligned(
    symbols: Sequence[str],
    timeframe: str = "1h",
    data_dir: Path | None = None,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    last_n: int | None = None,
) -> AlignedKlines:
    """Load several symbols and align them; `last_n` keeps only the most recent common bars."""
    al = align([load_klines(s, timeframe, data_dir, start_ms=start_ms, end_ms=end_ms) for s in symbols])
    if last_n is not None:
        al = al.slice(max(0, al.n_bars - last_n), None)
    return al


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
