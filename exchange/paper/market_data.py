"""Public market data: server time, exchange info, mark prices, tickers and klines, and the 1m bars
the venue records from its own prices and fills (what klines and the 24 h ticker serve for a symbol
that is not replayed, and what the kline stream emits)."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from exchange.paper.errors import ApiError
from exchange.paper.params import _int, _invalid, _req
from exchange.paper.prices import TIMEFRAMES_MS, ReplayPrices
from exchange.paper.shapes import money, num, price_str, qty_str
from exchange.paper.state import ZERO, EngineState

E3 = Decimal("0.001")


class MarketDataMixin(EngineState):
    """The public (unsigned) market-data endpoints and the recorded 1m bars behind them."""

    def server_time(self, p: dict[str, str]) -> dict[str, Any]:
        return {"serverTime": self.wall_ms()}

    def exchange_info(self, p: dict[str, str]) -> dict[str, Any]:
        now = self.wall_ms()
        return {
            "timezone": "UTC",
            "serverTime": now,
            "futuresType": "U_MARGINED",
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": self.config.weight_limit_1m,
                },
                {
                    "rateLimitType": "ORDERS",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": self.config.order_limit_1m,
                },
                {
                    "rateLimitType": "ORDERS",
                    "interval": "SECOND",
                    "intervalNum": 10,
                    "limit": self.config.order_limit_10s,
                },
            ],
            "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": [self._symbol_info(s) for s in self.symbols],
        }

    def _symbol_info(self, s: str) -> dict[str, Any]:
        r = self.rules[s]
        return {
            "symbol": s,
            "pair": s,
            "contractType": "PERPETUAL",
            "deliveryDate": 4133404800000,
            "onboardDate": 1569398400000,
            "status": r.status,
            "maintMarginPercent": "2.5000",
            "requiredMarginPercent": "5.0000",
            "baseAsset": r.base_asset,
            "quoteAsset": r.quote_asset,
            "marginAsset": "USDT",
            "pricePrecision": r.price_precision,
            "quantityPrecision": r.quantity_precision,
            "baseAssetPrecision": 8,
            "quotePrecision": 8,
            "underlyingType": "COIN",
            "underlyingSubType": [],
            "settlePlan": 0,
            "triggerProtect": "0.0500",
            "liquidationFee": str(self.config.liquidation_fee_rate),
            "marketTakeBound": "0.05",
            "maxMoveOrderLimit": 10000,
            "filters": r.to_filters(),
            "orderTypes": [
                "LIMIT",
                "MARKET",
                "STOP",
                "STOP_MARKET",
                "TAKE_PROFIT",
                "TAKE_PROFIT_MARKET",
                "TRAILING_STOP_MARKET",
            ],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        }

    def _per_symbol(self, p: dict[str, str], fn: Callable[[str], dict[str, Any]]) -> dict[str, Any] | list:
        sym = self._symbol(p, required=False)
        if sym is not None:
            return fn(sym)
        return [fn(s) for s in self.symbols]

    def premium_index(self, p: dict[str, str]) -> dict[str, Any] | list:
        now = self.wall_ms()

        def one(s: str) -> dict[str, Any]:
            mark = money(self.last[s])
            return {
                "symbol": s,
                "markPrice": mark,
                "indexPrice": mark,
                "estimatedSettlePrice": mark,
                "lastFundingRate": money(self.config.funding_rate),
                "interestRate": "0.00010000",
                "nextFundingTime": self.next_funding,
                "time": now,
            }

        return self._per_symbol(p, one)

    def ticker_price(self, p: dict[str, str]) -> dict[str, Any] | list:
        now = self.wall_ms()
        return self._per_symbol(
            p, lambda s: {"symbol": s, "price": price_str(self.rules[s], self.last[s]), "time": now}
        )

    def book_ticker(self, p: dict[str, str]) -> dict[str, Any] | list:
        now = self.wall_ms()

        def one(s: str) -> dict[str, Any]:
            r = self.rules[s]
            px = self.last[s]
            return {
                "symbol": s,
                "bidPrice": price_str(r, max(px - r.tick_size, r.tick_size)),
                "bidQty": qty_str(r, r.min_qty * 1000),
                "askPrice": price_str(r, px + r.tick_size),
                "askQty": qty_str(r, r.min_qty * 1000),
                "time": now,
                "lastUpdateId": self._book_id,
            }

        return self._per_symbol(p, one)

    def ticker_24hr(self, p: dict[str, str]) -> dict[str, Any] | list:
        """Rolling 24 h statistics (market time) from this venue's own history: replayed klines (price
        path and volume) for a replayed symbol, else the recorded 1m bars, whose volume is this venue's
        fills; before the history starts, the oldest known price is the open."""
        now = self.wall_ms()
        now_m = self.prices.market_ms(now)
        hour, day = 3_600_000, 86_400_000
        since = now - int(day / (getattr(self.prices, "speed", 1.0) or 1.0))  # the window in wall time
        fills: dict[str, list[dict[str, Any]]] = {}
        for t in reversed(self.trades):  # in time order: stop at the window's start
            if t["time"] < since:
                break
            fills.setdefault(t["symbol"], []).append(t)

        def one(s: str) -> dict[str, Any]:
            r = self.rules[s]
            if isinstance(self.prices, ReplayPrices) and self.prices.replays(s):
                start = now_m - day + 1
                rows = self._replay_bars(s, hour, list(range(start, now_m + 1, hour)), now_m)
            else:  # recorded 1m bars: the window starts on a minute
                start = now_m // 60_000 * 60_000 - day + 60_000
                rows = self._recorded_bars(s, hour, list(range(start, now_m + 1, hour)), now_m)
            last = self.last[s]
            o = rows[0][1] if rows else last
            high = max([last, *(row[2] for row in rows)])
            low = min([last, *(row[3] for row in rows)])
            volume = sum((row[5] for row in rows), ZERO)
            quote = sum((row[6] for row in rows), ZERO)
            mine = fills.get(s, [])
            return {
                "symbol": s,
                "priceChange": price_str(r, last - o),
                "priceChangePercent": format(((last - o) / o * 100 if o else ZERO).quantize(E3), "f"),
                "weightedAvgPrice": num(quote / volume if volume else last),
                "lastPrice": price_str(r, last),
                "lastQty": mine[0]["qty"] if mine else qty_str(r, ZERO),
                "openPrice": price_str(r, o),
                "highPrice": price_str(r, high),
                "lowPrice": price_str(r, low),
                "volume": qty_str(r, volume),
                "quoteVolume": money(quote),
                "openTime": max(start, 0),
                "closeTime": now_m,
                "firstId": mine[-1]["id"] if mine else -1,
                "lastId": mine[0]["id"] if mine else -1,
                "count": len(mine),
            }

        return self._per_symbol(p, one)

    def klines(self, p: dict[str, str]) -> list:
        sym = self._symbol(p)
        assert sym is not None
        interval = _req(p, "interval")
        if interval not in TIMEFRAMES_MS:
            raise ApiError(-1120, "Invalid interval.")
        iv = TIMEFRAMES_MS[interval]
        limit = _int(p, "limit", 500)
        assert limit is not None
        if limit <= 0 or limit > 1500:
            raise _invalid("limit")
        start = _int(p, "startTime")
        end = _int(p, "endTime")
        now_m = self.prices.market_ms(self.wall_ms())
        current = now_m // iv * iv
        last_open = current if end is None else min(current, end // iv * iv)
        if start is not None:
            first = -(-start // iv) * iv
            opens = list(range(first, last_open + 1, iv))[:limit]
        else:
            opens = list(range(max(last_open - (limit - 1) * iv, 0), last_open + 1, iv))
        if isinstance(self.prices, ReplayPrices) and self.prices.replays(sym):
            rows = self._replay_bars(sym, iv, opens, now_m)
        else:
            rows = self._recorded_bars(sym, iv, opens, now_m)
        r = self.rules[sym]
        out = []
        for t, o, h, lo, c, v, q, n in rows:
            out.append(
                [
                    t,
                    price_str(r, o),
                    price_str(r, h),
                    price_str(r, lo),
                    price_str(r, c),
                    qty_str(r, v),
                    t + iv - 1,
                    num(q),
                    n,
                    "0",
                    "0",
                    "0",
                ]
            )
        return out

    def _replay_bars(self, sym: str, iv: int, opens: list[int], now_m: int) -> list[tuple]:
        src = self.prices
        assert isinstance(src, ReplayPrices)
        s = src.series(sym)
        off = src.offset(sym)
        r = self.rules[sym]
        out = []
        for t in opens:
            end = min(t + iv, now_m + 1)
            ohlc = src.path_ohlc(sym, t, end)
            if ohlc is None:
                continue
            o, h, lo, c = (r.round_price(Decimal(repr(x))) for x in ohlc)
            # volume: the source bars inside [t, end), the partial ones pro rata
            vol = 0.0
            i = max(bisect.bisect_right(s.opens, t - off) - 1, 0)
            while i < len(s.opens) and s.opens[i] + off < end:
                b0 = s.opens[i] + off
                overlap = min(b0 + s.tf_ms, end) - max(b0, t)
                if overlap > 0:
                    vol += s.v[i] * overlap / s.tf_ms
                i += 1
            v = r.round_qty(Decimal(repr(vol)))
            out.append((t, o, h, lo, c, v, v * c, 0))
        return out

    def _recorded_bars(self, sym: str, iv: int, opens: list[int], now_m: int) -> list[tuple]:
        bars = list(self._bars[sym])
        cur = self._bar.get(sym)
        if cur is not None:
            bars.append(cur)
        if not bars or not opens:
            return []
        times = [b[0] for b in bars]
        out = []
        prev_close: Decimal | None = None
        j = bisect.bisect_left(times, opens[0])
        if j > 0:
            prev_close = bars[j - 1][4]
        for t in opens:
            o = h = lo = c = None
            v = q = ZERO
            n = 0
            while j < len(bars) and bars[j][0] < t + iv:
                b = bars[j]
                if o is None:
                    o, h, lo = b[1], b[2], b[3]
                h = max(h, b[2])
                lo = min(lo, b[3])
                c = b[4]
                v += b[5]
                q += b[6]
                n += b[7]
                j += 1
            if o is None:
                if prev_close is None:
                    continue
                o = h = lo = c = prev_close
            prev_close = c
            out.append((t, o, h, lo, c, v, q, n))
        return out

    def _record_price(self, s: str, p: Decimal, m: int, *, emit: bool, now: int = 0) -> None:
        minute = m // 60_000 * 60_000
        bar = self._bar.get(s)
        if bar is None or minute > bar[0]:
            if bar is not None:
                self._bars[s].append(bar)
                if emit:
                    self._market(f"{s.lower()}@kline_1m", self._kline_payload(s, bar, True, now))
            bar = self._bar[s] = [minute, p, p, p, p, ZERO, ZERO, 0]
        else:
            if p > bar[2]:
                bar[2] = p
            if p < bar[3]:
                bar[3] = p
            bar[4] = p
        if emit:
            self._market(f"{s.lower()}@kline_1m", self._kline_payload(s, bar, False, now))

    def _kline_payload(self, s: str, bar: list[Any], closed: bool, now: int) -> dict[str, Any]:
        r = self.rules[s]
        return {
            "e": "kline",
            "E": now,
            "s": s,
            "k": {
                "t": bar[0],
                "T": bar[0] + 59_999,
                "s": s,
                "i": "1m",
                "f": -1,
                "L": -1,
                "o": price_str(r, bar[1]),
                "c": price_str(r, bar[4]),
                "h": price_str(r, bar[2]),
                "l": price_str(r, bar[3]),
                "v": qty_str(r, bar[5]),
                "n": bar[7],
                "x": closed,
                "q": num(bar[6]),
                "V": "0",
                "Q": "0",
                "B": "0",
            },
        }
