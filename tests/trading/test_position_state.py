"""The position state machine: every move of the table, every guard, and random event sequences (entry and
partial fills, exits, the venue's own fills, flat and drift reports, outages, bans, flatten, cancel,
failures, continue-as-new) that must never break an invariant."""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_DOWN, Decimal
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from trading.exit_policy import ExitProfile, ExitState
from trading.governor import Denial, Gate, Grant
from trading.instruments import SymbolRules
from trading.intents import Side
from trading.pnl import Fill
from trading.position_state import (
    ABSORBED,
    LIVE,
    ORDER_EVENTS,
    TERMINAL,
    TRANSITIONS,
    VENUE_FLAT_PREFIX,
    ExcessFill,
    IllegalTransition,
    PositionEvent,
    PositionState,
    PositionStatus,
    SlotHeld,
    apply,
    can_send_exit,
    fill_key,
    invariant_violations,
    legal_events,
    mark_released,
    may_release,
    must_flatten,
    notice_venue_change,
    offer_price,
    take_price,
    update,
)

S = PositionStatus
E = PositionEvent
D = Decimal
UNIT = D("0.001")

RULES = SymbolRules(
    symbol="BTCUSDT",
    base_asset="BTC",
    price_precision=2,
    quantity_precision=3,
    tick_size=D("0.1"),
    min_price=D("0.1"),
    max_price=D("1000000"),
    step_size=UNIT,
    min_qty=UNIT,
    max_qty=D("1000"),
    market_step_size=UNIT,
    market_min_qty=UNIT,
    market_max_qty=D("120"),
    min_notional=D("5"),
)
GRANT = Grant(holder_id="pos-1", notional_usdt=D(100))
DENIAL = Denial(holder_id="pos-1", gate=Gate.MAX_OPEN_POSITIONS, reason="10 of 10 slots held")
EXIT_STATE = ExitState(entry=D(100), initial_qty=D(1), r_price=D(2), stop=D(98), hard_stop=D(97), best=D(100))

_trade_ids = iter(range(1, 10**9))


def fill(side: str, qty: str | Decimal, cid: str = "entry", price: str | Decimal = "100") -> Fill:
    return Fill(
        client_order_id=cid,
        side=side,  # type: ignore[arg-type]
        price=D(price),
        qty=D(qty),
        fee=D("0.01"),
        trade_id=next(_trade_ids),
    )


def buy(qty: str | Decimal, cid: str = "entry", price: str | Decimal = "100") -> Fill:
    return fill("BUY", qty, cid, price)


def sell(qty: str | Decimal, cid: str = "x1", price: str | Decimal = "101") -> Fill:
    return fill("SELL", qty, cid, price)


# ---------------------------------------------------------------------------------- representative states
def validating() -> PositionState:
    return PositionState(side=Side.LONG)


def governing() -> PositionState:
    return apply(validating(), E.VALIDATED, rules=RULES)


def entering() -> PositionState:
    return apply(governing(), E.GRANTED, grant=GRANT)


def entering_in_flight() -> PositionState:
    return apply(entering(), E.ENTRY_SENT)


def open_one() -> PositionState:
    return apply(entering_in_flight(), E.ENTRY_FILLED, fills=[buy("1")], now_ms=1_000)


def closing_in_flight() -> PositionState:
    return apply(open_one(), E.EXIT_SENT)


def closing_flat() -> PositionState:
    return apply(closing_in_flight(), E.EXIT_FILLED, fills=[sell("1")], reason="take_profit_1")


def closed() -> PositionState:
    return apply(closing_flat(), E.FINISHED)


def rejected() -> PositionState:
    return apply(governing(), E.DENIED, denial=DENIAL)


def failed() -> PositionState:
    return apply(validating(), E.INVALID, reason="unknown symbol")


def cancelled() -> PositionState:
    return apply(validating(), E.CANCEL_REQUESTED, reason="operator")


TERMINAL_STATES: dict[PositionStatus, Callable[[], PositionState]] = {
    S.CLOSED: closed,
    S.REJECTED: rejected,
    S.FAILED: failed,
    S.CANCELLED: cancelled,
}
REPRESENTATIVE: dict[PositionStatus, Callable[[], PositionState]] = {
    S.VALIDATING: validating,
    S.GOVERNING: governing,
    S.ENTERING: entering,
    S.OPEN: open_one,
    S.CLOSING: closing_in_flight,
    **TERMINAL_STATES,
}

# Arguments good enough for any event (each event reads only its own).
ANY_ARGS: dict[str, Any] = {"now_ms": 5_000, "grant": GRANT, "denial": DENIAL, "qty": D("5"), "reason": "x"}


