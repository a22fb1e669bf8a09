"""The pure reconcile: what it fixes, and what it must leave alone while it cannot see every workflow."""

from __future__ import annotations

from decimal import Decimal

from trading.intents import Side
from trading.reconcile import UNKNOWN, TrackedPosition, VenueOrder, VenuePosition, reconcile

D = Decimal
NOW = 1_000_000
OLD = NOW - 60_000  # settled long ago: adoptable


def _venue(symbol: str, amt: str) -> VenuePosition:
    return VenuePosition(symbol=symbol, position_amt=D(amt), entry_price=D(100), update_ms=OLD)


def _tracked(wid: str, symbol: str, qty: str, status: str = "OPEN") -> TrackedPosition:
    return TrackedPosition(workflow_id=wid, symbol=symbol, side=Side.LONG, open_qty=D(qty), status=status)


def test_gone_resized_adopted_and_orphaned() -> None:
    fixes = reconcile(
        [_venue("ETHUSDT", "2"), _venue("SOLUSDT", "5")],
        [VenueOrder(symbol="XRPUSDT", client_id="stop-left", algo=True, reduce_only=True)],
        [_tracked("a", "BTCUSDT", "1"), _tracked("b", "ETHUSDT", "1")],
        NOW,
    )
    assert [(f.kind, f.symbol) for f in fixes] == [
        ("close_gone", "BTCUSDT"),
        ("resize", "ETHUSDT"),
        ("adopt", "SOLUSDT"),
        ("cancel_orphan", "XRPUSDT"),
    ]


def test_a_young_position_or_an_entering_workflow_is_not_adopted() -> None:
    young = VenuePosition(symbol="SOLUSDT", position_amt=D(5), entry_price=D(100), update_ms=NOW - 1_000)
    assert reconcile([young], [], [], NOW) == []
    entering = _tracked("c", "SOLUSDT", "0", status="ENTERING")
    assert reconcile([_venue("SOLUSDT", "5")], [], [entering], NOW) == []


def test_a_workflow_that_did_not_answer_blocks_adoption_and_orphan_cancels() -> None:
    """During a worker outage a running position may be mid-entry on any symbol: adopting its venue
    position would manage it twice, cancelling its stop would leave it unprotected."""
    silent = TrackedPosition(workflow_id="d", symbol="", side=Side.LONG, open_qty=D(0), status=UNKNOWN)
    fixes = reconcile(
        [_venue("SOLUSDT", "5")],
        [VenueOrder(symbol="XRPUSDT", client_id="hstop", algo=True, reduce_only=True)],
        [silent, _tracked("a", "BTCUSDT", "1")],
        NOW,
    )
    assert [(f.kind, f.symbol) for f in fixes] == [("close_gone", "BTCUSDT")]


def test_adoption_age_counts_from_the_listing_not_from_the_venue_read() -> None:
    """The venue is read after the workflows are listed, possibly much later (a retried read): a position
    that changed less than the margin before the listing may be a workflow that started after it."""
    listed = NOW
    late = VenuePosition(symbol="SOLUSDT", position_amt=D(5), entry_price=D(100), update_ms=listed - 5_000)
    assert reconcile([late], [], [], listed) == []
    settled = late.model_copy(update={"update_ms": listed - 15_000})
    assert [f.kind for f in reconcile([settled], [], [], listed)] == ["adopt"]
