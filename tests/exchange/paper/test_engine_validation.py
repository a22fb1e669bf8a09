"""Every rejected request answers Binance's code and leaves the whole engine state unchanged."""

from __future__ import annotations

from typing import Any

import pytest

from tests.exchange.paper.test_engine_support import D, Harness, api_error

MKT = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.010"}
LIM = {
    "symbol": "BTCUSDT",
    "side": "BUY",
    "type": "LIMIT",
    "timeInForce": "GTC",
    "quantity": "0.010",
    "price": "64000",
}
ALGO = {
    "algoType": "CONDITIONAL",
    "symbol": "BTCUSDT",
    "side": "SELL",
    "type": "STOP_MARKET",
    "triggerPrice": "60000",
    "quantity": "0.005",
    "reduceOnly": "true",
}


def without(d: dict[str, str], key: str) -> dict[str, str]:
    return {k: v for k, v in d.items() if k != key}


ORDER_CASES: list[tuple[str, dict[str, str], int]] = [
    ("no symbol", without(MKT, "symbol"), -1102),
    ("malformed symbol", {**MKT, "symbol": "BTC-USDT"}, -1121),
    ("unknown symbol", {**MKT, "symbol": "FOOUSDT"}, -1121),
    ("no side", without(MKT, "side"), -1102),
    ("bad side", {**MKT, "side": "HOLD"}, -1117),
    ("bad type", {**MKT, "type": "ICEBERG"}, -1116),
    ("stop market on order endpoint", {**MKT, "type": "STOP_MARKET", "stopPrice": "70000"}, -4120),
    ("trailing on order endpoint", {**MKT, "type": "TRAILING_STOP_MARKET"}, -4120),
    ("no quantity", without(MKT, "quantity"), -1102),
    ("quantity not a number", {**MKT, "quantity": "abc"}, -1130),
    ("negative quantity", {**MKT, "quantity": "-0.010"}, -4003),
    ("zero quantity", {**MKT, "quantity": "0"}, -4003),
    ("quantity off step", {**MKT, "quantity": "0.0105"}, -1111),
    ("quantity above market max", {**MKT, "quantity": "121"}, -4005),
    ("notional below minimum", {**MKT, "quantity": "0.001"}, -4164),
    ("price off tick", {**LIM, "price": "64000.05"}, -4014),
    ("price not a number", {**LIM, "price": "1e5"}, -1130),
    ("limit without timeInForce", without(LIM, "timeInForce"), -1102),
    ("limit without price", without(LIM, "price"), -1102),
    ("bad timeInForce", {**LIM, "timeInForce": "DAY"}, -1115),
    ("limit far above mark", {**LIM, "price": "70000"}, -4016),
    ("bad client id chars", {**MKT, "newClientOrderId": "bad id!"}, -4015),
    ("client id too long", {**MKT, "newClientOrderId": "x" * 37}, -4015),
    ("duplicate open client id", {**MKT, "newClientOrderId": "open-1"}, -4116),
    ("bad reduceOnly", {**MKT, "reduceOnly": "yes"}, -1130),
    ("hedge position side", {**MKT, "positionSide": "LONG"}, -4061),
    ("reduce-only increasing", {**MKT, "reduceOnly": "true"}, -2022),
    ("margin", {**MKT, "quantity": "100"}, -2019),
    ("post-only crossing", {**LIM, "price": "65100", "timeInForce": "GTX"}, -5022),
]


@pytest.fixture
def loaded() -> Harness:
    """A long 0.010 BTC position, a resting limit with client id open-1, a stop algo, a listen key."""
    h = Harness()
    h.market_buy("0.010")
    h.engine.new_order({**LIM, "newClientOrderId": "open-1"})
    h.engine.new_algo_order({**ALGO, "clientAlgoId": "algo-1"})
    h.engine.new_listen_key()
    return h