# ------------------------------------------------------------------------------------------ the table
def test_table_shape() -> None:
    assert set(TRANSITIONS) == set(PositionStatus)
    for status, row in TRANSITIONS.items():
        assert legal_events(status) == frozenset(row)
        assert all(isinstance(target, PositionStatus) for target in row.values())
        if status in TERMINAL:
            assert set(row) == ABSORBED and set(row.values()) == {status}  # absorbing
            assert not set(row) & ORDER_EVENTS
        else:
            # a flatten or cancel, and an outage, are accepted in every state that is still alive
            for event in (E.FLATTEN_REQUESTED, E.CANCEL_REQUESTED, E.VENUE_UNREACHABLE, E.VENUE_REACHABLE):
                assert event in row, (status, event)
    # A position that holds quantity never ends from OPEN; the pre-entry states never reach OPEN directly.
    assert E.FINISHED not in TRANSITIONS[S.OPEN] and E.FAILED not in TRANSITIONS[S.OPEN]
    for status in (S.VALIDATING, S.GOVERNING):
        assert S.OPEN not in TRANSITIONS[status].values()
        assert TRANSITIONS[status][E.FLATTEN_REQUESTED] is S.CANCELLED
        assert TRANSITIONS[status][E.CANCEL_REQUESTED] is S.CANCELLED


ILLEGAL_PAIRS = [(s, e) for s in PositionStatus for e in PositionEvent if e not in TRANSITIONS[s]]


@pytest.mark.parametrize(("status", "event"), ILLEGAL_PAIRS, ids=[f"{s}-{e}" for s, e in ILLEGAL_PAIRS])
def test_illegal_moves_raise_naming_state_and_event(status: PositionStatus, event: PositionEvent) -> None:
    state = REPRESENTATIVE[status]()
    fills = [buy("1"), sell("1")]
    with pytest.raises(IllegalTransition) as err:
        apply(state, event, fills=fills, **ANY_ARGS)
    assert err.value.status is status and err.value.event is event
    assert status.value in str(err.value) and event.value in str(err.value)
    assert isinstance(err.value, ValueError)


LEGAL_MOVES: list[tuple[Callable[[], PositionState], PositionEvent, dict[str, Any], PositionStatus]] = [
    (validating, E.VALIDATED, {"rules": RULES}, S.GOVERNING),
    (validating, E.INVALID, {"reason": "unknown symbol"}, S.FAILED),
    (validating, E.FLATTEN_REQUESTED, {"reason": "emergency"}, S.CANCELLED),
    (validating, E.CANCEL_REQUESTED, {}, S.CANCELLED),
    (validating, E.FAILED, {}, S.FAILED),
    (validating, E.VENUE_UNREACHABLE, {"now_ms": 7}, S.VALIDATING),
    (validating, E.VENUE_REACHABLE, {}, S.VALIDATING),
    (governing, E.GRANTED, {"grant": GRANT}, S.ENTERING),
    (governing, E.DENIED, {"denial": DENIAL}, S.REJECTED),
    (governing, E.FLATTEN_REQUESTED, {}, S.CANCELLED),
    (governing, E.CANCEL_REQUESTED, {}, S.CANCELLED),
    (governing, E.FAILED, {}, S.FAILED),
    (governing, E.VENUE_UNREACHABLE, {"now_ms": 7}, S.GOVERNING),
    (governing, E.VENUE_REACHABLE, {}, S.GOVERNING),
    (entering, E.ENTRY_SENT, {}, S.ENTERING),
    (entering, E.ENTRY_FILLED, {"fills": [buy("2", "adopted")]}, S.OPEN),  # an adoption: nothing sent
    (entering_in_flight, E.ENTRY_FILLED, {"fills": [buy("1")]}, S.OPEN),
    (entering_in_flight, E.ENTRY_NOTHING, {"reason": "expired"}, S.REJECTED),
    (entering, E.ENTRY_NOTHING, {"reason": "venue ban"}, S.REJECTED),
    (entering, E.FLATTEN_REQUESTED, {}, S.ENTERING),
    (entering_in_flight, E.CANCEL_REQUESTED, {}, S.ENTERING),
    (entering, E.FAILED, {}, S.FAILED),
    (entering_in_flight, E.VENUE_UNREACHABLE, {"now_ms": 7}, S.ENTERING),
    (entering_in_flight, E.VENUE_REACHABLE, {}, S.ENTERING),
    (open_one, E.ENTRY_FILLED, {"fills": [buy("1")]}, S.OPEN),
    (open_one, E.EXIT_SENT, {"qty": D("0.5")}, S.CLOSING),
    (open_one, E.VENUE_FILLS, {"fills": [sell("0.4", "hstop1")]}, S.OPEN),
    (open_one, E.VENUE_FILLS, {"fills": [sell("1", "autoclose-1")]}, S.CLOSING),  # took everything
    (open_one, E.VENUE_FLAT, {"price": D(90)}, S.CLOSING),
    (open_one, E.VENUE_DRIFT, {"qty": D(2)}, S.OPEN),
    (open_one, E.FLATTEN_REQUESTED, {}, S.OPEN),
    (open_one, E.CANCEL_REQUESTED, {}, S.OPEN),
    (open_one, E.VENUE_UNREACHABLE, {"now_ms": 7}, S.OPEN),
    (open_one, E.VENUE_REACHABLE, {}, S.OPEN),
    (closing_in_flight, E.ENTRY_FILLED, {"fills": [buy("1")]}, S.CLOSING),
    (closing_in_flight, E.EXIT_FILLED, {"fills": [sell("0.25")]}, S.OPEN),  # a partial close
    (closing_in_flight, E.EXIT_FILLED, {"fills": [sell("1")]}, S.CLOSING),  # flat: cleanup next
    (closing_in_flight, E.EXIT_FILLED, {}, S.OPEN),  # expired unfilled
    (closing_in_flight, E.EXIT_NOTHING, {}, S.OPEN),
    (closing_in_flight, E.VENUE_FILLS, {"fills": [sell("0.5", "hstop1")]}, S.CLOSING),
    (closing_in_flight, E.FLATTEN_REQUESTED, {}, S.CLOSING),
    (closing_in_flight, E.CANCEL_REQUESTED, {}, S.CLOSING),
    (closing_in_flight, E.VENUE_UNREACHABLE, {"now_ms": 7}, S.CLOSING),
    (closing_in_flight, E.VENUE_REACHABLE, {}, S.CLOSING),
    (closing_flat, E.VENUE_FLAT, {}, S.CLOSING),
    (closing_flat, E.VENUE_DRIFT, {"qty": D(0)}, S.CLOSING),
    (closing_flat, E.FINISHED, {}, S.CLOSED),
    (closing_flat, E.FAILED, {"reason": "journal down"}, S.FAILED),
]


