"""listenKey lifecycle on the engine clock, and the shapes of user and market events."""

from __future__ import annotations

from exchange.paper.prices import ManualPrices, symbol_universe
from tests.exchange.paper.test_engine_support import D, Harness, api_error
from trading.instruments import synthetic_symbols

HOUR = 3_600_000


def test_listen_key_lifecycle_and_expiry() -> None:
    h = Harness()
    e = h.engine
    key = e.new_listen_key()["listenKey"]
    assert len(key) == 64 and e.listen_key_valid(key)
    h.clock.tick(50 * 60_000)
    assert e.new_listen_key()["listenKey"] == key  # same key, extended to +60 min from now
    h.clock.tick(50 * 60_000)
    assert e.listen_key_valid(key)
    assert e.keepalive_listen_key({"listenKey": key}) == {"listenKey": key}
    h.clock.tick(HOUR - 1)
    e.advance()
    assert e.listen_key_valid(key) and h.user("listenKeyExpired") == []
    h.clock.tick(1)
    e.advance()
    assert not e.listen_key_valid(key)
    assert h.user("listenKeyExpired") == [{"e": "listenKeyExpired", "E": h.clock.ms, "listenKey": key}]
    assert api_error(e.keepalive_listen_key, {"listenKey": key}).code == -1125
    new = e.new_listen_key()["listenKey"]
    assert new != key and e.listen_key_valid(new)
    assert e.close_listen_key({"listenKey": new}) == {}
    assert not e.listen_key_valid(new)
    assert api_error(e.keepalive_listen_key, {}).code == -1125


def test_admin_expiry_emits_listen_key_expired() -> None:
    h = Harness()
    key = h.engine.new_listen_key()["listenKey"]
    h.engine.expire_listen_keys()
    assert not h.engine.listen_key_valid(key)
    assert [p["listenKey"] for p in h.user("listenKeyExpired")] == [key]


def test_order_and_account_update_shapes() -> None:
    h = Harness()
    r = h.market_buy("0.010", newClientOrderId="ev-1")
    otu = h.user("ORDER_TRADE_UPDATE")
    assert [u["o"]["x"] for u in otu] == ["NEW", "TRADE"]
    new, trade = otu[0]["o"], otu[1]["o"]
    assert "n" not in new and "N" not in new  # no commission on NEW
    assert set(trade) >= {
        "s",
        "c",
        "S",
        "o",
        "f",
        "q",
        "p",
        "ap",
        "sp",
        "x",
        "X",
        "i",
        "l",
        "z",
        "L",
        "N",
        "n",
        "T",
        "t",
        "b",
        "a",
        "m",
        "R",
        "wt",
        "ot",
        "ps",
        "cp",
        "rp",
        "pP",
        "si",
        "ss",
        "V",
        "pm",
        "gtd",
    }
    assert (
        trade["c"],
        trade["i"],
        trade["X"],
        trade["l"],
        trade["z"],
        trade["L"],
        trade["n"],
        trade["N"],
    ) == ("ev-1", r["orderId"], "FILLED", "0.010", "0.010", "65000.00", "0.26000000", "USDT")
    assert isinstance(trade["t"], int) and trade["m"] is False and trade["R"] is False
    acct = h.user("ACCOUNT_UPDATE")
    assert len(acct) == 1 and acct[0]["a"]["m"] == "ORDER"
    assert acct[0]["a"]["B"] == [{"a": "USDT", "wb": "9999.74000000", "cw": "9999.74000000", "bc": "0"}]
    p = acct[0]["a"]["P"][0]
    assert (p["s"], p["pa"], p["ep"], p["mt"], p["ps"]) == ("BTCUSDT", "0.010", "65000", "cross", "BOTH")
    # a cancelled order gives no ACCOUNT_UPDATE
    h.engine.new_order(
        {
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "quantity": "0.01",
            "price": "60000",
            "newClientOrderId": "ev-2",
        }
    )
    h.engine.cancel_order({"symbol": "BTCUSDT", "origClientOrderId": "ev-2"})
    assert len(h.user("ACCOUNT_UPDATE")) == 1
    assert h.user("ORDER_TRADE_UPDATE")[-1]["o"]["x"] == "CANCELED"


