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
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import pydantic
from temporalio import workflow
from temporalio.common import SearchAttributePair
from temporalio.exceptions import ActivityError, ApplicationError, FailureError, is_cancelled_exception

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
    from trading.execution import (
        CancelStopInput,
        EntryMarket,
        ExchangePosition,
        ExchangePositionInput,
        MarkPriceInput,
        OpenEntryInput,
        OpenEntryOutcome,
        OrderOutcome,
        OrderStatus,
        PlaceOrderInput,
        PlaceStopInput,
        PrepareEntryInput,
        SymbolCheck,
        SymbolCheckInput,
        SyncFillsInput,
    )
    from trading.exit_policy import evaluate, initial_state, resolve_profile, trigger_levels
    from trading.exits import close_quantity
    from trading.governor import Denial, Gate, Grant, ReservationRequest
    from trading.ids import client_order_id
    from trading.intents import TradeIntent
    from trading.pnl import Fill, PositionTally
    from trading.position_state import (
        PositionEvent,
        PositionState,
        apply,
        mark_released,
        may_release,
        must_flatten,
        notice_venue_change,
        offer_price,
        take_price,
        update,
    )
    from trading.records import closed_trade
    from workflows import calls
    from workflows.errors import ErrorType
    from workflows.messages import (
        DEFAULT_PORTFOLIO_ID,
        AdjustRequest,
        AdoptedPosition,
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
        ProjectionInput,
        PublishLevelsInput,
        ReleaseRequest,
        parse_message,
    )

E = PositionEvent

# The activities' timeouts and retry policies: workflows/calls.py.
# A venue read while money is on the venue never fails the position: after the quick retries it is
# reported (log, metric, details) and tried again after a capped pause, for as long as it takes.
VENUE_READ_PAUSE_MAX_S = 30.0
PUBLISH_PAUSE_S = 5.0
PATCH_PUBLISH_PAUSE = "position-publish-pause-timer"


def _venue_reason(client_id: str, hard_stop_prefix: str) -> str:
    if client_id.startswith(hard_stop_prefix):
        return ExitReason.HARD_STOP.value
    if client_id.startswith("autoclose"):
        return ExitReason.LIQUIDATION.value
    if client_id.startswith("adl_autoclose"):
        return ExitReason.ADL.value
    return ExitReason.EXCHANGE_CLOSED.value


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


_T = TypeVar("_T")
_A = TypeVar("_A")
_NO_INPUT = object()  # started without an argument (`temporal workflow start` without --input)
TRANSIENT_STATUSES = (PositionStatus.VALIDATING, PositionStatus.GOVERNING, PositionStatus.ENTERING)


class _ExitRefused(Exception):
    """The venue refused an exit order for good; the position stays open and managed."""


@dataclass
class _ExitTicket:
    ticket: int
    quantity: Decimal | None
    reason: str
    controller: str


