"""WebSocket streams of the paper exchange: market (SUBSCRIBE and combined URLs) and user data."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import PaperExchange, start_paper_exchange
from tests.exchange.paper.test_server_support import Api


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PaperExchange]:
    ex = start_paper_exchange(Path(tmp_path_factory.mktemp("ws")))
    try:
        ex.set_price("BTCUSDT", "60000")
        yield ex
    finally:
        ex.process.stop()


@pytest.fixture
def api(exchange: PaperExchange) -> Iterator[Api]:
    with Api(exchange) as a:
        yield a


def _wait_for(ws: ClientConnection, pred: Callable[[Any], bool], timeout: float = 5.0) -> Any:
    """The first message matching `pred`; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no matching message within {timeout}s; saw {seen[-5:]}")
        try:
            msg = json.loads(ws.recv(timeout=left))
        except TimeoutError:
            continue
        seen.append(msg)
        if pred(msg):
            return msg


def _closed(ws: ClientConnection, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ws.recv(timeout=deadline - time.monotonic())
        except ConnectionClosed:
            return True
        except TimeoutError:
            return False
    return False


def _listen_key(api: Api) -> str:
    resp = api.http.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": api.key})
    assert resp.status_code == 200, resp.text
    return resp.json()["listenKey"]


def _trade(api: Api, side: str = "BUY") -> None:
    api.ok(
        "POST", "/fapi/v1/order", {"symbol": "BTCUSDT", "side": side, "type": "MARKET", "quantity": "0.010"}
    )


def test_subscribe_frames_and_market_events(exchange: PaperExchange, api: Api) -> None:
    with connect(f"{exchange.ws_url}/market/ws/7") as ws:  # ccxt pro's numeric suffix
        ws.send(
            json.dumps(
                {"method": "SUBSCRIBE", "params": ["btcusdt@markPrice@1s", "btcusdt@aggTrade"], "id": 1}
            )
        )
        assert _wait_for(ws, lambda m: m.get("id") == 1) == {"result": None, "id": 1}
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        listed = _wait_for(ws, lambda m: m.get("id") == 2)
        assert sorted(listed["result"]) == ["btcusdt@aggTrade", "btcusdt@markPrice@1s"]
        exchange.set_price("BTCUSDT", "60100")
        seen: dict[str, Any] = {}

        def both(m: Any) -> bool:
            if m.get("p", "").startswith("60100"):
                seen[m["e"]] = m
            return {"aggTrade", "markPriceUpdate"} <= set(seen)

        _wait_for(ws, both)
        assert seen["aggTrade"]["s"] == seen["markPriceUpdate"]["s"] == "BTCUSDT"
        assert float(seen["aggTrade"]["q"]) > 0
        ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 3}))
        assert _wait_for(ws, lambda m: m.get("id") == 3) == {"result": None, "id": 3}
        exchange.set_price("BTCUSDT", "60200")
        _wait_for(ws, lambda m: m.get("e") == "markPriceUpdate" and m.get("p", "").startswith("60200"))
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 4}))
        assert _wait_for(ws, lambda m: m.get("id") == 4)["result"] == ["btcusdt@markPrice@1s"]


@pytest.mark.parametrize("prefix", ["/market", "/public", ""])
def test_combined_stream_url(exchange: PaperExchange, prefix: str) -> None:
    url = f"{exchange.ws_url}{prefix}/stream?streams=btcusdt@markPrice@1s/ethusdt@markPrice@1s"
    with connect(url) as ws:
        exchange.set_price("BTCUSDT", "61000")
        msg = _wait_for(
            ws,
            lambda m: (
                m.get("stream") == "btcusdt@markPrice@1s" and m["data"].get("p", "").startswith("61000")
            ),
        )
        assert msg["data"]["e"] == "markPriceUpdate" and msg["data"]["s"] == "BTCUSDT"


def test_raw_stream_path(exchange: PaperExchange) -> None:
    with connect(f"{exchange.ws_url}/ws/btcusdt@markPrice@1s") as ws:
        exchange.set_price("BTCUSDT", "61500")
        msg = _wait_for(ws, lambda m: m.get("p", "").startswith("61500"))
        assert msg["e"] == "markPriceUpdate"


def test_user_stream_private_and_legacy_paths(exchange: PaperExchange, api: Api) -> None:
    key = _listen_key(api)
    with (
        connect(f"{exchange.ws_url}/private/ws?listenKey={key}") as private,
        connect(f"{exchange.ws_url}/ws/{key}") as legacy,
        connect(f"{exchange.ws_url}/private/ws?listenKey={key}&events=ACCOUNT_UPDATE") as filtered,
        connect(f"{exchange.ws_url}/private/stream?listenKey={key}") as combined,
    ):
        time.sleep(0.1)
        _trade(api)
        for ws in (private, legacy):
            got: dict[str, Any] = {}

            def filled_and_account(m: Any, got: dict[str, Any] = got) -> bool:
                if m.get("e") == "ORDER_TRADE_UPDATE" and m["o"]["X"] == "FILLED":
                    got["order"] = m
                elif m.get("e") == "ACCOUNT_UPDATE":
                    got["account"] = m
                return len(got) == 2

            _wait_for(ws, filled_and_account)
            assert got["order"]["o"]["s"] == "BTCUSDT" and got["order"]["o"]["S"] == "BUY"
            assert any(p["s"] == "BTCUSDT" and float(p["pa"]) > 0 for p in got["account"]["a"]["P"])
        first = _wait_for(filtered, lambda m: "e" in m)
        assert first["e"] == "ACCOUNT_UPDATE"  # ORDER_TRADE_UPDATE filtered out
        wrapped = _wait_for(combined, lambda m: m.get("data", {}).get("e") == "ORDER_TRADE_UPDATE")
        assert wrapped["stream"] == key
    _trade(api, "SELL")


def test_invalid_listen_key_is_closed(exchange: PaperExchange) -> None:
    with connect(f"{exchange.ws_url}/private/ws?listenKey=nope") as ws:
        assert _closed(ws)
    with connect(f"{exchange.ws_url}/ws/notAValidListenKey") as ws:
        assert _closed(ws)


def test_listen_key_expiry_delivers_event_and_closes(exchange: PaperExchange, api: Api) -> None:
    key = _listen_key(api)
    with (
        connect(f"{exchange.ws_url}/private/ws?listenKey={key}") as ws,
        connect(f"{exchange.ws_url}/market/ws/btcusdt@markPrice@1s") as market,
    ):
        time.sleep(0.1)
        exchange.admin("POST", "listen-keys/expire")
        msg = _wait_for(ws, lambda m: m.get("e") == "listenKeyExpired")
        assert msg["listenKey"] == key
        assert _closed(ws)
        # Market streams are not affected.
        exchange.set_price("BTCUSDT", "62000")
        _wait_for(market, lambda m: m.get("p", "").startswith("62000"))
    resp = api.http.put("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": api.key}, content=f"listenKey={key}")
    assert resp.status_code == 400 and resp.json()["code"] == -1125


def test_admin_drop_closes_every_socket(exchange: PaperExchange, api: Api) -> None:
    key = _listen_key(api)
    with (
        connect(f"{exchange.ws_url}/private/ws?listenKey={key}") as user,
        connect(f"{exchange.ws_url}/market/stream?streams=btcusdt@aggTrade") as market,
    ):
        time.sleep(0.1)
        dropped = exchange.admin("POST", "ws/drop")
        assert dropped["dropped"] >= 2
        assert _closed(user) and _closed(market)
