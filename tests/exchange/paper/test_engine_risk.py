"""Liquidation, funding, leverage and margin type."""

from __future__ import annotations

from tests.exchange.paper.test_engine_support import NEXT_FUNDING, D, Harness


def test_isolated_long_is_liquidated_at_the_liquidation_price() -> None:
    h = Harness()
    e = h.engine
    e.change_margin_type({"symbol": "BTCUSDT", "marginType": "ISOLATED"})
    e.change_leverage({"symbol": "BTCUSDT", "leverage": "10"})
    h.market_buy("0.100")  # 6500 notional, 650 isolated margin, fee 2.6
    pos = h.position()
    assert (pos["marginType"], pos["isolatedWallet"], pos["leverage"]) == ("isolated", "650.00000000", "10")
    # (0.1*65000 - 650) / (0.1 * (1 - 0.004)) = 58734.939... -> tick 0.1
    assert pos["liquidationPrice"] == "58734.9"
    e.set_price("BTCUSDT", D("58800"))
    assert h.position()["positionAmt"] == "0.100"
    e.set_price("BTCUSDT", D("58000"))
    assert h.position()["positionAmt"] == "0.000"
    liq = [o for o in e.admin_orders("BTCUSDT") if o["type"] == "LIQUIDATION"]
    assert len(liq) == 1
    assert liq[0]["clientOrderId"] == f"autoclose-{h.clock.ms}"
    assert (liq[0]["avgPrice"], liq[0]["status"], liq[0]["side"]) == ("58734.9", "FILLED", "SELL")
    # the isolated margin is all that is lost: 9997.4 - 650
    assert h.wallet() == D("9347.4")
    trade = e.user_trades({"symbol": "BTCUSDT"})[-1]
    assert (trade["price"], trade["realizedPnl"], trade["commission"]) == (
        "58734.90",
        "-626.51000000",
        "23.49000000",
    )
    calc = [u["o"] for u in h.user("ORDER_TRADE_UPDATE") if u["o"]["x"] == "CALCULATED"]
    assert len(calc) == 1 and calc[0]["o"] == "LIQUIDATION" and calc[0]["c"].startswith("autoclose-")


def test_isolated_short_liquidation_and_cross_account_survives_small_moves() -> None:
    h = Harness()
    e = h.engine
    e.change_margin_type({"symbol": "BTCUSDT", "marginType": "isolated"})
    e.change_leverage({"symbol": "BTCUSDT", "leverage": "20"})
    h.market_sell("0.100")
    liq = D(h.position()["liquidationPrice"])
    assert liq > D("65000")
    e.set_price("BTCUSDT", liq - D("0.1"))
    assert h.position()["positionAmt"] == "-0.100"
    e.set_price("BTCUSDT", liq)
    assert h.position()["positionAmt"] == "0.000"
    assert h.wallet() == D("10000") - D("2.6") - D("325")  # fee + isolated margin 6500/20


def test_cross_position_liquidation_price_uses_the_wallet_and_never_goes_negative() -> None:
    h = Harness()
    e = h.engine
    e.change_leverage({"symbol": "BTCUSDT", "leverage": "100"})
    h.market_buy("1.000")  # 65000 notional, wallet 9974 after the 26 fee
    # (65000 - 9974) / (1 - 0.004) = 55246.98... -> tick 0.1
    assert D(h.position()["liquidationPrice"]) == D("55247.0")
    e.set_price("BTCUSDT", D("55300"))
    assert h.position()["positionAmt"] == "1.000"
    e.set_price("BTCUSDT", D("55200"))
    assert h.position()["positionAmt"] == "0.000"
    # realized (55247 - 65000) = -9753; the fee is capped at what is left (221): the wallet ends at 0
    assert e.user_trades({"symbol": "BTCUSDT"})[-1]["realizedPnl"] == "-9753.00000000"
    assert h.wallet() == D("0")


def test_funding_paid_by_longs_received_by_shorts() -> None:
    h = Harness()
    e = h.engine
    h.market_buy("0.010")
    h.market_sell("1.000", symbol="ETHUSDT")
    assert e.premium_index({"symbol": "BTCUSDT"})["nextFundingTime"] == NEXT_FUNDING
    before = h.wallet()
    h.clock.ms = NEXT_FUNDING - 1
    e.advance()
    assert h.wallet() == before
    h.clock.ms = NEXT_FUNDING
    e.advance()
    # BTC long pays 0.01*65000*0.0001 = 0.065, ETH short receives 1*3000*0.0001 = 0.3
    assert h.wallet() == before - D("0.065") + D("0.3")
    rows = e.income({"incomeType": "FUNDING_FEE"})
    assert {r["symbol"]: r["income"] for r in rows} == {"BTCUSDT": "-0.06500000", "ETHUSDT": "0.30000000"}
    assert e.premium_index({"symbol": "BTCUSDT"})["nextFundingTime"] == NEXT_FUNDING + 8 * 3_600_000
    assert [u["a"]["m"] for u in h.user("ACCOUNT_UPDATE")][-2:] == ["FUNDING_FEE", "FUNDING_FEE"]
    h.clock.tick(1000)
    e.advance()
    assert len(e.income({"incomeType": "FUNDING_FEE"})) == 2  # once per boundary


def test_position_views_v2_v3_and_account_shapes() -> None:
    h = Harness()
    e = h.engine
    h.market_buy("0.010")
    v2 = e.position_risk({}, 2)
    assert {p["symbol"] for p in v2} == {"BTCUSDT", "ETHUSDT"}
    assert {"leverage", "marginType", "isAutoAddMargin", "maxNotionalValue"} <= set(v2[0])
    v3 = e.position_risk({}, 3)
    assert [p["symbol"] for p in v3] == ["BTCUSDT"]
    assert "leverage" not in v3[0] and v3[0]["adl"] == 0 and v3[0]["marginAsset"] == "USDT"
    assert v3[0]["breakEvenPrice"] == "65026"  # entry + 0.26 fee / 0.01
    a3 = e.account({}, 3)
    assert [p["symbol"] for p in a3["positions"]] == ["BTCUSDT"]
    assert a3["assets"][0]["updateTime"] > 0 and "marginAvailable" not in a3["assets"][0]
    a2 = e.account({}, 2)
    assert len(a2["positions"]) == 2 and a2["canTrade"] is True and a2["assets"][0]["marginAvailable"] is True
    assert e.balance({}, 2)[0]["balance"] == "9999.74000000"
    assert e.position_side_dual({}) == {"dualSidePosition": False}
    br = e.leverage_bracket({"symbol": "BTCUSDT"})
    assert br[0]["symbol"] == "BTCUSDT" and br[0]["brackets"][0]["initialLeverage"] == 125
