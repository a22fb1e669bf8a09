"""The REST tail against the real paper exchange (a process on a free loopback port): its closed 1m
bars, written as the loader reads them; the open bar left out; an endpoint it does not serve named."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from signals.data import load_klines
from tests.signals.download.conftest import LocalArchive
from workers.cli import main as qtrader
from workers.devservers import PaperExchange


def _closed_bars(ex: PaperExchange) -> tuple[list[list], int]:
    now = httpx.get(f"{ex.base_url}/fapi/v1/time", timeout=10).json()["serverTime"]
    rows = httpx.get(
        f"{ex.base_url}/fapi/v1/klines",
        params={"symbol": "BTCUSDT", "interval": "1m", "limit": "1500"},
        timeout=10,
    ).json()
    return [r for r in rows if r[6] < now], now


def test_recent_bars_from_the_paper_exchange(
    paper_exchange: PaperExchange,
    archive: LocalArchive,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("QT_HOME", str(tmp_path / "qt"))
    monkeypatch.delenv("QT_DATA_DIR", raising=False)
    ex = paper_exchange
    prices = ["65000.0", "65120.5", "64980.2", "65010.0"]
    deadline = time.monotonic() + 180  # the exchange's first 1m bar closes within a minute
    k = 0
    while not (closed := _closed_bars(ex)[0]):
        assert time.monotonic() < deadline, "the paper exchange closed no 1m bar in 3 minutes"
        ex.set_price("BTCUSDT", prices[k % len(prices)])
        k += 1
        time.sleep(0.5)
    first_day = datetime.fromtimestamp(closed[0][0] / 1000, UTC).date()
    today = datetime.now(UTC).date()
    out = tmp_path / "data"
    argv = ["data", "download", "--symbols", "BTCUSDT", "--timeframe", "1m", "--out", str(out)]
    argv += ["--start", str(first_day), "--end", str(today), "--archive-url", archive.url]
    argv += ["--rest-url", ex.base_url]
    assert qtrader(argv) == 0
    got = load_klines("BTCUSDT", "1m", out)
    after, now = _closed_bars(ex)
    assert len(closed) <= len(got) <= len(after)
    want = after[: len(got)]  # the exchange's closed bars, in its own words
    assert got.open_time_ms.tolist() == [r[0] for r in want]
    assert got.open.tolist() == [float(r[1]) for r in want]
    assert got.high.tolist() == [float(r[2]) for r in want]
    assert got.low.tolist() == [float(r[3]) for r in want]
    assert got.close.tolist() == [float(r[4]) for r in want]
    assert int(got.open_time_ms[-1]) + 60_000 <= now  # no bar still open
    assert not [r for r in archive.requests if r.startswith("/fapi/")]  # REST went to the exchange
    err = capsys.readouterr().err
    assert f"REST tail {first_day}" in err and f"from {ex.base_url}" in err

    # the paper exchange serves klines only: the mark-price tail is named as missing, nothing written
    assert qtrader([*argv, "--kind", "mark"]) == 0
    err = capsys.readouterr().err
    assert f"{ex.base_url} does not serve /fapi/v1/markPriceKlines (404)" in err
    assert not list(out.glob("*-mark.csv.gz"))
