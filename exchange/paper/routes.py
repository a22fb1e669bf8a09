"""The Binance REST route table of the paper exchange: (method, path) → the engine method that answers,
its security type (auth.py) and its request weight, fixed or from the parameters (notes §1)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exchange.paper.auth import API_KEY, NONE, SIGNED

Weight = int | Callable[[dict[str, str]], int]


def _symbol_weight(with_symbol: int, without: int) -> Callable[[dict[str, str]], int]:
    return lambda p: with_symbol if p.get("symbol") else without


def _klines_weight(p: dict[str, str]) -> int:
    try:
        limit = int(p.get("limit") or 500)
    except ValueError:
        return 1
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


class _Route:
    __slots__ = ("fn", "places_order", "security", "weight")

    def __init__(
        self, fn: Callable[[dict[str, str]], Any], security: int, weight: Weight, places_order: bool = False
    ) -> None:
        self.fn = fn
        self.security = security
        self.weight = weight
        self.places_order = places_order


def build_routes(engine: Any) -> dict[tuple[str, str], _Route]:
    """(method, path) → route: the engine method, security type and request weight (notes §1)."""
    e = engine
    r: dict[tuple[str, str], _Route] = {}

    def add(
        method: str,
        path: str,
        fn: Callable[[dict[str, str]], Any],
        security: int,
        weight: Weight,
        places_order: bool = False,
    ) -> None:
        r[(method, path)] = _Route(fn, security, weight, places_order)

    # public market data
    add("GET", "/fapi/v1/ping", lambda p: {}, NONE, 1)
    add("GET", "/fapi/v1/time", e.server_time, NONE, 1)
    add("GET", "/fapi/v1/exchangeInfo", e.exchange_info, NONE, 1)
    add("GET", "/fapi/v1/klines", e.klines, NONE, _klines_weight)
    add("GET", "/fapi/v1/premiumIndex", e.premium_index, NONE, _symbol_weight(1, 10))
    add("GET", "/fapi/v1/ticker/price", e.ticker_price, NONE, _symbol_weight(1, 2))
    add("GET", "/fapi/v2/ticker/price", e.ticker_price, NONE, _symbol_weight(1, 2))
    add("GET", "/fapi/v1/ticker/bookTicker", e.book_ticker, NONE, _symbol_weight(2, 5))
    add("GET", "/fapi/v1/ticker/24hr", e.ticker_24hr, NONE, _symbol_weight(1, 40))
    # orders
    add("POST", "/fapi/v1/order", e.new_order, SIGNED, 0, places_order=True)
    add("GET", "/fapi/v1/order", e.query_order, SIGNED, 1)
    add("DELETE", "/fapi/v1/order", e.cancel_order, SIGNED, 1)
    add("GET", "/fapi/v1/openOrders", e.open_orders, SIGNED, _symbol_weight(1, 40))
    add("GET", "/fapi/v1/allOrders", e.all_orders, SIGNED, 5)
    add("POST", "/fapi/v1/algoOrder", e.new_algo_order, SIGNED, 0, places_order=True)
    add("GET", "/fapi/v1/algoOrder", e.query_algo_order, SIGNED, 1)
    add("DELETE", "/fapi/v1/algoOrder", e.cancel_algo_order, SIGNED, 1)
    add("GET", "/fapi/v1/openAlgoOrders", e.open_algo_orders, SIGNED, _symbol_weight(1, 40))
    # account settings
    add("POST", "/fapi/v1/leverage", e.change_leverage, SIGNED, 1)
    add("POST", "/fapi/v1/marginType", e.change_margin_type, SIGNED, 1)
    add("GET", "/fapi/v1/leverageBracket", e.leverage_bracket, SIGNED, 1)
    add("GET", "/fapi/v1/positionSide/dual", e.position_side_dual, SIGNED, 30)
    add("POST", "/fapi/v1/positionSide/dual", e.position_side_dual, SIGNED, 1)
    # account state
    add("GET", "/fapi/v2/positionRisk", lambda p: e.position_risk(p, 2), SIGNED, 5)
    add("GET", "/fapi/v3/positionRisk", lambda p: e.position_risk(p, 3), SIGNED, 5)
    add("GET", "/fapi/v2/account", lambda p: e.account(p, 2), SIGNED, 5)
    add("GET", "/fapi/v3/account", lambda p: e.account(p, 3), SIGNED, 5)
    add("GET", "/fapi/v2/balance", lambda p: e.balance(p, 2), SIGNED, 5)
    add("GET", "/fapi/v3/balance", lambda p: e.balance(p, 3), SIGNED, 5)
    add("GET", "/fapi/v1/userTrades", e.user_trades, SIGNED, 5)
    add("GET", "/fapi/v1/income", e.income, SIGNED, 30)
    # user data stream
    add("POST", "/fapi/v1/listenKey", lambda p: e.new_listen_key(), API_KEY, 1)
    add("PUT", "/fapi/v1/listenKey", e.keepalive_listen_key, API_KEY, 1)
    add("DELETE", "/fapi/v1/listenKey", e.close_listen_key, API_KEY, 1)
    return r
