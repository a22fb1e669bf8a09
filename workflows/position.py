"""PositionWorkflow: one position, validate → govern → execute entry → manage → close.

It is the only owner of its exits. Manual closes and flattens wait in one queue; prices arrive from
the price watcher (a tick crossed a published trigger level) or from the workflow's own mark-price
timer, and the exit engine (trading/exit_policy.py: harvest, take-profit ladder, ratchet, trailing,
stops, emergency, time) decides one action at a time against the current state. At most one order is
in flight, so a duplicate or stale trigger becomes a no-op and the position can never reverse.

Everything the position knows is one `PositionState` (trading/position_state.py). Its lifecycle
changes only through the state machine's `apply`, which refuses what would break a promise (ending or
giving the slot back while quantity is open, a second order in flight, closing more than is open, a
flatten forgotten because it came at the wrong moment); the exit engine's own fields change through
`update`. The state is also the whole carry across continue-as-new.

This module holds the workflow class itself: its run, its messages (signals, the `close` update,
queries) and what it publishes (search attributes, details). The steps it runs are mixins, one module
each: the fields they share (workflows/position_base.py), the entry (position_entry.py), the exits and
their trigger levels (position_exits.py), the venue's word, the hard stop and the orders
(position_venue.py), and the end with its records (position_records.py).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pydantic
from temporalio import workflow
from temporalio.common import SearchAttributePair
from temporalio.exceptions import ApplicationError, is_cancelled_exception

from workflows.search_attributes import (
    SA_OPEN_QTY,
    SA_OPENED_AT,
    SA_REALIZED_PNL,
    SA_SIDE,
    SA_SOURCE,
    SA_STATUS,
    SA_STRATEGY,
    SA_SYMBOL,
)
from workflows.search_attributes import SEARCH_ATTRIBUTES as SEARCH_ATTRIBUTES  # importable here as before

with workflow.unsafe.imports_passed_through():
    from trading.governor import Denial, Grant
    from trading.intents import TradeIntent
    from trading.pnl import Fill
    from trading.position_state import PositionEvent, PositionState, notice_venue_change, offer_price
    from workflows.errors import ErrorType
    from workflows.messages import (
        ClosePositionRequest,
        CloseResult,
        ExchangeEvent,
        ExitReason,
        FlattenRequest,
        PositionCarry,
        PositionInput,
        PositionResult,
        PositionStatus,
        PositionView,
        PriceCrossed,
        parse_message,
    )
    from workflows.position_base import PositionBase, _ExitTicket
    from workflows.position_entry import PositionEntry
    from workflows.position_exits import PositionExits
    from workflows.position_records import PositionRecords
    from workflows.position_venue import VENUE_READ_PAUSE_MAX_S, PositionVenue

E = PositionEvent


def _carried_state(carry: PositionState | PositionCarry, intent: TradeIntent) -> PositionState:
    """The state a continued run resumes from: the state itself, or the older carry's fields (runs
    continued before the state machine carried their state field by field)."""
    if isinstance(carry, PositionState):
        return carry
    return PositionState(
        status=carry.status,
        side=intent.side,
        fills=carry.fills,
        rules=carry.rules,
        grant=carry.grant,
        profile=carry.profile,
        exit_state=carry.exit_state,
        hard_stop_id=carry.hard_stop_id,
        hard_stop_seq=carry.hard_stop_seq,
        levels_version=carry.levels_version,
        exit_seq=carry.exit_seq,
        opened_at_ms=carry.opened_at_ms,
        last_mark=carry.last_mark,
    )


_NO_INPUT = object()  # started without an argument (`temporal workflow start` without --input)
TRANSIENT_STATUSES = (PositionStatus.VALIDATING, PositionStatus.GOVERNING, PositionStatus.ENTERING)


# Unsandboxed: the sandbox re-imported and re-compiled this module for every new position, which
# capped a burst of intents at ~20/s on 2 cores. Determinism is held by the rules in
# tests/workflows/test_determinism_rules.py and by replaying recorded histories.
# The handlers (run, signals, the update, queries) stay in this class's own body: the SDK is not relied
# on to find decorated handlers on base classes.
@workflow.defn(name="PositionWorkflow", failure_exception_types=[pydantic.ValidationError], sandboxed=False)
class PositionWorkflow(PositionEntry, PositionExits, PositionVenue, PositionRecords, PositionBase):
    @workflow.init
    def __init__(self, raw: object = _NO_INPUT, *extra: object) -> None:
        # Raw and validated here: the SDK decodes typed arguments only when their count matches, so
        # zero or two `--input` would otherwise fail the workflow *task* in a loop instead of the workflow.
        if raw is _NO_INPUT or extra:
            given = 0 if raw is _NO_INPUT else 1 + len(extra)
            raise ApplicationError(
                f"input: PositionWorkflow takes exactly one trade intent, a JSON object "
                f"(--input '{{\"symbol\": ...}}'); {given} given",
                type=ErrorType.INVALID_INTENT,
                non_retryable=True,
            )
        inp = raw if isinstance(raw, PositionInput) else PositionInput.model_validate(raw)
        if inp.carry is not None and workflow.info().continued_run_id is None:
            raise ApplicationError(
                "carry: only set by the workflow's own continue-as-new",
                type=ErrorType.INVALID_INTENT,
                non_retryable=True,
            )
        self.input = inp
        self.intent: TradeIntent = inp
        self.options = inp.options
        self.s = _carried_state(inp.carry, inp) if inp.carry else PositionState(side=inp.side)
        # The status as published (search attributes, queries): it follows the machine's at the points
        # a reader can rely on (OPEN once the exits are armed, CLOSING while an exit is on its way).
        self.shown = self.s.status
        meter = workflow.metric_meter()
        self._hard_stop_alerts = meter.create_counter(
            "quantum_hard_stop_refused", "exchange stops the venue refused (the internal stop still holds)"
        )
        self._unreachable_alerts = meter.create_counter(
            "quantum_position_venue_unreachable", "venue reads that kept failing while a position was open"
        )
        self._drift_alerts = meter.create_counter(
            "quantum_position_drift", "venue positions found larger than the workflow's tally"
        )
        self._died_exposed = meter.create_counter(
            "quantum_position_died_exposed", "position workflows that ended with quantity on the venue"
        )
        self._published: tuple[Decimal | None, Decimal | None] | None = None
        self._publishing: asyncio.Future[None] | None = None
        self._publish_retry_at = 0.0  # before PATCH_PUBLISH_PAUSE: a due time on the clock
        self._publish_paused = False  # a failed publish waits out PUBLISH_PAUSE_S (a timer)
        self._publish_pause: asyncio.Future[None] | None = None
        self._inflight: asyncio.Future[Any] | None = None  # the order activity in flight, never cancelled
        self._queue: list[_ExitTicket] = []
        self._results: dict[int, CloseResult] = {}
        self._next_ticket = 0
        self._projections: list[workflow.ActivityHandle] = []
        self._projection_seq = 0
        self._continuing = False
        self._indexed_qty: Decimal | None = None

    # ------------------------------------------------------------------ run
    @workflow.run
    async def run(self, raw: object = _NO_INPUT, *extra: object) -> PositionResult:
        inp = self.input
        try:
            if inp.carry is None:
                # The confidence behind each position (the model's; 1 for a manual trade), for Grafana.
                workflow.metric_meter().create_histogram_float(
                    "quantum_intent_confidence", "confidence of the intents that start positions"
                ).record(self.intent.confidence, {"source": self.intent.source.value})
                check = await self._validate()
                await self._govern(check)
                if self.s.terminal:  # denied, or flattened while waiting for the slot
                    await self._release_if_held(self.s.denial.gate.value if self.s.denial else "flattened")
                    self._show()
                    return self._result()
                self._show()
                if inp.adopt is not None:
                    await self._adopt(inp.adopt)
                else:
                    await self._enter()
                if self.s.terminal:  # below the venue's minimum, halted or too late: nothing was sent
                    await self._release_if_held(self.s.denial.gate.value if self.s.denial else "entry")
                    self._show()
                    return self._result()
            if self.s.open_qty > 0:
                self._show(PositionStatus.OPEN)
                self._project("snapshot")  # the read model (and the user-data stream's routing) sees it open
                await self._manage()
            await self._finish_close()
            return self._result()
        except workflow.ContinueAsNewError:
            raise
        except BaseException as err:
            if isinstance(err, GeneratorExit):
                raise  # evicted from the worker's cache (shutdown): nothing happened to the position
            if not is_cancelled_exception(err):
                self._fail(err)
                raise
            # An operator cancelled the workflow: take what the order in flight did, flatten what is
            # open, then stop (cancelling the entry used to leave its fill unowned and unprotected).
            self._on(E.CANCEL_REQUESTED, reason=ExitReason.CANCELLED.value)
            await self._settle_inflight()
            pause = 1.0
            while self.s.open_qty > 0:  # never finished while open: an exit refused or unfilled is retried
                self._queue.append(_ExitTicket(-1, None, ExitReason.CANCELLED.value, "operator"))
                await self._process_exits()
                if self.s.open_qty > 0:
                    if self.s.venue_changed:
                        await self._settle_with_venue()
                    await workflow.sleep(pause)
                    pause = min(pause * 2, VENUE_READ_PAUSE_MAX_S)
            await self._finish_close()
            raise
        finally:
            # The slot is never given back while the venue may hold this position: a workflow that
            # dies exposed keeps it until the holder check sees the workflow gone and reconcile adopts
            # the position with this trade's exits.
            if not self._continuing:
                await self._release_if_held("workflow ended")

    def _fail(self, err: BaseException) -> None:
        """An unexpected error ends the workflow. FAILED only with nothing on the venue; otherwise the
        state stays as it is and the death is loud: reconcile adopts the position with its exits."""
        if not self.s.exposed:
            self._on(E.FAILED, reason=str(err)[:200])
            self._show()
            return
        self._died_exposed.add(1, {"symbol": self.intent.symbol})
        workflow.logger.error(
            "ALERT position %s ended %s with %s %s open on the venue: %s",
            workflow.info().workflow_id,
            self.s.status.value,
            self.s.open_qty,
            self.intent.symbol,
            err,
        )

    # ------------------------------------------------------------------ messages
    @workflow.signal(name="reservation_decided")
    def reservation_decided(self, decision: Grant | Denial) -> None:
        if getattr(self, "_decision", None) is None:
            self._decision = decision

    @workflow.signal(name="emergency_flatten")
    def emergency_flatten(self, req: FlattenRequest) -> None:
        """Remembered in every state: before the entry the position never enters, while entering its
        fill is closed once it is known, once open it is closed now (a flatten that came while the entry
        was in flight used to be dropped, and the position opened with no close)."""
        if self.s.terminal:
            return
        first = self.s.flatten_reason is None
        self._on(E.FLATTEN_REQUESTED, reason=req.reason)
        if first and self.s.status in (PositionStatus.OPEN, PositionStatus.CLOSING):
            self._enqueue(None, ExitReason.EMERGENCY_FLATTEN.value, "portfolio")
        self._update_details()

    @workflow.signal(name="price_crossed")
    def price_crossed(self, raw: dict) -> None:
        try:
            tick = parse_message(PriceCrossed, raw)
        except ValueError:
            workflow.logger.warning("ignored a malformed price_crossed signal: %s", raw)
            return
        if tick.symbol == self.intent.symbol:
            self.s = offer_price(self.s, tick.price)  # only the latest price matters

    @workflow.signal(name="exchange_event")
    def exchange_event(self, raw: dict) -> None:
        """From the user-data stream (or reconcile): the venue did something. Fills of this position's own
        orders are accounted by the order activity; anything else means the venue changed the
        position (its hard stop, a liquidation, ADL, a close by hand on the venue, more than the tally):
        settle with it, on a fresh read, before anything else is sent."""
        try:
            event = parse_message(ExchangeEvent, raw)
        except ValueError:
            workflow.logger.warning("ignored a malformed exchange_event signal: %s", raw)
            return
        if event.symbol != self.intent.symbol:
            return
        changed = False
        if event.kind == "order_update":
            cid = event.client_order_id or ""
            own_order = cid.startswith(self._own_prefix()) and not cid.startswith(self._hard_stop_prefix())
            venue_fill = event.exec_type in ("TRADE", "CALCULATED")  # CALCULATED: liquidation, ADL
            changed = (venue_fill and not own_order) or event.reason in ("liquidation", "adl")
        elif event.kind == "algo_update":
            changed = event.order_status in ("TRIGGERED", "FINISHED") and (
                event.client_order_id or ""
            ).startswith(self._hard_stop_prefix())
        elif event.position_amt is not None and not self.s.order_in_flight:
            changed = event.position_amt * self.intent.side.sign != self.s.open_qty
        if changed:
            self.s = notice_venue_change(self.s)

    @workflow.update(name="close")
    async def close(self, raw: dict) -> CloseResult:
        req = parse_message(ClosePositionRequest, raw)
        ticket = self._enqueue(req.quantity, req.reason, "manual")
        await workflow.wait_condition(lambda: ticket in self._results)
        return self._results.pop(ticket)

    @close.validator
    def _validate_close(self, raw: dict) -> None:
        """Every refusal in one shape, `CloseRefused` naming the problem, before anything reaches
        history: a bad field, a position that is not open, more than is open."""
        try:
            req = parse_message(ClosePositionRequest, raw)
        except ValueError as err:
            raise ApplicationError(str(err), type=ErrorType.CLOSE_REFUSED, non_retryable=True) from None
        if self.shown not in (PositionStatus.OPEN, PositionStatus.CLOSING) or self.s.terminal:
            raise ApplicationError(
                f"position is {self.shown.value}, not open: nothing to close",
                type=ErrorType.CLOSE_REFUSED,
                non_retryable=True,
            )
        open_qty = self.s.open_qty
        if req.quantity is not None and req.quantity > open_qty:
            raise ApplicationError(
                f"quantity {req.quantity} exceeds the open quantity {open_qty}",
                type=ErrorType.CLOSE_REFUSED,
                non_retryable=True,
            )

    @workflow.query(name="state")
    def state(self) -> PositionView:
        s, t = self.s, self.s.tally
        exit_state, mark = s.exit_state, s.last_mark
        return PositionView(
            workflow_id=workflow.info().workflow_id,
            status=self.shown,
            symbol=self.intent.symbol,
            side=self.intent.side,
            open_qty=t.open_qty,
            entry_price=t.open_entry_price or t.avg_entry,
            mark_price=mark,
            unrealized_pnl=t.unrealized(mark) if mark and t.open_qty else None,
            realized_pnl=t.realized_net,
            fees=t.fees,
            stop_loss_price=exit_state.stop if exit_state else None,
            stop_kind=exit_state.stop_kind if exit_state else None,
            take_profit_price=self._next_target(),
            hard_stop_price=exit_state.hard_stop if exit_state and s.hard_stop_id else None,
            next_trigger=self._next_trigger(),
            trigger_above=self._levels()[0],
            trigger_below=self._levels()[1],
            reason=s.exit_reason or (s.denial.reason if s.denial else None),
            venue_unreachable_since_ms=s.unreachable_since_ms,
        )

    @workflow.query(name="fills")
    def get_fills(self) -> list[Fill]:
        return list(self.s.fills)

    @workflow.query(name="pnl")
    def pnl(self) -> dict[str, Decimal]:
        t, mark = self.s.tally, self.s.last_mark
        return {
            "realized_gross": t.realized_gross,
            "fees": t.fees,
            "realized_net": t.realized_net,
            "unrealized": t.unrealized(mark) if mark else Decimal(0),
        }

    # ------------------------------------------------------------------ search attributes and details
    def _show(self, status: PositionStatus | None = None) -> None:
        """Publish the status (the machine's, unless given): search attributes and details. Called at
        fixed points of the lifecycle, so the visibility writes (commands) come where they always did."""
        status = status or self.s.status
        self.shown = status
        if status in TRANSIENT_STATUSES:
            self._update_details()
            return  # seen in queries and details; not worth a visibility write per intent in a burst
        t = self._tally()
        self._indexed_qty = t.open_qty
        pairs = [
            SearchAttributePair(SA_OPEN_QTY, float(t.open_qty)),
            SearchAttributePair(SA_SYMBOL, self.intent.symbol),
            SearchAttributePair(SA_SIDE, self.intent.side.value),
            SearchAttributePair(SA_STATUS, status.value),
            SearchAttributePair(SA_STRATEGY, self.intent.strategy),
            SearchAttributePair(SA_SOURCE, self.intent.source.value),
            SearchAttributePair(SA_REALIZED_PNL, float(t.realized_net)),
        ]
        if self.s.opened_at_ms:
            opened = datetime.fromtimestamp(self.s.opened_at_ms / 1000, tz=UTC)
            pairs.append(SearchAttributePair(SA_OPENED_AT, opened))
        workflow.upsert_search_attributes(pairs)
        self._update_details()

    def _update_details(self) -> None:
        open_qty = self.s.open_qty
        if self.shown not in TRANSIENT_STATUSES and open_qty != self._indexed_qty:
            self._indexed_qty = open_qty  # a partial close, or the venue's own fills
            workflow.upsert_search_attributes([SearchAttributePair(SA_OPEN_QTY, float(open_qty))])
        v = self.state()
        lines = [
            f"**{v.status.value}** {v.side.value} {v.open_qty} {v.symbol} @ {v.entry_price:.2f}",
            f"mark {v.mark_price} · unrealized {v.unrealized_pnl} · realized {v.realized_pnl:.4f} USDT",
            f"next trigger: {v.next_trigger or '-'}",
        ]
        if v.reason:
            lines.append(f"reason: {v.reason}")
        if self.s.unreachable_since_ms is not None:
            since = datetime.fromtimestamp(self.s.unreachable_since_ms / 1000, tz=UTC).strftime("%H:%M:%S")
            lines.append(f"**venue unreachable since {since} UTC**: still managed, retrying")
        if self.s.flatten_reason is not None and not self.s.terminal:
            lines.append(f"flatten requested: {self.s.flatten_reason}")
        workflow.set_current_details("\n\n".join(lines))
