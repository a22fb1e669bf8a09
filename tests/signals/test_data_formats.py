"""The loader's newer file kinds: weekly and monthly bars, mark-price klines, funding rates; and a file
rewritten in the same process is read again, not answered from the cache of its old contents."""

from __future__ import annotations

import gzip
import os
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from signals.data import (
    FUNDING_HEADER,
    HEADER,
    DataError,
    available,
    bar_close_ms,
    funding_path,
    kline_path,
    load_funding,
    load_klines,
    load_mark_klines,
    mark_path,
)


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def write(path: Path, header: str, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join([header, *rows]) + "\n")


def bars(opens: list[int], tf: str) -> list[str]:
    return [f"{t},10.0,11.0,9.5,10.5,3.25,{bar_close_ms(tf, t)}" for t in opens]


def test_weekly_and_monthly_bars(tmp_path: Path) -> None:
    weeks = [ms("2024-01-01") + k * 7 * 86_400_000 for k in range(5)]  # Mondays, as Binance opens them
    write(kline_path("BTCUSDT", "1w", tmp_path), HEADER, bars(weeks, "1w"))
    months = [ms(f"2024-{m:02d}-01") for m in range(1, 13)]
    write(kline_path("BTCUSDT", "1mo", tmp_path), HEADER, bars(months, "1mo"))
    assert load_klines("BTCUSDT", "1w", tmp_path).open_time_ms.tolist() == weeks
    assert load_klines("BTCUSDT", "1mo", tmp_path).open_time_ms.tolist() == months
    assert bar_close_ms("1mo", ms("2024-02-01")) == ms("2024-03-01") - 1  # 29 days: a leap year
    assert available(tmp_path) == [("BTCUSDT", "1mo"), ("BTCUSDT", "1w")]
    write(kline_path("ETHUSDT", "1mo", tmp_path), HEADER, bars([ms("2024-01-01"), ms("2024-01-31")], "1mo"))
    with pytest.raises(DataError, match="not strictly increasing on the 1mo grid"):
        load_klines("ETHUSDT", "1mo", tmp_path)


def test_mark_prices_and_funding_are_not_listed_as_klines(tmp_path: Path) -> None:
    t = [ms("2024-01-01") + k * 3_600_000 for k in range(3)]
    write(mark_path("BTCUSDT", "1h", tmp_path), HEADER, bars(t, "1h"))
    write(funding_path("BTCUSDT", tmp_path), FUNDING_HEADER, [f"{t[0]},0.00010000", f"{t[2]},-0.00002500"])
    assert available(tmp_path) == []
    assert load_mark_klines("BTCUSDT", "1h", tmp_path).close.tolist() == [10.5] * 3
    f = load_funding("BTCUSDT", tmp_path)
    assert f.time_ms.tolist() == [t[0], t[2]] and f.rate == (Decimal("0.0001"), Decimal("-0.000025"))


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        (["time,rate", "1,0.1"], "unexpected header"),
        ([FUNDING_HEADER, "1;0.1"], "line 2: expected time_ms,rate"),
        ([FUNDING_HEADER, "2,0.1", "1,0.1"], "line 3: rate not finite or time not increasing"),
        ([FUNDING_HEADER, "1,NaN"], "line 2: rate not finite"),
    ],
)
def test_a_bad_funding_file_is_refused(tmp_path: Path, lines: list[str], problem: str) -> None:
    write(funding_path("BTCUSDT", tmp_path), lines[0], lines[1:])
    with pytest.raises(DataError, match=problem):
        load_funding("BTCUSDT", tmp_path)
    with pytest.raises(DataError, match="funding file not found"):
        load_funding("ETHUSDT", tmp_path)


def test_a_rewritten_file_is_read_again(tmp_path: Path) -> None:
    path = kline_path("BTCUSDT", "1h", tmp_path)
    t = [ms("2024-01-01") + k * 3_600_000 for k in range(4)]
    write(path, HEADER, bars(t[:2], "1h"))
    assert len(load_klines("BTCUSDT", "1h", tmp_path)) == 2
    write(path, HEADER, bars(t, "1h"))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a coarse clock: make sure it moved
    assert len(load_klines("BTCUSDT", "1h", tmp_path)) == 4
