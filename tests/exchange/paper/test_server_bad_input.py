"""Must show: bad input gets Binance's error code and HTTP status, and the exchange state is unchanged."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.exchange.paper.test_server_support import Api, sign


@pytest.fixture
def api(paper_exchange) -> Any:
    paper_exchange.set_price("BTCUSDT", "60000")
    with Api(paper_exchange) as a:
        # Some state worth protecting: an open position, a resting LIMIT order, a stop.
        a.ok(
            "POST",
            "/fapi/v1/order",
            {
                "symbol": "BTCUSDT",
                "side": "BUY",
                "type": "MARKET",
                "quantity": "0.010",
                "newClientOrderId": "seed-open",
            },
        )
        a.ok(
            "POST",
            "/fapi/v1/order",
            {
                "symbol": "BTCUSDT",
                "side": "BUY",
                "type": "LIMIT",
                "timeInForce": "GTC",
                "quantity": "0.005",
                "price": "50000",
                "newClientOrderId": "seed-limit",
            },
        )
        a.ok(
            "POST",
            "/fapi/v1/algoOrder",
            {
                "algoType": "CONDITIONAL",
                "symbol": "BTCUSDT",
                "side": "SELL",
                "type": "STOP_MARKET",
                "triggerPrice": "55000",
                "quantity": "0.010",
                "reduceOnly": "true",
                "clientAlgoId": "seed-stop",
            },
        )
        yield a


ORDER = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.010"}


def _expect(resp: Any, status: int, code: int) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["code"] == code, body
    assert isinstance(body["msg"], str) and body["msg"]


@pytest.mark.parametrize(
    ("name", "params", "status", "code"),
    [
        ("malformed symbol", {**ORDER, "symbol": "BTC-USDT!"}, 400, -1121),
        ("unknown symbol", {**ORDER, "symbol": "FOOBARUSDT"}, 400, -1121),
        ("negative quantity", {**ORDER, "quantity": "-0.010"}, 400, -4003),
        ("quantity below the step size", {**ORDER, "quantity": "0.0105"}, 400, -1111),
    ],
)
def test_bad_order_is_refused_and_changes_nothing(
    api: Api, name: str, params: dict[str, str], status: int, code: int
) -> None:
    before = api.snapshot()
    _expect(api.signed("POST", "/fapi/v1/order", {**params, "newClientOrderId": "bad-1"}), status, code)
    assert api.snapshot() == before, name
    _expect(
        api.signed("GET", "/fapi/v1/order", {"symbol": "BTCUSDT", "origClientOrderId": "bad-1"}), 400, -2013
    )


def test_wrong_signature_old_timestamp_and_wrong_key_change_nothing(api: Api) -> None:
    before = api.snapshot()
    _expect(api.signed("POST", "/fapi/v1/order", ORDER, secret="not-the-secret"), 400, -1022)
    old = int(time.time() * 1000) - 60_000
    _expect(api.signed("POST", "/fapi/v1/order", ORDER, timestamp=old), 400, -1021)
    _expect(api.signed("POST", "/fapi/v1/order", ORDER, timestamp=old, recv_window=10_000), 400, -1021)
    future = int(time.time() * 1000) + 5_000
    _expect(api.signed("POST", "/fapi/v1/order", ORDER, timestamp=future), 400, -1021)
    _expect(api.signed("POST", "/fapi/v1/order", ORDER, key="not-the-key"), 401, -2015)
    _expect(api.signed("POST", "/fapi/v1/order", ORDER, key=""), 401, -2014)
    # The signature covers every parameter: change one after signing.
    ts = int(time.time() * 1000)
    payload = f"symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.010&timestamp={ts}"
    tampered = payload.replace("0.010", "0.100") + "&signature=" + sign(api.secret, payload)
    resp = api.http.post(
        "/fapi/v1/order",
        content=tampered,
        headers={"X-MBX-APIKEY": api.key, "content-type": "application/x-www-form-urlencoded"},
    )
    _expect(resp, 400, -1022)
    # No signature, no timestamp.
    resp = api.http.post(
        "/fapi/v1/order",
        content=payload,
        headers={"X-MBX-APIKEY": api.key, "content-type": "application/x-www-form-urlencoded"},
    )
    _expect(resp, 400, -1102)
    assert api.snapshot() == before


def test_unknown_path_and_method(api: Api) -> None:
    resp = api.http.get("/fapi/v1/doesNotExist")
    assert resp.status_code == 404 and resp.json()["code"] == -5000
    assert "x-mbx-used-weight-1m" in resp.headers
    resp = api.http.patch("/fapi/v1/order")
    assert resp.status_code == 404 and resp.json()["code"] == -5000
