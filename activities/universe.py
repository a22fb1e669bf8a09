"""Universe activities (task queue `inference`): 24 h quote volumes and the stored universe.

Quote volumes come from the venue's `GET /fapi/v1/ticker/24hr` (`quoteVolume`; Binance, or the paper
exchange, which computes it from its replayed klines or its own fills). Only symbols the market-data
service stores bars of are candidates: inference cannot decide a symbol without bars. A venue that is
unreachable, does not serve the endpoint, or reports no volume for any candidate (a paper exchange on
pushed prices that nobody traded on yet) gives way to the closed bars the market-data service stored:
the quote volume of each symbol's bars in the 24 h up to its newest bar.

No stored bars at all is not an empty universe: it is a stack whose market-data service has not
stored its first bar yet. Storing `[]` then would have inference decide nothing until the next run of
the schedule (an hour by default), so the activity fails, retryably, and the universe is left as it was
(unset: inference decides the allowlist).
"""

from __future__ import annotations

import json
import logging

import httpx
import redis.asyncio as aioredis
from temporalio import activity
from temporalio.exceptions import ApplicationError

from signals.bar_store import KLINES_KEY, BarStore
from signals.data import timeframe_ms
from workflows import calls
from workflows.errors import ErrorType
from workflows.messages import QuoteVolumes, UniverseInput

log = logging.getLogger("activities.universe")
DAY_MS = 86_400_000


class UniverseActivities:
    def __init__(self, redis: aioredis.Redis, rest_url: str | None) -> None:
        self.store = BarStore(redis)
        self.rest_url = rest_url

    async def _from_venue(self) -> dict[str, float] | None:
        if not self.rest_url:
            return None
        try:
            async with httpx.AsyncClient(base_url=self.rest_url, timeout=10) as http:
                r = await http.get("/fapi/v1/ticker/24hr")
        except httpx.HTTPError as exc:
            log.warning("ticker/24hr unreachable (%r); using stored bars", exc)
            return None
        if r.status_code != 200:
            log.warning("ticker/24hr answered %s; using stored bars", r.status_code)
            return None
        return {row["symbol"]: float(row["quoteVolume"]) for row in r.json() if "quoteVolume" in row}

    async def _from_bars(self, interval: str, last: dict[str, int]) -> dict[str, float]:
        out: dict[str, float] = {}
        for symbol, t in last.items():
            start = t - DAY_MS + timeframe_ms(interval)
            rows = await self.store.redis.zrangebyscore(
                KLINES_KEY.format(interval=interval, symbol=symbol), start, t
            )
            out[symbol] = float(sum(json.loads(r)[6] for r in rows))
        return out

    @activity.defn(name=calls.QUOTE_VOLUMES.name)
    async def quote_volumes(self, inp: UniverseInput) -> QuoteVolumes:
        last = await self.store.last_bars(inp.interval)
        if not last:
            raise ApplicationError(
                f"no closed {inp.interval} bars stored yet (is market-data running?); the universe is "
                "left as it was",
                type=ErrorType.NO_BARS_STORED,
            )
        venue = await self._from_venue()
        if venue is not None:
            stored = {s: v for s, v in venue.items() if s in last}
            if any(v > 0 for v in stored.values()):
                return QuoteVolumes(volumes=stored, source="ticker_24hr")
            log.info("ticker/24hr has no volume for the stored symbols %s; using stored bars", sorted(last))
        return QuoteVolumes(volumes=await self._from_bars(inp.interval, last), source="bars")

    @activity.defn(name=calls.STORE_UNIVERSE.name)
    async def store_universe(self, symbols: list[str]) -> None:
        await self.store.set_universe(symbols)
