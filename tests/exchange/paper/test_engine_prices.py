"""Price sources: replay of a real shipped kline file (rebased, monotone), synthetic GBM, manual."""

from __future__ import annotations

import csv
import gzip
from decimal import Decimal
from pathlib import Path

import pytest

from exchange.paper.config import PaperConfig
from exchange.paper.engine import PaperEngine
from exchange.paper.prices import (
    DEFAULT_DATA_DIR,
    ManualPrices,
    ReplayPrices,
    SyntheticPrices,
    build_price_source,
)
from tests.exchange.paper.test_engine_support import T0, Clock

BTC_1M = DEFAULT_DATA_DIR / "binance-futures-BTCUSDT-1m.csv.gz"
START = T0 // 60_000 * 60_000  # engine start on a minute boundary (replay floors its origin to one)
needs_data = pytest.mark.skipif(not BTC_1M.exists(), reason="shipped data not present")


def first_rows(path: Path, n: int) -> list[list[str]]:
    with gzip.open(path, "rt") as fh:
        reader = csv.reader(fh)
        next(reader)
        return [next(reader) for _ in range(n)]


@needs_data
def test_replay_origin_off_the_grid_floors_to_the_bar() -> None:
    src = ReplayPrices(DEFAULT_DATA_DIR, ["BTCUSDT"], speed=1.0, origin_ms=START + 30_000)
    first = first_rows(BTC_1M, 1)[0]
    assert src.price_at("BTCUSDT", START) == Decimal(first[1])  # the first bar opened at START


@needs_data
def test_replay_is_rebased_to_the_start_and_walks_each_bar() -> None:
    origin = START
    src = ReplayPrices(DEFAULT_DATA_DIR, ["BTCUSDT"], speed=1.0, origin_ms=origin)
    assert src.timeframe_ms("BTCUSDT") == 60_000  # the 1m file is preferred
    rows = first_rows(BTC_1M, 3)
    o, h, lo, c = (Decimal(x) for x in rows[0][1:5])
    assert c < o  # the first bar is a down bar: open -> high -> low -> close
    assert src.price_at("BTCUSDT", origin) == o
    assert src.price_at("BTCUSDT", origin + 20_000) == h
    assert src.price_at("BTCUSDT", origin + 40_000) == lo
    assert src.price_at("BTCUSDT", origin + 60_000) == Decimal(rows[1][1])  # next bar opens
    up = next(i for i, r in enumerate(first_rows(BTC_1M, 50)) if Decimal(r[4]) > Decimal(r[1]))
    r = first_rows(BTC_1M, 50)[up]
    assert src.price_at("BTCUSDT", origin + up * 60_000 + 20_000) == Decimal(r[3])  # up bar: low first


@needs_data
def test_replay_market_clock_runs_at_speed_and_prices_stay_in_each_bars_range() -> None:
    src = ReplayPrices(DEFAULT_DATA_DIR, ["BTCUSDT"], speed=60.0, origin_ms=START)
    walls = [START + i * 250 for i in range(200)]
    markets = [src.market_ms(w) for w in walls]
    assert markets == sorted(markets) and markets[0] == START
    assert src.market_ms(START + 1000) == START + 60_000  # one wall second = one market minute
    rows = first_rows(BTC_1M, 60)
    for m in markets:
        i = (m - START) // 60_000
        px = src.price_at("BTCUSDT", m)
        assert Decimal(rows[i][3]) <= px <= Decimal(rows[i][2])


@needs_data
def test_replay_engine_serves_real_bars_up_to_the_market_clock() -> None:
    clock = Clock(START)
    cfg = PaperConfig(
        api_key="k", api_secret="s", clock=clock, prices="replay", symbols=["BTCUSDT"], speed=60.0
    )
    engine = PaperEngine(cfg, build_price_source(cfg))
    clock.tick(10_000)  # 10 market minutes
    engine.advance()
    rows = engine.klines({"symbol": "BTCUSDT", "interval": "1m"})
    real = first_rows(BTC_1M, 11)
    assert [r[0] for r in rows] == [START + i * 60_000 for i in range(11)]
    for got, want in zip(rows[:10], real[:10], strict=True):
        assert [Decimal(x) for x in got[1:6]] == [Decimal(x) for x in want[1:6]]
    assert rows[-1][1] == f"{Decimal(real[10][1]):.2f}"  # the open bar, just begun
    b = -(-START // 300_000) * 300_000  # the first whole 5m bar
    k = (b - START) // 60_000
    five = engine.klines({"symbol": "BTCUSDT", "interval": "5m", "startTime": str(b), "limit": "1"})
    assert five[0][0] == b
    assert Decimal(five[0][1]) == Decimal(real[k][1])
    assert Decimal(five[0][2]) == max(Decimal(r[2]) for r in real[k : k + 5])
    assert Decimal(five[0][3]) == min(Decimal(r[3]) for r in real[k : k + 5])
    assert Decimal(five[0][4]) == Decimal(real[k + 4][4])
    assert Decimal(five[0][5]) == sum(Decimal(r[5]) for r in real[k : k + 5])
    assert engine.ticker_price({"symbol": "BTCUSDT"})["price"] == rows[-1][4]


def test_synthetic_is_deterministic_per_seed_and_moves() -> None:
    a = SyntheticPrices(["BTCUSDT"], seed=1, origin_ms=T0)
    b = SyntheticPrices(["BTCUSDT"], seed=1, origin_ms=T0)
    c = SyntheticPrices(["BTCUSDT"], seed=2, origin_ms=T0)
    times = [T0 + i * 1_000 for i in range(0, 600, 7)]
    pa = [a.price_at("BTCUSDT", t) for t in times]
    assert pa == [b.price_at("BTCUSDT", t) for t in reversed(times)][::-1]
    assert pa != [c.price_at("BTCUSDT", t) for t in times]
    assert len(set(pa)) > 10
    assert all(abs(p / pa[0] - 1) < Decimal("0.05") for p in pa)


def test_manual_prices_start_from_defaults_or_the_data_file() -> None:
    assert ManualPrices(["BTCUSDT"]).price_at("BTCUSDT", 0) == Decimal("65000")
    if (DEFAULT_DATA_DIR / "binance-futures-ETHUSDT-1h.csv.gz").exists():
        px = ManualPrices(["ETHUSDT"], DEFAULT_DATA_DIR).price_at("ETHUSDT", 0)
        with gzip.open(DEFAULT_DATA_DIR / "binance-futures-ETHUSDT-1h.csv.gz", "rt") as fh:
            last = fh.read().rstrip("\n").rsplit("\n", 1)[-1].split(",")
        assert px == Decimal(last[4]).quantize(Decimal("0.01"))
