"""Rate-limit headers and the 429 → 418 escalation, against a paper exchange with a small weight limit."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import start_paper_exchange
from tests.exchange.paper.test_server_support import Api


def test_weight_headers_count_and_429_then_418(tmp_path: Path) -> None:
    ex = start_paper_exchange(tmp_path, "--weight-limit", "40")
    try:
        ex.set_price("ETHUSDT", "3000")
        with Api(ex) as api:
            # conftest's readiness probe may have spent some weight already: read the header.
            start = int(api.public("/fapi/v1/time").headers["x-mbx-used-weight-1m"])
            assert int(api.public("/fapi/v1/time").headers["x-mbx-used-weight-1m"]) == start + 1
            resp = api.signed("GET", "/fapi/v3/account")
            assert resp.status_code == 200 and int(resp.headers["x-mbx-used-weight-1m"]) == start + 6
            resp = api.signed("GET", "/fapi/v1/openOrders")  # no symbol: weight 40 → over the limit
            assert resp.status_code == 429, resp.text
            assert resp.json()["code"] == -1003
            assert "request weight per minute is 40" in resp.json()["msg"]
            assert int(resp.headers["retry-after"]) >= 1
            assert "x-mbx-used-weight-1m" in resp.headers
            # Keeping on while told to wait: another 429, then the IP is banned (418).
            assert api.public("/fapi/v1/time").status_code == 429
            resp = api.public("/fapi/v1/time")
            assert resp.status_code == 418, resp.text
            assert resp.json()["code"] == -1003 and "banned until" in resp.json()["msg"]
            assert 100 <= int(resp.headers["retry-after"]) <= 120
            assert api.public("/fapi/v1/time").status_code == 418
            # Admin endpoints are not rate limited.
            assert ex.admin("GET", "faults")["active"] is False
    finally:
        ex.process.stop()


def test_order_count_headers(paper_exchange) -> None:
    paper_exchange.set_price("ETHUSDT", "3000")
    with Api(paper_exchange) as api:
        counts = []
        for side in ("BUY", "SELL"):
            resp = api.signed(
                "POST",
                "/fapi/v1/order",
                {"symbol": "ETHUSDT", "side": side, "type": "MARKET", "quantity": "0.010"},
            )
            assert resp.status_code == 200, resp.text
            counts.append(
                (int(resp.headers["x-mbx-order-count-10s"]), int(resp.headers["x-mbx-order-count-1m"]))
            )
            assert "x-mbx-used-weight-1m" in resp.headers
        assert counts == [(1, 1), (2, 2)]
        # Non-order endpoints carry only the weight header.
        resp = api.signed("GET", "/fapi/v1/openOrders", {"symbol": "ETHUSDT"})
        assert "x-mbx-order-count-10s" not in resp.headers and "x-mbx-used-weight-1m" in resp.headers
