"""The paper exchange's engine: a synchronous, in-process simulation of one Binance USDⓈ-M account.

The HTTP/WebSocket server authenticates a request and hands its raw parameters to one method here;
the method validates everything first (a rejected request changes nothing), then mutates the state,
writes what changed to SQLite in one transaction and finally tells the listeners (user-data and
market-stream events). `advance()` moves the market clock: fills resting orders, fires algo orders,
liquidates, pays funding and emits the market streams.

`PaperEngine` is this façade over one shared state, split the way simulated venues are; each part is
a mixin in its own module, and a part builds only on those below it:

    state.py             EngineState: the state, its persistence (SQLite) and shared plumbing
    params.py            reading request parameters, and their errors
    account.py           AccountMixin: margin totals, available balance, liquidation prices, ledger
    fills.py             FillsMixin: what a fill does, order records, MARKET orders filling in parts
    orders.py            OrdersMixin: MARKET / LIMIT orders (new, query, cancel, lists)
    algo_orders.py       AlgoOrdersMixin: conditional orders and their trigger
    market_data.py       MarketDataMixin: public market data and the recorded 1m bars
    account_settings.py  AccountSettingsMixin: leverage, margin type, position mode, transfers
    account_views.py     AccountViewsMixin: positions, account, balance, trades, income
    listen_keys.py       ListenKeysMixin: the user-data stream's listen key
    clock.py             ClockMixin: price moves, matching, algo triggers, liquidation, funding
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exchange.paper.account_settings import AccountSettingsMixin
from exchange.paper.account_views import AccountViewsMixin
from exchange.paper.algo_orders import AlgoOrdersMixin
from exchange.paper.clock import ClockMixin
from exchange.paper.config import PaperConfig
from exchange.paper.listen_keys import ListenKeysMixin
from exchange.paper.market_data import MarketDataMixin
from exchange.paper.orders import OrdersMixin
from exchange.paper.prices import PriceSource, build_price_source

__all__ = ["PaperEngine", "PriceSource", "build_price_source"]


class PaperEngine(
    ClockMixin,
    OrdersMixin,
    AlgoOrdersMixin,
    AccountViewsMixin,
    AccountSettingsMixin,
    MarketDataMixin,
    ListenKeysMixin,
):
    """One simulated account and its market: the state (loaded from `store_path` when it holds one)
    and every endpoint the server routes to, composed from the mixins listed in the module docstring."""

    def __init__(self, config: PaperConfig, prices: PriceSource, store_path: Path | None = None) -> None:
        now = config.clock()  # what `wall_ms()` reads
        super().__init__(config, prices, store_path, now)
        # The market starts: each symbol's price now opens its first recorded 1m bar.
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