@pytest.mark.parametrize(
    ("start", "event", "kwargs", "expected"),
    LEGAL_MOVES,
    ids=[f"{m[0].__name__}-{m[1]}-{m[3]}" for m in LEGAL_MOVES],
)
def test_legal_moves(
    start: Callable[[], PositionState], event: PositionEvent, kwargs: dict[str, Any], expected: PositionStatus
) -> None:
    before = start()
    snapshot = before.model_dump_json()
    after = apply(before, event, **kwargs)
    assert after.status is expected
    assert before.model_dump_json() == snapshot  # the argument is never changed
    assert invariant_violations(after) == []
    assert PositionState.model_validate_json(after.model_dump_json()) == after


def test_every_table_entry_has_a_legal_move_test() -> None:
    covered = {(m[0]().status, m[1]) for m in LEGAL_MOVES}
    alive = {(s, e) for s, row in TRANSITIONS.items() if s not in TERMINAL for e in row}
    assert alive - covered == set()


@pytest.mark.parametrize("status", sorted(TERMINAL))
@pytest.mark.parametrize("event", sorted(ABSORBED))
def test_terminal_states_ignore_noise(status: PositionStatus, event: PositionEvent) -> None:
    before = TERMINAL_STATES[status]()
    after = apply(before, event, fills=[sell("1", "hstop9")], **ANY_ARGS)
    assert after.status is status
    if not (event is E.GRANTED and before.grant is None):
        assert after == before  # unchanged
    assert after is not before


@pytest.mark.parametrize("status", sorted(TERMINAL))
@pytest.mark.parametrize("event", sorted(ORDER_EVENTS))
def test_terminal_states_refuse_order_events(status: PositionStatus, event: PositionEvent) -> None:
    with pytest.raises(IllegalTransition, match="never trades"):
        apply(TERMINAL_STATES[status](), event, fills=[buy("1")], **ANY_ARGS)


def _with(state: PositionState, **fields: Any) -> PositionState:
    return PositionState.model_validate({**dict(state), **fields})


GUARDED: list[tuple[Callable[[], PositionState], PositionEvent, dict[str, Any], str]] = [
    (governing, E.GRANTED, {}, "needs grant"),
    (governing, E.DENIED, {}, "needs denial"),
    (validating, E.VENUE_UNREACHABLE, {}, "needs now_ms"),
    (entering, E.ENTRY_FILLED, {}, "ENTRY_NOTHING"),
    (entering_in_flight, E.ENTRY_SENT, {}, "one order at a time"),
    (entering_in_flight, E.FAILED, {}, "exposed"),
    (lambda: apply(entering(), E.FLATTEN_REQUESTED), E.ENTRY_SENT, {}, "pending"),
    (lambda: mark_released(entering()), E.ENTRY_SENT, {}, "live grant"),
    (lambda: mark_released(entering()), E.ENTRY_FILLED, {"fills": [buy("1", "adopted")]}, "live grant"),
    (entering_in_flight, E.ENTRY_FILLED, {"fills": [sell("1", "entry")]}, "takes BUY fills"),
    (entering_in_flight, E.ENTRY_NOTHING, {"fills": [buy("1")]}, "ENTRY_FILLED"),
    (open_one, E.EXIT_SENT, {"qty": D("1.5")}, "within the open quantity"),
    (open_one, E.EXIT_SENT, {"qty": D(0)}, "within the open quantity"),
    (lambda: notice_venue_change(open_one()), E.EXIT_SENT, {}, "settle"),
    (open_one, E.VENUE_FILLS, {"fills": [buy("1", "hstop1")]}, "takes SELL fills"),
    (open_one, E.VENUE_DRIFT, {"qty": D("0.5")}, "at least the open quantity"),
    (open_one, E.VENUE_DRIFT, {}, "at least the open quantity"),
    (closing_in_flight, E.VENUE_FLAT, {}, "in flight"),
    (closing_in_flight, E.VENUE_DRIFT, {"qty": D(3)}, "in flight"),
    (closing_in_flight, E.EXIT_NOTHING, {"fills": [sell("1")]}, "EXIT_FILLED"),
    (closing_flat, E.EXIT_FILLED, {"fills": [sell("1")]}, "no exit order"),
    (closing_flat, E.EXIT_NOTHING, {}, "no exit order"),
    (lambda: _with(closing_flat(), hard_stop_id="pos-1.hstop1"), E.FINISHED, {}, "stop"),
    (lambda: apply(closing_flat(), E.VENUE_DRIFT, qty=D(1)), E.FINISHED, {}, "excess"),
]


