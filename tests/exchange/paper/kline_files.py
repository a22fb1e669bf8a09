"""Small kline files in the shipped format (`binance-futures-<SYMBOL>-<tf>.csv.gz`) for a test's data
folder: a symbol without built-in filters, priced like a meme coin."""

from __future__ import annotations

import gzip
from decimal import Decimal
from pathlib import Path

HOUR_MS = 3_600_000
START_MS = 1_735_689_600_000  # 2025-01-01T00:00Z

Row = tuple[int, str, str, str, str, str]


def kline_rows(n: int = 48) -> list[Row]:
    """Hourly bars near 0.000012 USDT, every price on a 1e-9 grid (five significant digits)."""
    rows = []
    for i in range(n):
        o = Decimal("0.000012000") + Decimal("0.000000010") * i
        rows.append(
            (
                START_MS + i * HOUR_MS,
                str(o),
                str(o + Decimal("0.000000050")),
                str(o - Decimal("0.000000050")),
                str(o + Decimal("0.000000020")),
                f"{1_000_000_000 + i * 100_000}.0",  # on the quantity step (1e5)
            )
        )
    return rows


def write_klines(folder: Path, symbol: str, rows: list[Row]) -> Path:
    """One 1h kline file with the header the loaders expect."""
    path = folder / f"binance-futures-{symbol}-1h.csv.gz"
    lines = ["open_time_ms,open,high,low,close,volume,close_time_ms"]
    lines += [f"{t},{o},{h},{lo},{c},{v},{t + HOUR_MS - 1}" for t, o, h, lo, c, v in rows]
    with gzip.open(path, "wt", encoding="ascii") as fh:
        fh.write("\n".join(lines) + "\n")
    return path
