"""The paper exchange's engine: a synchronous, in-process simulation of one Binance USDⓈ-M account.

The HTTP/WebSocket server authenticates a request and hands its raw parameters to one method here;
the method validates everything first (a rejected request changes nothing), then mutates the state,
writes what changed to SQLite in one transaction and finally tells the listeners (user-data and
market-stream events). `advance()` moves the market clock: fills resting orders, fires algo orders,
liquidates, pays funding and emits the market streams.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import re
from collections import deque
from collections.abc import Callable
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from exchange.paper.book import AlgoOrder, Order
from exchange.paper.config import PaperConfig
from exchange.paper.errors import ApiError
from exchange.paper.events import Event
from exchange.paper.prices import (
    TIMEFRAMES_MS,
    ManualPrices,
    PriceSource,
    ReplayPrices,
    SymbolChoiceError,
    build_price_source,
)
from exchange.paper.shapes import (
    ack_shape,
    algo_shape,
    algo_update,
    money,
    num,
    order_shape,
    order_trade_update,
    price_str,
    qty_str,
)
from exchange.paper.split_fills import SplitPlan, plan_split
from exchange.paper.store import Store
from trading.instruments import FilterViolation, SymbolRules
from trading.margin import Position, fill_effect, liquidation_price

__all__ = ["PaperEngine", "PriceSource", "build_price_source"]

log = logging.getLogger(__name__)

ZERO = Decimal(0)
ONE = Decimal(1)
# Exact sums (no rounding at any digit): a total minus one of its terms is then exactly the sum of
# the other terms, whatever their order (cross-margin liquidation prices).
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
E3 = Decimal("0.001")
CLIENT_ID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
DECIMAL_RE = re.compile(r"^-?(\d+\.?\d*|\.\d+)$")
CONDITIONAL_TYPES = frozenset(
    {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}
)
TIFS = frozenset({"GTC", "IOC", "FOK", "GTX"})
LISTEN_KEY_TTL_MS = 60 * 60 * 1000
MAX_NOTIONAL = Decimal("1000000000")
FIRST_ORDER_ID = 100_000_001
FIRST_ALGO_ID = 3_000_000_001
CHECKPOINT_MS = 1_000  # WAL checkpoint from advance() at most once a second, only after writes
MAX_BARS = 20_160  # recorded 1m bars kept per symbol (14 days)
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

GTX_MSG = (
    "Due to the order could not be executed as maker, the Post Only order will be rejected. "
    "The order will not be recorded in the order history"
)


# ----------------------------------------------------------------------------- parameter parsing
def _missing(name: str) -> ApiError:
    return ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def _invalid(name: str) -> ApiError:
    return ApiError(-1130, f"Data sent for parameter '{name}' is not valid.")


def _req(p: dict[str, str], name: str) -> str:
    v = p.get(name)
    if v is None or v == "":
        raise _missing(name)
    return v


def _dec(p: dict[str, str], name: str, *, required: bool = True) -> Decimal | None:
    v = p.get(name)
    if v is None or v == "":
        if required:
            raise _missing(name)
        return None
    if not DECIMAL_RE.match(v):
        raise _invalid(name)
    try:
        return Decimal(v)
    except InvalidOperation:
        raise _invalid(name) from None


def _int(p: dict[str, str], name: str, default: int | None = None) -> int | None:
    v = p.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise _invalid(name) from None


def _bool(p: dict[str, str], name: str, default: bool = False) -> bool:
    v = p.get(name)
    if v is None or v == "":
        return default
    low = v.lower()
    if low == "true":
        return True
    if low == "false":
        return False
    raise _invalid(name)


def _limit(p: dict[str, str], default: int, maximum: int) -> int:
    n = _int(p, "limit", default)
    assert n is not None
    if n <= 0:
        raise _invalid("limit")
    return min(n, maximum)


def _filter_error(e: FilterViolation) -> ApiError:
    return ApiError(e.code, e.message)


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


class PaperEngine:
    def __init__(self, config: PaperConfig, prices: PriceSource, store_path: Path | None = None) -> None:
        self.config = config
        self.prices = prices
        self._listeners: list[Callable[[Event], None]] = []
        self._pending: list[Event] = []
        universe = prices.rules
        self.symbols: list[str] = [s for s in prices.symbols() if s in universe]
        self.rules: dict[str, SymbolRules] = {s: universe[s] for s in self.symbols}
        now = self.wall_ms()
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
        self._book_id = 1
        self._mark_sec: dict[str, int] = {}
        self._mark3_sec: dict[str, int] = {}
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
        m = prices.market_ms(now)
        for s in self.symbols:
            p = prices.price_at(s, m)
            self.last[s] = p
            self._record_price(s, p, m, emit=False)
        for o in [o for book in self.book.values() for o in book.values() if o.type == "MARKET"]:
            # A MARKET order still filling in parts when the process stopped: its plan died with
            # the process, so it would stay open (PARTIALLY_FILLED) forever.
            self._end_order(o, "EXPIRED", now)
        self._flush()

    # ------------------------------------------------------------------ persistence
    def _mark_kv(self, key: str) -> None:
        self._dirty["kv"][key] = None

    def _kv_value(self, key: str) -> Any:
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

    # ------------------------------------------------------------------ account arithmetic
    def _isolated(self, sym: str) -> bool:
        return self.margin_type[sym] == "ISOLATED"

    def _held(self) -> list[Position]:
        return [p for p in self.positions.values() if p.amt]

    def _order_im(self, o: Order) -> Decimal:
        """Initial margin an open order holds: the part of it that would open or increase."""
        if o.reduce_only or o.type != "LIMIT":
            return ZERO
        pos = self.positions[o.symbol].amt
        rem = o.remaining
        if pos and (pos > 0) != (o.side == "BUY"):
            rem = max(ZERO, rem - abs(pos))
        return rem * o.price / self.leverage[o.symbol]

    def _totals(self) -> dict[str, Decimal]:
        iso_sum = un_cross = un_all = pos_im_cross = pos_im = mm = cross_free = ZERO
        mmr = self.config.maint_margin_rate
        for p in self._held():
            mark = self.last[p.symbol]
            un = p.unrealized(mark)
            notional = abs(p.amt) * mark
            im = notional / self.leverage[p.symbol]
            pmm = notional * mmr
            un_all += un
            pos_im += im
            mm += pmm
            if self._isolated(p.symbol):
                iso_sum += p.iso_wallet
            else:
                un_cross += un
                pos_im_cross += im
                cross_free = _EXACT.add(cross_free, un - pmm)
        order_im = ZERO
        for book in self.book.values():
            for o in book.values():
                order_im += self._order_im(o)
        cross_wallet = self.wallet - iso_sum
        available = cross_wallet + un_cross - pos_im_cross - order_im
        return {
            "cross_wallet": cross_wallet,
            "un_cross": un_cross,
            "un_all": un_all,
            "pos_im": pos_im,
            "order_im": order_im,
            "mm": mm,
            "cross_free": cross_free,
            "available": max(available, ZERO),
        }

    def _available(self) -> Decimal:
        return self._totals()["available"]

    def _check_margin(self, sym: str, side: str, qty: Decimal, price: Decimal) -> None:
        pos = self.positions[sym].amt
        closing = ZERO
        if pos and (pos > 0) != (side == "BUY"):
            closing = min(abs(pos), qty)
        opening = qty - closing
        if not opening:
            return
        lev = self.leverage[sym]
        need = opening * price / lev + opening * price * self.config.taker_fee
        released = closing * price / lev
        if need > self._available() + released:
            raise ApiError(-2019, "Margin is insufficient.")

    def _liq_price(self, p: Position, totals: dict[str, Decimal] | None = None) -> Decimal:
        if not p.amt:
            return ZERO
        mmr = self.config.maint_margin_rate
        if self._isolated(p.symbol):
            return liquidation_price(p.amt, p.entry, p.iso_wallet, mmr)
        t = totals or self._totals()
        # The other cross positions' unrealized PnL minus maintenance margin: the account-wide sum
        # less this position's own term. Summing the others per position was O(n²) per tick (at 500
        # positions the ticker could not keep up); the exact sum makes `total - own` equal the sum
        # of the others to the last digit. The own term repeats `_totals`' arithmetic exactly.
        mark = self.last[p.symbol]
        other = _EXACT.subtract(t["cross_free"], p.unrealized(mark) - abs(p.amt) * mark * mmr)
        return liquidation_price(p.amt, p.entry, t["cross_wallet"] + other, mmr)

    # ------------------------------------------------------------------ fills
    def _fill(
        self, o: Order, qty: Decimal, price: Decimal, maker: bool, now: int, *, liquidation: bool = False
    ) -> None:
        sym = o.symbol
        rules = self.rules[sym]
        pos = self.positions[sym]
        isolated = self._isolated(sym)
        dq = qty if o.side == "BUY" else -qty
        fee = qty * price * (self.config.maker_fee if maker else self.config.taker_fee)
        if liquidation:
            fee = qty * price * self.config.liquidation_fee_rate
        eff = fill_effect(pos, dq, price, fee, self.leverage[sym], isolated)
        if liquidation:
            # the account cannot lose more than the margin left: the rest goes to the insurance fund
            cap = (pos.iso_wallet if isolated else self.wallet) + eff.realized
            fee = max(ZERO, min(fee, cap))
        self.wallet += eff.realized - fee
        self.wallet_time = now
        was = pos.amt
        pos.apply(eff)
        pos.update_time = now
        o.executed += qty
        o.cum_quote += qty * price
        o.status = "FILLED" if o.executed >= o.qty else "PARTIALLY_FILLED"
        o.update_time = now
        trade_id = self._next("trade")
        self.fill_counts[sym] = self.fill_counts.get(sym, 0) + 1
        self.trades.append(
            {
                "buyer": o.side == "BUY",
                "commission": money(fee),
                "commissionAsset": "USDT",
                "id": trade_id,
                "maker": maker,
                "orderId": o.order_id,
                "price": price_str(rules, price),
                "qty": qty_str(rules, qty),
                "quoteQty": num(qty * price),
                "realizedPnl": money(eff.realized),
                "side": o.side,
                "positionSide": "BOTH",
                "symbol": sym,
                "time": now,
            }
        )
        self._dirty["trades"][trade_id] = self.trades[-1]
        if eff.closed_qty:
            self._income(sym, "REALIZED_PNL", eff.realized, now, str(trade_id))
        if fee:
            self._income(sym, "COMMISSION", -fee, now, str(trade_id))
        self._dirty["orders"][o.order_id] = o
        self._dirty["positions"][sym] = pos
        self._mark_kv("wallet")
        if not o.is_open:
            self.book[sym].pop(o.order_id, None)
        bar = self._bar.get(sym)
        if bar is not None:
            bar[5] += qty
            bar[6] += qty * price
            bar[7] += 1
        if self._listeners:
            self._user(self._account_update("ORDER", now, [pos]))
            self._user(
                order_trade_update(
                    o,
                    rules,
                    "CALCULATED" if liquidation else "TRADE",
                    now,
                    last_qty=qty,
                    last_price=price,
                    fee=fee,
                    trade_id=trade_id,
                    maker=maker,
                    realized=eff.realized,
                )
            )
        if not pos.amt or (was > 0) != (pos.amt > 0):
            self._sweep_reduce_only(sym, now)

    def _income(self, sym: str, kind: str, amount: Decimal, now: int, trade_id: str = "") -> None:
        tran = self._next("tran")
        row = {
            "symbol": sym,
            "incomeType": kind,
            "income": money(amount),
            "asset": "USDT",
            "info": kind if kind != "FUNDING_FEE" else "FUNDING_FEE",
            "time": now,
            "tranId": tran,
            "tradeId": trade_id,
        }
        self.incomes.append(row)
        self._dirty["income"][tran] = row

    def _sweep_reduce_only(self, sym: str, now: int) -> None:
        """Expire reduce-only / close-position orders that can no longer reduce (Binance does this)."""
        amt = self.positions[sym].amt
        rules = self.rules[sym]
        for o in list(self.book[sym].values()):
            if (o.reduce_only or o.close_position) and (not amt or (amt > 0) == (o.side == "BUY")):
                self._end_order(o, "EXPIRED", now)
        for a in list(self.open_algos[sym].values()):
            if (a.reduce_only or a.close_position) and (not amt or (amt > 0) == (a.side == "BUY")):
                a.status = "EXPIRED"
                a.update_time = now
                del self.open_algos[sym][a.algo_id]
                self._dirty["algos"][a.algo_id] = a
                if self._listeners:
                    self._user(algo_update(a, rules, now))

    def _end_order(self, o: Order, status: str, now: int) -> None:
        o.status = status
        o.update_time = now
        self.book[o.symbol].pop(o.order_id, None)
        self._dirty["orders"][o.order_id] = o
        if self._listeners:
            self._user(order_trade_update(o, self.rules[o.symbol], status, now))

    def _new_order_record(
        self,
        sym: str,
        cid: str | None,
        side: str,
        otype: str,
        tif: str,
        qty: Decimal,
        price: Decimal,
        reduce_only: bool,
        now: int,
        **extra: Any,
    ) -> Order:
        oid = self._next("order")
        if cid is None:
            cid = _b62(f"{self.config.seed}:o:{oid}", 22)
        o = Order(
            order_id=oid,
            symbol=sym,
            client_id=cid,
            side=side,
            type=otype,
            tif=tif,
            qty=qty,
            price=price,
            reduce_only=reduce_only,
            time=now,
            update_time=now,
            **extra,
        )
        self.orders[oid] = o
        self.client_index[(sym, cid)] = oid
        self._dirty["orders"][oid] = o
        if self._listeners and otype != "LIQUIDATION":
            self._user(order_trade_update(o, self.rules[sym], "NEW", now))
        return o

    def _taker_price(self, sym: str, side: str) -> Decimal:
        mkt = self.last[sym]
        slip = self.config.slippage_bps
        if not slip:
            return mkt
        factor = ONE + slip / 10000 if side == "BUY" else ONE - slip / 10000
        return self.rules[sym].round_price(mkt * factor)

    def _reduce_cap(self, sym: str, side: str, qty: Decimal) -> Decimal:
        """The fill a reduce-only order may make now: capped at the opposite position, 0 when none."""
        amt = self.positions[sym].amt
        if not amt or (amt > 0) == (side == "BUY"):
            return ZERO
        return min(qty, abs(amt))

    # ------------------------------------------------------------------ public market data
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

    # ------------------------------------------------------------------ orders
    def new_order(self, p: dict[str, str], *, pieces: int = 1, interval_ms: int = 0) -> dict[str, Any]:
        """POST /fapi/v1/order. `pieces` > 1 (the `partial_fills` fault): a MARKET order fills in that
        many parts, the first now and one more every `interval_ms` from `advance()`."""
        now = self.wall_ms()
        sym = self._symbol(p)
        assert sym is not None
        rules = self.rules[sym]
        side = self._side(p)
        otype = p.get("type") or ""
        if otype in CONDITIONAL_TYPES:
            raise ApiError(
                -4120,
                "Order type not supported for this endpoint. Please use the Algo Order API "
                "endpoints instead.",
            )
        if otype not in ("MARKET", "LIMIT"):
            raise ApiError(-1116, "Invalid orderType.")
        self._position_side(p)
        is_limit = otype == "LIMIT"
        tif = "GTC"
        price = ZERO
        if is_limit:
            tif = _req(p, "timeInForce")
            if tif not in TIFS:
                raise ApiError(-1115, "Invalid timeInForce.")
        qty = _dec(p, "quantity")
        assert qty is not None
        if is_limit:
            price = _dec(p, "price")  # type: ignore[assignment]
        reduce_only = _bool(p, "reduceOnly")
        if _bool(p, "closePosition"):
            raise ApiError(-1106, "Parameter 'closePosition' sent when not required.")
        resp = p.get("newOrderRespType") or "ACK"
        if resp not in ("ACK", "RESULT"):
            raise _invalid("newOrderRespType")
        cid = self._client_id(p, "newClientOrderId")
        try:
            rules.check_qty(qty, market=not is_limit)
            if is_limit:
                rules.check_price(price)
        except FilterViolation as e:
            raise _filter_error(e) from None
        mkt = self.last[sym]
        if is_limit:
            self._check_percent_price(rules, side, price, mkt)
        try:
            rules.check_notional(qty, price if is_limit else mkt, reduce_only=reduce_only)
        except FilterViolation as e:
            raise _filter_error(e) from None
        if cid is not None and self._open_client_id(sym, cid):
            raise ApiError(-4116, "clientOrderId is duplicated.")
        marketable = not is_limit or (price >= mkt if side == "BUY" else price <= mkt)
        if is_limit and tif == "GTX" and marketable:
            raise ApiError(-5022, GTX_MSG)
        fill_qty = qty
        if reduce_only:
            fill_qty = self._reduce_cap(sym, side, qty)
            if not fill_qty:
                raise ApiError(-2022, "ReduceOnly Order is rejected.")
        if marketable:
            fill_price = self._taker_price(sym, side)
            if is_limit:
                fill_price = min(price, fill_price) if side == "BUY" else max(price, fill_price)
            if not reduce_only:
                self._check_margin(sym, side, qty, fill_price)
        elif tif in ("GTC", "GTX") and not reduce_only:
            self._check_margin(sym, side, qty, price)
        # ---- validated: mutate
        o = self._new_order_record(sym, cid, side, otype, tif, qty, price, reduce_only, now)
        ack = ack_shape(o, rules) if resp == "ACK" else None
        if marketable:
            split = None
            if pieces > 1 and not is_limit:
                split = plan_split(fill_qty, pieces, rules.market_step_size, now, interval_ms)
            self._fill(o, split.piece if split else fill_qty, fill_price, False, now)
            if split is not None:  # the rest fills in parts: open (PARTIALLY_FILLED) meanwhile
                self._splits[o.order_id] = split
                self.book[sym][o.order_id] = o
            elif o.is_open:  # a capped reduce-only order: the rest cannot execute
                self._end_order(o, "EXPIRED", now)
        elif tif in ("IOC", "FOK"):
            self._end_order(o, "EXPIRED", now)
        else:
            self.book[sym][o.order_id] = o
        self._commit()
        return ack if ack is not None else order_shape(o, rules, kind="new")

    def _check_percent_price(self, rules: SymbolRules, side: str, price: Decimal, mark: Decimal) -> None:
        if side == "BUY":
            cap = rules.round_price(mark * Decimal("1.05"))
            if price > cap:
                raise ApiError(-4016, f"Limit price can't be higher than {cap}.")
        else:
            floor = rules.round_price(mark * Decimal("0.95"))
            if price < floor:
                raise ApiError(-4024, f"Limit price can't be lower than {floor}.")

    def _open_client_id(self, sym: str, cid: str) -> bool:
        oid = self.client_index.get((sym, cid))
        if oid is not None and self.orders[oid].is_open:
            return True
        return any(o.client_id == cid for o in self.book[sym].values())

    def _find_order(self, p: dict[str, str], code: int, msg: str) -> Order:
        sym = self._symbol(p)
        oid = _int(p, "orderId")
        cid = p.get("origClientOrderId") or None
        if oid is None and cid is None:
            raise ApiError(
                -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
            )
        o = self.orders.get(oid) if oid is not None else None
        if oid is None and cid is not None:
            found = self.client_index.get((sym, cid))  # type: ignore[arg-type]
            o = self.orders.get(found) if found is not None else None
        if o is None or o.symbol != sym or (cid is not None and o.client_id != cid):
            raise ApiError(code, msg)
        return o

    def query_order(self, p: dict[str, str]) -> dict[str, Any]:
        o = self._find_order(p, -2013, "Order does not exist.")
        return order_shape(o, self.rules[o.symbol])

    def cancel_order(self, p: dict[str, str]) -> dict[str, Any]:
        o = self._find_order(p, -2011, "Unknown order sent.")
        if not o.is_open:
            raise ApiError(-2011, "Unknown order sent.")
        self._end_order(o, "CANCELED", self.wall_ms())
        self._commit()
        return order_shape(o, self.rules[o.symbol], kind="cancel")

    def open_orders(self, p: dict[str, str]) -> list:
        sym = self._symbol(p, required=False)
        books = [self.book[sym]] if sym else list(self.book.values())
        out = [o for b in books for o in b.values()]
        out.sort(key=lambda o: o.order_id)
        return [order_shape(o, self.rules[o.symbol]) for o in out]

    def all_orders(self, p: dict[str, str]) -> list:
        sym = self._symbol(p)
        from_id = _int(p, "orderId")
        start, end = _int(p, "startTime"), _int(p, "endTime")
        limit = _limit(p, 500, 1000)
        rows = [
            o
            for o in self.orders.values()
            if o.symbol == sym
            and (from_id is None or o.order_id >= from_id)
            and (start is None or o.time >= start)
            and (end is None or o.time <= end)
        ]
        rows = rows[:limit] if (from_id is not None or start is not None) else rows[-limit:]
        return [order_shape(o, self.rules[o.symbol]) for o in rows]

    def admin_orders(self, symbol: str | None = None) -> list[dict]:
        return [
            order_shape(o, self.rules[o.symbol])
            for o in self.orders.values()
            if symbol is None or o.symbol == symbol
        ]

    # ------------------------------------------------------------------ algo orders
    def new_algo_order(self, p: dict[str, str]) -> dict[str, Any]:
        now = self.wall_ms()
        algo_type = _req(p, "algoType")
        if algo_type != "CONDITIONAL":
            raise _invalid("algoType")
        sym = self._symbol(p)
        assert sym is not None
        rules = self.rules[sym]
        side = self._side(p)
        otype = p.get("type") or ""
        if otype not in CONDITIONAL_TYPES:
            raise ApiError(-1116, "Invalid orderType.")
        self._position_side(p)
        close_position = _bool(p, "closePosition")
        reduce_only = _bool(p, "reduceOnly")
        working = p.get("workingType") or "CONTRACT_PRICE"
        if working not in ("MARK_PRICE", "CONTRACT_PRICE"):
            raise _invalid("workingType")
        price_protect = _bool(p, "priceProtect")
        tif = p.get("timeInForce") or "GTC"
        if tif not in TIFS:
            raise ApiError(-1115, "Invalid timeInForce.")
        trailing = otype == "TRAILING_STOP_MARKET"
        callback = activate = None
        trigger = ZERO
        if trailing:
            callback = _dec(p, "callbackRate")
            assert callback is not None
            if not Decimal("0.1") <= callback <= Decimal("10"):
                raise ApiError(-2007, "Invalid callBack rate.")
            activate = _dec(p, "activatePrice", required=False)
        else:
            trigger = _dec(p, "triggerPrice")  # type: ignore[assignment]
        price = ZERO
        if otype in ("STOP", "TAKE_PROFIT"):
            price = _dec(p, "price")  # type: ignore[assignment]
        qty: Decimal | None = None
        if close_position:
            if otype not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
                raise _invalid("closePosition")
            if p.get("quantity"):
                raise ApiError(-1106, "Parameter 'quantity' sent when not required.")
            if p.get("reduceOnly"):
                raise ApiError(-1106, "Parameter 'reduceOnly' sent when not required.")
        else:
            qty = _dec(p, "quantity")
        cid = self._client_id(p, "clientAlgoId")
        try:
            if qty is not None:
                rules.check_qty(qty, market=price == 0)
            for px in (trigger, price, activate):
                if px:
                    rules.check_price(px)
        except FilterViolation as e:
            raise _filter_error(e) from None
        if qty is not None:
            ref_px = price or trigger or activate or self.last[sym]
            try:
                rules.check_notional(qty, ref_px, reduce_only=reduce_only)
            except FilterViolation as e:
                raise _filter_error(e) from None
        if cid is not None:
            existing = self.algo_client_index.get(cid)
            if existing is not None and self.algos[existing].is_open:
                raise ApiError(-4116, "clientOrderId is duplicated.")
        amt = abs(self.positions[sym].amt)
        if (reduce_only or close_position) and not self._reduce_cap(sym, side, qty or amt):
            raise ApiError(-2022, "ReduceOnly Order is rejected.")
        a = AlgoOrder(
            algo_id=0,
            symbol=sym,
            client_algo_id=cid or "",
            side=side,
            order_type=otype,
            tif=tif,
            qty=qty,
            price=price,
            trigger_price=trigger,
            working_type=working,
            close_position=close_position,
            reduce_only=reduce_only,
            price_protect=price_protect,
            create_time=now,
            update_time=now,
            activate_price=activate,
            callback_rate=callback,
        )
        if not trailing and a.should_trigger(self.last[sym]):
            raise ApiError(-2021, "Order would immediately trigger.")
        # ---- validated: mutate
        a.algo_id = self._next("algo")
        if cid is None:
            a.client_algo_id = _b62(f"{self.config.seed}:a:{a.algo_id}", 22)
        self.algos[a.algo_id] = a
        self.algo_client_index[a.client_algo_id] = a.algo_id
        self.open_algos[sym][a.algo_id] = a
        self._dirty["algos"][a.algo_id] = a
        if self._listeners:
            self._user(algo_update(a, rules, now))
        if trailing and a.should_trigger(self.last[sym]):
            self._trigger(a, now)
        self._commit()
        return algo_shape(a, rules)

    def _find_algo(self, p: dict[str, str], code: int, msg: str) -> AlgoOrder:
        aid = _int(p, "algoId")
        cid = p.get("clientAlgoId") or None
        if aid is None and cid is None:
            raise ApiError(-1102, "Param 'clientAlgoId' or 'algoId' must be sent, but both were empty/null!")
        sym = self._symbol(p, required=False)
        if aid is None:
            aid = self.algo_client_index.get(cid)  # type: ignore[arg-type]
        a = self.algos.get(aid) if aid is not None else None
        if a is None or (sym is not None and a.symbol != sym):
            raise ApiError(code, msg)
        if cid is not None and a.client_algo_id != cid:
            raise ApiError(code, msg)
        return a

    def query_algo_order(self, p: dict[str, str]) -> dict[str, Any]:
        a = self._find_algo(p, -2013, "Order does not exist.")
        return algo_shape(a, self.rules[a.symbol], detail=True)

    def cancel_algo_order(self, p: dict[str, str]) -> dict[str, Any]:
        a = self._find_algo(p, -2011, "Unknown order sent.")
        if not a.is_open:
            raise ApiError(-2011, "Unknown order sent.")
        now = self.wall_ms()
        a.status = "CANCELED"
        a.update_time = now
        del self.open_algos[a.symbol][a.algo_id]
        self._dirty["algos"][a.algo_id] = a
        if self._listeners:
            self._user(algo_update(a, self.rules[a.symbol], now))
        self._commit()
        return {"algoId": a.algo_id, "clientAlgoId": a.client_algo_id, "code": "200", "msg": "success"}

    def open_algo_orders(self, p: dict[str, str]) -> list:
        sym = self._symbol(p, required=False)
        books = [self.open_algos[sym]] if sym else list(self.open_algos.values())
        out = sorted((a for b in books for a in b.values()), key=lambda a: a.algo_id)
        return [algo_shape(a, self.rules[a.symbol]) for a in out]

    def admin_algo_orders(self, symbol: str | None = None) -> list[dict]:
        return [
            algo_shape(a, self.rules[a.symbol], detail=True)
            for a in self.algos.values()
            if symbol is None or a.symbol == symbol
        ]

    def _trigger(self, a: AlgoOrder, now: int) -> None:
        """Fire an algo order: TRIGGERED, place its MARKET/LIMIT order, then FINISHED (or REJECTED)."""
        sym = a.symbol
        rules = self.rules[sym]
        del self.open_algos[sym][a.algo_id]
        a.trigger_time = now
        a.update_time = now
        a.status = "TRIGGERED"
        self._dirty["algos"][a.algo_id] = a
        reduce = a.reduce_only or a.close_position
        qty = abs(self.positions[sym].amt) if a.close_position else a.qty
        assert qty is not None
        if reduce:
            qty = self._reduce_cap(sym, a.side, qty)
        reject = ""
        taker = self._taker_price(sym, a.side)
        fill_price = taker if a.child_type == "MARKET" else a.price
        if not qty:
            reject = "ReduceOnly Order is rejected."
        elif not reduce:
            try:
                self._check_margin(sym, a.side, qty, fill_price)
            except ApiError as e:
                reject = e.msg
        if reject:
            a.status = "REJECTED"
            a.reject_reason = reject
            if self._listeners:
                self._user(algo_update(a, rules, now))
            return
        if self._listeners:
            self._user(algo_update(a, rules, now))
        otype = a.child_type
        tif = a.tif if otype == "LIMIT" else "GTC"
        o = self._new_order_record(
            sym,
            a.client_algo_id,
            a.side,
            otype,
            tif,
            qty,
            a.price if otype == "LIMIT" else ZERO,
            reduce,
            now,
            orig_type=a.order_type,
            stop_price=a.trigger_price,
            working_type=a.working_type,
            close_position=a.close_position,
            price_protect=a.price_protect,
        )
        a.actual_order_id = o.order_id
        mkt = self.last[sym]
        if otype == "MARKET" or (a.price >= mkt if a.side == "BUY" else a.price <= mkt):
            px = (
                taker
                if otype == "MARKET"
                else (min(a.price, taker) if a.side == "BUY" else max(a.price, taker))
            )
            self._fill(o, qty, px, False, now)
        elif tif in ("IOC", "FOK"):
            self._end_order(o, "EXPIRED", now)
        else:
            self.book[sym][o.order_id] = o
        a.actual_price = o.avg_price
        a.actual_qty = o.executed
        a.status = "FINISHED"
        a.update_time = now
        if self._listeners:
            self._user(algo_update(a, rules, now))

    # ------------------------------------------------------------------ account settings
    def change_leverage(self, p: dict[str, str]) -> dict[str, Any]:
        sym = self._symbol(p)
        assert sym is not None
        raw = _req(p, "leverage")
        try:
            lev = int(raw)
        except ValueError:
            raise _invalid("leverage") from None
        if not 1 <= lev <= 125:
            raise ApiError(-4028, f"Leverage {lev} is not valid")
        now = self.wall_ms()
        self.leverage[sym] = lev
        self._mark_kv("settings")
        if self._listeners:
            self._user({"e": "ACCOUNT_CONFIG_UPDATE", "E": now, "T": now, "ac": {"s": sym, "l": lev}})
        self._commit()
        return {"leverage": lev, "maxNotionalValue": num(MAX_NOTIONAL), "symbol": sym}

    def change_margin_type(self, p: dict[str, str]) -> dict[str, Any]:
        sym = self._symbol(p)
        assert sym is not None
        mt = _req(p, "marginType").upper()
        if mt == "CROSS":
            mt = "CROSSED"
        if mt not in ("ISOLATED", "CROSSED"):
            raise _invalid("marginType")
        if self.margin_type[sym] == mt:
            raise ApiError(-4046, "No need to change margin type.")
        if self.positions[sym].amt:
            raise ApiError(-4048, "Margin type cannot be changed if there exists position.")
        if self.book[sym]:
            raise ApiError(-4047, "Margin type cannot be changed if there exists open orders.")
        self.margin_type[sym] = mt
        self._mark_kv("settings")
        self._commit()
        return {"code": 200, "msg": "success"}

    def leverage_bracket(self, p: dict[str, str]) -> list:
        sym = self._symbol(p, required=False)
        syms = [sym] if sym else self.symbols
        return [
            {
                "symbol": s,
                "notionalCoef": 1.0,
                "brackets": [
                    {
                        "bracket": 1,
                        "initialLeverage": 125,
                        "notionalCap": int(MAX_NOTIONAL),
                        "notionalFloor": 0,
                        "maintMarginRatio": float(self.config.maint_margin_rate),
                        "cum": 0.0,
                    }
                ],
            }
            for s in syms
        ]

    def position_side_dual(self, p: dict[str, str]) -> dict[str, Any]:
        if "dualSidePosition" in p:
            if _bool(p, "dualSidePosition"):
                raise ApiError(-4059, "Hedge mode is not supported by the paper exchange (one-way only).")
            raise ApiError(-4059, "No need to change position side.")
        return {"dualSidePosition": False}

    # ------------------------------------------------------------------ account views
    def _position_view(self, s: str, totals: dict[str, Decimal]) -> dict[str, Any]:
        pos = self.positions[s]
        mark = self.last[s]
        un = pos.unrealized(mark)
        notional = pos.amt * mark
        lev = self.leverage[s]
        iso = self._isolated(s)
        r = self.rules[s]
        order_im = sum((self._order_im(o) for o in self.book[s].values()), ZERO)
        bid = sum((o.remaining * o.price for o in self.book[s].values() if o.side == "BUY"), ZERO)
        ask = sum((o.remaining * o.price for o in self.book[s].values() if o.side == "SELL"), ZERO)
        pim = abs(notional) / lev
        return {
            "symbol": s,
            "positionSide": "BOTH",
            "positionAmt": qty_str(r, pos.amt),
            "entryPrice": num(pos.entry),
            "breakEvenPrice": num(pos.break_even()),
            "markPrice": money(mark),
            "unRealizedProfit": money(un),
            "liquidationPrice": num(r.round_price(self._liq_price(pos, totals))),
            "isolatedMargin": money(pos.iso_wallet + un if iso and pos.amt else ZERO),
            "notional": money(notional),
            "marginAsset": "USDT",
            "isolatedWallet": money(pos.iso_wallet),
            "initialMargin": money(pim + order_im),
            "maintMargin": money(abs(notional) * self.config.maint_margin_rate),
            "positionInitialMargin": money(pim),
            "openOrderInitialMargin": money(order_im),
            "adl": 0,
            "bidNotional": num(bid),
            "askNotional": num(ask),
            "updateTime": pos.update_time,
            "leverage": str(lev),
            "marginType": "isolated" if iso else "cross",
            "isolated": iso,
        }

    def position_risk(self, p: dict[str, str], version: int) -> list:
        sym = self._symbol(p, required=False)
        totals = self._totals()
        syms = [sym] if sym else self.symbols
        out = []
        for s in syms:
            v = self._position_view(s, totals)
            if version >= 3:
                if not self.positions[s].amt and not self.book[s]:
                    continue
                for k in ("leverage", "marginType", "isolated"):
                    del v[k]
            else:
                v = {
                    k: v[k]
                    for k in (
                        "entryPrice",
                        "breakEvenPrice",
                        "marginType",
                        "isolatedMargin",
                        "leverage",
                        "liquidationPrice",
                        "markPrice",
                        "positionAmt",
                        "notional",
                        "isolatedWallet",
                        "symbol",
                        "unRealizedProfit",
                        "positionSide",
                        "updateTime",
                    )
                }
                v["isAutoAddMargin"] = "false"
                v["maxNotionalValue"] = num(MAX_NOTIONAL)
            out.append(v)
        return out

    def account(self, p: dict[str, str], version: int) -> dict[str, Any]:
        t = self._totals()
        wallet = self.wallet
        top = {
            "totalInitialMargin": money(t["pos_im"] + t["order_im"]),
            "totalMaintMargin": money(t["mm"]),
            "totalWalletBalance": money(wallet),
            "totalUnrealizedProfit": money(t["un_all"]),
            "totalMarginBalance": money(wallet + t["un_all"]),
            "totalPositionInitialMargin": money(t["pos_im"]),
            "totalOpenOrderInitialMargin": money(t["order_im"]),
            "totalCrossWalletBalance": money(t["cross_wallet"]),
            "totalCrossUnPnl": money(t["un_cross"]),
            "availableBalance": money(t["available"]),
            "maxWithdrawAmount": money(t["available"]),
        }
        asset = {
            "asset": "USDT",
            "walletBalance": money(wallet),
            "unrealizedProfit": money(t["un_all"]),
            "marginBalance": money(wallet + t["un_all"]),
            "maintMargin": money(t["mm"]),
            "initialMargin": money(t["pos_im"] + t["order_im"]),
            "positionInitialMargin": money(t["pos_im"]),
            "openOrderInitialMargin": money(t["order_im"]),
            "crossWalletBalance": money(t["cross_wallet"]),
            "crossUnPnl": money(t["un_cross"]),
            "availableBalance": money(t["available"]),
            "maxWithdrawAmount": money(t["available"]),
            "updateTime": self.wallet_time,
        }
        views = [self._position_view(s, t) for s in self.symbols]
        if version >= 3:
            positions = [
                {
                    k: v[k]
                    for k in (
                        "symbol",
                        "positionSide",
                        "positionAmt",
                        "unrealizedProfit",
                        "isolatedMargin",
                        "notional",
                        "isolatedWallet",
                        "initialMargin",
                        "maintMargin",
                        "updateTime",
                    )
                }
                for v in (dict(v, unrealizedProfit=v["unRealizedProfit"]) for v in views)
                if self.positions[v["symbol"]].amt
            ]
            return {**top, "assets": [asset], "positions": positions}
        asset["marginAvailable"] = True
        positions = [
            {
                "symbol": v["symbol"],
                "initialMargin": v["initialMargin"],
                "maintMargin": v["maintMargin"],
                "unrealizedProfit": v["unRealizedProfit"],
                "positionInitialMargin": v["positionInitialMargin"],
                "openOrderInitialMargin": v["openOrderInitialMargin"],
                "leverage": v["leverage"],
                "isolated": v["isolated"],
                "entryPrice": v["entryPrice"],
                "breakEvenPrice": v["breakEvenPrice"],
                "maxNotional": num(MAX_NOTIONAL),
                "bidNotional": v["bidNotional"],
                "askNotional": v["askNotional"],
                "positionSide": "BOTH",
                "positionAmt": v["positionAmt"],
                "updateTime": v["updateTime"],
            }
            for v in views
        ]
        return {
            "feeTier": 0,
            "feeBurn": False,
            "canTrade": True,
            "canDeposit": True,
            "canWithdraw": True,
            "updateTime": 0,
            "multiAssetsMargin": False,
            "tradeGroupId": -1,
            **top,
            "assets": [asset],
            "positions": positions,
        }

    def balance(self, p: dict[str, str], version: int) -> list:
        t = self._totals()
        return [
            {
                "accountAlias": "SgsRfWTiXqXqTiAu",
                "asset": "USDT",
                "balance": money(self.wallet),
                "crossWalletBalance": money(t["cross_wallet"]),
                "crossUnPnl": money(t["un_cross"]),
                "availableBalance": money(t["available"]),
                "maxWithdrawAmount": money(t["available"]),
                "marginAvailable": True,
                "updateTime": self.wallet_time,
            }
        ]

    def user_trades(self, p: dict[str, str]) -> list:
        sym = self._symbol(p)
        oid = _int(p, "orderId")
        from_id = _int(p, "fromId")
        start, end = _int(p, "startTime"), _int(p, "endTime")
        limit = _limit(p, 500, 1000)
        rows = [
            t
            for t in self.trades
            if t["symbol"] == sym
            and (oid is None or t["orderId"] == oid)
            and (from_id is None or t["id"] >= from_id)
            and (start is None or t["time"] >= start)
            and (end is None or t["time"] <= end)
        ]
        return rows[:limit] if (from_id is not None or start is not None) else rows[-limit:]

    def income(self, p: dict[str, str]) -> list:
        sym = self._symbol(p, required=False)
        kind = p.get("incomeType") or None
        start, end = _int(p, "startTime"), _int(p, "endTime")
        limit = _limit(p, 100, 1000)
        if start is None and end is None:
            start = self.wall_ms() - 7 * 86_400_000
            newest = True
        else:
            newest = False
        rows = [
            r
            for r in self.incomes
            if (sym is None or r["symbol"] == sym)
            and (kind is None or r["incomeType"] == kind)
            and (start is None or r["time"] >= start)
            and (end is None or r["time"] <= end)
        ]
        return rows[-limit:] if newest else rows[:limit]

    # ------------------------------------------------------------------ user stream
    def new_listen_key(self) -> dict[str, Any]:
        now = self.wall_ms()
        if self.listen_key is None or now >= self.listen_key_expiry:
            if self.listen_key is not None:
                self._expire_key(now)
            self.listen_key = _b62(f"{self.config.seed}:lk:{self._next('listen')}", 64)
        self.listen_key_expiry = now + LISTEN_KEY_TTL_MS
        self._mark_kv("listen_key")
        self._commit()
        return {"listenKey": self.listen_key}

    def _active_key(self, p: dict[str, str]) -> str:
        key = p.get("listenKey") or self.listen_key
        if self.listen_key is None or key != self.listen_key or self.wall_ms() >= self.listen_key_expiry:
            raise ApiError(-1125, "This listenKey does not exist.")
        return key

    def keepalive_listen_key(self, p: dict[str, str]) -> dict[str, Any]:
        key = self._active_key(p)
        self.listen_key_expiry = self.wall_ms() + LISTEN_KEY_TTL_MS
        self._mark_kv("listen_key")
        self._commit()
        return {"listenKey": key}

    def close_listen_key(self, p: dict[str, str]) -> dict[str, Any]:
        self._active_key(p)
        self.listen_key = None
        self.listen_key_expiry = 0
        self._mark_kv("listen_key")
        self._commit()
        return {}

    def listen_key_valid(self, key: str) -> bool:
        return key == self.listen_key and self.wall_ms() < self.listen_key_expiry

    def _expire_key(self, now: int) -> None:
        if self.listen_key is not None:
            self._user({"e": "listenKeyExpired", "E": now, "listenKey": self.listen_key})
        self.listen_key = None
        self.listen_key_expiry = 0
        self._mark_kv("listen_key")

    def expire_listen_keys(self) -> None:
        self._expire_key(self.wall_ms())
        self._commit()

    # ------------------------------------------------------------------ time
    def set_price(self, symbol: str, price: Decimal) -> None:
        if symbol not in self.rules:
            raise ApiError(-1121, "Invalid symbol.")
        if not isinstance(self.prices, ManualPrices):
            raise ApiError(-1130, "Data sent for parameter 'price' is not valid: prices are not manual.")
        if price <= 0:
            raise _invalid("price")
        now = self.wall_ms()
        self.prices.set(symbol, Decimal(price))
        self._mark_kv("manual_prices")
        m = self.prices.market_ms(now)
        p = self.prices.price_at(symbol, m)
        if p != self.last[symbol]:
            self._on_price(symbol, p, now, m)
        self._check_liquidations(now)
        self._commit()

    def transfer(self, amount: Decimal) -> dict[str, str]:
        """Move USDT into (positive) or out of (negative) the futures wallet, as a transfer from the spot
        account does: an income row and an ACCOUNT_UPDATE (reason DEPOSIT / WITHDRAW) on the user stream.
        A withdrawal cannot take more than is available."""
        if not amount.is_finite() or amount == 0:
            raise _invalid("amount")
        if amount < 0 and -amount > self._available():
            raise ApiError(-2019, f"Margin is insufficient: {self._available()} USDT available.")
        now = self.wall_ms()
        self.wallet += amount
        self.wallet_time = now
        self._income("", "TRANSFER", amount, now)
        self._mark_kv("wallet")
        self._user(self._account_update("DEPOSIT" if amount > 0 else "WITHDRAW", now, []))
        self._commit()
        return {"wallet": money(self.wallet)}

    def advance(self) -> None:
        now = self.wall_ms()
        m = self.prices.market_ms(now)
        listening = bool(self._listeners)
        sec = now // 1000
        for s in self.symbols:
            p = self.prices.price_at(s, m)
            if p != self.last[s]:
                self._on_price(s, p, now, m)
            elif (bar := self._bar.get(s)) is not None and m >= bar[0] + 60_000:
                self._record_price(s, p, m, emit=listening, now=now)
            if listening and self._mark_sec.get(s) != sec:
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

    def _fill_parts(self, now: int) -> None:
        """The next parts of MARKET orders filling over time, at the current price."""
        for oid, split in list(self._splits.items()):
            if now < split.next_ms:
                continue
            o = self.orders[oid]
            if not o.is_open:  # canceled, swept (reduce-only) or liquidated meanwhile
                del self._splits[oid]
                continue
            sym, side = o.symbol, o.side
            qty = split.take()
            if o.reduce_only:
                qty = self._reduce_cap(sym, side, qty)
            price = self._taker_price(sym, side)
            ok = bool(qty)
            if ok and not o.reduce_only:
                # The rest of a MARKET order holds no margin: it may be gone by now.
                try:
                    self._check_margin(sym, side, qty, price)
                except ApiError:
                    ok = False
            if ok:
                self._fill(o, qty, price, False, now)
            if o.is_open and (not ok or split.done):
                self._end_order(o, "EXPIRED", now)
            if not o.is_open:
                del self._splits[oid]

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

    def _check_liquidations(self, now: int) -> None:
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

    def _account_update(self, reason: str, now: int, positions: list[Position]) -> dict[str, Any]:
        cross = self.wallet - sum(
            (p.iso_wallet for p in self.positions.values() if self._isolated(p.symbol)), ZERO
        )
        return {
            "e": "ACCOUNT_UPDATE",
            "E": now,
            "T": now,
            "a": {
                "m": reason,
                "B": [{"a": "USDT", "wb": money(self.wallet), "cw": money(cross), "bc": "0"}],
                "P": [
                    {
                        "s": p.symbol,
                        "pa": qty_str(self.rules[p.symbol], p.amt),
                        "ep": num(p.entry),
                        "bep": num(p.break_even()),
                        "cr": money(p.cum_realized),
                        "up": money(p.unrealized(self.last[p.symbol])),
                        "mt": "isolated" if self._isolated(p.symbol) else "cross",
                        "iw": money(p.iso_wallet),
                        "ps": "BOTH",
                    }
                    for p in positions
                ],
            },
        }

    # ------------------------------------------------------------------ tests and admin
    def state_dump(self) -> dict[str, Any]:
        """Everything the account is (for tests: a rejected request must leave this unchanged)."""
        return {
            "wallet": str(self.wallet),
            "wallet_time": self.wallet_time,
            "leverage": dict(self.leverage),
            "margin_type": dict(self.margin_type),
            "positions": {s: p.to_row() for s, p in self.positions.items()},
            "orders": {k: o.to_row() for k, o in self.orders.items()},
            "open_orders": {s: sorted(b) for s, b in self.book.items()},
            "algos": {k: a.to_row() for k, a in self.algos.items()},
            "open_algos": {s: sorted(b) for s, b in self.open_algos.items()},
            "trades": [dict(t) for t in self.trades],
            "income": [dict(r) for r in self.incomes],
            "counters": dict(self.counters),
            "listen_key": (self.listen_key, self.listen_key_expiry),
            "next_funding": self.next_funding,
            "prices": {s: str(p) for s, p in self.last.items()},
        }