@pytest.mark.parametrize(
    ("start", "event", "kwargs", "match"), GUARDED, ids=[f"{g[1]}-{g[3]}" for g in GUARDED]
)
def test_guards_refuse(
    start: Callable[[], PositionState], event: PositionEvent, kwargs: dict[str, Any], match: str
) -> None:
    before = start()
    assert event in TRANSITIONS[before.status]  # legal in the table: refused by its guard
    with pytest.raises(IllegalTransition, match=match) as err:
        apply(before, event, **kwargs)
    assert before.status.value in str(err.value) and event.value in str(err.value)


# ------------------------------------------------------------------------------------------ scenarios
@pytest.mark.parametrize("side", list(Side))
def test_a_whole_trade_long_and_short(side: Side) -> None:
    s = PositionState(side=side)
    s = apply(s, E.VALIDATED, rules=RULES)
    s = apply(s, E.GRANTED, grant=GRANT)
    assert may_release(s)  # nothing sent yet
    s = apply(s, E.ENTRY_SENT)
    assert s.exposed and not may_release(s)
    entry = fill(side.entry_order_side, "0.004")
    s = apply(s, E.ENTRY_FILLED, fills=[entry, entry], now_ms=1_234)  # a repeat in the same batch
    assert (s.status, s.open_qty, s.opened_at_ms) == (S.OPEN, D("0.004"), 1_234)
    s = apply(s, E.EXIT_SENT, qty=D("0.001"))
    assert (s.status, s.exit_seq) == (S.CLOSING, 1)
    part = fill(side.exit_order_side, "0.001", "x1")
    s = apply(s, E.EXIT_FILLED, fills=[part], reason="harvest_1", controller="harvest")
    assert (s.status, s.open_qty, s.exit_reason) == (S.OPEN, D("0.003"), "harvest_1")
    s = apply(s, E.EXIT_SENT)
    s = apply(s, E.EXIT_FILLED, fills=[fill(side.exit_order_side, "0.003", "x2"), part])  # repeat ignored
    assert (s.status, s.open_qty, s.exposed) == (S.CLOSING, 0, False)
    assert not may_release(s)  # not ended yet: cleanup first
    s = apply(s, E.FINISHED)
    assert s.status is S.CLOSED and may_release(s)
    s = mark_released(s)
    assert s.released and not may_release(s)
    assert s.tally.entry_qty == s.tally.exit_qty == D("0.004")


def test_flatten_or_cancel_before_entry_cancels_without_sending() -> None:
    for start in (validating, governing):
        for event in (E.FLATTEN_REQUESTED, E.CANCEL_REQUESTED):
            s = apply(start(), event, reason="emergency")
            assert s.status is S.CANCELLED and not s.fills and not s.order_in_flight
            assert s.flatten_reason == "emergency"


def test_late_grant_after_cancel_is_handed_back() -> None:
    s = apply(governing(), E.CANCEL_REQUESTED)
    assert not may_release(s)  # nothing to give back
    s = apply(s, E.GRANTED, grant=GRANT)  # the portfolio answered after the cancel
    assert s.status is S.CANCELLED and s.grant == GRANT and may_release(s)
    s = mark_released(s)
    assert apply(s, E.GRANTED, grant=GRANT) == s  # a repeat changes nothing


def test_cancel_during_entry_is_remembered_until_flat() -> None:
    s = apply(entering_in_flight(), E.CANCEL_REQUESTED, reason="operator")
    assert s.cancel_requested and s.flatten_reason == "operator" and not must_flatten(s)
    s = apply(s, E.ENTRY_FILLED, fills=[buy("1")])
    assert s.status is S.OPEN and must_flatten(s)
    s = apply(s, E.FLATTEN_REQUESTED, reason="portfolio")
    assert s.flatten_reason == "operator"  # the first request's reason is kept
    s = apply(s, E.EXIT_SENT)
    assert must_flatten(s) and not can_send_exit(s)  # waiting for the answer
    s = apply(s, E.EXIT_FILLED, fills=[sell("0.6")])
    assert s.status is S.OPEN and must_flatten(s)  # partly closed: close the rest
    s = apply(s, E.EXIT_SENT)
    s = apply(s, E.EXIT_FILLED, fills=[sell("0.4", "x2")])
    assert not must_flatten(s) and s.flatten_reason == "operator"
    assert apply(s, E.FINISHED).status is S.CANCELLED  # the operator's cancel decides the end


def test_cancel_during_entry_with_nothing_filled_ends_cancelled() -> None:
    s = apply(entering_in_flight(), E.FLATTEN_REQUESTED, reason="portfolio emergency")
    s = apply(s, E.ENTRY_NOTHING)
    assert s.status is S.CANCELLED and may_release(s)


def test_flatten_while_entering_blocks_the_entry() -> None:
    s = apply(entering(), E.FLATTEN_REQUESTED)
    with pytest.raises(IllegalTransition, match="pending"):
        apply(s, E.ENTRY_SENT)
    assert may_release(s)  # nothing was sent: the slot can go back at once
    s = apply(mark_released(s), E.ENTRY_NOTHING, reason="flattened")
    assert s.status is S.CANCELLED and s.released


