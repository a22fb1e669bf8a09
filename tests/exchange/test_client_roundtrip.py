"""Our client against the real paper exchange: open, partial reduce, close; PnL and fees to the cent."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from exchange.client import BinanceFuturesClient
from exchange.errors import OrderNotFoundError, OrderValidationError, RejectedError
from tests.conftest import PaperExchange

D = Decimal
TAKER = D("0.0004")
CENT = D("0.01")


@pytest.fixture
async def client(paper_exchange: PaperExchange) -> AsyncIterator[BinanceFuturesClient]:
    async with BinanceFuturesClient(
        paper_exchange.base_url, paper_exchange.api_key, paper_exchange.api_secret, timeout_s=5
    ) as c:
        yield c


def cents(x: Decimal) -> Decimal:
    return x.quantize(CENT)


async def test_open_partial_reduce_close_pnl_and_fees_match_the_fills(
    paper_exchange: PaperExchange, client: BinanceFuturesClient
) -> None:
    sym = "BTCUSDT"
    paper_exchange.set_price(sym, "60000")
    t0 = time.time()
    await client.sync_time()
    round_trip_ms = (time.time() - t0) * 1000
    # One clock on loopback: the measured offset is within the sync's round trip (a floor measured here,
    # not a constant: a loaded machine only makes the round trip longer).
    assert abs(client.offset_ms) <= round_trip_ms + 5, (client.offset_ms, round_trip_ms)
    rules = (await client.exchange_info())[sym]
    assert rules.step_size == D("0.001") and rules.min_notional > 0
    lev = await client.set_leverage(sym, 10)
    assert lev.leverage == 10 and lev.symbol == sym
    await client.set_margin_type(sym, "ISOLATED")
    await client.set_margin_type(sym, "ISOLATED")  # -4046 "No need to change" is success
    before = await client.account()
    usdt_before = before.asset("USDT")
    assert usdt_before is not None and usdt_before.wallet_balance > 0

    # open: MARKET BUY 0.0109 -> rounded down to 0.010 at step 0.001
    o1 = await client.new_order(sym, "BUY", "MARKET", D("0.0109"), client_order_id="rt-open-1")
    assert (o1.status, o1.executed_qty, o1.client_order_id) == ("FILLED", D("0.010"), "rt-open-1")
    assert o1.avg_price == D("60000")
    (pos,) = [p for p in await client.position_risk(sym) if p.position_amt != 0]
    assert pos.position_amt == D("0.010") and pos.entry_price == D("60000")

    # partial reduce at a higher price
    paper_exchange.set_price(sym, "61000")
    o2 = await client.new_order(
        sym, "SELL", "MARKET", D("0.004"), reduce_only=True, client_order_id="rt-reduce-1"
    )
    assert (o2.status, o2.executed_qty, o2.avg_price) == ("FILLED", D("0.004"), D("61000"))
    assert o2.reduce_only

    # close the rest at a lower price
    paper_exchange.set_price(sym, "59500")
    o3 = await client.new_order(
        sym, "SELL", "MARKET", D("0.006"), reduce_only=True, client_order_id="rt-close-1"
    )
    assert (o3.status, o3.executed_qty) == ("FILLED", D("0.006"))
    assert all(p.position_amt == 0 for p in await client.position_risk(sym))

    # the fills, and the hand computation from them
    trades = sorted(await client.user_trades(sym), key=lambda t: t.id)
    assert [(t.order_id, t.side, t.qty, t.price) for t in trades] == [
        (o1.order_id, "BUY", D("0.010"), D("60000")),
        (o2.order_id, "SELL", D("0.004"), D("61000")),
        (o3.order_id, "SELL", D("0.006"), D("59500")),
    ]
    entry = D("60000")
    expected_pnl = [D(0), (D("61000") - entry) * D("0.004"), (D("59500") - entry) * D("0.006")]  # 0, 4, -3
    expected_fee = [t.price * t.qty * TAKER for t in trades]  # 0.24, 0.0976, 0.1428
    for t, pnl, fee in zip(trades, expected_pnl, expected_fee, strict=True):
        assert cents(t.realized_pnl) == cents(pnl), t
        assert cents(t.commission) == cents(fee), t
        assert t.commission_asset == "USDT" and t.maker is False
        assert t.quote_qty == t.price * t.qty
    total_pnl, total_fee = sum(expected_pnl), sum(expected_fee)
    assert cents(total_pnl) == D("1.00") and cents(total_fee) == D("0.48")

    # the wallet moved by exactly realized PnL minus fees
    after = await client.account()
    usdt_after = after.asset("USDT")
    assert usdt_after is not None
    assert cents(usdt_after.wallet_balance - usdt_before.wallet_balance) == cents(total_pnl - total_fee)

    # income agrees with the fills
    income = await client.income(symbol=sym)
    pnl_income = sum((i.income for i in income if i.income_type == "REALIZED_PNL"), D(0))
    fee_income = sum((i.income for i in income if i.income_type == "COMMISSION"), D(0))
    assert cents(pnl_income) == cents(total_pnl)
    assert cents(fee_income) == -cents(total_fee)

    # orders look the same queried later, by client id or order id
    q = await client.query_order(sym, client_order_id="rt-reduce-1")
    assert (q.order_id, q.status, q.executed_qty) == (o2.order_id, "FILLED", D("0.004"))
    assert (await client.query_order(sym, order_id=o3.order_id)).client_order_id == "rt-close-1"
    assert await client.find_order(sym, "rt-never-sent") is None
    # the weight figures came from the venue's headers
    assert client.rate_limits()["used_weight_1m"] > 0


async def test_limit_and_algo_orders_rest_list_and_cancel(
    paper_exchange: PaperExchange, client: BinanceFuturesClient
) -> None:
    sym = "ETHUSDT"
    paper_exchange.set_price(sym, "3000")
    await client.new_order(sym, "BUY", "MARKET", D("0.1"), client_order_id="la-open")
    # a resting LIMIT below the market
    lim = await client.new_order(
        sym, "BUY", "LIMIT", D("0.05"), price=D("2900.004"), client_order_id="la-limit"
    )
    assert (lim.status, lim.price, lim.time_in_force) == ("NEW", D("2900.00"), "GTC")
    assert [o.client_order_id for o in await client.open_orders(sym)] == ["la-limit"]
    assert [o.client_order_id for o in await client.open_orders()] == ["la-limit"]
    cancelled = await client.cancel_order(sym, client_order_id="la-limit")
    assert cancelled.status == "CANCELED"
    assert await client.open_orders(sym) == []
    with pytest.raises(OrderNotFoundError):
        await client.cancel_order(sym, client_order_id="la-limit")

    # a protective stop through the algo endpoint
    stop = await client.new_algo_order(
        sym, "SELL", "STOP_MARKET", D("2800"), close_position=True, client_algo_id="la-stop"
    )
    assert (stop.client_algo_id, stop.order_type, stop.algo_status) == ("la-stop", "STOP_MARKET", "NEW")
    assert stop.trigger_price == D("2800") and stop.close_position
    tp = await client.new_algo_order(
        sym,
        "SELL",
        "TAKE_PROFIT_MARKET",
        D("3300"),
        quantity=D("0.05"),
        reduce_only=True,
        client_algo_id="la-tp",
    )
    assert tp.quantity == D("0.05") and tp.reduce_only
    assert {a.client_algo_id for a in await client.open_algo_orders(sym)} == {"la-stop", "la-tp"}
    got = await client.query_algo_order(client_algo_id="la-stop")
    assert got.algo_id == stop.algo_id
    assert (await client.find_algo_order("la-nothing")) is None
    done = await client.cancel_algo_order(client_algo_id="la-stop")
    assert done.algo_id == stop.algo_id
    assert {a.client_algo_id for a in await client.open_algo_orders()} == {"la-tp"}
    await client.cancel_algo_order(algo_id=tp.algo_id)

    # a conditional type on the plain order endpoint is refused locally (the venue would say -4120)
    with pytest.raises(OrderValidationError) as info:
        await client.new_order(sym, "SELL", "STOP_MARKET", D("0.1"))  # type: ignore[arg-type]
    assert info.value.code == -4120
    # reduce-only beyond the position: the venue rejects it (-2022), never retried
    with pytest.raises(RejectedError) as rej:
        await client.new_order(sym, "BUY", "MARKET", D("0.1"), reduce_only=True)
    assert rej.value.code == -2022

    close = await client.new_order(sym, "SELL", "MARKET", D("0.1"), reduce_only=True)
    assert close.status == "FILLED"


async def test_market_data_and_listen_key(
    paper_exchange: PaperExchange, client: BinanceFuturesClient
) -> None:
    paper_exchange.set_price("BTCUSDT", "65000")
    t0 = time.time()
    server_ms = await client.server_time()
    local_ms = client.timestamp_ms()
    round_trip_ms = (time.time() - t0) * 1000
    # Our signed timestamps follow the venue's clock: apart by at most the round trip (measured here)
    # plus a margin far above what a sync leaves (a unit or sign slip is off by years).
    assert abs(server_ms - local_ms) <= round_trip_ms + 5000, (server_ms, local_ms, round_trip_ms)
    idx = await client.premium_index("BTCUSDT")
    assert idx.symbol == "BTCUSDT" and idx.mark_price == D("65000")
    klines = await client.klines("BTCUSDT", "1m", limit=5)
    assert isinstance(klines, list) and len(klines) <= 5
    for k in klines:
        assert k.low <= k.open <= k.high and k.close_time > k.open_time
    key = await client.new_listen_key()
    assert key and key == await client.new_listen_key()  # POST again returns the active key
    await client.keepalive_listen_key()
    await client.close_listen_key()
