"""The market clock: `advance()` (the server's ticker) and `set_price()` (manual prices) move the
prices; a move fills the resting LIMIT orders it crosses and triggers algo orders, and the clock
emits the market streams, liquidates positions past their liquidation price and pays funding."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from exchange.paper.algo_orders import AlgoOrdersMixin
from exchange.paper.errors import ApiError
from exchange.paper.listen_keys import ListenKeysMixin
from exchange.paper.market_data import MarketDataMixin
from exchange.paper.params import _invalid
from exchange.paper.prices import ManualPrices
from exchange.paper.shapes import money, price_str, qty_str
from trading.margin import Position

CHECKPOINT_MS = 1_000  # WAL checkpoint from advance() at most once a second, only after writes


class ClockMixin(AlgoOrdersMixin, MarketDataMixin, ListenKeysMixin):
    """Time: price moves, matching of resting orders, algo triggers, liquidation and funding."""

    def set_price(self, symbol: str, price: Decimal) -> dict[str, Any]:
        """The manual price of `symbol` from now on; the answer carries the event time (`E`) of the trade
        tick it published, or null when the price did not move (no tick)."""
        if symbol not in self.rules:
            raise ApiError(-1121, "Invalid symbol.")
        if not isinstance(self.prices, ManualPrices):
            raise ApiError(-1130, "Data sent for parameter 'price' is not valid: prices are not manual.")
        if price <= 0:
            raise _invalid("price")
        now = self.wall_ms()
        self.prices.set(symbol, Decimal(price))
        self._mark_symbol_kv("manual_price", symbol)
        m = self.prices.market_ms(now)
        p = self.prices.price_at(symbol, m)
        moved = p != self.last[symbol]
        if moved:
            self._on_price(symbol, p, now, m)
        self._check_liquidations(now)
        self._commit()
        return {
            "symbol": symbol,
            "price": price_str(self.rules[symbol], p),
            "eventTime": now if moved else None,
        }

    def advance(self) -> None:
        now = self.wall_ms()
        m = self.prices.market_ms(now)
        listening = bool(self._listeners)
        sec, ms = divmod(now, 1000)
        slot = ms * self.mark_slots // 1000
        for s in self.symbols:
            p = self.prices.price_at(s, m)
            if p != self.last[s]:
                self._on_price(s, p, now, m)
            elif (bar := self._bar.get(s)) is not None and m >= bar[0] + 60_000:
                self._record_price(s, p, m, emit=listening, now=now)
            last = self._mark_sec.get(s)
            # at its slot of the second, or at once when a whole second went by without it
            if listening and last != sec and (slot >= self._mark_slot[s] or last is None or last < sec - 1):
                self._mark_sec[s] = sec
                payload = self._mark_payload(s, now)
                self._market(f"{s.lower()}@markPrice@1s", payload)
                if sec - self._mark3_sec.get(s, -10) >= 3:
                    self._mark3_sec[s] = sec
                    self._market(f"{s.lower()}@markPrice", payload)
        if self._splits:
            self._fill_parts(now)
        self._check_liquidations(now)
        if m >= self.next_funding:
            self._funding(now, m)
        if self.listen_key is not None and now >= self.listen_key_expiry:
            self._expire_key(now)
        self._commit()
        store = self.store
        if store is not None and store.pending_writes and now - self._checkpoint_ms >= CHECKPOINT_MS:
            self._checkpoint_ms = now
            store.checkpoint()

    def _mark_payload(self, s: str, now: int) -> dict[str, Any]:
        mark = money(self.last[s])
        return {
            "e": "markPriceUpdate",
            "E": now,
            "s": s,
            "p": mark,
            "i": mark,
            "P": mark,
            "r": money(self.config.funding_rate),
            "T": self.next_funding,
        }

    def _on_price(self, s: str, p: Decimal, now: int, m: int) -> None:
        self.last[s] = p
        self._changes += 1
        listening = bool(self._listeners)
        self._record_price(s, p, m, emit=listening, now=now)
        if listening:
            r = self.rules[s]
            low = s.lower()
            px = price_str(r, p)
            q = qty_str(r, r.min_qty)
            self._agg_id += 1
            self._book_id += 1
            self._market(
                f"{low}@aggTrade",
                {
                    "e": "aggTrade",
                    "E": now,
                    "s": s,
                    "a": self._agg_id,
                    "p": px,
                    "q": q,
                    "nq": q,
                    "f": self._agg_id,
                    "l": self._agg_id,
                    "T": now,
                    "m": False,
                },
            )
            self._market(
                f"{low}@bookTicker",
                {
                    "e": "bookTicker",
                    "u": self._book_id,
                    "E": now,
                    "T": now,
                    "s": s,
                    "b": price_str(r, max(p - r.tick_size, r.tick_size)),
                    "B": qty_str(r, r.min_qty * 1000),
                    "a": price_str(r, p + r.tick_size),
                    "A": qty_str(r, r.min_qty * 1000),
                },
            )
        if self.book[s] or self.open_algos[s]:
            self._match(s, p, now)

    def _match(self, s: str, p: Decimal, now: int) -> None:
        for o in list(self.book[s].values()):
            if not o.is_open or o.type != "LIMIT":
                continue
            if (p <= o.price) if o.side == "BUY" else (p >= o.price):
                qty = o.remaining
                if o.reduce_only:
                    qty = self._reduce_cap(s, o.side, qty)
                    if not qty:
                        self._end_order(o, "EXPIRED", now)
                        continue
                self._fill(o, qty, o.price, True, now)
                if o.is_open and o.reduce_only:
                    self._end_order(o, "EXPIRED", now)
        for a in list(self.open_algos[s].values()):
            if a.is_open and a.should_trigger(p):
                self._trigger(a, now)
            elif a.order_type == "TRAILING_STOP_MARKET":
                self._dirty["algos"][a.algo_id] = a

    def _check_liquidations(self, now: int) -> None:
        # Nothing moved since the last check (no mark, and no fill, order, position, wallet or setting:
        # each is a flushed change), so no liquidation price or mark did either. Checking every held
        # position on each 100 ms tick regardless kept the venue busy at 5,000 positions (69 % of its
        # time during bench.scale's exits), and a crossing tick waited behind it.
        if self._changes == self._liq_checked and not any(self._dirty.values()):
            return
        self._liq_checked = self._changes
        held = self._held()
        if not held:
            return
        totals = self._totals()
        for pos in held:
            liq = self._liq_price(pos, totals)
            if not liq:
                continue
            mark = self.last[pos.symbol]
            if (mark <= liq) if pos.amt > 0 else (mark >= liq):
                self._liquidate(pos, liq, now)
                totals = self._totals()

    def _liquidate(self, pos: Position, liq: Decimal, now: int) -> None:
        s = pos.symbol
        for o in list(self.book[s].values()):
            self._end_order(o, "CANCELED", now)
        side = "SELL" if pos.amt > 0 else "BUY"
        qty = abs(pos.amt)
        price = self.rules[s].round_price(liq)
        o = self._new_order_record(s, f"autoclose-{now}", side, "LIQUIDATION", "IOC", qty, price, True, now)
        self.liquidation_count += 1
        self._fill(o, qty, price, False, now, liquidation=True)

    def _funding(self, now: int, m: int) -> None:
        rate = self.config.funding_rate
        for _ in range(10_000):
            if m < self.next_funding:
                break
            self.next_funding += self._funding_ms
            for pos in self._held():
                pay = -pos.amt * self.last[pos.symbol] * rate
                self.wallet += pay
                self.wallet_time = now
                iso = self._isolated(pos.symbol)
                if iso:
                    pos.iso_wallet += pay
                    self._dirty["positions"][pos.symbol] = pos
                self._income(pos.symbol, "FUNDING_FEE", pay, now)
                self._mark_kv("wallet")
                if self._listeners:
                    self._user(self._account_update("FUNDING_FEE", now, [pos] if iso else []))
        self._mark_kv("funding")
