"""The engine's state: what the simulated account and its market hold, and how that is saved.

`EngineState` declares and initializes everything the parts of the engine read and change (the
account, orders, algo orders, the recorded bars, the counters), loads it from the SQLite store and
carries the plumbing they all share: persistence (what changed is written in one transaction by
`_commit`, then the listeners hear the events), the id counters, and the parameters every endpoint
reads (symbol, side, client ids). Each concern of the engine is a mixin on top of it (engine.py).
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from exchange.paper.book import AlgoOrder, Order
from exchange.paper.config import PaperConfig
from exchange.paper.errors import ApiError
from exchange.paper.events import Event
from exchange.paper.params import CLIENT_ID_RE, _missing, _req
from exchange.paper.prices import ManualPrices, PriceSource, SymbolChoiceError
from exchange.paper.split_fills import SplitPlan
from exchange.paper.store import Store
from trading.instruments import SymbolRules
from trading.margin import Position

log = logging.getLogger("exchange.paper.engine")

ZERO = Decimal(0)
FIRST_ORDER_ID = 100_000_001
FIRST_ALGO_ID = 3_000_000_001
MAX_BARS = 20_160  # recorded 1m bars kept per symbol (14 days)
MARK_SLOTS = 10  # a second's mark prices go out over up to this many slots (ClockMixin.advance)
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _b62(seed: str, length: int) -> str:
    n = int.from_bytes(hashlib.blake2b(seed.encode(), digest_size=24).digest(), "big")
    out = []
    for _ in range(length):
        n, r = divmod(n, 62)
        out.append(_B62[r])
    return "".join(out)


def _unserved_holdings(data: dict[str, Any], rules: dict[str, SymbolRules]) -> list[str]:
    """Symbols outside `rules` on which the saved state holds a position or an open (algo) order."""
    held = {s for s, row in data["positions"].items() if Decimal(row["amt"]) != 0}
    held |= {o.symbol for o in map(Order.from_row, data["orders"]) if o.is_open}
    held |= {a.symbol for a in map(AlgoOrder.from_row, data["algos"]) if a.is_open}
    return sorted(held - set(rules))


class EngineState:
    """The state of one simulated Binance USDⓈ-M account and its market, with its persistence."""

    def __init__(self, config: PaperConfig, prices: PriceSource, store_path: Path | None, now: int) -> None:
        """The state at `now` (the wall clock), loaded from the store at `store_path` when it holds one;
        PaperEngine then starts the market (engine.py)."""
        self.config = config
        self.prices = prices
        self._listeners: list[Callable[[Event], None]] = []
        self._pending: list[Event] = []
        universe = prices.rules
        self.symbols: list[str] = [s for s in prices.symbols() if s in universe]
        self.rules: dict[str, SymbolRules] = {s: universe[s] for s in self.symbols}
        self._funding_ms = config.funding_interval_hours * 3_600_000
        # --- account state
        self.wallet: Decimal = config.start_balance
        self.wallet_time = now
        self.leverage: dict[str, int] = {s: config.default_leverage for s in self.symbols}
        self.margin_type: dict[str, str] = {s: "CROSSED" for s in self.symbols}
        self.positions: dict[str, Position] = {s: Position(s, update_time=0) for s in self.symbols}
        self.orders: dict[int, Order] = {}
        self.book: dict[str, dict[int, Order]] = {s: {} for s in self.symbols}
        self.client_index: dict[tuple[str, str], int] = {}
        self.algos: dict[int, AlgoOrder] = {}
        self.open_algos: dict[str, dict[int, AlgoOrder]] = {s: {} for s in self.symbols}
        self.algo_client_index: dict[str, int] = {}
        self._splits: dict[int, SplitPlan] = {}  # MARKET orders filling in parts (fault injection)
        self.trades: list[dict[str, Any]] = []
        self.incomes: list[dict[str, Any]] = []
        self.counters: dict[str, int] = {
            "order": FIRST_ORDER_ID,
            "algo": FIRST_ALGO_ID,
            "trade": 1,
            "tran": 1,
            "listen": 1,
        }
        self.listen_key: str | None = None
        self.listen_key_expiry = 0
        # --- activity counters since start (read by the server's /metrics; not persisted)
        self.fill_counts: dict[str, int] = {}
        self.liquidation_count = 0
        self.next_funding = 0
        # --- market state (not persisted except manual prices)
        self.last: dict[str, Decimal] = {}
        self._agg_id = 1
        self._checkpoint_ms = 0
        # Bumped by every price move and every flushed change: the liquidation check skips a tick in
        # which neither happened (ClockMixin._check_liquidations).
        self._changes = 0
        self._liq_checked = -1
        self._book_id = 1
        self._mark_sec: dict[str, int] = {}
        self._mark3_sec: dict[str, int] = {}
        # Each symbol's mark price goes out at its own slot of the second (by its place in the list):
        # all at the top of the second, 5,000 symbols' marks were one burst that held the venue's loop
        # and queued every order and trade tick behind it.
        self.mark_slots = min(MARK_SLOTS, max(1, 1000 // config.tick_interval_ms))  # a tick in each
        self._mark_slot = {s: i * self.mark_slots // len(self.symbols) for i, s in enumerate(self.symbols)}
        self._bar: dict[str, list[Any]] = {}
        self._bars: dict[str, deque[list[Any]]] = {s: deque(maxlen=MAX_BARS) for s in self.symbols}
        # --- persistence
        self._dirty: dict[str, dict[Any, Any]] = {
            k: {} for k in ("orders", "algos", "trades", "income", "positions", "kv")
        }
        self.store = Store(store_path) if store_path is not None else None
        if self.store is not None and not self.store.is_empty():
            data = self.store.load()
            unserved = _unserved_holdings(data, self.rules)
            if unserved:
                # Loading would drop them silently: the venue would forget a position that a workflow
                # still manages (started once with other --symbols, restarted without them).
                self.store.close()
                raise SymbolChoiceError(
                    f"the saved state {store_path} holds open positions or orders on "
                    f"{', '.join(unserved)}, which this exchange would not list: serve them too "
                    "(--symbols, or PAPER_SYMBOLS for `qtrader stack up`), or use another state file"
                )
            self._load(data)
        else:
            m = prices.market_ms(now)
            self.next_funding = (m // self._funding_ms + 1) * self._funding_ms
            if hasattr(prices, "origin_ms"):
                self._mark_kv("origin")
            for k in ("wallet", "counters", "settings", "listen_key", "funding"):
                self._mark_kv(k)
            if isinstance(prices, ManualPrices):
                self._mark_kv("manual_prices")

    # ------------------------------------------------------------------ persistence
    def _mark_kv(self, key: str) -> None:
        self._dirty["kv"][key] = None

    def _mark_symbol_kv(self, kind: str, symbol: str) -> None:
        """One symbol's leverage, margin type or manual price changed: only its row is written (the
        whole table per change was O(symbols): 5,000 manual prices serialized per price move)."""
        self._mark_kv(f"{kind}:{symbol}")

    def _kv_value(self, key: str) -> Any:
        kind, _, symbol = key.partition(":")
        if symbol:
            if kind == "leverage":
                return self.leverage[symbol]
            if kind == "margin_type":
                return self.margin_type[symbol]
            if kind == "manual_price":
                assert isinstance(self.prices, ManualPrices)
                return str(self.prices.price_at(symbol, 0))
        if key == "wallet":
            return {"wallet": str(self.wallet), "time": self.wallet_time}
        if key == "counters":
            return dict(self.counters)
        if key == "settings":
            return {"leverage": self.leverage, "margin_type": self.margin_type}
        if key == "listen_key":
            return {"key": self.listen_key, "expiry": self.listen_key_expiry}
        if key == "funding":
            return {"next": self.next_funding}
        if key == "origin":
            return {"origin": getattr(self.prices, "origin_ms", 0)}
        if key == "manual_prices":
            assert isinstance(self.prices, ManualPrices)
            return {s: str(self.prices.price_at(s, 0)) for s in self.prices.symbols()}
        raise KeyError(key)

    def _flush(self) -> None:
        d = self._dirty
        if any(d.values()):
            self._changes += 1
            if self.store is not None:
                rows: dict[str, dict[Any, Any]] = {}
                if d["orders"]:
                    rows["orders"] = {k: o.to_row() for k, o in d["orders"].items()}
                if d["algos"]:
                    rows["algos"] = {k: a.to_row() for k, a in d["algos"].items()}
                if d["positions"]:
                    rows["positions"] = {k: p.to_row() for k, p in d["positions"].items()}
                if d["trades"]:
                    rows["trades"] = d["trades"]
                if d["income"]:
                    rows["income"] = d["income"]
                if d["kv"]:
                    rows["kv"] = {k: self._kv_value(k) for k in d["kv"]}
                self.store.write(rows)
            for v in d.values():
                v.clear()

    def _commit(self) -> None:
        self._flush()
        if self._pending:
            events, self._pending = self._pending, []
            for ev in events:
                for fn in self._listeners:
                    try:
                        fn(ev)
                    except Exception:  # a listener must never break the venue
                        log.exception("paper engine listener failed")

    def _load(self, data: dict[str, Any]) -> None:
        kv = data["kv"]
        self.wallet = Decimal(kv["wallet"]["wallet"])
        self.wallet_time = kv["wallet"]["time"]
        self.counters.update(kv["counters"])
        self.leverage.update({k: v for k, v in kv["settings"]["leverage"].items() if k in self.rules})
        self.margin_type.update({k: v for k, v in kv["settings"]["margin_type"].items() if k in self.rules})
        self.listen_key = kv["listen_key"]["key"]
        self.listen_key_expiry = kv["listen_key"]["expiry"]
        self.next_funding = kv["funding"]["next"]
        if "origin" in kv and hasattr(self.prices, "origin_ms"):
            self.prices.origin_ms = kv["origin"]["origin"]  # type: ignore[attr-defined]
        if "manual_prices" in kv and isinstance(self.prices, ManualPrices):
            for s, v in kv["manual_prices"].items():
                if s in self.rules:
                    self.prices.set(s, Decimal(v))
        # A symbol's own rows, written on each change, supersede the tables written at creation.
        for key, v in kv.items():
            kind, _, s = key.partition(":")
            if not s or s not in self.rules:
                continue
            if kind == "leverage":
                self.leverage[s] = v
            elif kind == "margin_type":
                self.margin_type[s] = v
            elif kind == "manual_price" and isinstance(self.prices, ManualPrices):
                self.prices.set(s, Decimal(v))
        for s, row in data["positions"].items():
            if s in self.rules:
                self.positions[s] = Position.from_row(row)
        for row in data["orders"]:
            o = Order.from_row(row)
            if o.symbol not in self.rules:
                continue
            self.orders[o.order_id] = o
            self.client_index[(o.symbol, o.client_id)] = o.order_id
            if o.is_open:
                self.book[o.symbol][o.order_id] = o
        for row in data["algos"]:
            a = AlgoOrder.from_row(row)
            if a.symbol not in self.rules:
                continue
            self.algos[a.algo_id] = a
            self.algo_client_index[a.client_algo_id] = a.algo_id
            if a.is_open:
                self.open_algos[a.symbol][a.algo_id] = a
        self.trades = data["trades"]
        self.incomes = data["income"]

    # ------------------------------------------------------------------ plumbing
    def add_listener(self, fn: Callable[[Event], None]) -> None:
        self._listeners.append(fn)

    def wall_ms(self) -> int:
        return self.config.clock()

    def close(self) -> None:
        self._commit()
        if self.store is not None:
            self.store.close()
            self.store = None

    def _user(self, payload: dict[str, Any]) -> None:
        if self._listeners:
            self._pending.append(Event("user", payload))

    def _market(self, stream: str, payload: dict[str, Any]) -> None:
        self._pending.append(Event("market", payload, stream))

    def _next(self, name: str) -> int:
        v = self.counters[name]
        self.counters[name] = v + 1
        self._mark_kv("counters")
        return v

    def _symbol(self, p: dict[str, str], *, required: bool = True) -> str | None:
        s = p.get("symbol")
        if s is None or s == "":
            if required:
                raise _missing("symbol")
            return None
        if s not in self.rules:
            raise ApiError(-1121, "Invalid symbol.")
        return s

    def _side(self, p: dict[str, str]) -> str:
        side = _req(p, "side")
        if side not in ("BUY", "SELL"):
            raise ApiError(-1117, "Invalid side.")
        return side

    def _position_side(self, p: dict[str, str]) -> None:
        ps = p.get("positionSide")
        if ps and ps != "BOTH":
            raise ApiError(-4061, "Order's position side does not match user's setting.")

    def _client_id(self, p: dict[str, str], name: str) -> str | None:
        cid = p.get(name)
        if cid is None or cid == "":
            return None
        if not CLIENT_ID_RE.match(cid):
            raise ApiError(-4015, "Client order id is not valid.")
        return cid