@pytest.mark.parametrize("reason", ["below exchange minimum", "venue ban", "entry deadline", "expired"])
def test_entry_nothing_is_a_rejection_that_frees_the_slot(reason: str) -> None:
    denial = Denial(holder_id="pos-1", gate=Gate.EXCHANGE_MINIMUM, reason=reason)
    s = apply(entering_in_flight(), E.ENTRY_NOTHING, reason=reason, denial=denial)
    assert s.status is S.REJECTED and s.exit_reason == reason and s.denial == denial
    assert may_release(s) and not s.exposed


def test_never_terminal_and_never_released_while_open() -> None:
    s = open_one()
    for event in (E.FINISHED, E.FAILED):
        with pytest.raises(IllegalTransition, match="still open"):
            apply(s, event)
    assert not may_release(s)
    with pytest.raises(SlotHeld):
        mark_released(s)
    in_flight = closing_in_flight()
    with pytest.raises(IllegalTransition, match="exposed"):
        apply(in_flight, E.FAILED)
    with pytest.raises(SlotHeld):
        mark_released(entering_in_flight())  # the entry may have executed


def test_excess_closing_fill_is_refused_whole() -> None:
    s = closing_in_flight()
    with pytest.raises(ExcessFill, match="only 1 is open") as err:
        apply(s, E.EXIT_FILLED, fills=[sell("0.5"), sell("0.7")])
    assert err.value.status is S.CLOSING and err.value.event is E.EXIT_FILLED
    assert s.open_qty == 1 and len(s.fills) == 1  # nothing of it recorded
    # The same close reported by the venue after the order's answer: a repeat is ignored ...
    x1 = sell("1")
    s = apply(s, E.EXIT_FILLED, fills=[x1])
    assert apply(s, E.VENUE_FILLS, fills=[x1]).open_qty == 0
    # ... and a second close of the same quantity under another id is refused, not counted twice.
    with pytest.raises(ExcessFill):
        apply(s, E.VENUE_FILLS, fills=[sell("1", "hstop1")])


def test_exit_nothing_settles_with_the_venue_before_another_exit() -> None:
    s = apply(closing_in_flight(), E.EXIT_NOTHING)
    assert s.status is S.OPEN and s.venue_changed and not can_send_exit(s)
    with pytest.raises(IllegalTransition, match="settle"):
        apply(s, E.EXIT_SENT)
    s = apply(s, E.VENUE_FILLS, fills=[sell("1", "pos-1.hstop1")], reason="hard_stop")
    assert s.status is S.CLOSING and not s.venue_changed
    assert (s.exit_reason, s.exit_controller) == ("hard_stop", "exchange")


def test_venue_flat_writes_off_what_the_tally_still_shows() -> None:
    s = offer_price(open_one(), D(95))
    _, s = take_price(s)
    s = apply(s, E.VENUE_FLAT, now_ms=9)
    assert s.status is S.CLOSING and s.open_qty == 0
    write_off = s.fills[-1]
    assert write_off.client_order_id == f"{VENUE_FLAT_PREFIX}1" and write_off.price == D(95)
    assert (write_off.side, write_off.fee, write_off.time_ms) == ("SELL", 0, 9)
    assert s.exit_reason == "exchange_closed"
    assert apply(s, E.VENUE_FLAT) == s  # already flat: nothing more
    assert apply(s, E.FINISHED).status is S.CLOSED


def test_drift_must_be_adopted_or_gone_before_finishing() -> None:
    s = apply(open_one(), E.VENUE_DRIFT, qty=D("1.5"))
    assert s.drift_qty == D("0.5") and s.status is S.OPEN
    s = apply(s, E.ENTRY_FILLED, fills=[buy("0.5", "adopted-drift")])  # the excess adopted
    assert s.drift_qty == 0 and s.open_qty == D("1.5")
    s = apply(s, E.VENUE_DRIFT, qty=D(2))
    s = apply(s, E.EXIT_SENT)
    s = apply(s, E.EXIT_FILLED, fills=[sell("1.5")])
    with pytest.raises(IllegalTransition, match="excess"):
        apply(s, E.FINISHED)
    assert apply(apply(s, E.VENUE_DRIFT, qty=D(0)), E.FINISHED).status is S.CLOSED  # closed outside
    assert apply(apply(s, E.VENUE_FLAT), E.FINISHED).status is S.CLOSED  # or the venue is flat


def test_outages_are_tracked_from_their_start() -> None:
    s = apply(open_one(), E.VENUE_UNREACHABLE, now_ms=100)
    s = apply(s, E.VENUE_UNREACHABLE, now_ms=200)
    assert s.unreachable_since_ms == 100
    s = apply(s, E.EXIT_SENT)  # orders still go out during a read outage
    assert apply(s, E.VENUE_REACHABLE).unreachable_since_ms is None


def test_prices_only_while_live() -> None:
    assert offer_price(entering(), D(5)).pending_price is None
    s = offer_price(offer_price(open_one(), D(101)), D(102))
    price, s = take_price(s)
    assert price == D(102) and s.pending_price is None and s.last_mark == D(102)
    assert take_price(s)[0] is None
    with pytest.raises(ValueError, match="positive"):
        offer_price(s, D(0))
    assert notice_venue_change(entering()) == entering()


