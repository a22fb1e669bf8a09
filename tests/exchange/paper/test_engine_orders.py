"""Orders on the paper engine: fills, fees and PnL to the cent, limits, reduce-only, client ids, margin."""

from __future__ import annotations

from decimal import Decimal

from tests.exchange.paper.test_engine_support import D, Harness, api_error


def test_open_partial_reduce_close_pnl_and_fees_match_hand_computation() -> None:
    h = Harness()
    e = h.engine
    r = h.market_buy("0.010")
    assert (r["status"], r["executedQty"], r["avgPrice"], r["cumQuote"]) == (
        "FILLED",
        "0.010",
        "65000",
        "650",
    )
    # fee 650 * 0.0004 = 0.26
    assert h.wallet() == D("9999.74")
    e.set_price("BTCUSDT", D("66000"))
    assert h.position()["unRealizedProfit"] == "10.00000000"
    h.market_sell("0.004")
    # realized (66000-65000)*0.004 = 4, fee 264*0.0004 = 0.1056
    assert h.wallet() == D("10003.6344")
    assert h.position()["positionAmt"] == "0.006"
    assert h.position()["entryPrice"] == "65000"
    e.set_price("BTCUSDT", D("64000"))
    h.market_sell("0.006")
    # realized -1000*0.006 = -6, fee 384*0.0004 = 0.1536
    assert h.wallet() == D("9997.4808")
    pos = h.position()
    assert (pos["positionAmt"], pos["entryPrice"], pos["unRealizedProfit"]) == ("0.000", "0", "0.00000000")
    trades = e.user_trades({"symbol": "BTCUSDT"})
    assert [t["realizedPnl"] for t in trades] == ["0.00000000", "4.00000000", "-6.00000000"]
    assert [t["commission"] for t in trades] == ["0.26000000", "0.10560000", "0.15360000"]
    assert all(not t["maker"] for t in trades) and [t["buyer"] for t in trades] == [True, False, False]
    income = e.income({"symbol": "BTCUSDT"})
    total = sum(D(r["income"]) for r in income)
    assert total == D("-2.5192")  # realized -2, fees 0.5192
    assert {r["incomeType"] for r in income} == {"REALIZED_PNL", "COMMISSION"}
    assert all(isinstance(r["tranId"], int) and isinstance(r["tradeId"], str) for r in income)


