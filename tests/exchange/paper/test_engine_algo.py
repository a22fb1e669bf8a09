"""Algo (conditional) orders: trigger rules, the order they place, and their events."""

from __future__ import annotations

from tests.exchange.paper.test_engine_support import D, Harness, api_error


def algo(h: Harness, **p: str) -> dict:
    return h.engine.new_algo_order({"algoType": "CONDITIONAL", "symbol": "BTCUSDT", **p})


def test_stop_market_close_position_triggers_at_the_trigger_and_closes() -> None:
    h = Harness()
    e = h.engine
    h.market_buy("0.010")
    r = algo(
        h,
        side="SELL",
        type="STOP_MARKET",
        triggerPrice="64000",
        closePosition="true",
        workingType="MARK_PRICE",
        clientAlgoId="sl-1",
    )
    assert (r["algoStatus"], r["orderType"], r["triggerPrice"], r["closePosition"]) == (
        "NEW",
        "STOP_MARKET",
        "64000.00",
        True,
    )
    assert isinstance(r["algoId"], int) and r["clientAlgoId"] == "sl-1" and r["algoType"] == "CONDITIONAL"
    assert [a["clientAlgoId"] for a in e.open_algo_orders({"symbol": "BTCUSDT"})] == ["sl-1"]
    e.set_price("BTCUSDT", D("64100"))
    assert h.position()["positionAmt"] == "0.010"
    e.set_price("BTCUSDT", D("63950"))  # gaps through the trigger: fills at the market
    assert h.position()["positionAmt"] == "0.000"
    q = e.query_algo_order({"clientAlgoId": "sl-1"})
    assert q["algoStatus"] == "FINISHED" and q["actualOrderId"]
    child = e.query_order({"symbol": "BTCUSDT", "orderId": q["actualOrderId"]})
    assert (child["status"], child["type"], child["avgPrice"], child["executedQty"]) == (
        "FILLED",
        "MARKET",
        "63950",
        "0.010",
    )
    assert child["reduceOnly"] is True and child["closePosition"] is True
    # realized (63950-65000)*0.01 = -10.5; fees 0.26 + 639.5*0.0004
    assert h.wallet() == D("10000") - D("10.5") - D("0.26") - D("0.2558")
    statuses = [u["o"]["X"] for u in h.user("ALGO_UPDATE")]
    assert statuses == ["NEW", "TRIGGERED", "FINISHED"]
    fin = h.user("ALGO_UPDATE")[-1]["o"]
    assert set(fin) >= {
        "caid",
        "aid",
        "at",
        "o",
        "s",
        "S",
        "ps",
        "f",
        "q",
        "X",
        "ai",
        "ap",
        "aq",
        "act",
        "tp",
        "p",
        "V",
        "wt",
        "pm",
        "cp",
        "pP",
        "R",
        "tt",
        "gtd",
        "rm",
    }
    assert (fin["caid"], fin["ai"], fin["aq"], fin["ap"]) == ("sl-1", q["actualOrderId"], "0.010", "63950")
    trade = [u["o"] for u in h.user("ORDER_TRADE_UPDATE") if u["o"]["x"] == "TRADE"][-1]
    assert (trade["i"], trade["ot"], trade["X"]) == (int(q["actualOrderId"]), "STOP_MARKET", "FILLED")


def test_take_profit_market_with_quantity_partially_closes() -> None:
    h = Harness()
    e = h.engine
    h.market_sell("0.010")  # short
    r = algo(
        h, side="BUY", type="TAKE_PROFIT_MARKET", triggerPrice="63000", quantity="0.004", reduceOnly="true"
    )
    e.set_price("BTCUSDT", D("63500"))
    assert e.query_algo_order({"algoId": str(r["algoId"])})["algoStatus"] == "NEW"
    e.set_price("BTCUSDT", D("63000"))
    assert e.query_algo_order({"algoId": str(r["algoId"])})["algoStatus"] == "FINISHED"
    assert h.position()["positionAmt"] == "-0.006"
    assert e.user_trades({"symbol": "BTCUSDT"})[-1]["realizedPnl"] == "8.00000000"  # 2000 * 0.004


def test_would_immediately_trigger_is_rejected_for_each_rule() -> None:
    h = Harness()
    e = h.engine
    h.market_buy("0.010")
    before = e.state_dump()
    for side, typ, trig in [
        ("SELL", "STOP_MARKET", "65000"),
        ("SELL", "TAKE_PROFIT_MARKET", "64000"),
        ("BUY", "STOP_MARKET", "64000"),
        ("BUY", "TAKE_PROFIT_MARKET", "66000"),
    ]:
        extra = {"quantity": "0.010"} if side == "BUY" else {"closePosition": "true"}
        err = api_error(algo, h, side=side, type=typ, triggerPrice=trig, **extra)
        assert (err.code, err.msg) == (-2021, "Order would immediately trigger.")
    assert e.state_dump() == before


def test_entry_stop_buy_opens_a_position() -> None:
    h = Harness()
    algo(h, side="BUY", type="STOP_MARKET", triggerPrice="66000", quantity="0.010")
    h.engine.set_price("BTCUSDT", D("66000"))
    assert h.position()["positionAmt"] == "0.010"
    assert h.position()["entryPrice"] == "66000"


def test_stop_limit_places_a_resting_limit() -> None:
    h = Harness()
    e = h.engine
    h.market_buy("0.010")
    r = algo(
        h, side="SELL", type="STOP", triggerPrice="64000", price="63000", quantity="0.010", reduceOnly="true"
    )
    e.set_price("BTCUSDT", D("63900"))  # triggered; a SELL limit at 63000 is marketable at 63900
    q = e.query_algo_order({"algoId": str(r["algoId"])})
    child = e.query_order({"symbol": "BTCUSDT", "orderId": q["actualOrderId"]})
    assert (child["type"], child["status"], child["avgPrice"]) == ("LIMIT", "FILLED", "63900")


def test_cancel_algo_and_its_answer() -> None:
    h = Harness()
    e = h.engine
    h.market_buy("0.010")
    r = algo(
        h, side="SELL", type="STOP_MARKET", triggerPrice="60000", closePosition="true", clientAlgoId="x1"
    )
    assert e.cancel_algo_order({"clientAlgoId": "x1"}) == {
        "algoId": r["algoId"],
        "clientAlgoId": "x1",
        "code": "200",
        "msg": "success",
    }
    e.set_price("BTCUSDT", D("59000"))
    assert h.position()["positionAmt"] == "0.010"  # cancelled: nothing fired
    assert e.query_algo_order({"algoId": str(r["algoId"])})["algoStatus"] == "CANCELED"
    assert api_error(e.cancel_algo_order, {"clientAlgoId": "x1"}).code == -2011
    assert [a["algoStatus"] for a in e.admin_algo_orders("BTCUSDT")] == ["CANCELED"]


def test_trailing_stop_fires_after_a_callback_from_the_high() -> None:
    h = Harness()
    e = h.engine
    h.market_buy("0.010")
    algo(h, side="SELL", type="TRAILING_STOP_MARKET", callbackRate="1", quantity="0.010", reduceOnly="true")
    e.set_price("BTCUSDT", D("70000"))
    e.set_price("BTCUSDT", D("69400"))  # -0.86 % from the high
    assert h.position()["positionAmt"] == "0.010"
    e.set_price("BTCUSDT", D("69300"))  # -1 % from 70000
    assert h.position()["positionAmt"] == "0.000"
