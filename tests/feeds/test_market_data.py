"""The market-data service against real processes: streams stay capped, the venue source backfills and
picks up closed bars over REST from a paper exchange replaying real klines, and a bad setup is refused
with a clear error."""

from __future__ import annotations

import pytest

from feeds.market_data import MarketDataError, MarketDataService, Tick
from feeds.price_watcher import TICK_STREAM
from signals.bar_store import BarStore
from tests.workflows.conftest import Stack, stack  # noqa: F401  (the fixture)
from trading.config import ConfigError, load_settings


async def test_tick_stream_is_capped(stack: Stack) -> None:  # noqa: F811
    settings = stack.settings.model_copy(update={"market_stream_maxlen": 100})
    svc = MarketDataService(settings, stack.redis, ["BTCUSDT"])
    for i in range(20):
        await svc.publish_ticks([Tick("BTCUSDT", 60000.0 + j, i * 100 + j) for j in range(100)])
    n = await stack.redis.xlen(TICK_STREAM)
    assert 100 <= n <= 200  # MAXLEN ~ trims whole nodes (100 entries each): bounded, never below the cap


@pytest.mark.parametrize(
    "stack", [{"exchange_args": ["--prices", "replay", "--speed", "3600"]}], indirect=True
)
async def test_venue_source_backfills_and_polls_closed_bars(stack: Stack) -> None:  # noqa: F811
    import asyncio

    from exchange.client import BinanceFuturesClient

    settings = stack.settings.model_copy(update={"signal_timeframe": "1m", "market_backfill_bars": 150})
    svc = MarketDataService(settings, stack.redis, ["BTCUSDT"])
    async with BinanceFuturesClient(settings.rest_url, None, None) as client:
        await asyncio.sleep(1.0)  # an hour of replayed market: 60 closed 1m bars
        assert await svc.backfill(client) > 0
        store = BarStore(stack.redis)
        first = (await store.last_bars("1m"))["BTCUSDT"]
        await asyncio.sleep(0.5)
        assert await svc.poll_closed(client) >= 1
        assert (await store.last_bars("1m"))["BTCUSDT"] > first
        bars = await store.read("BTCUSDT", "1m", 2**62, 1000)
        assert (bars.open_time_ms[1:] - bars.open_time_ms[:-1] == 60_000).all()


async def test_bad_setups_are_refused_with_a_clear_error(
    stack: Stack,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = stack.settings.model_copy(update={"market_data_source": "replay", "binance_api_key": None})
    with pytest.raises(MarketDataError, match="BINANCE_API_KEY"):
        await MarketDataService(settings, stack.redis, ["BTCUSDT"]).run_replay(max_bars=1)
    with pytest.raises(MarketDataError, match="no symbols"):
        MarketDataService(settings, stack.redis, [])
    monkeypatch.setenv("SIGNAL_TIMEFRAME", "7m")
    with pytest.raises(ConfigError, match="SIGNAL_TIMEFRAME"):
        load_settings()
    monkeypatch.setenv("SIGNAL_TIMEFRAME", "1h")
    monkeypatch.setenv("SIGNAL_CONFIDENCE_THRESHOLD", "0.4")
    with pytest.raises(ConfigError, match="SIGNAL_CONFIDENCE_THRESHOLD"):
        load_settings()


async def test_replayed_bars_reach_redis_and_features_match_the_offline_computation(stack: Stack) -> None:  # noqa: F811
    """Three replayed bars: the paper exchange's price ends at each bar's close, every bar is stored, and
    the features published for the last bar are those `compute_features` gives offline on the same bars."""
    import json

    import httpx
    import numpy as np

    from signals.bar_store import FEATURES_STREAM, KLINES_STREAM
    from signals.data import load_aligned
    from signals.features import compute_features

    settings = stack.settings.model_copy(
        update={
            "market_data_source": "replay",
            "market_replay_speed": 3600 * 50.0,
            "market_backfill_bars": 300,
        }
    )
    svc = MarketDataService(settings, stack.redis, ["ETHUSDT"])  # + BTCUSDT, the context symbol
    assert svc.symbols == ("BTCUSDT", "ETHUSDT")
    assert await svc.run_replay(max_bars=3) == 3
    al = load_aligned(svc.symbols, "1h")
    window = al.slice(0, 300 + 3)  # the 300-bar backfill, then the three replayed bars
    assert await stack.redis.xlen(KLINES_STREAM) == 6
    last = {
        k.decode(): v.decode() for k, v in (await stack.redis.xrevrange(KLINES_STREAM, count=1))[0][1].items()
    }
    assert int(last["t"]) == int(window.open_time_ms[-1]) and float(last["c"]) in window.close[:, -1]
    price = httpx.get(f"{stack.exchange.base_url}/fapi/v1/ticker/price", params={"symbol": "ETHUSDT"}).json()
    assert float(price["price"]) == pytest.approx(window.close[1, -1], rel=1e-6)
    frame, _ = compute_features(window)
    entries = await stack.redis.xrevrange(FEATURES_STREAM, count=2)
    for _id, fields in entries:
        f = {k.decode(): v.decode() for k, v in fields.items()}
        assert int(f["t"]) == int(window.open_time_ms[-1]) and f["valid"] == "true"
        assert json.loads(f["names"]) == list(frame.names)
        got = np.array(json.loads(f["values"]), dtype=np.float64)
        np.testing.assert_array_equal(got, frame.values[svc.symbols.index(f["symbol"]), -1])
