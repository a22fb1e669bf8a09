"""Fault injection as a client sees it, across the process boundary.

"Answer lost" orders really exist at the exchange and are found by client id afterwards; 429 / 418 /
5xx answers leave the order unexecuted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PaperExchange, start_paper_exchange
from tests.exchange.paper.test_server_support import Api


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PaperExchange]:
    ex = start_paper_exchange(Path(tmp_path_factory.mktemp("faults")))
    try:
        ex.set_price("ETHUSDT", "3000")
        yield ex
    finally:
        ex.process.stop()


@pytest.fixture
def api(exchange: PaperExchange) -> Iterator[Api]:
    exchange.clear_faults()
    with Api(exchange) as a:
        yield a
    exchange.clear_faults()


def _order(cid: str, side: str = "BUY") -> dict[str, str]:
    return {
        "symbol": "ETHUSDT",
        "side": side,
        "type": "MARKET",
        "quantity": "0.010",
        "newClientOrderId": cid,
        "newOrderRespType": "RESULT",
    }


def _lookup(api: Api, cid: str) -> httpx.Response:
    return api.signed("GET", "/fapi/v1/order", {"symbol": "ETHUSDT", "origClientOrderId": cid})


def _flatten(api: Api) -> None:
    amt = api.position_amt("ETHUSDT")
    if amt:
        api.ok(
            "POST",
            "/fapi/v1/order",
            {
                "symbol": "ETHUSDT",
                "side": "SELL" if amt > 0 else "BUY",
                "type": "MARKET",
                "quantity": f"{abs(amt):.3f}",
                "reduceOnly": "true",
            },
        )


def test_admin_faults_need_the_paper_key(exchange: PaperExchange) -> None:
    resp = httpx.post(f"{exchange.base_url}/admin/faults", json={"latency_ms": 5})
    assert resp.status_code == 401
    resp = httpx.get(f"{exchange.base_url}/admin/faults", headers={"X-MBX-APIKEY": "nope"})
    assert resp.status_code == 401
    resp = httpx.post(
        f"{exchange.base_url}/admin/faults",
        json={"no_such_fault": 1},
        headers={"X-MBX-APIKEY": exchange.api_key},
    )
    assert resp.status_code == 400
    shown = exchange.admin("GET", "faults")
    assert shown["active"] is False


def test_latency(api: Api, exchange: PaperExchange) -> None:
    exchange.set_faults(latency_ms=300, count=1)
    t0 = time.perf_counter()
    assert api.public("/fapi/v1/time").status_code == 200
    assert time.perf_counter() - t0 >= 0.3
    assert exchange.admin("GET", "faults")["active"] is False  # count=1: switched off again
    assert api.public("/fapi/v1/time").status_code == 200
    # The second answer was not delayed: the venue's own count of injected faults (not a wall-clock bound).
    assert exchange.admin("GET", "faults")["fired"] == {"latency": 1}


def test_lost_answer_503_order_exists(api: Api, exchange: PaperExchange) -> None:
    _flatten(api)
    exchange.set_faults(lost_answer_rate=1, lost_answer_mode="503", count=1)
    assert api.public("/fapi/v1/time").status_code == 200  # only order placement is hit
    resp = api.signed("POST", "/fapi/v1/order", _order("lost-503"))
    assert resp.status_code == 503
    assert resp.json() == {
        "code": -1000,
        "msg": "Unknown error, please check your request or try again later.",
    }
    found = _lookup(api, "lost-503")
    assert found.status_code == 200 and found.json()["status"] == "FILLED"
    assert api.position_amt("ETHUSDT") == pytest.approx(0.01)
    _flatten(api)


def test_lost_answer_timeout_order_exists(api: Api, exchange: PaperExchange) -> None:
    _flatten(api)
    exchange.set_faults(lost_answer_rate=1, lost_answer_mode="timeout", hang_s=3, count=1)
    with pytest.raises(httpx.TimeoutException):
        api.signed("POST", "/fapi/v1/order", _order("lost-timeout"), timeout=0.5)
    found = _lookup(api, "lost-timeout")
    assert found.status_code == 200 and found.json()["status"] == "FILLED"
    assert api.position_amt("ETHUSDT") == pytest.approx(0.01)
    _flatten(api)


def test_lost_answer_on_algo_order(api: Api, exchange: PaperExchange) -> None:
    _flatten(api)
    api.ok("POST", "/fapi/v1/order", _order("algo-base"))
    exchange.set_faults(lost_answer_rate=1, count=1, paths=["/fapi/v1/algoOrder"])
    resp = api.signed(
        "POST",
        "/fapi/v1/algoOrder",
        {
            "algoType": "CONDITIONAL",
            "symbol": "ETHUSDT",
            "side": "SELL",
            "type": "STOP_MARKET",
            "triggerPrice": "2500",
            "quantity": "0.010",
            "reduceOnly": "true",
            "clientAlgoId": "lost-algo",
        },
    )
    assert resp.status_code == 503 and resp.json()["code"] == -1000
    found = api.ok("GET", "/fapi/v1/algoOrder", {"clientAlgoId": "lost-algo"})
    assert found["algoStatus"] == "NEW"
    api.ok("DELETE", "/fapi/v1/algoOrder", {"clientAlgoId": "lost-algo"})
    _flatten(api)


@pytest.mark.parametrize(
    ("faults", "status", "code", "msg_start", "retry_after"),
    [
        ({"http_429_rate": 1, "retry_after_s": 7}, 429, -1003, "Too many requests", "7"),
        ({"http_418_rate": 1, "retry_after_s": 9}, 418, -1003, "Way too many requests; IP", "9"),
        ({"http_5xx_rate": 1}, 503, -1001, "Service Unavailable.", None),
        ({"http_5xx_rate": 1, "http_5xx_status": 500}, 500, -1001, "Internal error;", None),
        ({"http_5xx_rate": 1, "http_5xx_status": 502}, 502, -1001, "Internal error;", None),
    ],
)
def test_refusals_do_not_execute(
    api: Api,
    exchange: PaperExchange,
    faults: dict[str, Any],
    status: int,
    code: int,
    msg_start: str,
    retry_after: str | None,
) -> None:
    _flatten(api)
    cid = f"refused-{status}-{faults.get('http_5xx_status', 0)}"
    exchange.set_faults(**faults, count=1)
    resp = api.signed("POST", "/fapi/v1/order", _order(cid))
    assert resp.status_code == status
    body = resp.json()
    assert body["code"] == code and body["msg"].startswith(msg_start), body
    assert resp.headers.get("retry-after") == retry_after
    not_found = _lookup(api, cid)
    assert not_found.status_code == 400 and not_found.json()["code"] == -2013
    assert api.position_amt("ETHUSDT") == 0


def test_paths_and_count_scope_the_faults(api: Api, exchange: PaperExchange) -> None:
    exchange.set_faults(http_5xx_rate=1, paths=["/fapi/v2/account"], count=2)
    assert api.public("/fapi/v1/time").status_code == 200
    assert api.signed("GET", "/fapi/v2/account").status_code == 503
    assert api.signed("GET", "/fapi/v2/account").status_code == 503
    assert api.signed("GET", "/fapi/v2/account").status_code == 200
    shown = exchange.admin("GET", "faults")
    assert shown["active"] is False and shown["fired"] == {"5xx": 2}
