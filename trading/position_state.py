"""The position's state machine: one table of legal moves and pure functions over one state object.

`PositionState` is everything a position workflow knows (and the whole carry across continue-as-new).
`apply(state, event, ...)` is the only way its lifecycle fields change: it looks the move up in
`TRANSITIONS`, checks the event's guards, builds a NEW state and checks the invariants on it, and raises
`IllegalTransition` (naming the state and the event) when any of that fails. Nothing here does I/O,
reads a clock or draws a random number, so the same events always give the same state on replay.

The invariants, and the failure each one prevents (the old system held 17 positions under a limit of 10
and closed positions twice):

* Open quantity is never terminal: FINISHED and FAILED are refused while quantity is open or an order is
  in flight. A position that ended while it still held something was forgotten by its manager and
  stayed on the venue unmanaged; its slot was counted free while the position was still there.
* The slot is never given back while exposed (`may_release`, `mark_released`), and no entry is sent
  without a live grant or after the slot was returned. Slots returned early, or entries sent without
  one, are how 17 positions came to be held under a limit of 10.
* Closed quantity never exceeds entry quantity: fills are de-duplicated by (client_order_id, trade_id),
  and a closing fill larger than what is open is refused (`ExcessFill`, the whole event, nothing
  recorded). A close counted twice (the order's answer and the venue's report of the same trade) is
  the "closed twice" failure; refusing it keeps the tally honest and the position from reversing.
* One order at a time: ENTRY_SENT and EXIT_SENT are refused while an order is in flight, and venue
  quantity reports (VENUE_FLAT, VENUE_DRIFT) are refused while one is, because the venue may be showing
  that very order's effect. After the venue changed the position on its own (EXIT_NOTHING, or
  `notice_venue_change`), no new exit is sent before its fills are settled (VENUE_FILLS or VENUE_FLAT):
  a second close sent on a stale tally is the other road to closing twice.
* A flatten or cancel request is remembered in every non-terminal state: before entry it ends the
  position without sending (CANCELLED); while entering it is kept, no entry is sent after it, and once
  the entry fills `must_flatten` is true. A request dropped because it arrived at the wrong moment left
  positions open that an operator had asked to close.
* Terminal states are absorbing. Events that report this position's own orders (ENTRY_SENT,
  ENTRY_FILLED, ENTRY_NOTHING, EXIT_SENT, EXIT_FILLED, EXIT_NOTHING) are refused there: a finished
  position never trades, and a fill for one is a bug that must surface. Every other event (venue
  reports, outages, flatten/cancel, a repeated FINISHED or FAILED, late portfolio decisions) is venue or
  message noise and is ignored: the state comes back unchanged. One exception: a late GRANTED for a
  position that has no grant is recorded, so `may_release` says the slot must be handed back (a grant
  nobody returns is a slot lost until a restart).
* A closing fill larger than the open quantity is refused, not recorded as drift: the workflow adopts
  the venue's excess first (VENUE_DRIFT, then ENTRY_FILLED with the adopted quantity) and closes it
  like any other quantity; or it closes the excess outside the tally and reports the venue's quantity
  again (VENUE_DRIFT with qty equal to the open quantity: no excess left). `drift_qty` holds the excess
  seen and not yet resolved; FINISHED waits until it is adopted, reported gone, or the venue reports
  flat, so an extra position on the venue never outlives its manager.
* VENUE_FLAT while the tally still shows quantity (the venue's fills were not found) writes the rest off
  with one fill marked `venue-flat-N`, at the given price (else the last mark, else the open entry
  price): the venue is the truth, so the position can end and be journaled instead of being managed
  forever against quantity that no longer exists; the cost is an estimated exit price for that part.

Two kinds of table targets are refined, always from the state and never by the caller:

* OPEN and CLOSING are settled by quantity: CLOSING while an exit order is in flight or nothing is open
  (flat, waiting for cleanup and FINISHED), OPEN otherwise. So a partial close goes back to OPEN and a
  venue fill that takes everything moves OPEN to CLOSING.
* FINISHED ends CANCELLED when the operator cancelled the workflow (CLOSED otherwise); ENTRY_NOTHING ends
  CANCELLED when a flatten or cancel was pending (REJECTED otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trading import pnl
from trading.exit_policy import ExitState
from trading.exit_profile import ExitProfile
from trading.governor import Denial, Grant
from trading.instruments import SymbolRules
from trading.intents import Side
from trading.pnl import Fill, PositionTally

__all__ = [
    "ABSORBED",
    "LIVE",
    "ORDER_EVENTS",
    "PRE_ENTRY",
    "TERMINAL",
    "TRANSITIONS",
    "VENUE_FLAT_PREFIX",
    "WORKFLOW_FIELDS",
    "ExcessFill",
    "IllegalTransition",
    "PositionEvent",
    "PositionState",
    "PositionStatus",
    "SlotHeld",
    "apply",
    "can_send_exit",
    "fill_key",
    "invariant_violations",
    "legal_events",
    "mark_released",
    "may_release",
    "must_flatten",
    "notice_venue_change",
    "offer_price",
    "take_price",
    "update",
]

ZERO = Decimal(0)
VENUE_FLAT_PREFIX = "venue-flat-"  # client id of the write-off fill VENUE_FLAT records


class PositionStatus(StrEnum):
    VALIDATING = "VALIDATING"
    GOVERNING = "GOVERNING"
    ENTERING = "ENTERING"
    OPEN = "OPEN"
    CLOSING = "CLOSING"
    CLOSED = "CLOSED"
    REJECTED = "REJECTED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL: frozenset[PositionStatus] = frozenset(
    {PositionStatus.CLOSED, PositionStatus.REJECTED, PositionStatus.FAILED, PositionStatus.CANCELLED}
)
PRE_ENTRY: frozenset[PositionStatus] = frozenset({PositionStatus.VALIDATING, PositionStatus.GOVERNING})
LIVE: frozenset[PositionStatus] = frozenset({PositionStatus.OPEN, PositionStatus.CLOSING})


class PositionEvent(StrEnum):
    VALIDATED = "VALIDATED"
    INVALID = "INVALID"  # unknown symbol, a symbol not trading, ...
    GRANTED = "GRANTED"
    DENIED = "DENIED"
    ENTRY_SENT = "ENTRY_SENT"
    ENTRY_FILLED = "ENTRY_FILLED"  # the entry order's fills (partial or full); also an adopted quantity
    ENTRY_NOTHING = "ENTRY_NOTHING"  # nothing executed: below minimum, halted, deadline, expired unfilled
    EXIT_SENT = "EXIT_SENT"  # a reduce-only order in flight
    EXIT_FILLED = "EXIT_FILLED"  # its outcome, with its fills (none when it expired unfilled)
    EXIT_NOTHING = "EXIT_NOTHING"  # reduce-only rejected: the venue had nothing left to reduce
    VENUE_FILLS = "VENUE_FILLS"  # fills the venue made on its own: hard stop, liquidation, ADL, by hand
    VENUE_FLAT = "VENUE_FLAT"  # the venue says the position is 0
    VENUE_DRIFT = "VENUE_DRIFT"  # the venue holds MORE than the tally
    VENUE_UNREACHABLE = "VENUE_UNREACHABLE"
    VENUE_REACHABLE = "VENUE_REACHABLE"
    FLATTEN_REQUESTED = "FLATTEN_REQUESTED"
    CANCEL_REQUESTED = "CANCEL_REQUESTED"
    FINISHED = "FINISHED"  # cleanup done: exchange stop cancelled, trigger levels removed
    FAILED = "FAILED"  # an unexpected error


S = PositionStatus
E = PositionEvent

# The events that report this position's own orders: refused in a terminal state (it never trades).
ORDER_EVENTS: frozenset[PositionEvent] = frozenset(
    {E.ENTRY_SENT, E.ENTRY_FILLED, E.ENTRY_NOTHING, E.EXIT_SENT, E.EXIT_FILLED, E.EXIT_NOTHING}
)
# Everything else is noise once the position has ended: accepted and ignored.
ABSORBED: frozenset[PositionEvent] = frozenset(E) - ORDER_EVENTS


def _outage(status: PositionStatus) -> dict[PositionEvent, PositionStatus]:
    return {E.VENUE_UNREACHABLE: status, E.VENUE_REACHABLE: status}


TRANSITIONS: dict[PositionStatus, dict[PositionEvent, PositionStatus]] = {
    S.VALIDATING: {
        E.VALIDATED: S.GOVERNING,
        E.INVALID: S.FAILED,
        E.FLATTEN_REQUESTED: S.CANCELLED,
        E.CANCEL_REQUESTED: S.CANCELLED,
        E.FAILED: S.FAILED,
        **_outage(S.VALIDATING),
    },
    S.GOVERNING: {
        E.GRANTED: S.ENTERING,
        E.DENIED: S.REJECTED,
        E.FLATTEN_REQUESTED: S.CANCELLED,
        E.CANCEL_REQUESTED: S.CANCELLED,
        E.FAILED: S.FAILED,
        **_outage(S.GOVERNING),
    },
    S.ENTERING: {
        E.ENTRY_SENT: S.ENTERING,
        E.ENTRY_FILLED: S.OPEN,
        E.ENTRY_NOTHING: S.REJECTED,  # CANCELLED when a flatten or cancel was pending
        E.FLATTEN_REQUESTED: S.ENTERING,
        E.CANCEL_REQUESTED: S.ENTERING,
        E.FAILED: S.FAILED,  # only with nothing in flight
        **_outage(S.ENTERING),
    },
    # OPEN and CLOSING targets are settled by quantity (see the module docstring).
    S.OPEN: {
        E.ENTRY_FILLED: S.OPEN,  # late fills of the entry order, or the venue's excess adopted
        E.EXIT_SENT: S.CLOSING,
        E.VENUE_FILLS: S.OPEN,
        E.VENUE_FLAT: S.CLOSING,
        E.VENUE_DRIFT: S.OPEN,
        E.FLATTEN_REQUESTED: S.OPEN,
        E.CANCEL_REQUESTED: S.OPEN,
        **_outage(S.OPEN),
    },
    S.CLOSING: {
        E.ENTRY_FILLED: S.CLOSING,
        E.EXIT_FILLED: S.OPEN,
        E.EXIT_NOTHING: S.OPEN,
        E.VENUE_FILLS: S.CLOSING,
        E.VENUE_FLAT: S.CLOSING,
        E.VENUE_DRIFT: S.CLOSING,
        E.FLATTEN_REQUESTED: S.CLOSING,
        E.CANCEL_REQUESTED: S.CLOSING,
        E.FINISHED: S.CLOSED,  # CANCELLED when the operator cancelled; only when flat
        E.FAILED: S.FAILED,  # only when flat
        **_outage(S.CLOSING),
    },
    **{status: dict.fromkeys(sorted(ABSORBED), status) for status in sorted(TERMINAL)},
}


class IllegalTransition(ValueError):
    """An event the table or a guard refuses in the current state. The state is left unchanged."""

    def __init__(self, status: PositionStatus, event: PositionEvent, why: str) -> None:
        super().__init__(f"{event.value} is illegal in {status.value}: {why}")
        self.status = status
        self.event = event
        self.why = why


class ExcessFill(IllegalTransition):
    """Closing fills that would take more than is open (the venue held more than the tally, or the
    same close was reported twice under another id). Refused whole: nothing of the event is recorded."""


class SlotHeld(ValueError):
    """The portfolio slot may not be given back yet: the position is (or may be) exposed on the venue."""


def fill_key(fill: Fill) -> tuple[str, int | None]:
    """What makes a fill the same fill: a repeat (an activity retried, a stream re-delivered) has it."""
    return fill.client_order_id, fill.trade_id


class PositionState(BaseModel):
    """Everything a position knows; JSON-serializable and the whole carry across continue-as-new.

    Lifecycle fields change only through `apply` (and `mark_released`, the price and venue-notice
    helpers); the workflow's bookkeeping fields (`WORKFLOW_FIELDS`) change through `update`. Built or
    parsed, a state that breaks an invariant is refused, so a tampered or stale carry cannot resume."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: PositionStatus = PositionStatus.VALIDATING
    side: Side
    fills: list[Fill] = Field(default_factory=list)
    rules: SymbolRules | None = None
    grant: Grant | None = None
    denial: Denial | None = None
    released: bool = False
    profile: ExitProfile | None = None
    exit_state: ExitState | None = None
    hard_stop_id: str | None = None
    hard_stop_seq: int = Field(0, ge=0)
    levels_version: int = Field(0, ge=0)
    exit_seq: int = Field(0, ge=0)
    opened_at_ms: int = Field(0, ge=0)
    last_mark: Decimal | None = Field(None, gt=0)
    pending_price: Decimal | None = Field(None, gt=0)  # the latest price not yet decided on
    venue_changed: bool = False  # the venue changed the position on its own; settle before the next exit
    flatten_reason: str | None = None  # a pending flatten or cancel, kept until the position is flat
    cancel_requested: bool = False
    order_in_flight: bool = False
    unreachable_since_ms: int | None = None
    drift_qty: Decimal = Field(ZERO, ge=0)  # venue excess seen and not yet adopted
    exit_reason: str | None = None
    exit_controller: str | None = None
    # The venue's excess over the tally, closed outside this trade (never part of its PnL or tally).
    drift_fills: list[Fill] = Field(default_factory=list)
    drift_seq: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _invariants(self) -> PositionState:
        problems = invariant_violations(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def tally(self) -> PositionTally:
        return pnl.tally(self.side, self.fills)

    @property
    def open_qty(self) -> Decimal:
        return self.tally.open_qty

    @property
    def exposed(self) -> bool:
        """Something may be held on the venue: open quantity, or an order in flight that may have executed."""
        return self.open_qty > 0 or self.order_in_flight

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


# The fields the workflow keeps itself (exit engine, exchange stop, trigger levels, prices, reasons).
WORKFLOW_FIELDS: frozenset[str] = frozenset(
    {
        "rules",
        "profile",
        "exit_state",
        "hard_stop_id",
        "hard_stop_seq",
        "levels_version",
        "last_mark",
        "pending_price",
        "exit_reason",
        "exit_controller",
        "drift_fills",
        "drift_seq",
    }
)


def invariant_violations(state: PositionState) -> list[str]:
    """Every invariant the state breaks, in words (empty when it is sound). Checked by `apply` after
    each move and by the model on construction, so no code path can produce a state that breaks one."""
    problems: list[str] = []
    keys = [fill_key(f) for f in state.fills]
    if len(keys) != len(set(keys)):
        problems.append("a fill is recorded twice (it would be counted twice)")
    try:
        t = pnl.tally(state.side, state.fills)
    except pnl.OverfillError as err:
        return [*problems, f"closed quantity exceeds entry quantity: {err}"]
    exposed = t.open_qty > 0 or state.order_in_flight
    status = state.status
    if status in TERMINAL and exposed:
        problems.append(
            f"{status.value} while exposed (open {t.open_qty}, in flight {state.order_in_flight})"
        )
    if state.released and exposed:
        problems.append("slot released while exposed")
    if status in PRE_ENTRY and (state.fills or state.order_in_flight):
        problems.append(f"{status.value} with fills or an order in flight")
    if status is S.ENTERING and state.fills:
        problems.append("ENTERING with fills: a filled entry is OPEN")
    if status is S.OPEN and (t.open_qty <= 0 or state.order_in_flight):
        problems.append("OPEN needs open quantity and no order in flight")
    if status is S.CLOSING and not (state.order_in_flight or t.open_qty == 0):
        problems.append("CLOSING needs an exit in flight or nothing open")
    if status in (S.ENTERING, *LIVE) and state.grant is None:
        problems.append(f"{status.value} without a grant")
    if state.cancel_requested and state.flatten_reason is None:
        problems.append("a cancel without a remembered flatten reason")
    if status is S.CLOSED and (t.entry_qty <= 0 or t.open_qty != 0):
        problems.append("CLOSED needs an entry that is fully closed")
    if status is S.REJECTED and state.fills:
        problems.append("REJECTED with fills")
    return problems


# ---------------------------------------------------------------------------------------------- apply
@dataclass(frozen=True)
class _Args:
    fills: tuple[Fill, ...]
    reason: str | None
    controller: str | None
    now_ms: int | None
    qty: Decimal | None
    price: Decimal | None
    grant: Grant | None
    denial: Denial | None
    rules: SymbolRules | None


def apply(
    state: PositionState,
    event: PositionEvent | str,
    *,
    fills: Iterable[Fill] = (),
    reason: str | None = None,
    controller: str | None = None,
    now_ms: int | None = None,
    qty: Decimal | None = None,
    price: Decimal | None = None,
    grant: Grant | None = None,
    denial: Denial | None = None,
    rules: SymbolRules | None = None,
) -> PositionState:
    """The state after `event`, as a new object (`state` is never changed).

    Keywords, by event: GRANTED `grant`; DENIED `denial`; VALIDATED `rules` (optional); ENTRY_FILLED,
    EXIT_FILLED, VENUE_FILLS `fills` (repeats ignored); ENTRY_NOTHING `reason`, `denial` (optional);
    EXIT_SENT `qty` (optional, checked against the open quantity); EXIT_FILLED and VENUE_FILLS `reason`,
    `controller` (the exit's); VENUE_FLAT `price` for the write-off (else the last mark, else the entry);
    VENUE_DRIFT `qty` (the venue's whole quantity: the excess over the open quantity becomes `drift_qty`,
    0 when they match again); VENUE_UNREACHABLE `now_ms`; ENTRY_FILLED `now_ms`
    (the opening time); FLATTEN_REQUESTED and CANCEL_REQUESTED `reason`.

    Raises IllegalTransition (ExcessFill for closing fills beyond the open quantity) when the table or
    a guard refuses the event."""
    event = PositionEvent(event)
    target = TRANSITIONS[state.status].get(event)
    if target is None:
        raise IllegalTransition(state.status, event, _why_not(state, event))
    args = _Args(tuple(fills), reason, controller, now_ms, qty, price, grant, denial, rules)
    if state.terminal:
        return _absorb(state, event, args)
    changes = _STEPS[event](state, event, args)
    moved = state.model_copy(update=changes)
    status = _resolve(moved, event, target)
    final: dict[str, Any] = {"status": status}
    if status in TERMINAL:
        final["pending_price"] = None  # nothing left to decide on
    new = moved.model_copy(update=final)
    problems = invariant_violations(new)
    if problems:
        raise IllegalTransition(state.status, event, "; ".join(problems))
    return new


def legal_events(status: PositionStatus) -> frozenset[PositionEvent]:
    """The events the table accepts in `status` (guards may still refuse one)."""
    return frozenset(TRANSITIONS[status])


def may_release(state: PositionState) -> bool:
    """Whether the portfolio slot held by this position may be given back now: there is one, it was not
    given back yet, and either the position has ended with nothing on the venue, or no entry was ever
    sent. Returning a slot earlier is how the old system held 17 positions under a limit of 10."""
    if state.grant is None or state.released or state.exposed:
        return False
    nothing_sent = state.status in PRE_ENTRY or (
        state.status is S.ENTERING and not state.order_in_flight and not state.fills
    )
    return state.terminal or nothing_sent


def mark_released(state: PositionState) -> PositionState:
    """The state once the slot was handed back. Raises SlotHeld when `may_release` says no. After it,
    no entry can be sent (the position no longer holds a reservation)."""
    if not may_release(state):
        raise SlotHeld(
            f"slot may not be released in {state.status.value} "
            f"(grant {'yes' if state.grant else 'none'}, released {state.released}, "
            f"open {state.open_qty}, order in flight {state.order_in_flight})"
        )
    return state.model_copy(update={"released": True})


def must_flatten(state: PositionState) -> bool:
    """A flatten or cancel is pending and quantity is open: the workflow must close everything now
    (once the order in flight, if any, has answered, and the venue's own fills are settled)."""
    return state.flatten_reason is not None and not state.terminal and state.open_qty > 0


def can_send_exit(state: PositionState) -> bool:
    """Whether EXIT_SENT would be accepted now (OPEN, nothing in flight, venue changes settled)."""
    return state.status is S.OPEN and not state.order_in_flight and not state.venue_changed


def notice_venue_change(state: PositionState) -> PositionState:
    """The user-data stream says the venue changed the position on its own (a fill of an order not ours,
    the hard stop triggered, a smaller position snapshot): settle (VENUE_FILLS / VENUE_FLAT) before the
    next exit. Outside OPEN and CLOSING the notice is noise and the state comes back unchanged."""
    if state.status not in LIVE:
        return state.model_copy()
    return state.model_copy(update={"venue_changed": True})


def offer_price(state: PositionState, price: Decimal) -> PositionState:
    """Remember the latest price to decide on (only the latest matters). Ignored unless OPEN or CLOSING."""
    if price <= 0:
        raise ValueError(f"price must be positive, got {price}")
    if state.status not in LIVE:
        return state.model_copy()
    return state.model_copy(update={"pending_price": price})


def take_price(state: PositionState) -> tuple[Decimal | None, PositionState]:
    """The pending price (None when there is none) and the state with it taken: it becomes the mark."""
    price = state.pending_price
    if price is None:
        return None, state.model_copy()
    return price, state.model_copy(update={"pending_price": None, "last_mark": price})


def update(state: PositionState, **changes: Any) -> PositionState:
    """The state with some of the workflow's own fields changed (validated). The lifecycle fields are the
    machine's: changing them here would bypass the table, so asking to is a ValueError."""
    owned = sorted(set(changes) - WORKFLOW_FIELDS)
    if owned:
        raise ValueError(f"{', '.join(owned)}: changed only through apply()")
    return PositionState.model_validate({**dict(state), **changes})


# ---------------------------------------------------------------------------------------------- steps
def _refuse(state: PositionState, event: PositionEvent, why: str) -> IllegalTransition:
    return IllegalTransition(state.status, event, why)


def _why_not(state: PositionState, event: PositionEvent) -> str:
    if state.terminal and event in ORDER_EVENTS:
        return "the position has ended; a finished position never trades"
    if event in (E.FINISHED, E.FAILED) and state.status is S.OPEN:
        return f"{state.open_qty} is still open: a position with open quantity never ends"
    legal = ", ".join(sorted(TRANSITIONS[state.status]))
    return f"not a legal move from {state.status.value} (legal: {legal})"


def _absorb(state: PositionState, event: PositionEvent, args: _Args) -> PositionState:
    """Terminal states: noise is ignored; a late grant is recorded so that it is handed back."""
    if event is E.GRANTED and state.grant is None and args.grant is not None:
        return state.model_copy(update={"grant": args.grant, "released": False})
    return state.model_copy()


def _resolve(state: PositionState, event: PositionEvent, target: PositionStatus) -> PositionStatus:
    if target in LIVE:
        return S.CLOSING if state.order_in_flight or state.open_qty == 0 else S.OPEN
    if event is E.FINISHED and state.cancel_requested:
        return S.CANCELLED
    if event is E.ENTRY_NOTHING and state.flatten_reason is not None:
        return S.CANCELLED
    return target


def _new_fills(state: PositionState, event: PositionEvent, fills: tuple[Fill, ...], side: str) -> list[Fill]:
    """The fills not yet recorded (repeats dropped), all of them on `side`."""
    known = {fill_key(f) for f in state.fills}
    new: list[Fill] = []
    for fill in fills:
        key = fill_key(fill)
        if key in known:
            continue
        if fill.side != side:
            raise _refuse(
                state,
                event,
                f"fill {fill.client_order_id}/{fill.trade_id} is a {fill.side}; "
                f"{event.value} takes {side} fills of a {state.side.value} position",
            )
        known.add(key)
        new.append(fill)
    return new


def _closing_fills(state: PositionState, event: PositionEvent, args: _Args) -> list[Fill]:
    new = _new_fills(state, event, args.fills, state.side.exit_order_side)
    closing = sum((f.qty for f in new), ZERO)
    open_qty = state.open_qty
    if closing > open_qty:
        raise ExcessFill(
            state.status,
            event,
            f"fills close {closing} but only {open_qty} is open: refused whole (a close counted twice, "
            f"or the venue held more than the tally: adopt the excess first)",
        )
    return new


def _validated(state: PositionState, event: PositionEvent, args: _Args) -> dict[str, Any]:
    return {"rules": args.rules} if args.rules is not None else {}


def _invalid(state: PositionState, event: PositionEvent, args: _Args) -> dict[str, Any]:
    return {"exit_reason": args.reason} if args.reason is not None else {}


def _granted(state: PositionState, event: PositionEvent, args: _Args) -> dict[str, Any]:
    if args.grant is None:
        raise _refuse(state, event, "needs grant=")
    return {"grant": args.grant, "released": False}


def _denied(state: PositionState, event: PositionEvent, args: _Args) -> dict[str, Any]:
    if args.denial is None:
        raise _refuse(state, event, "needs denial=")
    return {"denial": args.denial}


def _entry_sent(state: PositionState, event: PositionEvent, args: _Args) -> dict[str, Any]:
    if state.grant is None or state.released:
        raise _refuse(state, event, "no live grant: an entry is sent only while holding a slot")
    if state.order_in_flight:
        raise _refuse(state, event, "an order is already in flight (one order at a time)")
    if state.flatten_reason is not None:
        raise _refuse(
            state,
            event,
            f"a flatten or cancel is pending ({state.flatten_reason}): end the entry with ENTRY_NOTHING",
        )
    return {"order_in_flight": True}


def _entry_filled(state: PositionState, event: PositionEvent, args: _Args) -> dict[str, Any]:
    if state.grant is None or state.released:
        raise _refuse(state, event, "no live grant: quantity is taken only while holding a slot")
    new = _new_fills(state, event, args.fills, state.side.entry_order_side)
    added = sum((f.qty for f in new), ZERO)
    changes: dict[str, Any] = {"fills": [*state.fills, *new]}
    if state.status is S.ENTERING:
        if added <= 0:
            raise _refuse(state, event, "no new fill: an entry that executed nothing is ENTRY_NOTHING")
        changes["order_in_flight"] = False  # the entry order's outcome
        if state.opened_at_ms == 0 and args.now_ms is not None:
            changes["opened_at_ms"] = args.now_ms
    else:
        changes["drift_qty"] = max(ZERO, state.drift_qty - added)  # the venue's excess, adopted
    return changes


def _entry_nothing(state: PositionState, event: PositionEvent, args: _Args) -> dict[str, Any]:
    if args.fills or state.fills:
        raise _refuse(state, event, "something executed: record it with ENTRY_FILLED")
    changes: dict[str, Any] = {"order_in_flight": False, "exit_reason": args.reason or "entry_unfilled"}
    if args.denial is not None:
        changes["denial"] = args.denial
    return changes


def _exit_sent(state: PositionState, event: PositionEvent, args: _Args) -> dict[str, Any]:
    if state.order_in_flight:
        raise _refuse(state, event, "an order is already in flight (one order at a time)")
    if state.venue_changed:
        raise _refuse(
            state, event, "the venue changed the position: settle its fills (VENUE_FILLS/VENUE_FLAT) first"
        )
    open_qty = state.open_qty
    if open_qty <= 0:
        raise _refuse(state, event, "nothing is open")
    if args.qty is not None and not ZERO < args.qty <= open_qty:
        raise _refuse(state, event, f"quantity {args.qty} is not within the open quantity {open_qty}")
    return {"order_in_flight": True, "exit_seq": state.exit_seq + 1}


def _exit_filled(state: PositionState, event: PositionEvent, args: _Args) -> dict[str, Any]:
    if not state.order_in_flight:
        raise _refuse(state, event, "no exit order is in flight")
    new = _closing_fills(state, event, args)
    changes: dict[str, Any] = {"fills": [*state.fills, *new], "order_in_flight": False}
    if args.reason is not None:
        changes["exit_reason"] = args.reason
    if args.controller is not None:
        changes["exit_controller"] = args.controller
    return changes


def _exit_nothing(state: PositionState, event: PositionEvent, args: _Args) -> dict[str, Any]:
    if not state.order_in_flight:
        raise _refuse(state, event, "no exit order is in flight")
    if args.fills:
        raise _refuse(state, event, "takes no fills: an exit that executed is EXIT_FILLED")
    return {"order_in_flight": False, "venue_changed": True}


def _venue_fills(state: PositionState, event: PositionEvent, args: _Args) -> dict[str, Any]:
    new = _closing_fills(state, event, args)
    changes: dict[str, Any] = {"fills": [*state.fills, *new], "venue_changed": False}
    if new:
        changes["exit_reason"] = args.reason or "exchange_closed"
        changes["exit_controller"] = args.controller or "exchange"
    return changes


def _venue_flat(state: PositionState, event: PositionEvent, args: _Args) -> dict[str, Any]:
    if state.order_in_flight:
        raise _refuse(state, event, "an order is in flight: the venue may be showing its effect")
    if args.fills:
        raise _refuse(state, event, "takes no fills: the venue's own fills are VENUE_FILLS")
    changes: dict[str, Any] = {"drift_qty": ZERO, "venue_changed": False}
    t = state.tally
    if t.open_qty > 0:
        # The venue holds nothing but the tally still shows quantity (its fills were not found): the
        # venue is the truth. The rest is written off with one marked fill, so the tally is flat, the
        # trade can be journaled, and FINISHED becomes possible.
        price = args.price or state.last_mark or t.open_entry_price
        if price <= 0:
            raise _refuse(state, event, f"write-off price must be positive, got {price}")
        n = 1 + sum(1 for f in state.fills if f.client_order_id.startswith(VENUE_FLAT_PREFIX))
        write_off = Fill(
            client_order_id=f"{VENUE_FLAT_PREFIX}{n}",
            side=state.side.exit_order_side,  # type: ignore[arg-type]
            price=price,
            qty=t.open_qty,
            fee=ZERO,
            time_ms=args.now_ms or 0,
        )
        changes["fills"] = [*state.fills, write_off]
        changes["exit_reason"] = args.reason or "exchange_closed"
        changes["exit_controller"] = args.controller or "exchange"
    return changes


def _venue_drift(state: PositionState, event: PositionEvent, args: _Args) -> dict[str, Any]:
    if state.order_in_flight:
        raise _refuse(state, event, "an order is in flight: the venue may be showing its effect")
    open_qty = state.open_qty
    if args.qty is None or args.qty < open_qty:
        raise _refuse(
            state,
            event,
            f"needs qty= (the venue's quantity) of at least the open quantity {open_qty}, got {args.qty}: "
            "less is the venue's own fills (notice_venue_change, VENUE_FILLS)",
        )
    return {"drift_qty": args.qty - open_qty}


def _unreachable(state: PositionState, event: PositionEvent, args: _Args) -> dict[str, Any]:
    if args.now_ms is None:
        raise _refuse(state, event, "needs now_ms=")
    since = state.unreachable_since_ms if state.unreachable_since_ms is not None else args.now_ms
    return {"unreachable_since_ms": since}


def _reachable(state: PositionState, event: PositionEvent, args: _Args) -> dict[str, Any]:
    return {"unreachable_since_ms": None}


def _flatten(state: PositionState, event: PositionEvent, args: _Args) -> dict[str, Any]:
    return {"flatten_reason": state.flatten_reason or args.reason or "flatten"}


def _cancel(state: PositionState, event: PositionEvent, args: _Args) -> dict[str, Any]:
    return {"cancel_requested": True, "flatten_reason": state.flatten_reason or args.reason or "cancelled"}


def _finished(state: PositionState, event: PositionEvent, args: _Args) -> dict[str, Any]:
    if state.exposed:
        raise _refuse(
            state, event, f"still exposed (open {state.open_qty}, order in flight {state.order_in_flight})"
        )
    if state.drift_qty > 0:
        raise _refuse(state, event, f"the venue's excess {state.drift_qty} is neither adopted nor gone")
    if state.hard_stop_id is not None:
        raise _refuse(state, event, f"the exchange stop {state.hard_stop_id} is not cancelled")
    return {}


def _failed(state: PositionState, event: PositionEvent, args: _Args) -> dict[str, Any]:
    if state.exposed:
        raise _refuse(
            state,
            event,
            f"still exposed (open {state.open_qty}, order in flight {state.order_in_flight}): "
            "resolve the order and flatten first",
        )
    return {"exit_reason": args.reason} if args.reason is not None else {}


_Step = Callable[[PositionState, PositionEvent, _Args], dict[str, Any]]
_STEPS: dict[PositionEvent, _Step] = {
    E.VALIDATED: _validated,
    E.INVALID: _invalid,
    E.GRANTED: _granted,
    E.DENIED: _denied,
    E.ENTRY_SENT: _entry_sent,
    E.ENTRY_FILLED: _entry_filled,
    E.ENTRY_NOTHING: _entry_nothing,
    E.EXIT_SENT: _exit_sent,
    E.EXIT_FILLED: _exit_filled,
    E.EXIT_NOTHING: _exit_nothing,
    E.VENUE_FILLS: _venue_fills,
    E.VENUE_FLAT: _venue_flat,
    E.VENUE_DRIFT: _venue_drift,
    E.VENUE_UNREACHABLE: _unreachable,
    E.VENUE_REACHABLE: _reachable,
    E.FLATTEN_REQUESTED: _flatten,
    E.CANCEL_REQUESTED: _cancel,
    E.FINISHED: _finished,
    E.FAILED: _failed,
}
