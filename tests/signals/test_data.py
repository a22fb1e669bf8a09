from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from signals.data import (
    AlignedKlines,
    DataError,
    align,
    available,
    load_klines,
    timeframe_ms,
)
from tests.signals.conftest import _need


def test_timeframe_ms() -> None:
    assert timeframe_ms("1m") == 60_000
    assert timeframe_ms("15m") == 900_000
    assert timeframe_ms("4h") == 14_400_000
    assert timeframe_ms("1w") == 7 * 86_400_000
    for bad in ("1mo", "7x", "h"):  # a month has no fixed length
        with pytest.raises(ValueError):
            timeframe_ms(bad)


def test_load_btc_1h_real_file() -> None:
    _need(("BTCUSDT",))
    k = load_klines("BTCUSDT", "1h")
    assert len(k) == 58_623  # README row count
    assert k.open_time_ms[0] == 1567962000000  # 2019-09-08 17:00 UTC
    assert np.all(np.diff(k.open_time_ms) == 3_600_000)
    assert np.all(k.high >= np.maximum(k.open, k.close)) and np.all(k.low <= np.minimum(k.open, k.close))
    part = load_klines("BTCUSDT", "1h", start_ms=1704067200000, end_ms=1704067200000 + 24 * 3_600_000)
    assert len(part) == 24 and part.open_time_ms[0] == 1704067200000


def test_align_real_symbols_on_common_hours() -> None:
    _need(("BTCUSDT", "SOLUSDT", "BNBUSDT"))
    al = align([load_klines(s, "1h") for s in ("BTCUSDT", "SOLUSDT", "BNBUSDT")])
    assert isinstance(al, AlignedKlines)
    assert al.close.shape == (3, al.n_bars)
    assert al.n_bars == 16_815  # README: common window of all ten symbols, BNB is the shortest
    assert al.open_time_ms[0] == 1704067200000
    btc = load_klines("BTCUSDT", "1h")
    i = int(np.searchsorted(btc.open_time_ms, al.open_time_ms[100]))
    assert al.close[0, 100] == btc.close[i]
    assert len(al.sha256()) == 64 and al.sha256() != al.slice(1, None).sha256()


def test_available_and_missing(tmp_path: Path) -> None:
    assert available(tmp_path) == []
    with pytest.raises(DataError, match="not found"):
        load_klines("BTCUSDT", "1h", tmp_path)
    _need(("BTCUSDT",))
    assert ("BTCUSDT", "1h") in available()


def test_align_synthetic_intersection() -> None:
    from signals.data import Klines

    def mk(sym: str, times: list[int]) -> Klines:
        t = np.array(times, dtype=np.int64)
        x = t.astype(float) / 1000 + 1
        return Klines(sym, "1h", t, x, x + 1, x - 1, x, x)

    h = 3_600_000
    al = align([mk("A", [0, h, 2 * h, 3 * h]), mk("B", [h, 2 * h, 3 * h, 4 * h])])
    assert list(al.open_time_ms) == [h, 2 * h, 3 * h]
    assert np.array_equal(al.close[0], al.close[1])
