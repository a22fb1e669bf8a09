"""The market-data service (`qtrader market-data`): closed bars and ticks into Redis, features per bar.

Two sources (`MARKET_DATA_SOURCE`):

* `venue` — the venue's WebSocket streams (Binance or the paper exchange; Binance's split paths):
  `<sym>@kline_<tf>` (closed bars: `k.x` true) and `<sym>@markPrice@1s` (ticks) on
  `<ws_url>/market/stream?streams=…`. At start and after every reconnect the bars are backfilled
  over REST (`GET /fapi/v1/klines`, newest `MARKET_BACKFILL_BARS`), so a gap never survives a
  reconnect. Reconnects back off from 0.5 s doubling to 10 s.
* `replay` — the shipped klines (`data/`, or `QT_DATA_DIR`) replayed at `MARKET_REPLAY_SPEED` × real time.
  History before the replay cursor is the backfill; each replayed bar moves the paper exchange's
  price (`POST /admin/price`, the exchange must run with `--prices manual`) along the bar's path
  open → low → high → close (open → high → low → close on a down bar), so positions see the real
  intrabar moves and their stops fire. The cursor is kept in Redis (`quantum:market:replay:cursor:
  <tf>`), so the next run continues the market where this one stopped (bar times, and with them the
  intents' workflow ids, never repeat). The shipped files have no quote volume: replayed bars carry
  `q = close × volume`.

Published (schemas in `signals/bar_store.py`; all capped with `XADD MAXLEN ~ MARKET_STREAM_MAXLEN`):

* `quantum:stream:market.klines` — every closed bar;
* `quantum:stream:market.tick` — `symbol, price, timestamp, bid, ask, volume, src` (the price
  watcher's tick schema; `src` = "market-data");
* `quantum:stream:features` — per symbol and closed bar once every symbol has it: `symbol, interval,
  t` (bar open ms), `T` (bar close ms), `names` (JSON list), `values` (JSON list, same order; null
  during warm-up), `valid` ("true" when every value is finite).

Prometheus metrics on `--metrics-port` (default `MARKET_DATA_METRICS_PORT`, 9468).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import numpy as np
import redis.asyncio as aioredis
import websockets
from prometheus_client import CollectorRegistry, Counter, Gauge

from exchange.client import BinanceFuturesClient
from exchange.models import Kline
from feeds.price_watcher import TICK_STREAM
from signals.bar_store import FEATURES_STREAM, Bar, BarStore
from signals.data import AlignedKlines, default_data_dir, load_aligned, timeframe_ms
from signals.features import FeatureEngine, _feature_config, compute_features, feature_symbols
from trading.config import Settings
from workers.service import Service, run_service

log = logging.getLogger("feeds.market_data")

REPLAY_CURSOR_KEY = "quantum:market:replay:cursor:{interval}"
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.5, 10.0


class MarketDataError(RuntimeError):
    """The service cannot run as configured; the message says why."""


class MarketMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.bars = Counter("market_data_bars", "Closed bars stored", ["source"], registry=r)
        self.ticks = Counter("market_data_ticks", "Ticks published", registry=r)
        self.features = Counter("market_data_feature_rows", "Feature rows published", registry=r)
        self.reconnects = Counter("market_data_reconnects", "Reconnects after a lost stream", registry=r)
        self.last_bar = Gauge(
            "market_data_last_bar_open_ms", "Open time of the newest closed bar", registry=r
        )
        self.errors = Counter("market_data_errors", "Errors by kind", ["kind"], registry=r)


class FeatureTracker:
    """Features for every symbol, advanced one closed bar at a time once all symbols have that bar."""

    def __init__(self, store: BarStore, symbols: Sequence[str], interval: str, maxlen: int) -> None:
        self.store = store
        self.symbols = tuple(symbols)
        self.interval = interval
        self.maxlen = maxlen
        self.engine: FeatureEngine | None = None
        self.pending: dict[int, dict[str, Bar]] = {}

    async def rebuild(self, end_open_ms: int) -> None:
        """Restart the engine from the stored bars ending at `end_open_ms` (after backfill or a gap)."""
        bars = await self.store.read_aligned(self.symbols, self.interval, end_open_ms, self.store.keep)
        self.engine = None
        if bars.n_bars:
            _, self.engine = compute_features(bars, _feature_config(self.symbols))
        self.pending = {t: b for t, b in self.pending.items() if t > end_open_ms}

    async def on_bar(self, bar: Bar) -> np.ndarray | None:
        """Record one symbol's closed bar; features [S, F] when that bar completes its time for all."""
        if bar.symbol not in self.symbols:
            return None
        slot = self.pending.setdefault(bar.open_time_ms, {})
        slot[bar.symbol] = bar
        if len(slot) < len(self.symbols):
            return None
        del self.pending[bar.open_time_ms]
        t = bar.open_time_ms
        if self.engine is None or self.engine.last_open_time_ms != t - timeframe_ms(self.interval):
            return await self._publish_last(t)  # after a gap: restart from the stored bars (they hold t)
        rows = [slot[s] for s in self.symbols]
        values = self.engine.update(
            t,
            np.array([b.high for b in rows]),
            np.array([b.low for b in rows]),
            np.array([b.close for b in rows]),
            np.array([b.volume for b in rows]),
        )
        await self.publish(t, values)
        return values

    async def _publish_last(self, t: int) -> np.ndarray | None:
        bars = await self.store.read_aligned(self.symbols, self.interval, t, self.store.keep)
        if bars.n_bars == 0:
            self.engine = None
            return None
        frame, self.engine = compute_features(bars, _feature_config(self.symbols))
        values = frame.values[:, -1, :]
        await self.publish(t, values)
        return values

    async def publish(self, open_time_ms: int, values: np.ndarray) -> None:
        assert self.engine is not None
        names = json.dumps(list(self.engine.names))
        close_ms = open_time_ms + timeframe_ms(self.interval) - 1
        pipe = self.store.redis.pipeline(transaction=False)
        for i, s in enumerate(self.symbols):
            row = values[i]
            pipe.xadd(
                FEATURES_STREAM,
                {
                    "symbol": s,
                    "interval": self.interval,
                    "t": str(open_time_ms),
                    "T": str(close_ms),
                    "names": names,
                    "values": json.dumps([float(v) if math.isfinite(v) else None for v in row]),
                    "valid": str(bool(np.all(np.isfinite(row)))).lower(),
                },
                maxlen=self.maxlen,
                approximate=True,
            )
        await pipe.execute()


