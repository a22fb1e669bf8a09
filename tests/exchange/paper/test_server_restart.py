"""A restart of the paper exchange on the same --state file keeps positions and orders."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import start_paper_exchange
from tests.exchange.paper.test_server_support import Api


def test_restart_keeps_positions_and_orders(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    first = start_paper_exchange(tmp_path, state_path=state)
    try:
        first.set_price("ETHUSDT", "3000")
        with Api(first) as api:
            api.ok(
                "POST",
                "/fapi/v1/order",
                {
                    "symbol": "ETHUSDT",
                    "side": "BUY",
                    "type": "MARKET",
                    "quantity": "0.200",
                    "newClientOrderId": "keep-open",
                },
            )
            api.ok(
                "POST",
                "/fapi/v1/order",
                {
                    "symbol": "ETHUSDT",
                    "side": "BUY",
                    "type": "LIMIT",
                    "timeInForce": "GTC",
                    "quantity": "0.100",
                    "price": "2500",
                    "newClientOrderId": "keep-limit",
                },
            )
            api.ok(
                "POST",
                "/fapi/v1/algoOrder",
                {
                    "algoType": "CONDITIONAL",
                    "symbol": "ETHUSDT",
                    "side": "SELL",
                    "type": "STOP_MARKET",
                    "triggerPrice": "2700",
                    "quantity": "0.200",
                    "reduceOnly": "true",
                    "clientAlgoId": "keep-stop",
                },
            )
            before = api.snapshot()
            assert before["positions"] and before["open_orders"] and before["open_algo"]
    finally:
        first.process.stop()
    assert not first.process.alive()

    second = start_paper_exchange(
        tmp_path, state_path=state, api_key=first.api_key, api_secret=first.api_secret
    )
    try:
        with Api(second) as api:
            after = api.snapshot()
            assert after == before
            assert api.position_amt("ETHUSDT") == pytest.approx(0.2)
            limit = api.ok("GET", "/fapi/v1/order", {"symbol": "ETHUSDT", "origClientOrderId": "keep-limit"})
            assert limit["status"] == "NEW"
            filled = api.ok("GET", "/fapi/v1/order", {"symbol": "ETHUSDT", "origClientOrderId": "keep-open"})
            assert filled["status"] == "FILLED"
            stop = api.ok("GET", "/fapi/v1/algoOrder", {"clientAlgoId": "keep-stop"})
            assert stop["algoStatus"] == "NEW"
    finally:
        second.process.stop()