def test_update_only_touches_the_workflows_fields() -> None:
    s = update(open_one(), profile=ExitProfile(), exit_state=EXIT_STATE, hard_stop_id="h1", hard_stop_seq=1)
    assert s.hard_stop_id == "h1" and s.exit_state == EXIT_STATE
    for field, value in (("status", S.CLOSED), ("fills", []), ("released", True), ("order_in_flight", False)):
        with pytest.raises(ValueError, match="only through apply"):
            update(s, **{field: value})


def test_a_state_that_breaks_an_invariant_is_refused() -> None:
    with pytest.raises(ValueError, match="while exposed"):
        PositionState(side=Side.LONG, status=S.CLOSED, grant=GRANT, fills=[buy("1")])
    with pytest.raises(ValueError, match="twice"):
        x = buy("1")
        PositionState(side=Side.LONG, status=S.OPEN, grant=GRANT, fills=[x, x])
    with pytest.raises(ValueError, match="exceeds entry"):
        PositionState(side=Side.LONG, status=S.CLOSING, grant=GRANT, fills=[buy("1"), sell("2")])
    carried = open_one().model_dump_json().replace('"status":"OPEN"', '"status":"CLOSED"')
    with pytest.raises(ValueError, match="CLOSED while exposed"):
        PositionState.model_validate_json(carried)


def test_status_is_the_same_enum_in_the_workflow_messages() -> None:
    from workflows import messages

    assert messages.PositionStatus is PositionStatus
    assert [m.value for m in PositionStatus] == [
        "VALIDATING",
        "GOVERNING",
        "ENTERING",
        "OPEN",
        "CLOSING",
        "CLOSED",
        "REJECTED",
        "FAILED",
        "CANCELLED",
    ]


# ------------------------------------------------------------------------------------------ stateful
def expected_refusal(s: PositionState, event: PositionEvent, kw: dict[str, Any]) -> str | None:
    """Why `apply` must refuse, worked out from the spec independently of the module (None: accepted)."""
    if event not in TRANSITIONS[s.status]:
        return "table"
    if s.terminal:
        return None
    known = {fill_key(f) for f in s.fills}
    new: list[Fill] = []
    for f in kw.get("fills", ()):
        if fill_key(f) not in known:
            known.add(fill_key(f))
            new.append(f)
    added = sum((f.qty for f in new), D(0))
    entry_side, exit_side = s.side.entry_order_side, s.side.exit_order_side
    in_flight, open_qty = s.order_in_flight, s.open_qty
    live_grant = s.grant is not None and not s.released
    if event is E.GRANTED and kw.get("grant") is None:
        return "needs grant"
    if event is E.DENIED and kw.get("denial") is None:
        return "needs denial"
    if event is E.VENUE_UNREACHABLE and kw.get("now_ms") is None:
        return "needs now_ms"
    if event is E.ENTRY_SENT and (not live_grant or in_flight or s.flatten_reason is not None):
        return "entry guard"
    if event is E.ENTRY_FILLED:
        if not live_grant or any(f.side != entry_side for f in new):
            return "entry fill guard"
        if s.status is S.ENTERING and added <= 0:
            return "nothing executed"
    if event is E.ENTRY_NOTHING and kw.get("fills"):
        return "fills given"
    if event is E.EXIT_SENT:
        q = kw.get("qty")
        if in_flight or s.venue_changed or (q is not None and not 0 < q <= open_qty):
            return "exit guard"
    if event in (E.EXIT_FILLED, E.EXIT_NOTHING) and not in_flight:
        return "no exit in flight"
    if event is E.EXIT_NOTHING and kw.get("fills"):
        return "fills given"
    if event in (E.EXIT_FILLED, E.VENUE_FILLS):
        if any(f.side != exit_side for f in new):
            return "side"
        if added > open_qty:
            return "excess"
    if event in (E.VENUE_FLAT, E.VENUE_DRIFT) and in_flight:
        return "in flight"
    if event is E.VENUE_DRIFT and (kw.get("qty") is None or kw["qty"] < open_qty):
        return "drift below tally"
    if event is E.FINISHED and (s.exposed or s.drift_qty > 0 or s.hard_stop_id is not None):
        return "finish guard"
    if event is E.FAILED and s.exposed:
        return "exposed"
    return None


def expected_status(before: PositionState, event: PositionEvent, after: PositionState) -> PositionStatus:
    if before.terminal:
        return before.status
    target = TRANSITIONS[before.status][event]
    if target in LIVE:
        return S.CLOSING if after.order_in_flight or after.open_qty == 0 else S.OPEN
    if event is E.FINISHED and after.cancel_requested:
        return S.CANCELLED
    if event is E.ENTRY_NOTHING and after.flatten_reason is not None:
        return S.CANCELLED
    return target


QTY = st.integers(min_value=1, max_value=4).map(lambda n: n * UNIT)
PRICE = st.sampled_from([D("99.5"), D("100"), D("101.25")])
PORTION = st.sampled_from(["none", "part", "all", "over"])


