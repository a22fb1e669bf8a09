"""`GET /fapi/v1/ticker/24hr`: Binance's rolling 24 h statistics from the paper exchange's own history —
its fills on pushed prices, or the replayed klines' volume — with Binance's field names and weights."""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from exchange.paper.prices import DEFAULT_DATA_DIR, ReplayPrices
from tests.conftest import PaperExchange, start_paper_exchange
from tests.exchange.paper.test_engine_support import T0, Harness
from tests.exchange.paper.test_server_support import Api

D = Decimal
HOUR = 3_600_000
FIELDS = {
    "symbol", "priceChange", "priceChangePercent", "weightedAvgPrice", "lastPrice", "lastQty", "openPrice",
    "highPrice", "lowPrice", "volume", "quoteVolume", "openTime", "closeTime", "firstId", "lastId", "count",
}  # fmt: skip
BTC_1M = DEFAULT_DATA_DIR / "binance-futures-BTCUSDT-1m.csv.gz"


def test_fills_on_pushed_prices_make_the_volume_and_the_window_rolls() -> None:
    h = Harness()  # manual prices: BTCUSDT starts at 65000
    h.clock.tick(60_000)
    h.engine.set_price("BTCUSDT", D(66300))
    h.market_buy("0.010")
    h.clock.tick(60_000)
    h.market_sell("0.005")
    t = h.engine.ticker_24hr({"symbol": "BTCUSDT"})
    assert set(t) == FIELDS
    prices = [D(t[k]) for k in ("openPrice", "lastPrice", "highPrice", "lowPrice")]
    assert prices == [65000, 66300, 66300, 65000] and t["lastPrice"] == "66300.00"  # the tick size
    assert (D(t["priceChange"]), t["priceChangePercent"]) == (D(1300), "2.000")
    assert (D(t["volume"]), D(t["quoteVolume"])) == (D("0.015"), D("994.5"))  # 0.015 BTC at 66300
    assert D(t["weightedAvgPrice"]) == D(66300) and t["lastQty"] == "0.005"
    assert t["count"] == 2 and t["lastId"] == t["firstId"] + 1
    assert t["closeTime"] - t["openTime"] < 24 * HOUR
    every = h.engine.ticker_24hr({})
    assert [x["symbol"] for x in every] == ["BTCUSDT", "ETHUSDT"]
    eth = every[1]
    assert D(eth["quoteVolume"]) == 0 and eth["count"] == 0 and eth["firstId"] == -1
    # a day later the fills left the window; the open is the last price before it
    h.clock.tick(25 * HOUR)
    h.engine.set_price("BTCUSDT", D(67626))
    t = h.engine.ticker_24hr({"symbol": "BTCUSDT"})
    assert (D(t["openPrice"]), D(t["lastPrice"]), t["priceChangePercent"]) == (66300, 67626, "2.000")
    assert D(t["quoteVolume"]) == 0 and t["count"] == 0


@pytest.mark.skipif(not BTC_1M.exists(), reason="shipped data not present")
def test_a_replayed_symbol_reports_the_klines_volume_of_the_last_24_hours() -> None:
    start = T0 // 60_000 * 60_000
    src = ReplayPrices(DEFAULT_DATA_DIR, ["BTCUSDT"], speed=3600.0, origin_ms=start)
    h = Harness(prices=src)
    h.clock.ms = start + 30_000  # 30 s of wall time at 3600x: 30 h of market time
    h.engine.advance()
    with gzip.open(BTC_1M, "rt") as fh:
        reader = csv.reader(fh)
        next(reader)
        rows = [next(reader) for _ in range(30 * 60)]
    day = rows[6 * 60 :]  # the 1m bars opened in the last 24 h
    t = h.engine.ticker_24hr({"symbol": "BTCUSDT"})
    assert float(t["volume"]) == pytest.approx(sum(float(r[5]) for r in day), rel=1e-4)
    assert float(t["quoteVolume"]) == pytest.approx(sum(float(r[5]) * float(r[4]) for r in day), rel=2e-3)
    assert float(t["openPrice"]) == pytest.approx(float(day[0][1]), rel=1e-4)
    assert float(t["highPrice"]) == pytest.approx(max(float(r[2]) for r in day), rel=1e-4)
    assert float(t["lowPrice"]) == pytest.approx(min(float(r[3]) for r in day), rel=1e-4)
    assert float(t["lastPrice"]) == pytest.approx(float(day[-1][4]), rel=2e-3)


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PaperExchange]:
    ex = start_paper_exchange(Path(tmp_path_factory.mktemp("ticker")))
    try:
        yield ex
    finally:
        ex.process.stop()


def test_served_with_binance_weights(exchange: PaperExchange) -> None:
    with Api(exchange) as api:

        def used(r: object) -> int:
            return int(r.headers["x-mbx-used-weight-1m"])  # type: ignore[attr-defined]

        base = used(api.public("/fapi/v1/ping"))
        one = api.public("/fapi/v1/ticker/24hr", symbol="ETHUSDT")
        assert one.status_code == 200 and used(one) == base + 1
        assert set(one.json()) == FIELDS and one.json()["symbol"] == "ETHUSDT"
        every = api.public("/fapi/v1/ticker/24hr")
        assert every.status_code == 200 and used(every) == base + 1 + 40
        assert {x["symbol"] for x in every.json()} >= {"BTCUSDT", "ETHUSDT"}
        bad = api.public("/fapi/v1/ticker/24hr", symbol="NOPEUSDT")
        assert bad.status_code == 400 and bad.json()["code"] == -1121
