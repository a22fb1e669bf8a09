"""The pure rules a fresh portfolio rebuilds its book with (trading/governor.py): which running positions
hold a slot and for how much, and that counting one again never counts it twice."""

from __future__ import annotations

from decimal import Decimal

import pytest

from trading.governor import (
    Gate,
    Grant,
    PortfolioBook,
    ReservationRequest,
    RiskPolicy,
    decide,
    held_notional,
    release,
    restore_reservation,
)
from trading.intents import Side
from workflows.messages import PositionStatus

D = Decimal
POLICY = RiskPolicy(max_open_positions=2, allowlist=("*",), max_notional_per_trade_usdt=D(200))


@pytest.mark.parametrize(
    ("status", "qty", "entry", "counted"),
    [
        (PositionStatus.OPEN, "0.002", "60000", D("120")),
        (PositionStatus.CLOSING, "0.001", "60000", D("60")),
        (PositionStatus.ENTERING, "0", "0", D("200")),  # fill unknown: the largest grant there can be
        (PositionStatus.ENTERING, "0.05", "3000", D("150")),  # filled, not OPEN yet
        (PositionStatus.VALIDATING, "0", "0", None),
        (PositionStatus.GOVERNING, "0", "0", None),  # not granted: its request comes again
        (PositionStatus.CLOSED, "0", "0", None),
        (PositionStatus.REJECTED, "0", "0", None),
    ],
)
def test_what_a_running_position_is_counted_for(
    status: PositionStatus, qty: str, entry: str, counted: Decimal | None
) -> None:
    assert held_notional(status, D(qty), D(entry), POLICY) == counted


def test_restoring_is_idempotent_and_a_repeated_request_gets_the_same_reservation() -> None:
    book = PortfolioBook()
    assert restore_reservation(book, "p-1", "BTCUSDT", Side.LONG, D("120"), 1_000)
    assert not restore_reservation(book, "p-1", "BTCUSDT", Side.LONG, D("999"), 2_000)
    assert restore_reservation(book, "p-2", "ETHUSDT", Side.SHORT, D("200"), 1_000)
    assert len(book.reservations) == 2 and book.total_notional == D("320")
    assert book.executions_ms == {}  # a restored slot is not a new entry for the rate limits

    again = decide(
        book,
        POLICY,
        ReservationRequest(holder_id="p-1", symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150)),
        3_000,
    )
    assert isinstance(again, Grant) and again.notional_usdt == D("120")
    newcomer = decide(
        book,
        POLICY,
        ReservationRequest(holder_id="p-3", symbol="SOLUSDT", side=Side.LONG, notional_usdt=D(50)),
        3_000,
    )
    assert not isinstance(newcomer, Grant) and newcomer.gate == Gate.MAX_OPEN_POSITIONS
    assert release(book, POLICY, "p-1", 4_000) is not None
    assert set(book.reservations) == {"p-2"}
