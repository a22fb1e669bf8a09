"""USD-M position arithmetic (trading/margin.py), by hand: what the paper exchange and the backtester
both charge. Fills open, add to, reduce, flip and close one position; the liquidation price solves
`margin + amt·(P − entry) = mmr·|amt|·P`."""

from __future__ import annotations

from decimal import Decimal

import pytest

from trading.margin import Position, fill_effect, liquidation_price

D = Decimal
MMR = D("0.004")


def fill(pos: Position, dq: str, price: str, fee: str, *, isolated: bool = True) -> Decimal:
    """Apply one fill (leverage 10) and return the PnL it realized."""
    eff = fill_effect(pos, D(dq), D(price), D(fee), 10, isolated)
    pos.apply(eff)
    return eff.realized


def state(pos: Position) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """Amount, entry price, isolated margin, opening fees carried."""
    return pos.amt, pos.entry, pos.iso_wallet, pos.open_fees


def test_open_add_reduce_flip_close_an_isolated_long() -> None:
    pos = Position("BTCUSDT")
    assert fill(pos, "0.01", "60000", "0.24") == 0
    assert state(pos) == (D("0.01"), D(60000), D(60), D("0.24"))
    assert pos.break_even() == D(60024)  # the opening fee per unit on top of the entry

    fill(pos, "0.01", "62000", "0.248")  # adding averages the entry, margin and fees add up
    assert state(pos) == (D("0.02"), D(61000), D(122), D("0.488"))
    assert pos.unrealized(D(61500)) == D(10)

    # a quarter closed at 63000: +2000 on 0.005; margin and carried fees shrink by the quarter
    assert fill(pos, "-0.005", "63000", "0.126") == D(10)
    assert state(pos) == (D("0.015"), D(61000), D("91.5"), D("0.366"))

    # selling 0.025 at 60000 closes the 0.015 long (-1000 each) and opens a 0.01 short at the fill price,
    # carrying only the opening part of the fee
    assert fill(pos, "-0.025", "60000", "0.6") == D(-15)
    assert state(pos) == (D("-0.01"), D(60000), D(60), D("0.24"))
    assert pos.break_even() == D(59976)
    assert pos.cum_realized == D(-5)

    assert fill(pos, "0.01", "59000", "0.236") == D(10)  # the short bought back 1000 lower
    assert state(pos) == (0, 0, 0, 0)
    assert pos.unrealized(D(70000)) == 0 and pos.break_even() == 0


def test_a_cross_position_holds_no_margin_of_its_own() -> None:
    pos = Position("ETHUSDT")
    fill(pos, "-1", "3000", "1.2", isolated=False)
    assert (pos.amt, pos.entry, pos.iso_wallet) == (D(-1), D(3000), 0)
    assert pos.unrealized(D(2900)) == D(100)


def test_a_position_survives_its_row() -> None:
    pos = Position("BTCUSDT", D("0.015"), D(61000), D("91.5"), D("0.366"), D(10), 1_700_000_000_000)
    assert Position.from_row(pos.to_row()) == pos


@pytest.mark.parametrize(("amt", "margin"), [("1", "10"), ("-1", "10"), ("0.5", "3"), ("-2", "40")])
def test_the_liquidation_price_solves_the_margin_equation(amt: str, margin: str) -> None:
    a, m, entry = D(amt), D(margin), D(100)
    p = liquidation_price(a, entry, m, MMR)
    assert abs(m + a * (p - entry) - MMR * abs(a) * p) < D("1e-20")
    assert (p < entry) if a > 0 else (p > entry)  # a long is liquidated below its entry, a short above


def test_the_liquidation_price_by_hand_and_when_there_is_none() -> None:
    assert liquidation_price(D(1), D(100), D(10), MMR) == D(90) / D("0.996")
    assert liquidation_price(D(1), D(100), D(200), MMR) == 0  # more margin than the position is worth
    assert liquidation_price(D(0), D(100), D(10), MMR) == 0