def _closed(rows: list[Kline], now_ms: int) -> list[Kline]:
    """REST kline rows without the one still forming: the newest row is open unless its close time has
    passed (a venue whose market clock runs ahead of the wall clock, a replay, still puts it last)."""
    return rows[:-1] if rows and rows[-1].close_time >= now_ms else rows


def _bar(symbol: str, interval: str, k: Kline) -> Bar:
    return Bar(
        symbol,
        interval,
        k.open_time,
        float(k.open),
        float(k.high),
        float(k.low),
        float(k.close),
        float(k.volume),
        float(k.quote_volume),
    )


@dataclass
class Tick:
    symbol: str
    price: float
    ts_ms: int


class MarketDataService:
    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        symbols: Sequence[str],
        *,
        metrics: MarketMetrics | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        if not symbols:
            raise MarketDataError("no symbols to follow (APPLY_ALLOWLIST names none with data)")
        self.settings = settings
        self.redis = redis
        self.interval = settings.signal_timeframe
        self.symbols = feature_symbols(symbols)
        self.store = BarStore(redis, stream_maxlen=settings.market_stream_maxlen, keep=1500)
        self.features = FeatureTracker(self.store, self.symbols, self.interval, settings.market_stream_maxlen)
        self.metrics = metrics or MarketMetrics()
        self.stop = stop or asyncio.Event()

    # ------------------------------------------------------------------ shared
    async def store_bars(self, bars: Sequence[Bar], source: str) -> None:
        await self.store.write(bars, source)
        self.metrics.bars.labels(source).inc(len(bars))
        if bars:
            self.metrics.last_bar.set(max(b.open_time_ms for b in bars))

    async def publish_ticks(self, ticks: Sequence[Tick]) -> None:
        if not ticks:
            return
        pipe = self.redis.pipeline(transaction=False)
        for t in ticks:
            px = repr(t.price)
            pipe.xadd(
                TICK_STREAM,
                {
                    "symbol": t.symbol,
                    "price": px,
                    "timestamp": str(t.ts_ms),
                    "bid": px,
                    "ask": px,
                    "volume": "0",
                    "src": "market-data",
                },
                maxlen=self.settings.market_stream_maxlen,
                approximate=True,
            )
        await pipe.execute()
        self.metrics.ticks.inc(len(ticks))

    async def close_bars(self, bars: Sequence[Bar], source: str) -> None:
        """Closed bars of one open time for all symbols: store, then features."""
        await self.store_bars(bars, source)
        for b in bars:
            if await self.features.on_bar(b) is not None:
                self.metrics.features.inc(len(self.symbols))

    # ------------------------------------------------------------------ venue
    async def backfill(self, client: BinanceFuturesClient) -> int:
        """Newest closed bars of every symbol over REST; features restarted from them."""
        now = await client.server_time()
        last: dict[str, int] = {}
        n = 0
        for s in self.symbols:
            rows = await client.klines(s, self.interval, limit=self.settings.market_backfill_bars + 1)
            bars = [_bar(s, self.interval, k) for k in _closed(rows, now)]
            await self.store.write(bars, "backfill", stream=False)
            n += len(bars)
            if bars:
                last[s] = bars[-1].open_time_ms
        if last:
            await self.features.rebuild(min(last.values()))
        log.info("backfilled %d bars of %d symbols", n, len(self.symbols))
        return n

    def stream_url(self) -> str:
        names = []
        for s in self.symbols:
            low = s.lower()
            names += [f"{low}@kline_{self.interval}", f"{low}@markPrice@1s"]
        return f"{self.settings.ws_url.rstrip('/')}/market/stream?streams={'/'.join(names)}"

    async def run_venue(self) -> None:
        backoff = BACKOFF_MIN_S
        async with BinanceFuturesClient(self.settings.rest_url, None, None) as client:
            first = True
            while not self.stop.is_set():
                try:
                    await self.backfill(client)
                    async with websockets.connect(self.stream_url(), open_timeout=10, max_size=2**22) as ws:
                        if not first:
                            self.metrics.reconnects.inc()
                        first = False
                        backoff = BACKOFF_MIN_S
                        await self._consume(ws, client)
                except (OSError, websockets.WebSocketException, httpx.HTTPError, TimeoutError) as exc:
                    self.metrics.errors.labels("venue").inc()
                    log.warning("venue stream error=%r; reconnect in %.1fs", exc, backoff)
                if self.stop.is_set():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), backoff * (0.8 + 0.4 * random.random()))
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def poll_closed(self, client: BinanceFuturesClient) -> int:
        """REST safety net: closed bars newer than the stored ones (a venue that streams no kline of this
        interval — the paper exchange streams 1m only — or a lost message)."""
        last = await self.store.last_bars(self.interval)
        n = 0
        for s in self.symbols:
            since = last.get(s)
            start = None if since is None else since + timeframe_ms(self.interval)  # no gap left behind
            rows = await client.klines(s, self.interval, start_time=start, limit=1500 if start else 3)
            rows = rows[:-1] if rows and len(rows) < 1500 else rows  # the newest row is still forming
            for k in rows:
                if k.open_time > last.get(s, -1):
                    await self.close_bars([_bar(s, self.interval, k)], "venue")
                    n += 1
        return n

    async def _consume(self, ws: websockets.ClientConnection, client: BinanceFuturesClient) -> None:
        stopper = asyncio.create_task(self.stop.wait())
        poll_s = min(60.0, self.settings.bar_seconds)
        next_poll = time.monotonic() + poll_s
        try:
            while not self.stop.is_set():
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + poll_s
                    await self.poll_closed(client)
                recv = asyncio.create_task(ws.recv())
                done, _ = await asyncio.wait(
                    {recv, stopper},
                    timeout=max(0.0, next_poll - time.monotonic()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if stopper in done:
                    recv.cancel()
                    return
                if recv not in done:
                    recv.cancel()
                    continue
                msg = json.loads(recv.result())
                data = msg.get("data", msg)
                etype = data.get("e")
                if etype == "kline" and data["k"].get("x"):
                    k = data["k"]
                    bar = Bar(
                        data["s"],
                        k["i"],
                        int(k["t"]),
                        float(k["o"]),
                        float(k["h"]),
                        float(k["l"]),
                        float(k["c"]),
                        float(k["v"]),
                        float(k.get("q") or 0.0),
                    )
                    if bar.interval == self.interval:
                        await self.close_bars([bar], "venue")
                elif etype == "markPriceUpdate":
                    await self.publish_ticks([Tick(data["s"], float(data["p"]), int(data["E"]))])
        finally:
            stopper.cancel()

    # ------------------------------------------------------------------ replay
    def load_replay(self) -> AlignedKlines:
        data_dir = self.settings.paper_data_dir.expanduser()
        if not data_dir.is_dir():
            data_dir = default_data_dir()
        try:
            return load_aligned(self.symbols, self.interval, data_dir)
        except Exception as exc:
            raise MarketDataError(
                f"cannot replay {','.join(self.symbols)} {self.interval} from {data_dir}: {exc}"
            ) from exc

    async def replay_start(self, bars: AlignedKlines) -> int:
        """Index of the first bar to replay: the saved cursor, else just after the backfill window."""
        warm = self.settings.market_backfill_bars
        if bars.n_bars <= warm + 1:
            raise MarketDataError(f"only {bars.n_bars} common bars; the replay needs more than {warm + 1}")
        raw = await self.redis.get(REPLAY_CURSOR_KEY.format(interval=self.interval))
        if raw is not None:
            i = int(np.searchsorted(bars.open_time_ms, int(raw)))
            if warm <= i < bars.n_bars:
                return i
        return warm

    async def run_replay(self, max_bars: int | None = None) -> int:
        """Replay bars (all, or `max_bars`); returns how many were replayed."""
        bars = self.load_replay()
        start = await self.replay_start(bars)
        hist = [
            self._bar(bars, i, j)
            for j in range(len(self.symbols))
            for i in range(start - self.settings.market_backfill_bars, start)
        ]
        await self.store.write(hist, "backfill", stream=False)
        await self.features.rebuild(int(bars.open_time_ms[start - 1]))
        bar_s = self.settings.bar_seconds
        key, secret = self._admin_key()
        done = 0
        async with httpx.AsyncClient(base_url=self.settings.rest_url, timeout=5) as http:
            for i in range(start, bars.n_bars):
                if self.stop.is_set() or (max_bars is not None and done >= max_bars):
                    break
                t0 = time.monotonic()
                path = [[self._path(bars, i, j)[k] for j in range(len(self.symbols))] for k in range(4)]
                for k, prices in enumerate(path):  # open, first extreme, second extreme, close
                    await self._push_prices(http, key, prices)
                    wait = t0 + bar_s * (k + 1) / 4 - time.monotonic()
                    if wait > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self.stop.wait(), wait)
                    if self.stop.is_set():
                        break
                else:
                    closed = [self._bar(bars, i, j) for j in range(len(self.symbols))]
                    await self.close_bars(closed, "replay")
                    await self.redis.set(
                        REPLAY_CURSOR_KEY.format(interval=self.interval), int(bars.open_time_ms[i]) + 1
                    )
                    done += 1
        del secret
        return done

    def _admin_key(self) -> tuple[str, str]:
        s = self.settings
        if s.binance_api_key is None or s.binance_api_secret is None:
            raise MarketDataError(
                "the replay moves the paper exchange's prices: BINANCE_API_KEY/SECRET of the paper account "
                "are needed (`qtrader stack up` passes them)"
            )
        return s.binance_api_key.get_secret_value(), s.binance_api_secret.get_secret_value()

    async def _push_prices(self, http: httpx.AsyncClient, key: str, prices: Sequence[float]) -> None:
        now = int(time.time() * 1000)
        ticks = []
        for s, p in zip(self.symbols, prices, strict=True):
            r = await http.post(
                "/admin/price", json={"symbol": s, "price": repr(p)}, headers={"X-MBX-APIKEY": key}
            )
            if r.status_code >= 400:
                body = r.text
                if "not manual" in body:
                    raise MarketDataError(
                        "the paper exchange does not take prices (it runs --prices replay/synthetic); "
                        "start it with --prices manual (`qtrader stack up --prices manual`)"
                    )
                self.metrics.errors.labels("price_push").inc()
                log.warning("price push %s %s failed: %s %s", s, p, r.status_code, body[:200])
                continue
            ticks.append(Tick(s, p, now))
        await self.publish_ticks(ticks)

    def _bar(self, bars: AlignedKlines, i: int, j: int) -> Bar:
        c, v = float(bars.close[j, i]), float(bars.volume[j, i])
        return Bar(
            self.symbols[j],
            self.interval,
            int(bars.open_time_ms[i]),
            float(bars.open[j, i]),
            float(bars.high[j, i]),
            float(bars.low[j, i]),
            c,
            v,
            c * v,
        )

    @staticmethod
    def _path(bars: AlignedKlines, i: int, j: int) -> tuple[float, float, float, float]:
        o, h, lo, c = (float(a[j, i]) for a in (bars.open, bars.high, bars.low, bars.close))
        return (o, lo, h, c) if c >= o else (o, h, lo, c)


def service_symbols(settings: Settings) -> list[str]:
    """The allowlist's symbols (every symbol with data for `*`) that have klines of the timeframe."""
    from signals.data import available

    data_dir = settings.paper_data_dir.expanduser()
    have = sorted(
        {s for s, tf in available(data_dir if data_dir.is_dir() else None) if tf == settings.signal_timeframe}
    )
    if "*" in settings.apply_allowlist:
        return have
    if settings.market_data_source == "venue":
        return list(settings.apply_allowlist)
    return [s for s in settings.apply_allowlist if s in have]


async def run_market_data(settings: Settings, metrics_port: int | None) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per price push otherwise
    metrics = MarketMetrics()

    async def follow(service: Service) -> None:
        svc = MarketDataService(
            settings, service.redis, service_symbols(settings), metrics=metrics, stop=service.stop
        )
        log.info("market data: %s %s %s", settings.market_data_source, settings.signal_timeframe, svc.symbols)
        if settings.market_data_source == "replay":
            await svc.run_replay()
        else:
            await svc.run_venue()

    await run_service(
        "market data",
        settings,
        follow,
        log=log,
        registry=metrics.registry,
        metrics_port=metrics_port,
        redis={"socket_timeout": 5},
    )