def test_ack_response_is_new_but_the_market_order_fills() -> None:
    h = Harness()
    r = h.engine.new_order({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.01"})
    assert (r["status"], r["executedQty"], r["cumQty"]) == ("NEW", "0.000", "0.000")
    q = h.engine.query_order({"symbol": "BTCUSDT", "orderId": str(r["orderId"])})
    assert (q["status"], q["executedQty"]) == ("FILLED", "0.010")
    assert h.position()["positionAmt"] == "0.010"


def test_slippage_moves_the_fill_against_the_taker() -> None:
    h = Harness(slippage_bps=D("10"))
    assert h.market_buy("0.01")["avgPrice"] == "65065"  # 65000 * 1.001
    assert h.market_sell("0.01")["avgPrice"] == "64935"


def test_limit_rests_then_fills_as_maker_at_its_price() -> None:
    h = Harness()
    e = h.engine
    r = e.new_order(
        {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "0.010",
            "price": "64000",
            "newClientOrderId": "lim-1",
        }
    )
    assert r["status"] == "NEW"
    assert [o["clientOrderId"] for o in e.open_orders({"symbol": "BTCUSDT"})] == ["lim-1"]
    e.set_price("BTCUSDT", D("64500"))
    assert e.query_order({"symbol": "BTCUSDT", "origClientOrderId": "lim-1"})["status"] == "NEW"
    e.set_price("BTCUSDT", D("63900"))  # crossed: fills at its limit, not at 63900
    q = e.query_order({"symbol": "BTCUSDT", "origClientOrderId": "lim-1"})
    assert (q["status"], q["avgPrice"]) == ("FILLED", "64000")
    t = e.user_trades({"symbol": "BTCUSDT"})[-1]
    assert t["maker"] is True and t["commission"] == "0.12800000"  # 640 * 0.0002
    assert h.wallet() == D("10000") - D("0.128")
    assert e.open_orders({}) == []


def test_marketable_limit_fills_as_taker_at_the_better_price() -> None:
    h = Harness()
    r = h.engine.new_order(
        {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "0.010",
            "price": "65500",
            "newOrderRespType": "RESULT",
        }
    )
    assert (r["status"], r["avgPrice"]) == ("FILLED", "65000")
    assert h.engine.user_trades({"symbol": "BTCUSDT"})[0]["maker"] is False


def test_gtx_that_would_cross_is_rejected_and_ioc_expires() -> None:
    h = Harness()
    e = h.engine
    before = e.state_dump()
    err = api_error(
        e.new_order,
        {
            "symbol": "BTCUSDT",
            "side": "SELL",
            "type": "LIMIT",
            "timeInForce": "GTX",
            "quantity": "0.01",
            "price": "64900",
        },
    )
    assert err.code == -5022
    assert e.state_dump() == before
    ok = e.new_order(
        {
            "symbol": "BTCUSDT",
            "side": "SELL",
            "type": "LIMIT",
            "timeInForce": "GTX",
            "quantity": "0.01",
            "price": "65100",
        }
    )
    assert ok["status"] == "NEW"
    r = e.new_order(
        {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "timeInForce": "IOC",
            "quantity": "0.01",
            "price": "64000",
            "newOrderRespType": "RESULT",
        }
    )
    assert (r["status"], r["executedQty"]) == ("EXPIRED", "0.000")


def test_reduce_only_rejected_without_opposite_position_and_capped_at_position() -> None:
    h = Harness()
    e = h.engine
    assert api_error(h.market_sell, "0.01", "BTCUSDT", reduceOnly="true").code == -2022
    h.market_buy("0.005")
    assert api_error(h.market_buy, "0.002", "BTCUSDT", reduceOnly="TRUE").code == -2022  # would increase
    r = h.market_sell("0.010", reduceOnly="True")
    assert r["executedQty"] == "0.005"
    assert h.position()["positionAmt"] == "0.000"
    assert e.user_trades({"symbol": "BTCUSDT"})[-1]["qty"] == "0.005"


def test_open_reduce_only_orders_expire_when_the_position_goes_flat() -> None:
    h = Harness()
    e = h.engine
    h.market_buy("0.010")
    tp = e.new_order(
        {
            "symbol": "BTCUSDT",
            "side": "SELL",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "0.010",
            "price": "66000",
            "reduceOnly": "true",
        }
    )
    sl = e.new_algo_order(
        {
            "algoType": "CONDITIONAL",
            "symbol": "BTCUSDT",
            "side": "SELL",
            "type": "STOP_MARKET",
            "triggerPrice": "60000",
            "closePosition": "true",
        }
    )
    h.market_sell("0.010")
    assert e.query_order({"symbol": "BTCUSDT", "orderId": str(tp["orderId"])})["status"] == "EXPIRED"
    assert e.query_algo_order({"algoId": str(sl["algoId"])})["algoStatus"] == "EXPIRED"
    assert e.open_orders({}) == [] and e.open_algo_orders({}) == []
    expired = [p["o"] for p in h.user("ORDER_TRADE_UPDATE") if p["o"]["x"] == "EXPIRED"]
    assert [o["i"] for o in expired] == [tp["orderId"]]


def test_duplicate_open_client_id_rejected_but_reusable_after_fill() -> None:
    h = Harness()
    e = h.engine
    e.new_order(
        {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "0.01",
            "price": "64000",
            "newClientOrderId": "step-1",
        }
    )
    before = e.state_dump()
    assert api_error(h.market_buy, "0.01", "BTCUSDT", newClientOrderId="step-1").code == -4116
    assert e.state_dump() == before
    e.set_price("BTCUSDT", D("64000"))  # fills the resting order
    again = h.market_buy("0.01", newClientOrderId="step-1")  # Binance: a second order
    assert again["status"] == "FILLED"
    orders = e.all_orders({"symbol": "BTCUSDT"})
    assert [o["clientOrderId"] for o in orders] == ["step-1", "step-1"]
    assert e.query_order({"symbol": "BTCUSDT", "origClientOrderId": "step-1"})["orderId"] == again["orderId"]
    assert h.position()["positionAmt"] == "0.020"


def test_margin_insufficient_and_leverage_change_frees_margin() -> None:
    h = Harness()
    e = h.engine
    e.change_leverage({"symbol": "BTCUSDT", "leverage": "1"})
    before = e.state_dump()
    # 0.2 BTC = 13000 USDT notional at 1x > 10000 wallet
    assert api_error(h.market_buy, "0.200").code == -2019
    assert e.state_dump() == before
    assert e.change_leverage({"symbol": "BTCUSDT", "leverage": "5"}) == {
        "leverage": 5,
        "maxNotionalValue": "1000000000",
        "symbol": "BTCUSDT",
    }
    assert h.market_buy("0.200")["status"] == "FILLED"
    assert Decimal(e.account({}, 3)["totalPositionInitialMargin"]) == D("2600")  # 13000 / 5
    # a resting order reserves margin too
    e.new_order(
        {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "0.100",
            "price": "64000",
        }
    )
    acct = e.account({}, 3)
    assert Decimal(acct["totalOpenOrderInitialMargin"]) == D("1280")  # 6400 / 5
    assert Decimal(acct["availableBalance"]) == h.wallet() - D("2600") - D("1280")


def test_cancel_and_query_shapes() -> None:
    h = Harness()
    e = h.engine
    r = e.new_order(
        {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "0.01",
            "price": "64000",
            "newClientOrderId": "c-1",
        }
    )
    assert isinstance(r["orderId"], int) and r["price"] == "64000.00" and r["reduceOnly"] is False
    q = e.query_order({"symbol": "BTCUSDT", "origClientOrderId": "c-1"})
    assert isinstance(q["time"], int) and "cumQty" not in q
    c = e.cancel_order({"symbol": "BTCUSDT", "origClientOrderId": "c-1"})
    assert c["status"] == "CANCELED" and "cumQty" in c
    assert api_error(e.cancel_order, {"symbol": "BTCUSDT", "origClientOrderId": "c-1"}).code == -2011
    assert api_error(e.query_order, {"symbol": "BTCUSDT", "orderId": "999"}).code == -2013
    assert api_error(e.query_order, {"symbol": "ETHUSDT", "origClientOrderId": "c-1"}).code == -2013
    assert [o["status"] for o in e.admin_orders("BTCUSDT")] == ["CANCELED"]


def test_flip_long_to_short_realizes_and_reopens() -> None:
    h = Harness()
    h.market_buy("0.010")
    h.engine.set_price("BTCUSDT", D("65500"))
    h.market_sell("0.030")
    pos = h.position()
    assert (pos["positionAmt"], pos["entryPrice"]) == ("-0.020", "65500")
    # realized 500*0.01 = 5; fees 0.26 + 1965*0.0004 = 0.786
    assert h.wallet() == D("10000") + D("5") - D("0.26") - D("0.786")
