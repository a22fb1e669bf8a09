from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from trading.ids import CLIENT_ID_RE, client_order_id
from trading.intents import Side, TradeIntent
from trading.pnl import Fill, OverfillError, cents, tally

D = Decimal


def fill(side: str, price: str, qty: str, fee: str = "0") -> Fill:
    return Fill(client_order_id="x", side=side, price=D(price), qty=D(qty), fee=D(fee))  # type: ignore[arg-type]


def test_long_round_trip_by_hand() -> None:
    # open 0.010 @ 60000, reduce 0.004 @ 61000, close 0.006 @ 59500; taker 0.04 %
    fills = [
        fill("BUY", "60000", "0.010", "0.24"),
        fill("SELL", "61000", "0.004", "0.0976"),
        fill("SELL", "59500", "0.006", "0.1428"),
    ]
    t = tally(Side.LONG, fills)
    assert t.open_qty == 0
    assert t.realized_gross == D("4") - D("3")  # +1000*0.004 - 500*0.006
    assert cents(t.realized_net) == D("0.52")  # 1 - 0.4804
    assert t.avg_entry == 60000 and cents(t.avg_exit) == D("60100.00")  # (244 + 357) / 0.010


def test_short_unrealized_and_overfill() -> None:
    t = tally(Side.SHORT, [fill("SELL", "3000", "1")])
    assert t.unrealized(D("2900")) == D("100")
    with pytest.raises(OverfillError):
        t.add(fill("BUY", "2900", "1.5"))


@given(
    st.text(alphabet="abcXYZ019-_.:/ é", min_size=1, max_size=120),
    st.sampled_from(["entry", "stop", "exit1", "exit22"]),
)
def test_client_ids_fit_binance_and_are_stable(workflow_id: str, step: str) -> None:
    cid = client_order_id(workflow_id, step)
    assert CLIENT_ID_RE.match(cid)
    assert cid == client_order_id(workflow_id, step)
    assert cid != client_order_id(workflow_id + "x", step)
    assert cid != client_order_id(workflow_id, step + "x")


STEPS = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
WORKFLOW_IDS = st.one_of(
    st.text(alphabet="abcXYZ019-_.:/ é", min_size=1, max_size=120),
    st.from_regex(r"qt[0-9a-f]{20}", fullmatch=True),  # looks like a hashed client id's workflow part
    st.from_regex(r"qt[0-9a-f]{18,22}(\.[a-z]{1,6})?", fullmatch=True),
)


@st.composite
def two_steps(draw: st.DrawFn) -> tuple[tuple[str, str], tuple[str, str]]:
    """Two (workflow id, step) pairs; often the second workflow id is the part before the dot of the
    first one's client id (the adversarial case: a workflow named like another's hashed id)."""
    first = (draw(WORKFLOW_IDS), draw(STEPS))
    if draw(st.booleans()):
        second_id = client_order_id(*first).rsplit(".", 1)[0]
    else:
        second_id = draw(WORKFLOW_IDS)
    second_step = draw(st.one_of(st.just(first[1]), STEPS))
    return first, (second_id, second_step)


@given(two_steps())
def test_two_different_workflow_steps_never_share_a_client_id(
    pairs: tuple[tuple[str, str], tuple[str, str]],
) -> None:
    first, second = pairs
    assume(first != second)
    assert client_order_id(*first) != client_order_id(*second)


def test_a_workflow_named_like_a_hashed_id_does_not_take_that_id() -> None:
    long_id = "position-BTCUSDT-ensemble-1h-1700000000000"
    hashed = client_order_id(long_id, "entry")
    assert client_order_id(hashed.removesuffix(".entry"), "entry") != hashed


def test_existing_client_ids_do_not_change() -> None:
    """Running positions and recorded histories hold these ids: the mapping of ordinary ids is fixed."""
    assert client_order_id("position-BTCUSDT-manual-1", "entry") == "position-BTCUSDT-manual-1.entry"
    assert client_order_id("position-BTCUSDT-ensemble-1h-1700000000000", "entry") == (
        "qtc6d4b163433b36c41590.entry"
    )


def test_intent_names_the_bad_field() -> None:
    with pytest.raises(ValueError, match="leverage"):
        TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(100), leverage=200)
    with pytest.raises(ValueError, match="exactly one of quantity or notional_usdt"):
        TradeIntent(symbol="BTCUSDT", side=Side.LONG)
    with pytest.raises(ValueError, match="colour"):
        TradeIntent.model_validate({"symbol": "BTCUSDT", "side": "LONG", "quantity": "1", "colour": "red"})