class PositionMachine(RuleBasedStateMachine):
    """Random event sequences: every event is tried whatever the state; one the table or a guard calls
    illegal must raise IllegalTransition (and change nothing), one it calls legal must be accepted."""

    state: PositionState

    @initialize(side=st.sampled_from(list(Side)), stage=st.integers(min_value=0, max_value=5))
    def start(self, side: Side, stage: int) -> None:
        """A new position, or one already taken some legal steps along (so that most runs spend their
        steps in the later states instead of ending early in a pre-entry cancel)."""
        self.state = PositionState(side=side)
        self.now = 0
        self.ended: PositionStatus | None = None
        self.flatten_seen = False
        self.released_seen = False
        self.advance(stage)

    # ---- helpers
    def _fill(self, side: str, qty: Decimal, cid: str, price: Decimal | None = None) -> Fill:
        return fill(side, qty, cid, price or D(100))

    def _closing(self, portion: str, cid: str, replay: bool) -> list[Fill]:
        open_qty = self.state.open_qty
        qty = {
            "none": D(0),
            "part": max(UNIT, (open_qty / 2).quantize(UNIT, rounding=ROUND_DOWN)),
            "all": open_qty,
            "over": open_qty + UNIT,
        }[portion]
        fills = [self._fill(self.state.side.exit_order_side, qty, cid, D(101))] if qty > 0 else []
        return fills + (self.state.fills[-1:] if replay else [])

    def _do(self, event: PositionEvent, **kw: Any) -> None:
        before = self.state
        snapshot = before.model_dump_json()
        why = expected_refusal(before, event, kw)
        try:
            after = apply(before, event, **kw)
        except IllegalTransition as err:
            assert why is not None, f"{event} refused in {before.status}: {err}"
            assert err.status is before.status and err.event is event
            assert before.status.value in str(err) and event.value in str(err)
            if why == "excess":
                assert isinstance(err, ExcessFill)
            assert before.model_dump_json() == snapshot
            return
        assert why is None, f"{event} accepted in {before.status}, expected a refusal: {why}"
        assert before.model_dump_json() == snapshot  # never mutated
        assert after.status is expected_status(before, event, after)
        if before.terminal and not (event is E.GRANTED and before.grant is None):
            assert after == before
        self._set(after)

    def _set(self, state: PositionState) -> None:
        self.state = state
        if state.terminal and self.ended is None:
            self.ended = state.status
        self.flatten_seen |= state.flatten_reason is not None
        self.released_seen |= state.released

    def _tick(self) -> int:
        self.now += 1_000
        return self.now

    # ---- the natural next step, so that random runs reach the later states often
    @rule(steps=st.integers(min_value=1, max_value=4))
    def advance(self, steps: int) -> None:
        for _ in range(steps):
            self._next()

    def _next(self) -> None:
        s = self.state
        match s.status:
            case S.VALIDATING:
                self._do(E.VALIDATED, rules=RULES)
            case S.GOVERNING:
                self._do(E.GRANTED, grant=GRANT)
            case S.ENTERING if s.flatten_reason is not None and not s.order_in_flight:
                self._do(E.ENTRY_NOTHING, reason="flattened")
            case S.ENTERING if not s.order_in_flight:
                self._do(E.ENTRY_SENT)
            case S.ENTERING:
                fills = [self._fill(s.side.entry_order_side, D("0.003"), "entry")]
                self._do(E.ENTRY_FILLED, fills=fills, now_ms=self._tick())
            case S.OPEN if s.venue_changed:
                self._do(E.VENUE_FILLS)
            case S.OPEN:
                self._do(E.EXIT_SENT)
            case S.CLOSING if s.order_in_flight:
                self._do(E.EXIT_FILLED, fills=self._closing("part", f"x{s.exit_seq}", False))
            case S.CLOSING if s.hard_stop_id is not None:
                self._set(update(s, hard_stop_id=None))
            case S.CLOSING if s.drift_qty > 0:
                self._do(E.VENUE_DRIFT, qty=s.open_qty)
            case S.CLOSING:
                self._do(E.FINISHED)
            case _:
                self.release_slot()

    # ---- every event, whatever the state
    @rule(event=st.sampled_from([E.VALIDATED, E.INVALID, E.GRANTED, E.DENIED]))
    def pre_entry(self, event: PositionEvent) -> None:
        self._do(event, rules=RULES, reason="unknown symbol", grant=GRANT, denial=DENIAL)

    @rule()
    def entry_sent(self) -> None:
        self._do(E.ENTRY_SENT)

    @rule(qtys=st.lists(QTY, min_size=0, max_size=2), replay=st.booleans(), adopted=st.booleans())
    def entry_filled(self, qtys: list[Decimal], replay: bool, adopted: bool) -> None:
        side = self.state.side.entry_order_side
        fills = [self._fill(side, q, "adopted" if adopted else "entry", D(100)) for q in qtys]
        self._do(E.ENTRY_FILLED, fills=fills + (self.state.fills[-1:] if replay else []), now_ms=self._tick())

    @rule(reason=st.sampled_from(["below minimum", "venue ban", "entry deadline", "expired unfilled"]))
    def entry_nothing(self, reason: str) -> None:
        self._do(E.ENTRY_NOTHING, reason=reason)

    @rule(portion=st.sampled_from([None, "part", "all", "over", "zero"]))
    def exit_sent(self, portion: str | None) -> None:
        open_qty = self.state.open_qty
        qty = {None: None, "part": open_qty / 2, "all": open_qty, "over": open_qty + UNIT, "zero": D(0)}
        self._do(E.EXIT_SENT, qty=qty[portion])

    @rule(portion=PORTION, replay=st.booleans())
    def exit_filled(self, portion: str, replay: bool) -> None:
        fills = self._closing(portion, f"x{self.state.exit_seq}", replay)
        self._do(E.EXIT_FILLED, fills=fills, reason="take_profit_1", controller="tp_ladder")

    @rule()
    def exit_nothing(self) -> None:
        self._do(E.EXIT_NOTHING)

    @rule(portion=PORTION, replay=st.booleans(), source=st.sampled_from(["hstop", "autoclose", "adl"]))
    def venue_fills(self, portion: str, replay: bool, source: str) -> None:
        self._do(E.VENUE_FILLS, fills=self._closing(portion, f"{source}-{self.now}", replay))

    @rule(price=st.none() | PRICE)
    def venue_flat(self, price: Decimal | None) -> None:
        self._do(E.VENUE_FLAT, price=price, now_ms=self._tick())

    @rule(extra=st.integers(min_value=-1, max_value=3))
    def venue_drift(self, extra: int) -> None:
        self._do(E.VENUE_DRIFT, qty=max(D(0), self.state.open_qty + extra * UNIT))

    @rule(event=st.sampled_from([E.VENUE_UNREACHABLE, E.VENUE_REACHABLE]))
    def outage(self, event: PositionEvent) -> None:
        self._do(event, now_ms=self._tick())

    @rule(
        event=st.sampled_from([E.FLATTEN_REQUESTED, E.CANCEL_REQUESTED]),
        reason=st.sampled_from([None, "a", "b"]),
    )
    def flatten_or_cancel(self, event: PositionEvent, reason: str | None) -> None:
        self._do(event, reason=reason)

    @rule(event=st.sampled_from([E.FINISHED, E.FAILED]))
    def finished_or_failed(self, event: PositionEvent) -> None:
        self._do(event, reason="unexpected" if event is E.FAILED else None)

    @rule(entry_side=st.booleans())
    def foreign_side_fill(self, entry_side: bool) -> None:
        """A fill on the wrong side for the event: refused (it is not this position's)."""
        s = self.state
        if entry_side:
            self._do(E.VENUE_FILLS, fills=[self._fill(s.side.entry_order_side, UNIT, f"other-{self.now}")])
        else:
            self._do(E.ENTRY_FILLED, fills=[self._fill(s.side.exit_order_side, UNIT, "entry")])

    # ---- the workflow's other moves
    @rule()
    def release_slot(self) -> None:
        if may_release(self.state):
            self._set(mark_released(self.state))
        else:
            with pytest.raises(SlotHeld):
                mark_released(self.state)

    @rule()
    def place_or_cancel_hard_stop(self) -> None:
        s = self.state
        if s.hard_stop_id is not None:
            self._set(update(s, hard_stop_id=None))
        elif s.status in LIVE and s.open_qty > 0:
            seq = s.hard_stop_seq + 1
            self._set(update(s, hard_stop_id=f"pos-1.hstop{seq}", hard_stop_seq=seq))

    @rule()
    def arm_exits(self) -> None:
        if self.state.status in LIVE and self.state.exit_state is None:
            self._set(update(self.state, profile=ExitProfile(), exit_state=EXIT_STATE, rules=RULES))

    @rule()
    def notice(self) -> None:
        self._set(notice_venue_change(self.state))

    @rule(price=PRICE, take=st.booleans())
    def price(self, price: Decimal, take: bool) -> None:
        s = offer_price(self.state, price)
        if take:
            taken, s = take_price(s)
            assert taken == (price if self.state.status in LIVE else None)
        self._set(s)

    @rule()
    def continue_as_new(self) -> None:
        carried = PositionState.model_validate_json(self.state.model_dump_json())
        assert carried == self.state
        self._set(carried)

    # ---- after every step
    @invariant()
    def sound(self) -> None:
        s = self.state
        assert invariant_violations(s) == []
        assert PositionState.model_validate_json(s.model_dump_json()) == s
        t = s.tally
        assert t.exit_qty <= t.entry_qty
        assert len({fill_key(f) for f in s.fills}) == len(s.fills)
        if s.terminal or s.released or may_release(s):
            assert not s.exposed
        if must_flatten(s):
            assert s.flatten_reason is not None and s.open_qty > 0 and not s.terminal
        if self.flatten_seen and not s.terminal:
            assert s.flatten_reason is not None  # remembered until the end
        if self.ended is not None:
            assert s.status is self.ended  # absorbing
        if self.released_seen:
            assert s.released
        if s.status is S.OPEN:
            assert s.open_qty > 0 and not s.order_in_flight
        if s.status is S.CLOSING:
            assert s.order_in_flight or s.open_qty == 0
        if s.status is S.CLOSED:
            assert t.entry_qty > 0 and t.open_qty == 0
        if s.status in (S.VALIDATING, S.GOVERNING, S.REJECTED):
            assert not s.fills


TestPositionMachine = PositionMachine.TestCase
TestPositionMachine.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
