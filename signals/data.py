"""Shipped Binance USD-M klines (`data/`, gzip CSV) as numpy arrays, per symbol and aligned.

File layout: `binance-futures-<SYMBOL>-<tf>.csv.gz` with the header
`open_time_ms,open,high,low,close,volume,close_time_ms`. The folder is `QT_DATA_DIR` when set, else
the repository's own `data/` (a sample; data/README.md lists its ranges). Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from trading.config import SHIPPED_DATA_DIR

DATA_DIR_ENV = "QT_DATA_DIR"
HEADER = "open_time_ms,open,high,low,close,volume,close_time_ms"
_FILE_RE = re.compile(r"^binance-futures-([A-Z0-9]+)-(\d+[mhd])\.csv\.gz$")
_TF_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}


class DataError(RuntimeError):
    """A kline file is missing, malformed or not on its interval grid."""


def timeframe_ms(timeframe: str) -> int:
    """Milliseconds of one bar, e.g. "1h" → 3_600_000."""
    m = re.fullmatch(r"(\d+)([mhd])", timeframe)
    if not m:
        raise ValueError(f"unknown timeframe {timeframe!r}")
    return int(m.group(1)) * _TF_MS[m.group(2)]


def default_data_dir() -> Path:
    """`QT_DATA_DIR` when set, else the repository's `data/` (whatever the current directory)."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else SHIPPED_DATA_DIR


def kline_path(symbol: str, timeframe: str, data_dir: Path | None = None) -> Path:
    return (data_dir or default_data_dir()) / f"binance-futures-{symbol}-{timeframe}.csv.gz"


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


@lru_cache(maxsize=32)
def _read(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"kline file not found: {path}")
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
    arr = _read(kline_path(symbol, timeframe, data_dir))
    t = arr[:, 0].astype(np.int64)
    mask = np.ones(t.shape[0], dtype=bool)
    if start_ms is not None:
        mask &= t >= start_ms
    if end_ms is not None:
        mask &= t < end_ms
    step = timeframe_ms(timeframe)
    if t.shape[0] > 1:
        d = np.diff(t)
        if np.any(d <= 0) or np.any(d % step):
            raise DataError(f"{symbol} {timeframe}: open times not strictly increasing on the {step} ms grid")
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