fill_steps = st.lists(st.tuples(st.booleans(), st.integers(1, 5), st.integers(50_000, 70_000)), max_size=30)


@given(fill_steps, st.sampled_from([Side.LONG, Side.SHORT]))
def test_pnl_is_consistent_with_the_fills(steps: list[tuple[bool, int, int]], side: Side) -> None:
    """Whatever the order of entries and exits: cash in minus cash out equals realized plus the open
    position valued at its cost basis, and fees are exactly the sum of the fills' fees."""
    t = tally(side, [])
    cash = D(0)
    fees = D(0)
    for add, units, price in steps:
        qty = D(units) / 1000
        if not add and qty > t.open_qty:
            continue
        order_side = side.entry_order_side if add else side.exit_order_side
        fee = (D(price) * qty * D("0.0004")).quantize(D("0.00000001"))
        t.add(Fill(client_order_id="x", side=order_side, price=D(price), qty=qty, fee=fee))
        fees += fee
        cash += (D(price) * qty) * (-side.sign if add else side.sign)
    assert t.fees == fees
    assert t.open_qty >= 0
    assert abs(cash + t.cost_basis * side.sign - t.realized_gross) < D("1e-18")  # to Decimal precision


def test_fees_in_another_asset_are_kept_apart_from_the_margin_asset() -> None:
    """A fee paid in BNB is not USDT: counting it as USDT would misstate the PnL by the BNB price."""
    fills = [
        fill("BUY", "60000", "0.010", "0.24"),
        Fill(
            client_order_id="x",
            side="SELL",
            price=D("61000"),
            qty=D("0.010"),
            fee=D("0.0004"),
            fee_asset="BNB",
        ),
    ]
    t = tally(Side.LONG, fills)
    assert t.fees == D("0.24")
    assert t.other_fees == {"BNB": D("0.0004")}
    assert t.realized_net == D("10") - D("0.24")


def test_a_usdc_margined_position_counts_usdc_fees() -> None:
    fills = [
        Fill(client_order_id="x", side="SELL", price=D("3000"), qty=D("1"), fee=D("1.2"), fee_asset="USDC"),
        Fill(client_order_id="x", side="BUY", price=D("2900"), qty=D("1"), fee=D("0.5"), fee_asset="USDT"),
    ]
    t = tally(Side.SHORT, fills, margin_asset="USDC")
    assert (t.fees, t.other_fees) == (D("1.2"), {"USDT": D("0.5")})
    assert tally(Side.SHORT, fills).fees == D("0.5")  # without a margin asset: USDT


def test_a_trade_row_carries_its_commission_asset_to_the_fill() -> None:
    from exchange.models import Trade

    row = {
        "symbol": "BTCUSDT", "id": 7, "orderId": 3, "side": "BUY", "price": "60000", "qty": "0.01",
        "quoteQty": "600", "commission": "0.0004", "commissionAsset": "BNB", "time": 1,
    }  # fmt: skip
    assert Trade.model_validate(row).to_fill("cid").fee_asset == "BNB"
    assert Trade.model_validate({**row, "commissionAsset": "USDT"}).to_fill("cid").fee_asset == "USDT"


def _history_fills() -> list[dict]:
    """Every serialized Fill in the histories committed before fills had an asset (histories/2026-12-v1)."""
    import base64
    import json
    from pathlib import Path

    found: list[dict] = []

    def walk(node: object, decode: bool) -> None:
        if isinstance(node, dict):
            if decode and "metadata" in node and isinstance(node.get("data"), str):
                try:
                    walk(json.loads(base64.b64decode(node["data"])), False)
                except ValueError:
                    pass
            if {"client_order_id", "side", "price", "qty", "fee"} <= node.keys():
                found.append(node)
            for value in node.values():
                walk(value, decode)
        elif isinstance(node, list):
            for value in node:
                walk(value, decode)

    for path in sorted((Path(__file__).parents[1] / "workflows" / "histories" / "2026-12-v1").glob("*.json")):
        walk(json.loads(path.read_text()), True)
    return found


def test_fills_serialized_before_the_fee_asset_load_unchanged() -> None:
    rows = _history_fills()
    assert rows, "the committed histories hold fills"
    for row in rows:
        assert "fee_asset" not in row
        loaded = Fill.model_validate(row)
        assert loaded.fee_asset == "USDT"  # every fee before the asset was carried was charged in USDT
        assert loaded.model_dump(mode="json", exclude={"fee_asset"}) == row