# Unsandboxed: the sandbox re-imported and re-compiled this module for every new position, which
# capped a burst of intents at ~20/s on 2 cores. Determinism is held by the rules in
# tests/workflows/test_determinism_rules.py and by replaying recorded histories.
@workflow.defn(name="PositionWorkflow", failure_exception_types=[pydantic.ValidationError], sandboxed=False)
class PositionWorkflow:
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

    # ------------------------------------------------------------------ the state
    def _on(self, event: PositionEvent, **data: Any) -> None:
        """Move the state machine (it refuses, loudly, anything that would break an invariant)."""
        self.s = apply(self.s, event, **data)

    def _set(self, **changes: Any) -> None:
        self.s = update(self.s, **changes)

    def _tally(self) -> PositionTally:
        return self.s.tally

    @property
    def status(self) -> PositionStatus:
        return self.s.status

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

    # ------------------------------------------------------------------ steps
    async def _validate(self) -> SymbolCheck:
        try:
            check = await calls.CHECK_SYMBOL.run(
                SymbolCheckInput(symbol=self.intent.symbol, want_price=self.intent.quantity is not None)
            )
        except (ActivityError, ApplicationError) as err:
            # A local activity's failure arrives as the activity's own ApplicationError, not wrapped.
            cause = err.cause if isinstance(err, ActivityError) else err
            if isinstance(cause, ApplicationError) and cause.type == ErrorType.UNKNOWN_SYMBOL:
                self._on(E.INVALID, reason=cause.message)
                self._show()
                raise ApplicationError(
                    f"symbol: {cause.message}", type=ErrorType.INVALID_INTENT, non_retryable=True
                ) from None
            raise
        self._on(E.VALIDATED)
        return check

    async def _govern(self, check: SymbolCheck) -> None:
        self._show()
        adopt = self.input.adopt
        notional = self.intent.notional_usdt or (self.intent.quantity or Decimal(0)) * (check.mark_price or 0)
        if adopt is not None:
            notional = adopt.quantity * adopt.entry_price
        request = ReservationRequest(
            holder_id=workflow.info().workflow_id,
            symbol=self.intent.symbol,
            side=self.intent.side,
            notional_usdt=notional,
            kill_score=self.intent.kill_score,
            intent_id=self.intent.intent_id,
            adoption=adopt is not None,
        )
        self._decision: Grant | Denial | None = None
        while self._decision is None:
            try:
                await self._portfolio_signal("request_reservation", request)
            except FailureError:
                # No portfolio running yet: signal-with-start it (the stack normally starts it first).
                await calls.REQUEST_RESERVATION.run(DEFAULT_PORTFOLIO_ID, request)
            try:
                await workflow.wait_condition(
                    lambda: self._decision is not None, timeout=timedelta(minutes=2)
                )
            except TimeoutError:
                continue  # the portfolio answers a repeated request with its first decision
        if isinstance(self._decision, Grant):
            # Already CANCELLED by a flatten while waiting? The machine records the grant so that the
            # slot is handed back, and the position never enters.
            self._on(E.GRANTED, grant=self._decision)
        else:
            self._on(E.DENIED, denial=self._decision)

    async def _prepare_entry(self) -> EntryMarket:
        """Fresh rules and mark price for sizing, once a slot is granted."""
        return await calls.PREPARE_ENTRY.run(PrepareEntryInput(symbol=self.intent.symbol))

    async def _enter(self) -> None:
        """Size, leverage and the entry order in one exchange activity (each workflow step costs a task
        round trip): the order's client id is fixed by the workflow, so every attempt looks it up first.
        The activity is never cancelled with the workflow: a cancel waits for what it did."""
        grant = self.s.grant
        assert grant is not None
        start_ms = int(workflow.info().start_time.timestamp() * 1000)
        self._on(E.ENTRY_SENT)
        self._inflight = calls.OPEN_ENTRY.start(
            OpenEntryInput(
                symbol=self.intent.symbol,
                side=self.intent.side.entry_order_side,  # type: ignore[arg-type]
                leverage=self.intent.leverage,
                notional_usdt=grant.notional_usdt,
                quantity=self.intent.quantity,
                client_order_id=client_order_id(workflow.info().workflow_id, "entry"),
                intent_at_ms=start_ms,
                deadline_ms=start_ms + int(self.options.entry_deadline_seconds * 1000),
            )
        )
        try:
            entry: OpenEntryOutcome = await asyncio.shield(self._inflight)
        except ActivityError as err:
            self._inflight = None
            cause = err.cause
            if not (isinstance(cause, ApplicationError) and cause.type == ErrorType.ENTRIES_HALTED):
                self._on(E.ENTRY_NOTHING, reason=ExitReason.ENTRY_UNFILLED.value)  # refused: nothing executed
                raise
            denial = Denial(holder_id=grant.holder_id, gate=Gate.VENUE_HALT, reason=cause.message)
            self._on(E.ENTRY_NOTHING, reason=ExitReason.ENTRY_UNFILLED.value, denial=denial)
            return
        self._inflight = None
        await self._entered(entry)

    async def _entered(self, entry: OpenEntryOutcome) -> None:
        """What the entry did: nothing (below the minimum, too late, unfilled), or fills to manage."""
        grant = self.s.grant
        assert grant is not None
        market = entry.market
        self._set(rules=market.rules)
        fills = entry.outcome.fills if entry.outcome is not None else []
        if not any(f.side == self.intent.side.entry_order_side for f in fills):
            denial = None
            if entry.expired:
                denial = Denial(
                    holder_id=grant.holder_id,
                    gate=Gate.ENTRY_DEADLINE,
                    reason=f"not executed within {self.options.entry_deadline_seconds:g} s of the intent: "
                    "nothing was sent after that",
                )
            elif entry.outcome is None:
                denial = Denial(
                    holder_id=grant.holder_id,
                    gate=Gate.EXCHANGE_MINIMUM,
                    reason=f"granted {grant.notional_usdt} USDT is below the exchange minimum "
                    f"({market.rules.min_notional} USDT, {market.rules.market_min_qty} qty)",
                )
            self._on(E.ENTRY_NOTHING, reason=ExitReason.ENTRY_UNFILLED.value, denial=denial)
            return
        assert entry.outcome is not None
        self._on(E.ENTRY_FILLED, fills=fills, now_ms=self._now_ms())
        filled = self._tally()
        if filled.entry_notional < grant.notional_usdt:
            await self._tell_portfolio(
                "adjust_reservation",
                AdjustRequest(holder_id=grant.holder_id, notional_usdt=filled.entry_notional),
            )
        self._arm_exits(market, filled)
        self._set(last_mark=entry.outcome.avg_price)
        await self._replace_hard_stop(self.s.exit_state.hard_stop)  # type: ignore[union-attr]
        self._project("apply_result", action="entry", outcome=entry.outcome)

    async def _adopt(self, adopted: AdoptedPosition) -> None:
        """Take a position found on the venue as it is: its quantity at its entry price."""
        market = await self._prepare_entry()
        now_ms = self._now_ms()
        self._set(rules=market.rules)
        fill = Fill(
            client_order_id=client_order_id(workflow.info().workflow_id, "adopted"),
            side=self.intent.side.entry_order_side,  # type: ignore[arg-type]
            price=adopted.entry_price,
            qty=adopted.quantity,
            fee=Decimal(0),
            time_ms=now_ms,
        )
        self._on(E.ENTRY_FILLED, fills=[fill], now_ms=now_ms)
        self._set(last_mark=market.mark_price)
        self._arm_exits(market, self._tally())
        await self._replace_hard_stop(self.s.exit_state.hard_stop)  # type: ignore[union-attr]

    async def _settle_inflight(self) -> None:
        """After a cancel: wait for the order activity that was in flight and take what it did."""
        task, self._inflight = self._inflight, None
        if task is None:
            return
        try:
            done = await task
        except ActivityError as err:
            workflow.logger.warning("the order in flight at the cancel failed: %s", err.cause)
            if self.s.status is PositionStatus.ENTERING:
                self._on(E.ENTRY_NOTHING, reason=ExitReason.ENTRY_UNFILLED.value)
            else:
                self._on(E.EXIT_NOTHING)
            return
        if isinstance(done, OpenEntryOutcome):
            await self._entered(done)
        else:
            self._exit_outcome(done, None, None)

    def _arm_exits(self, market: EntryMarket, filled: PositionTally) -> None:
        grant = self.s.grant
        assert grant is not None
        profile, stop_price = resolve_profile(
            grant.exit_profile, self.intent.exits, self.intent.side, filled.avg_entry
        )
        exit_state = initial_state(
            self.intent.side,
            filled.avg_entry,
            filled.open_qty,
            self.intent.leverage,
            filled.fees,
            profile,
            market.rules,
            self.s.opened_at_ms,
            stop_price,
        )
        self._set(profile=profile, exit_state=exit_state)

    async def _replace_hard_stop(self, price: Decimal) -> None:
        """Cancel-and-replace the exchange stop, each with its own client id: never two live stops."""
        if self.s.hard_stop_id is not None:
            await self._cancel_hard_stop()
        seq = self.s.hard_stop_seq + 1
        self._set(hard_stop_seq=seq)
        stop_id = client_order_id(workflow.info().workflow_id, f"hstop{seq}")
        try:
            await calls.PLACE_STOP.run(
                PlaceStopInput(
                    symbol=self.intent.symbol,
                    side=self.intent.side.exit_order_side,
                    trigger_price=price,
                    client_algo_id=stop_id,
                )
            )
            self._set(hard_stop_id=stop_id)
        except ActivityError as err:
            # The venue refused it (e.g. -2021 "would immediately trigger"). The position is not left
            # unprotected: the internal stop still holds, the next price check closes it if the price
            # is already past, the next stop move tries again, and operators see the alert metric.
            workflow.logger.warning("hard stop at %s refused: %s", price, err.cause)
            self._hard_stop_alerts.add(1, {"symbol": self.intent.symbol})
            self._set(hard_stop_id=None)

    async def _cancel_hard_stop(self) -> None:
        assert self.s.hard_stop_id is not None
        await self._venue_call(
            calls.CANCEL_STOP,
            CancelStopInput(symbol=self.intent.symbol, client_algo_id=self.s.hard_stop_id),
        )
        self._set(hard_stop_id=None)

    async def _venue_call(self, call: calls.Activity[_A, _T], arg: _A) -> _T:
        """A venue call that must eventually succeed while money is on the venue (a read, or a cancel
        that is idempotent): it never fails the position. After the quick retries it says so (log,
        metric, details) and tries again after a capped pause, for as long as the outage lasts (a 30 s
        outage used to end the workflow FAILED with the position still open and its slot released)."""
        pause = 1.0
        while True:
            try:
                result = await call.run(arg)
            except ActivityError as err:
                cause = err.cause
                if isinstance(cause, ApplicationError) and cause.non_retryable:
                    raise
                self._venue_unreachable(call.name, err)
                await workflow.sleep(pause)
                pause = min(pause * 2, VENUE_READ_PAUSE_MAX_S)
                continue
            self._venue_reachable()
            return result

    def _venue_unreachable(self, what: str, err: BaseException) -> None:
        if self.s.unreachable_since_ms is not None:
            return
        self._on(E.VENUE_UNREACHABLE, now_ms=self._now_ms())
        self._unreachable_alerts.add(1, {"symbol": self.intent.symbol, "call": what})
        workflow.logger.error(
            "ALERT position %s cannot reach the venue (%s: %s); %s %s open, still managed, retrying",
            workflow.info().workflow_id,
            what,
            err.cause if isinstance(err, ActivityError) else err,
            self.s.open_qty,
            self.intent.symbol,
        )
        self._update_details()

    def _venue_reachable(self) -> None:
        if self.s.unreachable_since_ms is None:
            return
        workflow.logger.warning("position %s reaches the venue again", workflow.info().workflow_id)
        self._on(E.VENUE_REACHABLE)
        self._update_details()

    async def _manage(self) -> None:
        if must_flatten(self.s) and not self._queue:  # remembered from before the entry (or the hand-over)
            self._enqueue(None, ExitReason.EMERGENCY_FLATTEN.value, "portfolio")
        self._publish_levels()
        while self.s.open_qty > 0:
            if not self._queue and self.s.pending_price is None:
                try:
                    await workflow.wait_condition(
                        lambda: (
                            bool(self._queue)
                            or self.s.pending_price is not None
                            or self._publish_due()
                            or self.s.venue_changed
                        ),
                        timeout=timedelta(seconds=self.options.mark_check_seconds),
                    )
                except TimeoutError:
                    await self._check_mark()  # the safety net when the watcher is down
            if self.s.venue_changed:
                await self._settle_with_venue()
            if self.s.drift_qty > 0:
                await self._correct_drift()
            await self._process_exits()
            if self.s.pending_price is not None and self.s.open_qty > 0:
                price, self.s = take_price(self.s)
                assert price is not None
                await self._apply_exit_policies(price)
            self._publish_levels()
            if self._should_continue_as_new():
                if workflow.patched("can-at-a-quiet-point"):
                    # Only here, where the loop itself has drained every request: waiting for an empty
                    # queue would wait on this very loop (a close or a flatten that came with an exit
                    # in flight was never served, its update never answered).
                    if not self._queue and workflow.all_handlers_finished():
                        self._hand_over()
                else:
                    await self._continue_as_new()

    async def _check_mark(self) -> None:
        try:
            mark = await calls.GET_MARK_PRICE.run(MarkPriceInput(symbol=self.intent.symbol))
        except ActivityError as err:
            # Not fatal: the watcher's prices still drive the exits, the next timer tries again.
            self._venue_unreachable(calls.GET_MARK_PRICE.name, err)
            return
        self._venue_reachable()
        self._set(last_mark=mark)
        if self.s.pending_price is None:
            self.s = offer_price(self.s, mark)
        if self.s.hard_stop_id is None and self.s.exit_state is not None and self.s.open_qty > 0:
            await self._replace_hard_stop(self.s.exit_state.hard_stop)  # try again after a refusal
        self._update_details()

    async def _apply_exit_policies(self, price: Decimal) -> None:
        """Let the exit engine act on this price until it has nothing more to do (several levels
        crossed at once are handled one after another, each against the state the last one left)."""
        profile, rules = self.s.profile, self.s.rules
        assert profile is not None and self.s.exit_state is not None and rules is not None
        self._set(last_mark=price)
        for _ in range(16):  # every action consumes a level or closes everything: this ends quickly
            open_qty = self.s.open_qty
            if open_qty <= 0:
                return
            action, exit_state = evaluate(
                profile,
                self.s.exit_state,
                self.intent.side,
                open_qty,
                price,
                self.intent.leverage,
                rules,
                self._now_ms(),
            )
            self._set(exit_state=exit_state)
            if action is None:
                return
            if action.hard_stop is not None:
                await self._replace_hard_stop(action.hard_stop)
            if action.kind == "close" and action.quantity > 0:
                try:
                    await self._close(action.quantity, action.reason, action.controller)
                except _ExitRefused:
                    return  # the next price or timer decides again
        self._update_details()

    async def _process_exits(self) -> None:
        while self._queue:
            ticket = self._queue.pop(0)
            rules = self.s.rules
            assert rules is not None
            qty = close_quantity(ticket.quantity, self.s.open_qty, rules)
            if qty <= 0:
                self._answer(
                    ticket, "nothing open to close" if self.s.open_qty <= 0 else "quantity rounds to zero"
                )
                continue
            try:
                outcome = await self._close(qty, ticket.reason, ticket.controller)
            except _ExitRefused as refused:
                self._answer(ticket, f"refused by the exchange: {refused}")
                continue
            if outcome is None:
                self._answer(ticket, f"the exchange had already closed the position ({self.s.exit_reason})")
                continue
            self._results[ticket.ticket] = CloseResult(
                closed_qty=outcome.executed_qty,
                avg_price=outcome.avg_price,
                remaining_qty=self.s.open_qty,
            )

    def _answer(self, ticket: _ExitTicket, detail: str) -> None:
        """A close request that sent nothing: answered with why."""
        self._results[ticket.ticket] = CloseResult(
            closed_qty=Decimal(0),
            avg_price=Decimal(0),
            remaining_qty=self.s.open_qty,
            noop=True,
            detail=detail,
        )

    async def _close(self, qty: Decimal, reason: str, controller: str) -> OrderOutcome | None:
        """One reduce-only order. None when the venue had nothing left to reduce (its hard stop or a
        liquidation closed the position): then the venue's fills are taken instead."""
        if self.s.venue_changed:  # the venue moved first: settle, so the close is sized on the truth
            await self._settle_with_venue()
        qty = min(qty, self.s.open_qty)
        if qty <= 0:
            return None
        self._on(E.EXIT_SENT, qty=qty)
        self._show()
        try:
            outcome = await self._place(
                self.intent.side.exit_order_side, qty, f"x{self.s.exit_seq}", reduce_only=True
            )
        except ActivityError as err:
            # Refused for good (e.g. a filter the venue changed): the position stays managed, the
            # next decision tries again, and operators see it; it must never end the workflow.
            self._on(E.EXIT_NOTHING)
            self._show()
            workflow.logger.error(
                "ALERT exit of %s %s refused: %s", qty, self.intent.symbol, err.cause or err
            )
            raise _ExitRefused(str(err.cause or err)) from None
        if not self._exit_outcome(outcome, reason, controller):
            await self._settle_with_venue()
            return None
        self._project("apply_result", action="exit", outcome=outcome)
        if self.s.open_qty > 0:
            self._show()
        return outcome

    def _exit_outcome(self, outcome: OrderOutcome, reason: str | None, controller: str | None) -> bool:
        """Record what an exit order did; False when the venue had nothing left to reduce."""
        if outcome.status == OrderStatus.REJECTED and outcome.executed_qty == 0:
            self._on(E.EXIT_NOTHING)  # the venue changed the position on its own: settle before more
            return False
        self._on(E.EXIT_FILLED, fills=outcome.fills, reason=reason, controller=controller)
        self._update_details()
        return True

    # ------------------------------------------------------------------ trigger levels
    def _levels(self) -> tuple[Decimal | None, Decimal | None]:
        s = self.s
        if s.profile is None or s.exit_state is None or s.rules is None or s.open_qty <= 0:
            return None, None
        return trigger_levels(s.profile, s.exit_state, self.intent.side, self.intent.leverage, s.rules)

    def _publish_due(self) -> bool:
        if self._publishing is not None and not self._publishing.done():
            return False
        # Redis trouble: retry on a wake-up after the pause.
        if self._publish_paused or workflow.time() < self._publish_retry_at:
            return False
        return self._levels() != self._published

    def _publish_levels(self, *, remove: bool = False) -> None:
        """Tell the price watcher the new levels (one write in flight; Redis trouble never blocks)."""
        if not remove and not self._publish_due():
            return
        above, below = (None, None) if remove else self._levels()
        self._set(levels_version=self.s.levels_version + 1)
        self._published = (above, below)
        self._publishing = asyncio.ensure_future(
            self._publish(
                PublishLevelsInput(
                    workflow_id=workflow.info().workflow_id,
                    symbol=self.intent.symbol,
                    above=above,
                    below=below,
                    version=self.s.levels_version,
                    remove=remove,
                )
            )
        )

    async def _publish(self, inp: PublishLevelsInput) -> None:
        try:
            await calls.PUBLISH_LEVELS.run(inp)
        except ActivityError:
            # Publish again after a pause (the mark timer protects the position meanwhile), rather
            # than retrying in a tight loop that would only grow the history while Redis is down.
            self._published = None
            if workflow.patched(PATCH_PUBLISH_PAUSE):
                # A timer, not a due time on the clock: the first task after a Temporal restart can
                # carry the previous task's time, and a decision on it would not replay.
                self._publish_paused = True
                self._publish_pause = asyncio.ensure_future(self._pause_publishing())
            else:
                self._publish_retry_at = workflow.time() + PUBLISH_PAUSE_S

    async def _pause_publishing(self) -> None:
        await workflow.sleep(PUBLISH_PAUSE_S)
        self._publish_paused = False

    # ------------------------------------------------------------------ the venue's word
    async def _settle_with_venue(self) -> None:
        """Take the venue's fills for this position and its word on the size: the venue closed some or
        all of it on its own (hard stop, liquidation, ADL, a close made by hand on the venue). Only
        fills after this position's entry count, never more than is open: an earlier position on the
        same symbol must not leak into this one, and a venue fill that also closed an excess (drift)
        counts only up to the open quantity (a larger one used to be dropped whole, and the position
        ended CLOSED with quantity open and no journal row)."""
        fills_now = self.s.fills
        known = {f.order_id: f.client_order_id for f in fills_now if f.order_id is not None}
        since = min((f.time_ms for f in fills_now if f.time_ms), default=self.s.opened_at_ms) - 1_000
        fills = await self._venue_call(
            calls.SYNC_FILLS, SyncFillsInput(symbol=self.intent.symbol, since_ms=since, order_ids=known)
        )
        # Trade ids rise per symbol: everything after this position's first entry fill is its own.
        first = min((f.trade_id for f in fills_now if f.trade_id is not None), default=-1)
        seen = {f.trade_id for f in [*fills_now, *self.s.drift_fills]}
        new = []
        room = self.s.open_qty
        for f in sorted(fills, key=lambda f: f.trade_id or 0):
            if f.trade_id in seen or f.side != self.intent.side.exit_order_side or (f.trade_id or 0) <= first:
                continue
            if room <= 0:
                break
            if f.qty > room:
                workflow.logger.error(
                    "venue fill %s exceeds the open quantity %s: only that is ours", f, room
                )
                f = f.model_copy(update={"qty": room, "fee": f.fee * room / f.qty})
            room -= f.qty
            new.append(f)
        reason = _venue_reason(new[-1].client_order_id, self._hard_stop_prefix()) if new else None
        self._on(E.VENUE_FILLS, fills=new, reason=reason, controller="exchange")
        if reason == ExitReason.HARD_STOP.value:
            self._set(hard_stop_id=None)  # it has fired: nothing left to cancel
        self._update_details()
        if self.s.open_qty <= 0:
            return
        venue = await self._read_position()
        held = venue.position_amt * self.intent.side.sign
        if held <= 0:
            # The venue holds nothing, yet no fill explains it: the rest is written off at the venue's
            # mark, loudly, so the trade is closed, journaled and released rather than open forever.
            workflow.logger.error(
                "ALERT venue flat on %s but %s unexplained by its fills: closed at mark %s",
                self.intent.symbol,
                self.s.open_qty,
                venue.mark_price or self.s.last_mark,
            )
            self._on(E.VENUE_FLAT, price=venue.mark_price or None, now_ms=self._now_ms())
        elif held > self.s.open_qty:
            self._on(E.VENUE_DRIFT, qty=held)

    async def _read_position(self) -> ExchangePosition:
        return await self._venue_call(calls.GET_POSITION, ExchangePositionInput(symbol=self.intent.symbol))

    async def _correct_drift(self) -> None:
        """The venue holds more than this position's tally (an order executed after we gave up on it,
        or something added by hand): alert, then close the excess so nothing on the venue is
        unmanaged. The excess's fills are kept apart: they are not this trade's PnL."""
        rules = self.s.rules
        assert rules is not None
        excess = self.s.drift_qty
        qty = close_quantity(excess, excess, rules)
        self._drift_alerts.add(1, {"symbol": self.intent.symbol})
        workflow.logger.error(
            "ALERT drift on %s: the venue holds %s more than position %s (%s); closing the excess %s",
            self.intent.symbol,
            excess,
            workflow.info().workflow_id,
            self.s.open_qty,
            qty,
        )
        if qty > 0:
            seq = self.s.drift_seq + 1
            self._set(drift_seq=seq)
            try:
                side = self.intent.side.exit_order_side
                outcome = await self._start_order(side, qty, f"drift{seq}", reduce_only=True)
                self._set(drift_fills=[*self.s.drift_fills, *outcome.fills])
            except ActivityError as err:
                workflow.logger.error("ALERT drift close on %s refused: %s", self.intent.symbol, err.cause)
        # Settled either way: what is left over the tally is reconcile's to adopt once this ends.
        self._on(E.VENUE_DRIFT, qty=self.s.open_qty)

    def _hard_stop_prefix(self) -> str:
        return client_order_id(workflow.info().workflow_id, "hstop").rsplit(".", 1)[0] + ".hstop"

    def _own_prefix(self) -> str:
        return client_order_id(workflow.info().workflow_id, "entry").rsplit(".", 1)[0] + "."

    # ------------------------------------------------------------------ the end
    async def _finish_close(self) -> None:
        if self.s.hard_stop_id is not None:
            await self._cancel_hard_stop()
        if self._published is not None:
            self._publish_levels(remove=True)
        self._on(E.FINISHED)
        self._show()
        await self._release_if_held(self.s.exit_reason or self.s.status.value.lower())
        self._project("trade_closed", result=self._result())  # the reward's margin comes from the fills
        self._journal()
        self._answer_waiting_closes()
        # Projections catch up after a Redis outage; the trade itself is already done and released.
        await asyncio.gather(
            *self._projections, *([self._publishing] if self._publishing else []), return_exceptions=True
        )
        # Every update gets its answer before the run returns (one accepted while the last exit
        # filled used to be aborted with the run).
        self._answer_waiting_closes()
        await workflow.wait_condition(workflow.all_handlers_finished)

    def _answer_waiting_closes(self) -> None:
        while self._queue:
            self._answer(self._queue.pop(0), f"already {self.s.status.value.lower()}: nothing open to close")

    def _journal(self) -> None:
        """One trade-journal row for a position that traded and is flat (the row's key is this workflow
        id, so the activity's retries never add a second one). Awaited with the projections."""
        t = self._tally()
        if t.entry_qty <= 0 or t.open_qty > 0:
            return
        trade = closed_trade(
            workflow.info().workflow_id,
            self.intent,
            t,
            opened_at_ms=self.s.opened_at_ms,
            closed_at_ms=self._now_ms(),
            exit_reason=self.s.exit_reason or self.s.status.value.lower(),
            exit_controller=self.s.exit_controller,
        )
        self._projections.append(calls.JOURNAL_TRADE.start(trade))

    # ------------------------------------------------------------------ orders
    async def _place(self, side: str, qty: Decimal, step: str, *, reduce_only: bool) -> OrderOutcome:
        # Shielded: cancelling the workflow must not cancel an order that may already have executed.
        self._inflight = self._start_order(side, qty, step, reduce_only=reduce_only)
        try:
            return await asyncio.shield(self._inflight)
        finally:
            if self._inflight is not None and self._inflight.done():
                self._inflight = None

    def _start_order(
        self, side: str, qty: Decimal, step: str, *, reduce_only: bool
    ) -> workflow.ActivityHandle[OrderOutcome]:
        """One MARKET order under this position's client id for `step` (looked up on every attempt)."""
        return calls.PLACE_ORDER.start(
            PlaceOrderInput(
                symbol=self.intent.symbol,
                side=side,
                quantity=qty,  # type: ignore[arg-type]
                client_order_id=client_order_id(workflow.info().workflow_id, step),
                reduce_only=reduce_only,
                intent_at_ms=int(workflow.info().start_time.timestamp() * 1000),
            )
        )

    # ------------------------------------------------------------------ portfolio
    async def _portfolio_signal(self, name: str, arg: object) -> None:
        await workflow.get_external_workflow_handle(DEFAULT_PORTFOLIO_ID).signal(name, arg)

    async def _tell_portfolio(self, name: str, arg: object) -> None:
        """A release or an adjustment: with no portfolio running (it failed, or is being replaced) the
        signal fails; the position goes on, and a fresh portfolio rebuilds its book from the running
        positions (a just-filled position used to fail here before its hard stop was placed)."""
        try:
            await self._portfolio_signal(name, arg)
        except FailureError as err:
            workflow.logger.warning("portfolio not reachable for %s: %s", name, err)

    async def _release_if_held(self, reason: str) -> None:
        """Give the slot back when the machine says it may (never while the venue may hold this)."""
        if not may_release(self.s):
            return
        grant = self.s.grant
        assert grant is not None
        self.s = mark_released(self.s)
        await self._tell_portfolio(
            "release_reservation",
            ReleaseRequest(holder_id=grant.holder_id, reason=reason, cooldown=bool(self.s.fills)),
        )

    # ------------------------------------------------------------------ continue-as-new
    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() > self.options.max_history_events
        )

    async def _continue_as_new(self) -> None:
        """Before the "can-at-a-quiet-point" patch (kept so runs started earlier replay)."""
        await workflow.wait_condition(lambda: workflow.all_handlers_finished() and not self._queue)
        await asyncio.gather(*self._projections, return_exceptions=True)
        if self._publishing is not None:
            await self._publishing
        self._hand_over()

    def _hand_over(self) -> None:
        """Continue as new with the state: what arrived during the hand-over (a flatten, the venue's
        word, the latest price) is in it, not lost. Projections still retrying are left behind: the
        read model catches up from the next run's writes, and a Redis outage must not keep a position
        from being managed."""
        self._continuing = True
        carried = PositionInput.model_validate(
            {**self.intent.model_dump(exclude={"options", "carry"}), "options": self.options}
        )
        workflow.continue_as_new(carried.model_copy(update={"carry": self.s}))

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

    # ------------------------------------------------------------------ helpers
    def _now_ms(self) -> int:
        return int(workflow.now().timestamp() * 1000)

    def _enqueue(self, quantity: Decimal | None, reason: str, controller: str) -> int:
        self._next_ticket += 1
        self._queue.append(_ExitTicket(self._next_ticket, quantity, reason, controller))
        return self._next_ticket

    def _next_target(self) -> Decimal | None:
        p, st, rules = self.s.profile, self.s.exit_state, self.s.rules
        if p is None or st is None or rules is None or not p.tp_enabled or st.tps_done >= len(p.tp_levels):
            return None
        pct = p.tp_levels[st.tps_done].at
        return rules.round_price(st.entry * (1 + self.intent.side.sign * pct / 100))

    def _next_trigger(self) -> str | None:
        st = self.s.exit_state
        if st is None or self.shown != PositionStatus.OPEN:
            return None
        parts = [f"{st.stop_kind.replace('_', ' ')} {st.stop}"]
        target = self._next_target()
        if target is not None:
            parts.append(f"target {target}")
        if self.s.hard_stop_id is not None:
            parts.append(f"hard stop {st.hard_stop}")
        above, below = self._levels()
        parts.append(f"watching {below} / {above}")
        return ", ".join(parts)

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

    def _project(
        self,
        kind: str,
        *,
        action: str | None = None,
        outcome: OrderOutcome | None = None,
        result: PositionResult | None = None,
    ) -> None:
        self._projection_seq += 1
        self._projections.append(
            calls.PROJECT_POSITION.start(
                ProjectionInput(
                    kind=kind,
                    action=action,
                    view=self.state(),
                    outcome=outcome,
                    intent=self.intent,
                    result=result,
                    event_ms=self._now_ms(),
                    seq=self._projection_seq,
                )
            )
        )

    def _result(self) -> PositionResult:
        s = self.s
        base = dict(
            workflow_id=workflow.info().workflow_id,
            status=s.status if s.terminal else self.shown,
            symbol=self.intent.symbol,
            side=self.intent.side,
            intent_id=self.intent.intent_id,
            strategy=self.intent.strategy,
            exit_reason=s.exit_reason,
            exit_controller=s.exit_controller,
            rejection_gate=s.denial.gate if s.denial else None,
            rejection_reason=s.denial.reason if s.denial else None,
            fills=s.fills,
        )
        return PositionResult.from_tally(base, s.tally)
