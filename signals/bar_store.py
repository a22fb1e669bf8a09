"""Closed bars in Redis: the market-data service writes them, inference and the universe job read them.

Keys and streams (all strings, Binance kline field names where Binance has one):

* `quantum:stream:market.klines` — one entry per closed bar: `s` symbol, `i` interval, `t` open time
  (ms), `T` close time (ms, `t + interval - 1`), `o h l c` prices, `v` base volume, `q` quote volume,
  `x` "true" (closed), `src` ("venue" | "replay" | "backfill"). `XADD MAXLEN ~ cap`.
* `quantum:klines:{interval}:{symbol}` — sorted set of the same bar as compact JSON
  (`[t, o, h, l, c, v, q]`), score = open time, capped to the newest `keep` bars: the read model
  inference computes features from (a stream would make it scan every symbol's entries).
* `quantum:market:last_bar:{interval}` — hash symbol → open time of that symbol's newest closed bar.
* `quantum:universe` — the symbols the bar-close workflow trades (JSON list; see `workflows/universe.py`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import redis.asyncio as aioredis

from signals.data import AlignedKlines, Klines, align, timeframe_ms

KLINES_STREAM = "quantum:stream:market.klines"
FEATURES_STREAM = "quantum:stream:features"
KLINES_KEY = "quantum:klines:{interval}:{symbol}"
LAST_BAR_KEY = "quantum:market:last_bar:{interval}"
UNIVERSE_KEY = "quantum:universe"
DEFAULT_KEEP = 1500


@dataclass(frozen=True)
class Bar:
    symbol: str
    interval: str
    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float

    @property
    def close_time_ms(self) -> int:
        return self.open_time_ms + timeframe_ms(self.interval) - 1

    def stream_fields(self, source: str) -> dict[str, str]:
        return {
            "s": self.symbol,
            "i": self.interval,
            "t": str(self.open_time_ms),
            "T": str(self.close_time_ms),
            "o": repr(self.open),
            "h": repr(self.high),
            "l": repr(self.low),
            "c": repr(self.close),
            "v": repr(self.volume),
            "q": repr(self.quote_volume),
            "x": "true",
            "src": source,
        }

    def compact(self) -> str:
        return json.dumps(
            [self.open_time_ms, self.open, self.high, self.low, self.close, self.volume, self.quote_volume]
        )

    @classmethod
    def from_binance(cls, symbol: str, interval: str, row: Sequence[object]) -> Bar:
        """From a REST kline row `[t, o, h, l, c, v, T, q, ...]`."""
        return cls(
            symbol,
            interval,
            int(row[0]),  # type: ignore[call-overload]
            float(row[1]),  # type: ignore[arg-type]
            float(row[2]),  # type: ignore[arg-type]
            float(row[3]),  # type: ignore[arg-type]
            float(row[4]),  # type: ignore[arg-type]
            float(row[5]),  # type: ignore[arg-type]
            float(row[7]) if len(row) > 7 else float(row[4]) * float(row[5]),  # type: ignore[arg-type]
        )


class BarStore:
    def __init__(self, redis: aioredis.Redis, *, stream_maxlen: int = 10_000, keep: int = DEFAULT_KEEP):
        self.redis = redis
        self.stream_maxlen = stream_maxlen
        self.keep = keep

    async def write(self, bars: Iterable[Bar], source: str, *, stream: bool = True) -> int:
        """Store closed bars (idempotent per symbol and open time); with `stream`, also append them to
        the klines stream. Returns how many were written."""
        n = 0
        pipe = self.redis.pipeline(transaction=False)
        touched: dict[tuple[str, str], int] = {}
        for b in bars:
            key = KLINES_KEY.format(interval=b.interval, symbol=b.symbol)
            pipe.zremrangebyscore(key, b.open_time_ms, b.open_time_ms)  # a re-sent bar replaces the old
            pipe.zadd(key, {b.compact(): b.open_time_ms})
            if stream:
                pipe.xadd(KLINES_STREAM, b.stream_fields(source), maxlen=self.stream_maxlen, approximate=True)
            prev = touched.get((b.interval, b.symbol))
            touched[(b.interval, b.symbol)] = max(prev or 0, b.open_time_ms)
            n += 1
        for (interval, symbol), t in touched.items():
            pipe.zremrangebyrank(KLINES_KEY.format(interval=interval, symbol=symbol), 0, -self.keep - 1)
            pipe.hset(LAST_BAR_KEY.format(interval=interval), symbol, t)
        if n:
            await pipe.execute()
        return n

    async def last_bars(self, interval: str) -> dict[str, int]:
        raw = await self.redis.hgetall(LAST_BAR_KEY.format(interval=interval))
        return {k.decode(): int(v) for k, v in raw.items()}

    async def read(self, symbol: str, interval: str, end_open_ms: int, n: int) -> Klines:
        """The newest `n` stored bars with open time <= `end_open_ms` (oldest first)."""
        rows = await self.redis.zrevrangebyscore(
            KLINES_KEY.format(interval=interval, symbol=symbol), end_open_ms, "-inf", start=0, num=n
        )
        arr = np.array([json.loads(r) for r in reversed(rows)], dtype=np.float64).reshape(-1, 7)
        return Klines(
            symbol,
            interval,
            arr[:, 0].astype(np.int64),
            arr[:, 1].copy(),
            arr[:, 2].copy(),
            arr[:, 3].copy(),
            arr[:, 4].copy(),
            arr[:, 5].copy(),
        )

    async def read_aligned(
        self, symbols: Sequence[str], interval: str, end_open_ms: int, n: int
    ) -> AlignedKlines:
        """Every symbol's newest `n` bars up to `end_open_ms`, on common contiguous open times ending at
        `end_open_ms` (bars before a gap in any symbol are dropped: features need a contiguous grid)."""
        kl = [await self.read(s, interval, end_open_ms, n) for s in symbols]
        al = align(kl)
        step = timeframe_ms(interval)
        t = al.open_time_ms
        if t.shape[0] == 0 or int(t[-1]) != end_open_ms:
            return al.slice(0, 0)
        gaps = np.flatnonzero(np.diff(t) != step)
        return al.slice(int(gaps[-1]) + 1, None) if gaps.size else al

    async def universe(self) -> list[str] | None:
        raw = await self.redis.get(UNIVERSE_KEY)
        return None if raw is None else [str(s) for s in json.loads(raw)]

    async def set_universe(self, symbols: Sequence[str]) -> None:
        await self.redis.set(UNIVERSE_KEY, json.dumps(list(symbols)))
