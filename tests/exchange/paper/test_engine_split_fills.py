"""MARKET orders filled in parts over time (the `partial_fills` fault), in the engine itself."""

from __future__ import annotations

from pathlib import Path

from exchange.paper.engine import PaperEngine
from tests.exchange.paper.test_engine_support import D, Harness


def _split_buy(h: Harness, qty: str, pieces: int = 3, **extra: str) -> dict:
    params = {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "MARKET",
        "quantity": qty,
        "newOrderRespType": "RESULT",
    }
    return h.engine.new_order({**params, **extra}, pieces=pieces, interval_ms=500)


def _trades(h: Harness, oid: int) -> list[tuple[str, str]]:
    return [(t["qty"], t["price"]) for t in h.engine.user_trades({"symbol": "BTCUSDT", "orderId": str(oid)})]


def test_parts_fill_at_their_own_time_and_price() -> None:
    h = Harness()
    e = h.engine
    first = _split_buy(h, "0.010")
    oid = first["orderId"]
    assert (first["status"], first["executedQty"]) == ("PARTIALLY_FILLED", "0.003")
    assert [o["orderId"] for o in e.open_orders({"symbol": "BTCUSDT"})] == [oid]
    h.clock.tick(499)
    e.advance()
    assert _trades(h, oid) == [("0.003", "65000.00")]  # not yet
    e.prices.set("BTCUSDT", D("65100"))  # type: ignore[attr-defined]
    h.clock.tick(1)
    e.advance()
    assert _trades(h, oid) == [("0.003", "65000.00"), ("0.003", "65100.00")]
    h.clock.tick(500)
    e.advance()
    assert _trades(h, oid)[-1] == ("0.004", "65100.00")
    got = e.query_order({"symbol": "BTCUSDT", "orderId": str(oid)})
    assert (got["status"], got["executedQty"]) == ("FILLED", "0.010")
    assert e.open_orders({"symbol": "BTCUSDT"}) == []
    assert h.position()["positionAmt"] == "0.010"
    updates = [u["o"] for u in h.user("ORDER_TRADE_UPDATE") if u["o"]["i"] == oid]
    assert [(u["x"], u["X"], u["l"]) for u in updates] == [
        ("NEW", "NEW", "0.000"),
        ("TRADE", "PARTIALLY_FILLED", "0.003"),
        ("TRADE", "PARTIALLY_FILLED", "0.003"),
        ("TRADE", "FILLED", "0.004"),
    ]


def test_a_reduce_only_split_stops_when_nothing_is_left_to_reduce() -> None:
    h = Harness()
    e = h.engine
    h.market_buy("0.010")
    part = e.new_order(
        {"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": "0.010", "reduceOnly": "true"},
        pieces=2,
        interval_ms=500,
    )
    assert h.position()["positionAmt"] == "0.005"
    h.market_sell("0.005", reduceOnly="true")  # closed meanwhile: the split order is swept
    h.clock.tick(500)
    e.advance()
    got = e.query_order({"symbol": "BTCUSDT", "orderId": str(part["orderId"])})
    assert (got["status"], got["executedQty"]) == ("EXPIRED", "0.005")
    assert h.position()["positionAmt"] == "0.000"  # never flipped short


def test_a_canceled_split_fills_no_more() -> None:
    h = Harness()
    e = h.engine
    oid = _split_buy(h, "0.010", pieces=2)["orderId"]
    canceled = e.cancel_order({"symbol": "BTCUSDT", "orderId": str(oid)})
    assert (canceled["status"], canceled["executedQty"]) == ("CANCELED", "0.005")
    h.clock.tick(1000)
    e.advance()
    assert len(_trades(h, oid)) == 1 and h.position()["positionAmt"] == "0.005"


def test_limit_orders_and_one_step_orders_are_not_split() -> None:
    h = Harness()
    e = h.engine
    limit = e.new_order(
        {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "0.010",
            "price": "66000",
            "newOrderRespType": "RESULT",
        },
        pieces=3,
        interval_ms=500,
    )
    assert (limit["status"], limit["executedQty"]) == ("FILLED", "0.010")
    one = e.new_order(  # one step (reduce-only: below the minimum notional)
        {
            "symbol": "BTCUSDT",
            "side": "SELL",
            "type": "MARKET",
            "quantity": "0.001",
            "reduceOnly": "true",
            "newOrderRespType": "RESULT",
        },
        pieces=3,
        interval_ms=500,
    )
    assert (one["status"], one["executedQty"]) == ("FILLED", "0.001")


def test_a_restart_expires_a_split_left_half_done(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    oid = _split_buy(h, "0.010")["orderId"]
    h.engine.close()
    again = PaperEngine(h.config, h.prices, h.path)
    got = again.query_order({"symbol": "BTCUSDT", "orderId": str(oid)})
    assert (got["status"], got["executedQty"]) == ("EXPIRED", "0.003")
    assert again.open_orders({}) == []
    again.close()
    reopened = PaperEngine(h.config, h.prices, h.path)  # the expiry was saved
    assert reopened.query_order({"symbol": "BTCUSDT", "orderId": str(oid)})["status"] == "EXPIRED"
    reopened.close()
