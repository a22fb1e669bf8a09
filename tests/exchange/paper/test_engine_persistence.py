"""A new engine on the same SQLite file continues exactly: orders, positions, balance, ids."""

from __future__ import annotations

from pathlib import Path

from exchange.paper.config import PaperConfig
from exchange.paper.engine import PaperEngine
from exchange.paper.prices import ManualPrices
from tests.exchange.paper.test_engine_support import D, Harness


def test_restart_on_the_same_file_continues(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    e = h.engine
    e.change_leverage({"symbol": "BTCUSDT", "leverage": "7"})
    e.change_margin_type({"symbol": "ETHUSDT", "marginType": "ISOLATED"})
    first = h.market_buy("0.010", newClientOrderId="entry-1")
    e.set_price("BTCUSDT", D("65500"))
    e.new_order(
        {
            "symbol": "BTCUSDT",
            "side": "SELL",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "0.005",
            "price": "66000",
            "reduceOnly": "true",
            "newClientOrderId": "tp-1",
        }
    )
    sl = e.new_algo_order(
        {
            "algoType": "CONDITIONAL",
            "symbol": "BTCUSDT",
            "side": "SELL",
            "type": "STOP_MARKET",
            "triggerPrice": "64000",
            "closePosition": "true",
        }
    )
    key = e.new_listen_key()["listenKey"]
    dump = e.state_dump()
    e.close()

    h.clock.tick(1000)
    again = PaperEngine(
        PaperConfig(api_key="k", api_secret="s", clock=h.clock),
        ManualPrices(["BTCUSDT", "ETHUSDT"]),
        tmp_path / "paper.sqlite",
    )
    restored = again.state_dump()
    assert restored == dump
    assert again.listen_key_valid(key)
    assert again.query_order({"symbol": "BTCUSDT", "origClientOrderId": "entry-1"})["status"] == "FILLED"
    assert again.ticker_price({"symbol": "BTCUSDT"})["price"] == "65500.00"  # manual price kept
    nxt = again.new_order({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.002"})
    assert nxt["orderId"] == first["orderId"] + 2  # entry-1, tp-1, then this one
    # the resting reduce-only limit still fills; the stop still fires
    again.set_price("BTCUSDT", D("66000"))
    assert again.query_order({"symbol": "BTCUSDT", "origClientOrderId": "tp-1"})["status"] == "FILLED"
    again.set_price("BTCUSDT", D("63900"))
    assert again.query_algo_order({"algoId": str(sl["algoId"])})["algoStatus"] == "FINISHED"
    pos = next(p for p in again.position_risk({"symbol": "BTCUSDT"}, 2))
    assert pos["positionAmt"] == "0.000" and pos["leverage"] == "7"
    again.close()

    third = PaperEngine(
        PaperConfig(api_key="k", api_secret="s", clock=h.clock),
        ManualPrices(["BTCUSDT", "ETHUSDT"]),
        tmp_path / "paper.sqlite",
    )
    assert third.state_dump()["wallet"] == again.state_dump()["wallet"]
    assert len(third.user_trades({"symbol": "BTCUSDT"})) == 4
    assert third.margin_type["ETHUSDT"] == "ISOLATED"
    third.close()


def test_advance_without_changes_writes_nothing(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.market_buy("0.010")
    writes = []
    store = h.engine.store
    assert store is not None
    real = store.write
    store.write = lambda rows: (writes.append(rows), real(rows))  # type: ignore[method-assign]
    for _ in range(20):
        h.clock.tick(100)
        h.engine.advance()
    assert writes == []


def test_a_price_move_or_a_leverage_change_writes_that_symbols_row_only(tmp_path: Path) -> None:
    # The whole price table per move was O(symbols): at 5,000 symbols every tick serialized 5,000
    # prices before the venue published it.
    h = Harness(tmp_path)
    writes: list[dict] = []
    store = h.engine.store
    assert store is not None
    real = store.write
    store.write = lambda rows: (writes.append(rows), real(rows))  # type: ignore[method-assign]
    h.engine.set_price("ETHUSDT", D("3100"))
    h.engine.change_leverage({"symbol": "BTCUSDT", "leverage": "9"})
    assert [w.get("kv") for w in writes] == [{"manual_price:ETHUSDT": "3100.00"}, {"leverage:BTCUSDT": 9}]