@pytest.mark.parametrize(("name", "params", "code"), ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
def test_bad_order_is_rejected_and_changes_nothing(
    loaded: Harness, name: str, params: dict[str, str], code: int
) -> None:
    before = loaded.engine.state_dump()
    n_events = len(loaded.events)
    err = api_error(loaded.engine.new_order, params)
    assert err.code == code, err.msg
    assert loaded.engine.state_dump() == before
    assert len(loaded.events) == n_events


def test_error_messages_are_binances(loaded: Harness) -> None:
    e = loaded.engine
    assert api_error(e.new_order, without(MKT, "quantity")).msg == (
        "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed."
    )
    assert api_error(e.new_order, {**MKT, "quantity": "x"}).msg == (
        "Data sent for parameter 'quantity' is not valid."
    )
    assert api_error(e.new_order, {**MKT, "symbol": "BTC"}).msg == "Invalid symbol."
    assert api_error(e.new_order, {**MKT, "type": "STOP"}).msg == (
        "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead."
    )
    assert api_error(e.new_order, {**MKT, "newClientOrderId": "open-1"}).msg == "clientOrderId is duplicated."
    assert api_error(e.new_order, {**MKT, "quantity": "100"}).msg == "Margin is insufficient."
    assert api_error(e.new_order, {**MKT, "reduceOnly": "true"}).msg == "ReduceOnly Order is rejected."
    assert api_error(e.new_order, {**MKT, "quantity": "0.001"}).msg.startswith(
        "Order's notional must be no smaller than 100"
    )


OTHER_CASES: list[tuple[str, str, dict[str, str], int]] = [
    ("algo crossed trigger", "new_algo_order", {**ALGO, "triggerPrice": "66000"}, -2021),
    ("algo without trigger", "new_algo_order", without(ALGO, "triggerPrice"), -1102),
    ("algo bad algoType", "new_algo_order", {**ALGO, "algoType": "VP"}, -1130),
    ("algo market type", "new_algo_order", {**ALGO, "type": "MARKET"}, -1116),
    ("algo duplicate open client id", "new_algo_order", {**ALGO, "clientAlgoId": "algo-1"}, -4116),
    (
        "algo closePosition with quantity",
        "new_algo_order",
        {**without(ALGO, "reduceOnly"), "closePosition": "true"},
        -1106,
    ),
    (
        "algo reduce-only increasing",
        "new_algo_order",
        {**ALGO, "side": "BUY", "triggerPrice": "70000"},
        -2022,
    ),
    ("algo trigger off tick", "new_algo_order", {**ALGO, "triggerPrice": "60000.01"}, -4014),
    ("cancel unknown algo", "cancel_algo_order", {"algoId": "42"}, -2011),
    ("query unknown algo", "query_algo_order", {"clientAlgoId": "nope"}, -2013),
    ("cancel unknown order", "cancel_order", {"symbol": "BTCUSDT", "orderId": "1"}, -2011),
    ("cancel without id", "cancel_order", {"symbol": "BTCUSDT"}, -1102),
    ("query unknown client id", "query_order", {"symbol": "BTCUSDT", "origClientOrderId": "zz"}, -2013),
    ("leverage 0", "change_leverage", {"symbol": "BTCUSDT", "leverage": "0"}, -4028),
    ("leverage 126", "change_leverage", {"symbol": "BTCUSDT", "leverage": "126"}, -4028),
    ("leverage not int", "change_leverage", {"symbol": "BTCUSDT", "leverage": "2.5"}, -1130),
    ("leverage bad symbol", "change_leverage", {"symbol": "btcusdt", "leverage": "5"}, -1121),
    ("margin type unchanged", "change_margin_type", {"symbol": "BTCUSDT", "marginType": "CROSSED"}, -4046),
    (
        "margin type with position",
        "change_margin_type",
        {"symbol": "BTCUSDT", "marginType": "ISOLATED"},
        -4048,
    ),
    (
        "margin type with open orders",
        "change_margin_type",
        {"symbol": "ETHUSDT", "marginType": "ISOLATED", "_eth_order": "1"},
        -4047,
    ),
    ("keepalive unknown key", "keepalive_listen_key", {"listenKey": "nope"}, -1125),
    ("hedge mode", "position_side_dual", {"dualSidePosition": "true"}, -4059),
    ("klines bad interval", "klines", {"symbol": "BTCUSDT", "interval": "7m"}, -1120),
    ("userTrades without symbol", "user_trades", {}, -1102),
]


@pytest.mark.parametrize(("name", "method", "params", "code"), OTHER_CASES, ids=[c[0] for c in OTHER_CASES])
def test_bad_request_is_rejected_and_changes_nothing(
    loaded: Harness, name: str, method: str, params: dict[str, Any], code: int
) -> None:
    e = loaded.engine
    if params.pop("_eth_order", None):
        e.new_order({**LIM, "symbol": "ETHUSDT", "price": "2990", "quantity": "0.100"})
    before = e.state_dump()
    err = api_error(getattr(e, method), params)
    assert err.code == code, err.msg
    assert e.state_dump() == before


def test_set_price_rejects_unknown_symbol_without_change(loaded: Harness) -> None:
    before = loaded.engine.state_dump()
    assert api_error(loaded.engine.set_price, "FOOUSDT", D("1")).code == -1121
    assert loaded.engine.state_dump() == before