def test_market_streams_on_price_changes_and_ticks() -> None:
    h = Harness()
    e = h.engine
    answer = e.set_price("BTCUSDT", D("65010"))
    agg = h.market("@aggTrade")
    assert [ev.stream for ev in agg] == ["btcusdt@aggTrade"]
    assert agg[0].payload["p"] == "65010.00" and agg[0].payload["e"] == "aggTrade"
    # The answer names the tick it published (bench.exits times an exit from it), and no tick at all
    # when the price did not move.
    assert answer == {"symbol": "BTCUSDT", "price": "65010.00", "eventTime": agg[0].payload["E"]}
    assert e.set_price("BTCUSDT", D("65010"))["eventTime"] is None
    assert len(h.market("@aggTrade")) == 1
    book = h.market("@bookTicker")[0].payload
    assert (book["b"], book["a"]) == ("65009.90", "65010.10")
    k = h.market("@kline_1m")[-1].payload["k"]
    assert (k["i"], k["c"], k["x"]) == ("1m", "65010.00", False)
    for _ in range(10):  # one second of ticks: one markPrice@1s per symbol
        h.clock.tick(100)
        e.advance()
    marks = [ev for ev in h.market("@markPrice@1s") if ev.stream.startswith("btcusdt")]
    assert len(marks) == 2  # the seconds T0 and T0+1
    mp = marks[0].payload
    assert (mp["e"], mp["s"], mp["p"], mp["r"], isinstance(mp["T"], int)) == (
        "markPriceUpdate",
        "BTCUSDT",
        "65010.00000000",
        "0.00010000",
        True,
    )
    assert len([ev for ev in h.market("@markPrice") if ev.stream == "btcusdt@markPrice"]) == 1
    h.clock.ms = (h.clock.ms // 60_000 + 1) * 60_000  # next minute: the bar closes
    e.advance()
    closed = [ev.payload["k"] for ev in h.market("@kline_1m") if ev.payload["k"]["x"]]
    assert closed and closed[0]["s"] == "BTCUSDT" and closed[0]["c"] == "65010.00"


def test_klines_from_recorded_prices_and_public_shapes() -> None:
    h = Harness()
    e = h.engine
    for px in ("65100", "64900", "65050"):
        h.clock.tick(10_000)
        e.set_price("BTCUSDT", D(px))
    h.clock.ms = (h.clock.ms // 60_000 + 1) * 60_000 + 5_000
    e.set_price("BTCUSDT", D("65200"))
    rows = e.klines({"symbol": "BTCUSDT", "interval": "1m"})
    assert len(rows) == 2 and all(len(r) == 12 for r in rows)
    first, last = rows
    assert first[1:5] == ["65000.00", "65100.00", "64900.00", "65050.00"]
    assert last[1] == "65200.00" and last[0] == first[0] + 60_000 and first[6] == first[0] + 59_999
    assert e.klines({"symbol": "BTCUSDT", "interval": "1m", "limit": "1"}) == [last]
    assert e.ticker_price({"symbol": "BTCUSDT"})["price"] == "65200.00"
    assert {t["symbol"] for t in e.ticker_price({})} == {"BTCUSDT", "ETHUSDT"}
    info = e.exchange_info({})
    btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
    assert btc["contractType"] == "PERPETUAL" and btc["marginAsset"] == "USDT"
    assert {f["filterType"] for f in btc["filters"]} >= {"PRICE_FILTER", "LOT_SIZE", "MIN_NOTIONAL"}
    assert e.server_time({}) == {"serverTime": h.clock.ms}


def test_a_transfer_moves_the_wallet_and_says_so_on_the_user_stream() -> None:
    h = Harness()
    assert h.engine.transfer(D("500")) == {"wallet": "10500.00000000"}
    assert h.engine.transfer(D("-200")) == {"wallet": "10300.00000000"}
    updates = h.user("ACCOUNT_UPDATE")
    assert [u["a"]["m"] for u in updates] == ["DEPOSIT", "WITHDRAW"]
    assert updates[-1]["a"]["B"][0]["wb"] == "10300.00000000" and updates[-1]["a"]["P"] == []
    assert [i["incomeType"] for i in h.engine.incomes][-2:] == ["TRANSFER", "TRANSFER"]
    # no more out than is available, and not nothing; nothing changes
    assert api_error(h.engine.transfer, D("-20000")).code == -2019 and h.wallet() == D("10300")
    assert api_error(h.engine.transfer, D("0")).code < 0
    assert len(h.user("ACCOUNT_UPDATE")) == 2


def test_a_seconds_mark_prices_go_out_a_tenth_of_the_symbols_at_a_time() -> None:
    # All at the top of the second, 5,000 symbols' marks were one burst that held the venue's loop:
    # an order or a crossing trade that came just then waited behind it (bench.scale's exit tail).
    symbols = synthetic_symbols(40)
    h = Harness(prices=ManualPrices(symbols, rules=symbol_universe(40)), extra_symbols=40)
    e = h.engine
    h.clock.ms = (h.clock.ms // 1000 + 1) * 1000 - 100
    e.advance()  # the first tick marks every symbol once (nothing was sent before)
    assert len(h.market("@markPrice@1s")) == 40
    per_tick = []
    for second in range(2):
        for _ in range(10):
            h.clock.tick(100)
            before = len(h.market("@markPrice@1s"))
            e.advance()
            per_tick.append(len(h.market("@markPrice@1s")) - before)
        marks = [ev.payload["s"] for ev in h.market("@markPrice@1s")[40 + 40 * second :]]
        assert sorted(marks) == sorted(symbols), f"second {second}: each symbol's mark once"
    assert per_tick == [4] * 20
    h.clock.tick(2500)  # the loop fell behind by more than a second: every mark goes at once
    before = len(h.market("@markPrice@1s"))
    e.advance()
    assert len(h.market("@markPrice@1s")) - before == 40
