"""Must show: stock ccxt (binanceusdm) and stock python-binance, unchanged, trade against the paper exchange.

Only configuration is touched (URLs, options), never library code. After each step the exchange's
own state is checked over raw signed HTTP (tests' helper), not through the client under test.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.exchange.paper.test_server_support import Api

ccxt = pytest.importorskip("ccxt")
binance_client = pytest.importorskip("binance.client")


def _local(url: str, base: str) -> str:
    """The same path on the paper exchange's host."""
    parts = urlsplit(url)
    return base + parts.path + (f"?{parts.query}" if parts.query else "")


def _rewrite(obj: Any, base: str) -> Any:
    if isinstance(obj, str):
        return _local(obj, base)
    if isinstance(obj, dict):
        return {k: _rewrite(v, base) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rewrite(v, base) for v in obj]
    return obj


def _open_algo(api: Api, symbol: str) -> list[dict[str, Any]]:
    return [o for o in api.ok("GET", "/fapi/v1/openAlgoOrders", {"symbol": symbol})]


def test_stock_ccxt_binanceusdm(paper_exchange) -> None:
    ex_ = paper_exchange
    ex_.set_price("BTCUSDT", "60000")
    ex = ccxt.binanceusdm(
        {
            "apiKey": ex_.api_key,
            "secret": ex_.api_secret,
            "enableRateLimit": False,
            "timeout": 10_000,
            "options": {"fetchCurrencies": False, "adjustForTimeDifference": False},
        }
    )
    ex.urls["api"] = _rewrite(ex.urls["api"], ex_.base_url)
    symbol = "BTC/USDT:USDT"
    with Api(ex_) as api:
        markets = ex.load_markets()
        m = markets[symbol]
        assert m["linear"] and m["swap"] and m["settle"] == "USDT" and m["id"] == "BTCUSDT"
        assert Decimal(str(m["precision"]["amount"])) == Decimal("0.001")

        ex.set_leverage(5, symbol)
        lev = [p for p in api.ok("GET", "/fapi/v2/positionRisk", {"symbol": "BTCUSDT"})]
        assert int(lev[0]["leverage"]) == 5

        order = ex.create_order(symbol, "market", "buy", 0.01)
        assert order["status"] == "closed" and float(order["filled"]) == pytest.approx(0.01)
        assert api.position_amt("BTCUSDT") == pytest.approx(0.01)

        stop = ex.create_order(
            symbol, "market", "sell", 0.01, params={"stopLossPrice": 55000, "reduceOnly": True}
        )
        algos = _open_algo(api, "BTCUSDT")
        assert len(algos) == 1
        assert algos[0]["orderType"] == "STOP_MARKET" and Decimal(algos[0]["triggerPrice"]) == 55000
        assert str(algos[0]["algoId"]) == str(stop["id"])
        assert api.position_amt("BTCUSDT") == pytest.approx(0.01)  # not triggered

        positions = [p for p in ex.fetch_positions([symbol]) if p["contracts"]]
        assert len(positions) == 1 and positions[0]["side"] == "long"
        assert positions[0]["contracts"] == pytest.approx(0.01)
        balance = ex.fetch_balance()
        usdt = balance["USDT"]
        assert usdt["total"] is not None and 9_000 < usdt["total"] < 10_000  # start 10000 minus the fee

        close = ex.create_order(symbol, "market", "sell", 0.01, params={"reduceOnly": True})
        assert close["status"] == "closed"
        assert api.position_amt("BTCUSDT") == 0
        # As on Binance, a reduce-only stop dies with the position it protected.
        assert _open_algo(api, "BTCUSDT") == []
        gone = ex.fetch_order(stop["id"], symbol, params={"trigger": True})
        assert gone["status"] in ("expired", "canceled")
        assert api.ok("GET", "/fapi/v1/openOrders", {"symbol": "BTCUSDT"}) == []


def test_stock_python_binance(paper_exchange) -> None:
    ex_ = paper_exchange
    ex_.set_price("ETHUSDT", "3000")
    client = binance_client.Client(ex_.api_key, ex_.api_secret, ping=False)
    # The only URL the futures methods use (FUTURES_TESTNET_URL / FUTURES_DEMO_URL only when
    # testnet / demo is set; WS URLs are separate constants and unused here).
    client.FUTURES_URL = ex_.base_url + "/fapi"
    with Api(ex_) as api:
        info = client.futures_exchange_info()
        eth = next(s for s in info["symbols"] if s["symbol"] == "ETHUSDT")
        assert eth["contractType"] == "PERPETUAL"

        client.futures_change_leverage(symbol="ETHUSDT", leverage=4)
        risk = api.ok("GET", "/fapi/v2/positionRisk", {"symbol": "ETHUSDT"})
        assert int(risk[0]["leverage"]) == 4

        opened = client.futures_create_order(
            symbol="ETHUSDT", side="BUY", type="MARKET", quantity=0.1, newOrderRespType="RESULT"
        )
        assert opened["status"] == "FILLED" and opened["clientOrderId"].startswith("x-Cb7ytekJ")
        assert api.position_amt("ETHUSDT") == pytest.approx(0.1)

        # python-binance routes STOP_MARKET to /fapi/v1/algoOrder by itself (stopPrice -> triggerPrice).
        stop = client.futures_create_order(
            symbol="ETHUSDT", side="SELL", type="STOP_MARKET", stopPrice=2800, quantity=0.1, reduceOnly=True
        )
        assert "algoId" in stop and stop["algoType"] == "CONDITIONAL"
        algos = _open_algo(api, "ETHUSDT")
        assert [a["algoId"] for a in algos] == [stop["algoId"]]
        assert algos[0]["orderType"] == "STOP_MARKET" and Decimal(algos[0]["triggerPrice"]) == 2800

        positions = [
            p for p in client.futures_position_information(symbol="ETHUSDT") if float(p["positionAmt"])
        ]
        assert len(positions) == 1 and float(positions[0]["positionAmt"]) == pytest.approx(0.1)
        account = client.futures_account()
        assert 9_000 < float(account["totalWalletBalance"]) < 10_000
        balances = {b["asset"]: b for b in client.futures_account_balance()}
        assert float(balances["USDT"]["balance"]) == pytest.approx(float(account["totalWalletBalance"]))

        cancelled = client.futures_cancel_order(symbol="ETHUSDT", algoId=stop["algoId"])
        assert str(cancelled["algoId"]) == str(stop["algoId"])
        assert _open_algo(api, "ETHUSDT") == []
        assert api.position_amt("ETHUSDT") == pytest.approx(0.1)

        closed = client.futures_create_order(
            symbol="ETHUSDT",
            side="SELL",
            type="MARKET",
            quantity=0.1,
            reduceOnly=True,
            newOrderRespType="RESULT",
        )
        assert closed["status"] == "FILLED" and closed["reduceOnly"] is True
        assert api.position_amt("ETHUSDT") == 0
        assert api.ok("GET", "/fapi/v1/openOrders", {"symbol": "ETHUSDT"}) == []
