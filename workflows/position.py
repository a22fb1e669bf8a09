"""PositionWorkflow: one position, validate → govern → execute entry → manage → close.

It is the only owner of its exits. Manual closes and flattens wait in one queue; prices arrive from
the price watcher (a tick crossed a published trigger level) or from the workflow's own mark-price
timer, and the exit engine (trading/exit_policy.py: harvest, take-profit ladder, ratchet, trailing,
stops, emergency, time) decides one action at a time against the current state. At most one order is
in flight, so a duplicate or stale trigger becomes a no-op and the position can never reverse.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

import pydantic
from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey, SearchAttributePair
from temporalio.exceptions import ActivityError, ApplicationError, FailureError, is_cancelled_exception

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
        StopOutcome,
        SymbolCheck,
        SymbolCheckInput,
        SyncFillsInput,
    )
    from trading.exit_policy import (
        ExitProfile,
        ExitState,
        evaluate,
        initial_state,
        resolve_profile,
        trigger_levels,
    )
    from trading.exits import close_quantity
    from trading.governor import Denial, Gate, Grant, ReservationRequest
    from trading.ids import client_order_id
    from trading.intents import TradeIntent
    from trading.pnl import Fill, PositionTally, tally
    from trading.records import closed_trade
    from workflows.messages import (
        DEFAULT_PORTFOLIO_ID,
        EXCHANGE_TASK_QUEUE,
        LIFECYCLE_TASK_QUEUE,
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

SA_SYMBOL = SearchAttributeKey.for_keyword("Symbol")
SA_SIDE = SearchAttributeKey.for_keyword("Side")
SA_STATUS = SearchAttributeKey.for_keyword("PositionStatus")
SA_STRATEGY = SearchAttributeKey.for_keyword("Strategy")
SA_SOURCE = SearchAttributeKey.for_keyword("Source")
SA_REALIZED_PNL = SearchAttributeKey.for_float("RealizedPnl")
SA_OPENED_AT = SearchAttributeKey.for_datetime("OpenedAt")
# The open quantity in visibility lets reconcile list every position in one call instead of one
# query (a workflow task) per position.
SA_OPEN_QTY = SearchAttributeKey.for_float("OpenQty")
SEARCH_ATTRIBUTES = [
    SA_SYMBOL,
    SA_SIDE,
    SA_STATUS,
    SA_STRATEGY,
    SA_SOURCE,
    SA_REALIZED_PNL,
    SA_OPENED_AT,
    SA_OPEN_QTY,
]

# Reads and idempotent writes retry briefly; orders retry only after the activity has looked the order
# up by its client id (the activity does that on every attempt after the first).
QUICK_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=10,
    non_retryable_error_types=["Rejected", "UnknownSymbol"],
)
ORDER_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=0,
    non_retryable_error_types=["Rejected", "UnknownSymbol"],
)
# A venue read while money is on the venue never fails the position: after these attempts it is
# reported (log, metric, details) and tried again after a capped pause, for as long as it takes.
VENUE_READ_PAUSE_MAX_S = 30.0
# The mark timer's read: a few attempts, then the position says the venue is unreachable and goes on
# deciding on the watcher's prices until the next timer (it never blocks the exit loop for long).
MARK_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=2),
    maximum_attempts=3,
    non_retryable_error_types=["Rejected", "UnknownSymbol"],
)
# An order attempt sends nothing in its last (HTTP timeout + recvWindow + 1 s) = 16 s (activities/
# exchange.py: a request sent later could execute after the retry's look-up), so it needs room beyond.
ORDER_ATTEMPT_TIMEOUT = timedelta(seconds=60)
PUBLISH_PAUSE_S = 5.0
PUBLISH_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=3)
PROJECTION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=15), maximum_attempts=0
)


def _venue_reason(client_id: str, hard_stop_prefix: str) -> str:
    if client_id.startswith(hard_stop_prefix):
        return ExitReason.HARD_STOP.value
    if client_id.startswith("autoclose"):
        return ExitReason.LIQUIDATION.value
    if client_id.startswith("adl_autoclose"):
        return ExitReason.ADL.value
    return ExitReason.EXCHANGE_CLOSED.value


_T = TypeVar("_T")
_NO_INPUT = object()  # started without an argument (`temporal workflow start` without --input)
TRANSIENT_STATUSES = (PositionStatus.VALIDATING, PositionStatus.GOVERNING, PositionStatus.ENTERING)
TERMINAL_STATUSES = (
    PositionStatus.CLOSED,
    PositionStatus.REJECTED,
    PositionStatus.FAILED,
    PositionStatus.CANCELLED,
)


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
                type="InvalidIntent",
                non_retryable=True,
            )
        inp = raw if isinstance(raw, PositionInput) else PositionInput.model_validate(raw)
        self.input = inp
        carry = inp.carry
        self.intent: TradeIntent = inp
        self.options = inp.options
        self.status = PositionStatus.VALIDATING
        self.rules = carry.rules if carry else None
        self.grant: Grant | None = carry.grant if carry else None
        self.denial: Denial | None = None
        self.fills: list[Fill] = list(carry.fills) if carry else []
        self.profile: ExitProfile | None = carry.profile if carry else None
        self.exit_state: ExitState | None = carry.exit_state if carry else None
        self.hard_stop_id: str | None = carry.hard_stop_id if carry else None
        self.hard_stop_seq = carry.hard_stop_seq if carry else 0
        self.levels_version = carry.levels_version if carry else 0
        self._published: tuple[Decimal | None, Decimal | None] | None = None
        self._publishing: asyncio.Future[None] | None = None
        self._price: Decimal | None = carry.pending_price if carry else None  # latest price to decide on
        meter = workflow.metric_meter()
        self._unreachable_alerts = meter.create_counter(
            "quantum_position_venue_unreachable", "venue reads that kept failing while a position was open"
        )
        self._drift_alerts = meter.create_counter(
            "quantum_position_drift", "venue positions found larger than the workflow's tally"
        )
        self._died_exposed = meter.create_counter(
            "quantum_position_died_exposed", "position workflows that ended with quantity on the venue"
        )
        self._hard_stop_alerts = workflow.metric_meter().create_counter(
            "quantum_hard_stop_refused", "exchange stops the venue refused (the internal stop still holds)"
        )
        self.exit_seq = carry.exit_seq if carry else 0
        self.opened_at_ms = carry.opened_at_ms if carry else 0
        self.mark: Decimal | None = carry.last_mark if carry else None
        if carry:
            self.status = carry.status
        self.exit_reason: str | None = None
        self.exit_controller: str | None = None
        # A flatten or cancel is remembered in every state until the position is flat (a flatten that
        # arrived while the entry was in flight used to be dropped, and the position opened anyway).
        self.flatten_reason: str | None = carry.flatten_reason if carry else None
        self._venue_changed = carry.venue_changed if carry else False
        self.drift_fills: list[Fill] = list(carry.drift_fills) if carry else []
        self._drift = False
        self.unreachable_since_ms: int | None = None
        self._inflight: asyncio.Future | None = None  # the order activity in flight, never cancelled
        self._queue: list[_ExitTicket] = []
        self._results: dict[int, CloseResult] = {}
        self._next_ticket = 0
        self._released = False
        self._projections: list[workflow.ActivityHandle] = []
        self._projection_seq = 0

    # ------------------------------------------------------------------ run
    @workflow.run
    async def run(self, raw: object = _NO_INPUT, *extra: object) -> PositionResult:
        inp = self.input
        if inp.carry is not None and workflow.info().continued_run_id is None:
            raise ApplicationError(
                "carry: only set by the workflow's own continue-as-new",
                type="InvalidIntent",
                non_retryable=True,
            )
        try:
            if inp.carry is None:
                # The confidence behind each position (the model's; 1 for a manual trade), for Grafana.
                workflow.metric_meter().create_histogram_float(
                    "quantum_intent_confidence", "confidence of the intents that start positions"
                ).record(self.intent.confidence, {"source": self.intent.source.value})
                check = await self._validate()
                decision = await self._govern(check)
                if isinstance(decision, Grant) and self.flatten_reason is not None:
                    # Flattened while waiting for the slot: never enter.
                    decision = Denial(
                        holder_id=decision.holder_id, gate=Gate.FLATTENED, reason=self.flatten_reason
                    )
                    self.denial = decision
                    await self._release(Gate.FLATTENED.value, traded=False)
                if isinstance(decision, Denial):
                    self.denial = decision
                    self._set_status(PositionStatus.REJECTED)
                    return self._result()
                self._set_status(PositionStatus.ENTERING)
                if inp.adopt is not None:
                    self._adopt(inp.adopt, await self._prepare_entry())
                    await self._replace_hard_stop(self.exit_state.hard_stop)  # type: ignore[union-attr]
                else:
                    await self._enter()
                if (
                    self.denial is not None
                ):  # below the venue's minimum, entries halted, too late: nothing sent
                    await self._release(self.denial.gate.value, traded=False)
                    self._set_status(PositionStatus.REJECTED)
                    return self._result()
            if self._tally().open_qty > 0 and not self._venue_flat:
                self._set_status(PositionStatus.OPEN)
                if self.flatten_reason is not None and not self._queue:  # remembered from before the entry
                    self._enqueue(None, ExitReason.EMERGENCY_FLATTEN.value, "portfolio")
                self._project("snapshot")  # the read model (and the user-data stream's routing) sees it open
                await self._manage()
            await self._finish_close()
            return self._result()
        except workflow.ContinueAsNewError:
            raise
        except BaseException as err:
            if not is_cancelled_exception(err):
                self._set_status(PositionStatus.FAILED)
                self._alert_if_exposed(err)
                raise
            # An operator cancelled the workflow: take what the order in flight did, flatten what is
            # open, then stop (cancelling the entry used to leave its fill unowned and unprotected).
            self._cancelled = True
            self.flatten_reason = self.flatten_reason or "cancelled"
            await self._settle_inflight()
            if self._tally().open_qty > 0:
                self._queue.append(_ExitTicket(-1, None, ExitReason.CANCELLED.value, "operator"))
                await self._process_exits()
            await self._finish_close(final_status=PositionStatus.CANCELLED)
            raise
        finally:
            # The slot is never given back while the venue may hold this position: a workflow that
            # dies exposed keeps it until reconcile adopts the position (the holder check frees it
            # once the workflow is gone, and the venue position is then adopted with its exits).
            if self.grant is not None and not self._released and not self._continuing and not self._exposed():
                await self._release("workflow ended" if self.status != PositionStatus.CLOSED else "closed")

    _cancelled = False
    _continuing = False

    # ------------------------------------------------------------------ steps
    async def _validate(self) -> SymbolCheck:
        try:
            return await workflow.execute_local_activity(
                "check_symbol",
                SymbolCheckInput(symbol=self.intent.symbol, want_price=self.intent.quantity is not None),
                result_type=SymbolCheck,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=QUICK_RETRY,
            )
        except (ActivityError, ApplicationError) as err:
            # A local activity's failure arrives as the activity's own ApplicationError, not wrapped.
            cause = err.cause if isinstance(err, ActivityError) else err
            if isinstance(cause, ApplicationError) and cause.type == "UnknownSymbol":
                self._set_status(PositionStatus.FAILED)
                raise ApplicationError(
                    f"symbol: {cause.message}", type="InvalidIntent", non_retryable=True
                ) from None
            raise

    async def _govern(self, check: SymbolCheck) -> Grant | Denial:
        self._set_status(PositionStatus.GOVERNING)
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
                await workflow.execute_activity(
                    "request_reservation",
                    args=[DEFAULT_PORTFOLIO_ID, request],
                    task_queue=LIFECYCLE_TASK_QUEUE,
                    start_to_close_timeout=timedelta(seconds=10),
                    retry_policy=QUICK_RETRY,
                )
            try:
                await workflow.wait_condition(
                    lambda: self._decision is not None, timeout=timedelta(minutes=2)
                )
            except TimeoutError:
                continue  # the portfolio answers a repeated request with its first decision
        if isinstance(self._decision, Grant):
            self.grant = self._decision
        return self._decision

    async def _prepare_entry(self) -> EntryMarket:
        """Fresh rules and mark price for sizing, once a slot is granted."""
        return await workflow.execute_activity(
            "prepare_entry",
            PrepareEntryInput(symbol=self.intent.symbol),
            result_type=EntryMarket,
            task_queue=EXCHANGE_TASK_QUEUE,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=QUICK_RETRY,
        )

    async def _enter(self) -> None:
        """Size, leverage and the entry order in one exchange activity (each workflow step costs a task
        round trip): the order's client id is fixed by the workflow, so every attempt looks it up first.
        The activity is never cancelled with the workflow: a cancel waits for what it did."""
        assert self.grant is not None
        start_ms = int(workflow.info().start_time.timestamp() * 1000)
        self._order_in_flight = True
        self._inflight = workflow.start_activity(
            "open_entry",
            OpenEntryInput(
                symbol=self.intent.symbol,
                side=self.intent.side.entry_order_side,  # type: ignore[arg-type]
                leverage=self.intent.leverage,
                notional_usdt=self.grant.notional_usdt,
                quantity=self.intent.quantity,
                client_order_id=client_order_id(workflow.info().workflow_id, "entry"),
                intent_at_ms=start_ms,
                deadline_ms=start_ms + int(self.options.entry_deadline_seconds * 1000),
            ),
            result_type=OpenEntryOutcome,
            task_queue=EXCHANGE_TASK_QUEUE,
            start_to_close_timeout=ORDER_ATTEMPT_TIMEOUT,
            retry_policy=ORDER_RETRY,
        )
        try:
            entry: OpenEntryOutcome = await asyncio.shield(self._inflight)
        except ActivityError as err:
            self._inflight = None
            cause = err.cause
            if not (isinstance(cause, ApplicationError) and cause.type == "EntriesHalted"):
                raise
            self.exit_reason = ExitReason.ENTRY_UNFILLED.value
            self.denial = Denial(holder_id=self.grant.holder_id, gate=Gate.VENUE_HALT, reason=cause.message)
            return
        finally:
            self._order_in_flight = False
        self._inflight = None
        market = entry.market
        self.rules = market.rules
        if entry.outcome is None:
            self.exit_reason = ExitReason.ENTRY_UNFILLED.value
            if entry.expired:
                self.denial = Denial(
                    holder_id=self.grant.holder_id,
                    gate=Gate.ENTRY_DEADLINE,
                    reason=f"not executed within {self.options.entry_deadline_seconds:g} s of the intent: "
                    "nothing was sent after that",
                )
                return
            self.denial = Denial(
                holder_id=self.grant.holder_id,
                gate=Gate.EXCHANGE_MINIMUM,
                reason=f"granted {self.grant.notional_usdt} USDT is below the exchange minimum "
                f"({market.rules.min_notional} USDT, {market.rules.market_min_qty} qty)",
            )
            return
        outcome = entry.outcome
        self._record_fills(outcome)
        self.opened_at_ms = int(workflow.now().timestamp() * 1000)
        filled = self._tally()
        if filled.open_qty <= 0:
            self.exit_reason = ExitReason.ENTRY_UNFILLED.value
            return
        filled_notional = filled.entry_notional
        if filled_notional < self.grant.notional_usdt:
            await self._tell_portfolio(
                "adjust_reservation",
                AdjustRequest(holder_id=self.grant.holder_id, notional_usdt=filled_notional),
            )
        self._arm_exits(market, filled)
        self.mark = outcome.avg_price
        await self._replace_hard_stop(self.exit_state.hard_stop)  # type: ignore[union-attr]
        self._project("apply_result", action="entry", outcome=outcome)

    async def _settle_inflight(self) -> None:
        """After a cancel: wait for the order activity that was in flight and take its fills."""
        task, self._inflight = self._inflight, None
        if task is None:
            return
        try:
            done = await task
        except ActivityError as err:
            workflow.logger.warning("the order in flight at the cancel failed: %s", err.cause)
            return
        finally:
            self._order_in_flight = False
        if isinstance(done, OpenEntryOutcome):
            self.rules = done.market.rules
            if done.outcome is not None:
                self._record_fills(done.outcome)
                self.opened_at_ms = self.opened_at_ms or int(workflow.now().timestamp() * 1000)
        else:
            self._record_fills(done)

    def _exposed(self) -> bool:
        return self._tally().open_qty > 0 or self._inflight is not None

    def _alert_if_exposed(self, err: BaseException) -> None:
        """A position that dies with money on the venue must be loud: reconcile adopts it, with this
        trade's exits, but an operator has to know."""
        if not self._exposed():
            return
        self._died_exposed.add(1, {"symbol": self.intent.symbol})
        workflow.logger.error(
            "ALERT position %s ended %s with %s %s open on the venue: %s",
            workflow.info().workflow_id,
            self.status.value,
            self._tally().open_qty,
            self.intent.symbol,
            err,
        )

    def _adopt(self, adopted: AdoptedPosition, market: EntryMarket) -> None:
        """Take a position found on the venue as it is: its quantity at its entry price."""
        self.rules = market.rules
        self.opened_at_ms = int(workflow.now().timestamp() * 1000)
        self.fills.append(
            Fill(
                client_order_id=client_order_id(workflow.info().workflow_id, "adopted"),
                side=self.intent.side.entry_order_side,  # type: ignore[arg-type]
                price=adopted.entry_price,
                qty=adopted.quantity,
                fee=Decimal(0),
                time_ms=self.opened_at_ms,
            )
        )
        self.mark = market.mark_price
        self._arm_exits(market, self._tally())

    def _arm_exits(self, market: EntryMarket, filled: PositionTally) -> None:
        assert self.grant is not None
        self.profile, stop_price = resolve_profile(
            self.grant.exit_profile, self.intent.exits, self.intent.side, filled.avg_entry
        )
        self.exit_state = initial_state(
            self.intent.side,
            filled.avg_entry,
            filled.open_qty,
            self.intent.leverage,
            filled.fees,
            self.profile,
            market.rules,
            self.opened_at_ms,
            stop_price,
        )

    async def _replace_hard_stop(self, price: Decimal) -> None:
        """Cancel-and-replace the exchange stop, each with its own client id: never two live stops."""
        if self.hard_stop_id is not None:
            await self._cancel_hard_stop()
        self.hard_stop_seq += 1
        stop_id = client_order_id(workflow.info().workflow_id, f"hstop{self.hard_stop_seq}")
        try:
            await workflow.execute_activity(
                "place_stop",
                PlaceStopInput(
                    symbol=self.intent.symbol,
                    side=self.intent.side.exit_order_side,
                    trigger_price=price,
                    client_algo_id=stop_id,
                ),
                result_type=StopOutcome,
                task_queue=EXCHANGE_TASK_QUEUE,
                start_to_close_timeout=ORDER_ATTEMPT_TIMEOUT,
                retry_policy=ORDER_RETRY,
            )
            self.hard_stop_id = stop_id
        except ActivityError as err:
            # The venue refused it (e.g. -2021 "would immediately trigger"). The position is not left
            # unprotected: the internal stop still holds, the next price check closes it if the price
            # is already past, the next stop move tries again, and operators see the alert metric.
            workflow.logger.warning("hard stop at %s refused: %s", price, err.cause)
            self._hard_stop_alerts.add(1, {"symbol": self.intent.symbol})
            self.hard_stop_id = None

    async def _cancel_hard_stop(self) -> None:
        assert self.hard_stop_id is not None
        await self._venue_read(
            "cancel_stop",
            CancelStopInput(symbol=self.intent.symbol, client_algo_id=self.hard_stop_id),
            bool,
            timedelta(seconds=10),
        )
        self.hard_stop_id = None

    async def _venue_read(self, name: str, arg: object, result_type: type[_T], limit: timedelta) -> _T:
        """A venue call that must eventually succeed while money is on the venue (a read, or a cancel
        that is idempotent): it never fails the position. After the quick retries it says so (log,
        metric, details) and tries again after a capped pause, for as long as the outage lasts (a 30 s
        outage used to end the workflow FAILED with the position still open and its slot released)."""
        pause = 1.0
        while True:
            try:
                result = await workflow.execute_activity(
                    name,
                    arg,
                    result_type=result_type,
                    task_queue=EXCHANGE_TASK_QUEUE,
                    start_to_close_timeout=limit,
                    retry_policy=QUICK_RETRY,
                )
            except ActivityError as err:
                cause = err.cause
                if isinstance(cause, ApplicationError) and cause.non_retryable:
                    raise
                self._venue_unreachable(name, err)
                await workflow.sleep(pause)
                pause = min(pause * 2, VENUE_READ_PAUSE_MAX_S)
                continue
            self._venue_reachable()
            return result

    def _venue_unreachable(self, what: str, err: BaseException) -> None:
        if self.unreachable_since_ms is None:
            self.unreachable_since_ms = int(workflow.now().timestamp() * 1000)
            self._unreachable_alerts.add(1, {"symbol": self.intent.symbol, "call": what})
            workflow.logger.error(
                "ALERT position %s cannot reach the venue (%s: %s); %s %s open, still managed, retrying",
                workflow.info().workflow_id,
                what,
                err.cause if isinstance(err, ActivityError) else err,
                self._tally().open_qty,
                self.intent.symbol,
            )
            self._update_details()

    def _venue_reachable(self) -> None:
        if self.unreachable_since_ms is not None:
            workflow.logger.warning("position %s reaches the venue again", workflow.info().workflow_id)
            self.unreachable_since_ms = None
            self._update_details()

    async def _manage(self) -> None:
        self._publish_levels()
        while self._tally().open_qty > 0 and not self._venue_flat:
            if not self._queue and self._price is None:
                try:
                    await workflow.wait_condition(
                        lambda: (
                            bool(self._queue)
                            or self._price is not None
                            or self._publish_due()
                            or self._venue_changed
                            or self._drift
                        ),
                        timeout=timedelta(seconds=self.options.mark_check_seconds),
                    )
                except TimeoutError:
                    await self._check_mark()  # the safety net when the watcher is down
            if self._venue_changed:
                await self._settle_with_venue()
            if self._drift:
                await self._correct_drift()
            await self._process_exits()
            if self._price is not None and self._tally().open_qty > 0 and not self._venue_flat:
                price, self._price = self._price, None
                await self._apply_exit_policies(price)
            self._publish_levels()
            if self._should_continue_as_new():
                if workflow.patched("can-at-a-quiet-point"):
                    # Only here, at a point where the loop itself has drained every request: waiting
                    # for an empty queue would wait on this very loop (a close or a flatten that came
                    # with an exit in flight was never served, its update never answered).
                    if not self._queue and workflow.all_handlers_finished():
                        self._hand_over()
                else:
                    await self._continue_as_new()

    async def _check_mark(self) -> None:
        try:
            self.mark = await workflow.execute_activity(
                "get_mark_price",
                MarkPriceInput(symbol=self.intent.symbol),
                result_type=Decimal,
                task_queue=EXCHANGE_TASK_QUEUE,
                start_to_close_timeout=timedelta(seconds=5),
                retry_policy=MARK_RETRY,
            )
        except ActivityError as err:
            # Not fatal: the watcher's prices still drive the exits, the next timer tries again.
            self._venue_unreachable("get_mark_price", err)
            return
        self._venue_reachable()
        if self._price is None:
            self._price = self.mark
        if self.hard_stop_id is None and self.exit_state is not None and self._tally().open_qty > 0:
            await self._replace_hard_stop(self.exit_state.hard_stop)  # try again after a refusal
        self._update_details()

    async def _apply_exit_policies(self, price: Decimal) -> None:
        """Let the exit engine act on this price until it has nothing more to do (several levels
        crossed at once are handled one after another, each against the state the last one left)."""
        assert self.profile is not None and self.exit_state is not None and self.rules is not None
        self.mark = price
        for _ in range(16):  # every action consumes a level or closes everything: this ends quickly
            open_qty = self._tally().open_qty
            if open_qty <= 0 or self._venue_flat:
                return
            now_ms = int(workflow.now().timestamp() * 1000)
            action, state = evaluate(
                self.profile,
                self.exit_state,
                self.intent.side,
                open_qty,
                price,
                self.intent.leverage,
                self.rules,
                now_ms,
            )
            self.exit_state = state
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
            t = self._tally()
            assert self.rules is not None
            qty = close_quantity(ticket.quantity, t.open_qty, self.rules)
            if qty <= 0 or self._venue_flat:
                self._results[ticket.ticket] = CloseResult(
                    closed_qty=Decimal(0),
                    avg_price=Decimal(0),
                    remaining_qty=t.open_qty,
                    noop=True,
                    detail="nothing open to close" if t.open_qty <= 0 else "quantity rounds to zero",
                )
                continue
            try:
                outcome = await self._close(qty, ticket.reason, ticket.controller)
            except _ExitRefused as refused:
                self._results[ticket.ticket] = CloseResult(
                    closed_qty=Decimal(0),
                    avg_price=Decimal(0),
                    remaining_qty=self._tally().open_qty,
                    noop=True,
                    detail=f"refused by the exchange: {refused}",
                )
                continue
            if outcome is None:
                self._results[ticket.ticket] = CloseResult(
                    closed_qty=Decimal(0),
                    avg_price=Decimal(0),
                    remaining_qty=self._tally().open_qty,
                    noop=True,
                    detail=f"the exchange had already closed the position ({self.exit_reason})",
                )
                continue
            self._results[ticket.ticket] = CloseResult(
                closed_qty=outcome.executed_qty,
                avg_price=outcome.avg_price,
                remaining_qty=self._tally().open_qty,
            )

    async def _close(self, qty: Decimal, reason: str, controller: str) -> OrderOutcome | None:
        """One reduce-only order. None when the venue had nothing left to reduce (its hard stop or a
        liquidation closed the position): then the venue's fills are taken instead."""
        self._set_status(PositionStatus.CLOSING)
        self.exit_seq += 1
        try:
            outcome = await self._order(
                self.intent.side.exit_order_side, qty, f"x{self.exit_seq}", reduce_only=True
            )
        except ActivityError as err:
            # Refused for good (e.g. a filter the venue changed): the position stays managed, the
            # next decision tries again, and operators see it; it must never end the workflow.
            self._set_status(PositionStatus.OPEN)
            workflow.logger.error(
                "ALERT exit of %s %s refused: %s", qty, self.intent.symbol, err.cause or err
            )
            raise _ExitRefused(str(err.cause or err)) from None
        if outcome.status == OrderStatus.REJECTED and outcome.executed_qty == 0:
            await self._settle_with_venue()
            return None
        self.exit_reason, self.exit_controller = reason, controller
        self._project("apply_result", action="exit", outcome=outcome)
        if self._tally().open_qty > 0:
            self._set_status(PositionStatus.OPEN)
        return outcome

    # ------------------------------------------------------------------ trigger levels
    def _levels(self) -> tuple[Decimal | None, Decimal | None]:
        if (
            self.profile is None
            or self.exit_state is None
            or self.rules is None
            or self._tally().open_qty <= 0
        ):
            return None, None
        return trigger_levels(
            self.profile, self.exit_state, self.intent.side, self.intent.leverage, self.rules
        )

    def _publish_due(self) -> bool:
        if self._publishing is not None and not self._publishing.done():
            return False
        if workflow.time() < self._publish_retry_at:  # Redis trouble: retry on a later wake-up
            return False
        return self._levels() != self._published

    def _publish_levels(self, *, remove: bool = False) -> None:
        """Tell the price watcher the new levels (one write in flight; Redis trouble never blocks)."""
        if not remove and not self._publish_due():
            return
        above, below = (None, None) if remove else self._levels()
        self.levels_version += 1
        self._published = (above, below)
        self._publishing = asyncio.ensure_future(
            self._publish(
                PublishLevelsInput(
                    workflow_id=workflow.info().workflow_id,
                    symbol=self.intent.symbol,
                    above=above,
                    below=below,
                    version=self.levels_version,
                    remove=remove,
                )
            )
        )

    async def _publish(self, inp: PublishLevelsInput) -> None:
        try:
            await workflow.execute_activity(
                "publish_levels",
                inp,
                task_queue=LIFECYCLE_TASK_QUEUE,
                start_to_close_timeout=timedelta(seconds=5),
                retry_policy=PUBLISH_RETRY,
            )
        except ActivityError:
            # Publish again after a pause (the mark timer protects the position meanwhile), rather
            # than retrying in a tight loop that would only grow the history while Redis is down.
            self._published = None
            self._publish_retry_at = workflow.time() + PUBLISH_PAUSE_S

    async def _settle_with_venue(self) -> None:
        """Take the venue's fills for this position and its word on the size: the venue closed some or
        all of it on its own (hard stop, liquidation, ADL, a close made by hand on the venue). Only
        fills after this position's entry count, never more than is open: an earlier position on the
        same symbol must not leak into this one, and a venue fill that also closed an excess (drift)
        counts only up to the open quantity."""
        self._venue_changed = False
        known = {f.order_id: f.client_order_id for f in self.fills if f.order_id is not None}
        since = min((f.time_ms for f in self.fills if f.time_ms), default=self.opened_at_ms) - 1_000
        fills = await self._venue_read(
            "sync_fills",
            SyncFillsInput(symbol=self.intent.symbol, since_ms=since, order_ids=known),
            list[Fill],  # type: ignore[arg-type]
            timedelta(seconds=20),
        )
        # Trade ids rise per symbol: everything after this position's first entry fill is its own.
        first = min((f.trade_id for f in self.fills if f.trade_id is not None), default=-1)
        seen = {f.trade_id for f in [*self.fills, *self.drift_fills]}
        new = []
        room = self._tally().open_qty
        for f in sorted(fills, key=lambda f: f.trade_id or 0):
            if f.trade_id in seen or f.side != self.intent.side.exit_order_side or (f.trade_id or 0) <= first:
                continue
            if room <= 0:
                break
            if f.qty > room:
                workflow.logger.error(
                    "venue fill %s exceeds the open quantity %s: %s of it is ours", f, room, room
                )
                f = f.model_copy(update={"qty": room, "fee": f.fee * room / f.qty})
            room -= f.qty
            new.append(f)
        self.fills.extend(new)
        self._update_details()
        if new:
            self.exit_reason = _venue_reason(new[-1].client_order_id, self._hard_stop_prefix())
            self.exit_controller = "exchange"
            if self.exit_reason == ExitReason.HARD_STOP.value:
                self.hard_stop_id = None  # it has fired: nothing left to cancel
        if self._tally().open_qty > 0:
            venue = await self._read_position()
            held = venue.position_amt * self.intent.side.sign
            self._venue_flat = held <= 0
            if self._venue_flat:
                # The venue holds nothing, yet no fill explains it: book the rest at the venue's mark,
                # loudly, so the trade is closed, journaled and released rather than left open forever.
                rest = self._tally().open_qty
                workflow.logger.error(
                    "ALERT venue flat on %s but %s unexplained by its fills: closed at mark %s",
                    self.intent.symbol,
                    rest,
                    venue.mark_price or self.mark,
                )
                self.fills.append(
                    Fill(
                        client_order_id=client_order_id(workflow.info().workflow_id, "venueflat"),
                        side=self.intent.side.exit_order_side,  # type: ignore[arg-type]
                        price=venue.mark_price or self.mark or self._tally().avg_entry,
                        qty=rest,
                        fee=Decimal(0),
                        time_ms=int(workflow.now().timestamp() * 1000),
                    )
                )
                self.exit_reason = self.exit_reason or ExitReason.EXCHANGE_CLOSED.value
                self.exit_controller = "exchange"
            elif held > self._tally().open_qty:
                self._drift = True

    async def _read_position(self) -> ExchangePosition:
        return await self._venue_read(
            "get_position",
            ExchangePositionInput(symbol=self.intent.symbol),
            ExchangePosition,
            timedelta(seconds=10),
        )

    async def _correct_drift(self) -> None:
        """The venue holds more than this position's tally (an order executed after we gave up on it,
        or something added by hand): alert, then close the excess so nothing on the venue is
        unmanaged. The excess's fills are kept apart: they are not this trade's PnL."""
        self._drift = False
        venue = await self._read_position()
        excess = venue.position_amt * self.intent.side.sign - self._tally().open_qty
        assert self.rules is not None
        qty = close_quantity(excess, excess, self.rules) if excess > 0 else Decimal(0)
        if qty <= 0:
            return
        self._drift_alerts.add(1, {"symbol": self.intent.symbol})
        workflow.logger.error(
            "ALERT drift on %s: the venue holds %s, position %s %s; closing the excess %s",
            self.intent.symbol,
            venue.position_amt,
            workflow.info().workflow_id,
            self._tally().open_qty,
            qty,
        )
        self.exit_seq += 1
        self._order_in_flight = True
        try:
            outcome = await workflow.execute_activity(
                "place_order",
                PlaceOrderInput(
                    symbol=self.intent.symbol,
                    side=self.intent.side.exit_order_side,
                    quantity=qty,  # type: ignore[arg-type]
                    client_order_id=client_order_id(workflow.info().workflow_id, f"drift{self.exit_seq}"),
                    reduce_only=True,
                ),
                result_type=OrderOutcome,
                task_queue=EXCHANGE_TASK_QUEUE,
                start_to_close_timeout=ORDER_ATTEMPT_TIMEOUT,
                retry_policy=ORDER_RETRY,
            )
        except ActivityError as err:
            workflow.logger.error(
                "ALERT the drift close on %s was refused: %s", self.intent.symbol, err.cause
            )
            return
        finally:
            self._order_in_flight = False
        self.drift_fills.extend(outcome.fills)

    _venue_flat = False
    _venue_changed = False
    _publish_retry_at = 0.0
    _order_in_flight = False

    def _hard_stop_prefix(self) -> str:
        return client_order_id(workflow.info().workflow_id, "hstop").rsplit(".", 1)[0] + ".hstop"

    async def _finish_close(self, final_status: PositionStatus = PositionStatus.CLOSED) -> None:
        if self.hard_stop_id is not None:
            await self._cancel_hard_stop()
        if self._published is not None:
            self._publish_levels(remove=True)
        self._set_status(final_status)
        if self.grant is not None and not self._released:
            await self._release(self.exit_reason or final_status.value.lower())
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
            ticket = self._queue.pop(0)
            self._results[ticket.ticket] = CloseResult(
                closed_qty=Decimal(0),
                avg_price=Decimal(0),
                remaining_qty=self._tally().open_qty,
                noop=True,
                detail=f"already {self.status.value.lower()}: nothing open to close",
            )

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
            opened_at_ms=self.opened_at_ms,
            closed_at_ms=int(workflow.now().timestamp() * 1000),
            exit_reason=self.exit_reason or self.status.value.lower(),
            exit_controller=self.exit_controller,
        )
        self._projections.append(
            workflow.start_activity(
                "journal_trade",
                trade,
                task_queue=LIFECYCLE_TASK_QUEUE,
                start_to_close_timeout=timedelta(seconds=10),
                schedule_to_close_timeout=timedelta(days=1),  # a database outage of up to a day
                retry_policy=PROJECTION_RETRY,
            )
        )

    # ------------------------------------------------------------------ orders
    async def _order(self, side: str, qty: Decimal, step: str, *, reduce_only: bool) -> OrderOutcome:
        self._order_in_flight = True
        try:
            return await self._place(side, qty, step, reduce_only=reduce_only)
        finally:
            self._order_in_flight = False

    async def _place(self, side: str, qty: Decimal, step: str, *, reduce_only: bool) -> OrderOutcome:
        # Shielded: cancelling the workflow must not cancel an order that may already have executed.
        self._inflight = workflow.start_activity(
            "place_order",
            PlaceOrderInput(
                symbol=self.intent.symbol,
                side=side,
                quantity=qty,  # type: ignore[arg-type]
                client_order_id=client_order_id(workflow.info().workflow_id, step),
                reduce_only=reduce_only,
                intent_at_ms=int(workflow.info().start_time.timestamp() * 1000),
            ),
            result_type=OrderOutcome,
            task_queue=EXCHANGE_TASK_QUEUE,
            start_to_close_timeout=ORDER_ATTEMPT_TIMEOUT,
            retry_policy=ORDER_RETRY,
        )
        try:
            outcome = await asyncio.shield(self._inflight)
        except ActivityError:
            self._inflight = None
            raise
        self._inflight = None
        self._record_fills(outcome)
        return outcome

    def _record_fills(self, outcome: OrderOutcome) -> None:
        known = {(f.client_order_id, f.trade_id) for f in self.fills}
        self.fills.extend(f for f in outcome.fills if (f.client_order_id, f.trade_id) not in known)
        self._update_details()

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

    async def _release(self, reason: str, *, traded: bool | None = None) -> None:
        assert self.grant is not None
        self._released = True
        if traded is None:
            traded = bool(self.fills)
        await self._tell_portfolio(
            "release_reservation",
            ReleaseRequest(holder_id=self.grant.holder_id, reason=reason, cooldown=traded),
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
        """Continue as new with everything this position knows: what arrived during the hand-over
        (a flatten, the venue's word, the latest price) is carried, not lost. Projections still
        retrying are left behind: the read model catches up from the next run's writes, and a Redis
        outage must not keep a position from being managed."""
        assert self.rules is not None and self.grant is not None
        assert self.profile is not None and self.exit_state is not None
        self._continuing = True
        carried = PositionInput.model_validate(
            {**self.intent.model_dump(exclude={"options", "carry"}), "options": self.options}
        )
        workflow.continue_as_new(
            carried.model_copy(
                update={
                    "carry": PositionCarry(
                        status=self.status,
                        rules=self.rules,
                        grant=self.grant,
                        fills=self.fills,
                        profile=self.profile,
                        exit_state=self.exit_state,
                        hard_stop_id=self.hard_stop_id,
                        hard_stop_seq=self.hard_stop_seq,
                        levels_version=self.levels_version,
                        exit_seq=self.exit_seq,
                        opened_at_ms=self.opened_at_ms,
                        last_mark=self.mark,
                        flatten_reason=self.flatten_reason,
                        venue_changed=self._venue_changed or self._drift,
                        pending_price=self._price,
                        drift_fills=self.drift_fills,
                    )
                }
            )
        )

    # ------------------------------------------------------------------ messages
    @workflow.signal(name="reservation_decided")
    def reservation_decided(self, decision: Grant | Denial) -> None:
        if getattr(self, "_decision", None) is None:
            self._decision = decision

    @workflow.signal(name="emergency_flatten")
    def emergency_flatten(self, req: FlattenRequest) -> None:
        if self.status in TERMINAL_STATUSES:
            return
        first = self.flatten_reason is None
        self.flatten_reason = self.flatten_reason or req.reason
        if first and self.status in (PositionStatus.OPEN, PositionStatus.CLOSING):
            self._enqueue(None, ExitReason.EMERGENCY_FLATTEN.value, "portfolio")
        # VALIDATING/GOVERNING/ENTERING: remembered; the position never enters, or closes its fill.

    @workflow.signal(name="price_crossed")
    def price_crossed(self, raw: dict) -> None:
        try:
            tick = parse_message(PriceCrossed, raw)
        except ValueError:
            workflow.logger.warning("ignored a malformed price_crossed signal: %s", raw)
            return
        if tick.symbol == self.intent.symbol and self.status in (PositionStatus.OPEN, PositionStatus.CLOSING):
            self._price = tick.price  # only the latest price matters

    @workflow.signal(name="exchange_event")
    def exchange_event(self, raw: dict) -> None:
        """From the user-data stream (or reconcile): the venue did something. Fills of this position's own
        orders are accounted by the order activity; anything else means the venue changed the
        position (its hard stop, a liquidation, ADL, a close by hand on the venue): settle with it."""
        try:
            event = parse_message(ExchangeEvent, raw)
        except ValueError:
            workflow.logger.warning("ignored a malformed exchange_event signal: %s", raw)
            return
        if event.symbol != self.intent.symbol or self.status not in (
            PositionStatus.OPEN,
            PositionStatus.CLOSING,
        ):
            return
        if event.kind == "order_update":
            cid = event.client_order_id or ""
            own_order = cid.startswith(self._own_prefix()) and not cid.startswith(self._hard_stop_prefix())
            venue_fill = event.exec_type in ("TRADE", "CALCULATED")  # CALCULATED: liquidation, ADL
            if (venue_fill and not own_order) or event.reason in ("liquidation", "adl"):
                self._venue_changed = True
        elif event.kind == "algo_update":
            if event.order_status in ("TRIGGERED", "FINISHED") and (event.client_order_id or "").startswith(
                self._hard_stop_prefix()
            ):
                self._venue_changed = True
        elif event.position_amt is not None and not self._order_in_flight:
            venue_qty = event.position_amt * self.intent.side.sign
            if venue_qty < self._tally().open_qty:
                self._venue_changed = True
            elif venue_qty > self._tally().open_qty:
                self._drift = True  # checked against a fresh read before anything is sent

    def _own_prefix(self) -> str:
        return client_order_id(workflow.info().workflow_id, "entry").rsplit(".", 1)[0] + "."

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
            raise ApplicationError(str(err), type="CloseRefused", non_retryable=True) from None
        if self.status not in (PositionStatus.OPEN, PositionStatus.CLOSING):
            raise ApplicationError(
                f"position is {self.status.value}, not open: nothing to close",
                type="CloseRefused",
                non_retryable=True,
            )
        open_qty = self._tally().open_qty
        if req.quantity is not None and req.quantity > open_qty:
            raise ApplicationError(
                f"quantity {req.quantity} exceeds the open quantity {open_qty}",
                type="CloseRefused",
                non_retryable=True,
            )

    @workflow.query(name="state")
    def state(self) -> PositionView:
        t = self._tally()
        return PositionView(
            workflow_id=workflow.info().workflow_id,
            status=self.status,
            symbol=self.intent.symbol,
            side=self.intent.side,
            open_qty=t.open_qty,
            entry_price=t.open_entry_price or t.avg_entry,
            mark_price=self.mark,
            unrealized_pnl=t.unrealized(self.mark) if self.mark and t.open_qty else None,
            realized_pnl=t.realized_net,
            fees=t.fees,
            stop_loss_price=self.exit_state.stop if self.exit_state else None,
            stop_kind=self.exit_state.stop_kind if self.exit_state else None,
            take_profit_price=self._next_target(),
            hard_stop_price=self.exit_state.hard_stop if self.exit_state and self.hard_stop_id else None,
            next_trigger=self._next_trigger(),
            trigger_above=self._levels()[0],
            trigger_below=self._levels()[1],
            reason=self.exit_reason or (self.denial.reason if self.denial else None),
            venue_unreachable_since_ms=self.unreachable_since_ms,
        )

    @workflow.query(name="fills")
    def get_fills(self) -> list[Fill]:
        return list(self.fills)

    @workflow.query(name="pnl")
    def pnl(self) -> dict[str, Decimal]:
        t = self._tally()
        return {
            "realized_gross": t.realized_gross,
            "fees": t.fees,
            "realized_net": t.realized_net,
            "unrealized": t.unrealized(self.mark) if self.mark else Decimal(0),
        }

    # ------------------------------------------------------------------ helpers
    def _enqueue(self, quantity: Decimal | None, reason: str, controller: str) -> int:
        self._next_ticket += 1
        self._queue.append(_ExitTicket(self._next_ticket, quantity, reason, controller))
        return self._next_ticket

    def _tally(self) -> PositionTally:
        return tally(self.intent.side, self.fills)

    def _next_target(self) -> Decimal | None:
        p, st = self.profile, self.exit_state
        if (
            p is None
            or st is None
            or self.rules is None
            or not p.tp_enabled
            or st.tps_done >= len(p.tp_levels)
        ):
            return None
        pct = p.tp_levels[st.tps_done].at
        return self.rules.round_price(st.entry * (1 + self.intent.side.sign * pct / 100))

    def _next_trigger(self) -> str | None:
        if self.exit_state is None or self.status != PositionStatus.OPEN:
            return None
        parts = [f"{self.exit_state.stop_kind.replace('_', ' ')} {self.exit_state.stop}"]
        target = self._next_target()
        if target is not None:
            parts.append(f"target {target}")
        if self.hard_stop_id is not None:
            parts.append(f"hard stop {self.exit_state.hard_stop}")
        above, below = self._levels()
        parts.append(f"watching {below} / {above}")
        return ", ".join(parts)

    def _set_status(self, status: PositionStatus) -> None:
        self.status = status
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
        if self.opened_at_ms:
            pairs.append(
                SearchAttributePair(SA_OPENED_AT, datetime.fromtimestamp(self.opened_at_ms / 1000, tz=UTC))
            )
        workflow.upsert_search_attributes(pairs)
        self._update_details()

    _indexed_qty: Decimal | None = None

    def _update_details(self) -> None:
        open_qty = self._tally().open_qty
        if self.status not in TRANSIENT_STATUSES and open_qty != self._indexed_qty:
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
        if self.unreachable_since_ms is not None:
            since = datetime.fromtimestamp(self.unreachable_since_ms / 1000, tz=UTC).strftime("%H:%M:%S")
            lines.append(f"**venue unreachable since {since} UTC**: still managed, retrying")
        if self.flatten_reason is not None and self.status not in TERMINAL_STATUSES:
            lines.append(f"flatten requested: {self.flatten_reason}")
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
            workflow.start_activity(
                "project_position",
                ProjectionInput(
                    kind=kind,
                    action=action,
                    view=self.state(),
                    outcome=outcome,
                    intent=self.intent,
                    result=result,
                    event_ms=int(workflow.now().timestamp() * 1000),
                    seq=self._projection_seq,
                ),
                task_queue=LIFECYCLE_TASK_QUEUE,
                start_to_close_timeout=timedelta(seconds=5),
                schedule_to_close_timeout=timedelta(hours=1),
                retry_policy=PROJECTION_RETRY,
            )
        )

    def _result(self) -> PositionResult:
        base = dict(
            workflow_id=workflow.info().workflow_id,
            status=self.status,
            symbol=self.intent.symbol,
            side=self.intent.side,
            intent_id=self.intent.intent_id,
            strategy=self.intent.strategy,
            exit_reason=self.exit_reason,
            exit_controller=self.exit_controller,
            rejection_gate=self.denial.gate if self.denial else None,
            rejection_reason=self.denial.reason if self.denial else None,
            fills=self.fills,
        )
        return PositionResult.from_tally(base, self._tally())
