"""Client behaviour that needs no venue: local refusals send nothing; keys never show up anywhere."""

from __future__ import annotations

import logging
from decimal import Decimal

import httpx
import pytest

from exchange.client import BinanceFuturesClient
from exchange.errors import ExchangeError, OrderValidationError
from trading.config import Settings
from trading.instruments import DEFAULT_RULES

API_KEY = "KEY-" + "k" * 60
API_SECRET = "SECRET-" + "s" * 57


def _fail(request: httpx.Request) -> httpx.Response:
    pytest.fail(f"nothing may be sent, but {request.method} {request.url.path} was")


def client() -> BinanceFuturesClient:
    return BinanceFuturesClient(
        "http://127.0.0.1:9",
        API_KEY,
        API_SECRET,
        transport=httpx.MockTransport(_fail),
        symbol_rules=DEFAULT_RULES,
    )


@pytest.mark.parametrize(
    ("kwargs", "code", "words"),
    [
        # BTCUSDT: step 0.001, min qty 0.001, min notional 100
        ({"type": "LIMIT", "quantity": Decimal("0.002"), "price": Decimal("30000")}, -4164, "notional"),
        ({"type": "MARKET", "quantity": Decimal("0.002"), "price_hint": Decimal("30000")}, -4164, "notional"),
        ({"type": "MARKET", "quantity": Decimal("0.0009")}, -4003, "step"),  # rounds down to 0
        ({"type": "LIMIT", "quantity": Decimal("0.0004"), "price": Decimal("60000")}, -4003, "rounded down"),
        ({"type": "MARKET", "quantity": Decimal("-0.01")}, -4003, "greater than zero"),
        ({"type": "MARKET", "quantity": Decimal("0")}, -4003, "greater than zero"),
        ({"type": "MARKET", "quantity": Decimal("200"), "price_hint": Decimal("30000")}, -4005, "greater"),
        ({"type": "LIMIT", "quantity": Decimal("0.01"), "price": Decimal("1")}, -4013, "price"),
        ({"type": "LIMIT", "quantity": Decimal("0.01")}, -1102, "needs a price"),
        ({"type": "STOP_MARKET", "quantity": Decimal("0.01")}, -4120, "new_algo_order"),
        ({"type": "MARKET", "quantity": Decimal("0.01"), "client_order_id": "bad id!"}, -4015, "not valid"),
        ({"type": "MARKET", "quantity": Decimal("0.01"), "client_order_id": "x" * 37}, -4015, "not valid"),
    ],
)
async def test_bad_orders_are_refused_locally(kwargs: dict, code: int, words: str) -> None:
    async with client() as c:
        with pytest.raises(OrderValidationError) as info:
            await c.new_order("BTCUSDT", "BUY", **kwargs)
    assert info.value.code == code
    assert words in str(info.value)
    assert "not sent" in str(info.value) or code in (-1102, -4120, -4015) or "zero" in str(info.value)


async def test_unknown_symbol_is_refused_locally() -> None:
    async with client() as c:
        with pytest.raises(OrderValidationError) as info:
            await c.new_order("NOPEUSDT", "BUY", "MARKET", Decimal("1"))
    assert info.value.code == -1121


async def test_reduce_only_below_min_notional_is_sent_and_rounding_is_applied() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(
            200,
            json={
                "symbol": "BTCUSDT",
                "orderId": 1,
                "clientOrderId": "cid-1",
                "side": "SELL",
                "type": "LIMIT",
                "status": "NEW",
                "price": "30000.0",
                "origQty": "0.002",
                "executedQty": "0",
                "cumQty": "0",
                "cumQuote": "0",
                "avgPrice": "0",
                "updateTime": 1,
            },
        )

    async with BinanceFuturesClient(
        "http://127.0.0.1:9",
        API_KEY,
        API_SECRET,
        symbol_rules=DEFAULT_RULES,
        transport=httpx.MockTransport(handler),
    ) as c:
        order = await c.new_order(
            "BTCUSDT",
            "SELL",
            "LIMIT",
            Decimal("0.00299"),
            price=Decimal("30000.04"),
            reduce_only=True,
            client_order_id="cid-1",
        )
    assert order.orig_qty == Decimal("0.002")
    (req,) = sent
    body = req.content.decode()
    assert req.url.query == b""  # POST: everything signed goes in the form body
    assert body.startswith(
        "symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=0.002"
        "&price=30000.00&reduceOnly=true&newClientOrderId=cid-1&newOrderRespType=RESULT"
        "&recvWindow=5000&timestamp="
    )
    assert body.rsplit("&", 1)[1].startswith("signature=")
    assert req.headers["X-MBX-APIKEY"] == API_KEY
    assert API_SECRET not in body


async def test_algo_order_local_refusals() -> None:
    async with client() as c:
        with pytest.raises(OrderValidationError):
            await c.new_algo_order(
                "BTCUSDT",
                "SELL",
                "STOP_MARKET",
                Decimal("50000"),
                quantity=Decimal("0.01"),
                close_position=True,
            )
        with pytest.raises(OrderValidationError):
            await c.new_algo_order("BTCUSDT", "SELL", "STOP_MARKET", Decimal("50000"))
        with pytest.raises(OrderValidationError) as info:
            await c.new_algo_order(
                "BTCUSDT", "SELL", "STOP_MARKET", Decimal("50000"), quantity=Decimal("0.001")
            )
        assert info.value.code == -4164
        with pytest.raises(OrderValidationError):
            await c.new_algo_order("BTCUSDT", "SELL", "STOP", Decimal("50000"), close_position=True)  # type: ignore[arg-type]
        with pytest.raises(OrderValidationError):
            await c.set_leverage("BTCUSDT", 500)


async def test_keys_never_in_repr_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/fapi/v1/time":
            raise httpx.ConnectError("Connection refused", request=request)
        # A venue that (wrongly) echoes the key back must still not get it into our error text.
        return httpx.Response(400, json={"code": -2015, "msg": f"Invalid API-key {API_KEY}"})

    caplog.set_level(logging.DEBUG)
    c = BinanceFuturesClient(
        "http://127.0.0.1:9",
        API_KEY,
        API_SECRET,
        symbol_rules=DEFAULT_RULES,
        transport=httpx.MockTransport(handler),
        backoff_s=0.0,
    )
    texts = [repr(c), str(c)]
    async with c:
        for call in (
            c.account(),
            c.server_time(),
            c.new_order("BTCUSDT", "BUY", "MARKET", Decimal("0.01"), price_hint=Decimal("30000")),
        ):
            with pytest.raises(ExchangeError) as info:
                await call
            texts += [str(info.value), repr(info.value), info.value.message]
            assert info.value.__cause__ is None  # no httpx request (with its headers) chained on
    texts += [r.getMessage() for r in caplog.records]
    assert caplog.records  # the failures were logged
    for text in texts:
        assert API_KEY not in text
        assert API_SECRET not in text
        assert "KEY-kkkk" not in text and "SECRET-ssss" not in text


def test_from_settings_uses_mode_urls_and_hides_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BINANCE_API_KEY", API_KEY)
    monkeypatch.setenv("BINANCE_API_SECRET", API_SECRET)
    s = Settings(_env_file=None, trading_mode="testnet", binance_recv_window_ms=7000)  # type: ignore[call-arg]
    c = BinanceFuturesClient.from_settings(s)
    assert c.base_url == "https://demo-fapi.binance.com"
    assert c.recv_window_ms == 7000
    assert API_KEY not in repr(c) and API_SECRET not in repr(c)
