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

import pydantic
from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey, SearchAttributePair
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

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


_NO_INPUT = object()  # started without an argument (`temporal workflow start` without --input)
TRANSIENT_STATUSES = (PositionStatus.VALIDATING, PositionStatus.GOVERNING, PositionStatus.ENTERING)


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
        self._price: Decimal | None = None  # the latest price to decide on (watcher or mark timer)
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
                if self.denial is not None:  # below the venue's minimum, or entries halted: nothing was sent
                    await self._release(self.denial.gate.value, traded=False)
                    self._set_status(PositionStatus.REJECTED)
                    return self._result()
            if self._tally().open_qty > 0 and not self._venue_flat:
                self._set_status(PositionStatus.OPEN)
                self._project("snapshot")  # the read model (and the user-data stream's routing) sees it open
                await self._manage()
            await self._finish_close()
            return self._result()
        except asyncio.CancelledError:
            # An operator cancelled the workflow: flatten what is open, then stop.
            self._cancelled = True
            if self._tally().open_qty > 0:
                self._queue.append(_ExitTicket(-1, None, "cancelled", "operator"))
                await self._process_exits()
            await self._finish_close(final_status=PositionStatus.CANCELLED)
            raise
        except workflow.ContinueAsNewError:
            raise
        except BaseException:
            self._set_status(PositionStatus.FAILED)
            raise
        finally:
            if self.grant is not None and not self._released and not self._continuing:
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
        round trip): the order's client id is fixed by the workflow, so a retry looks it up first."""
        assert self.grant is not None
        self._order_in_flight = True
        try:
            entry: OpenEntryOutcome = await workflow.execute_activity(
                "open_entry",
                OpenEntryInput(
                    symbol=self.intent.symbol,
                    side=self.intent.side.entry_order_side,  # type: ignore[arg-type]
                    leverage=self.intent.leverage,
                    notional_usdt=self.grant.notional_usdt,
                    quantity=self.intent.quantity,
                    client_order_id=client_order_id(workflow.info().workflow_id, "entry"),
                    intent_at_ms=int(workflow.info().start_time.timestamp() * 1000),
                ),
                result_type=OpenEntryOutcome,
                task_queue=EXCHANGE_TASK_QUEUE,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=ORDER_RETRY,
            )
        except ActivityError as err:
            cause = err.cause
            if not (isinstance(cause, ApplicationError) and cause.type == "EntriesHalted"):
                raise
            self.exit_reason = ExitReason.ENTRY_UNFILLED.value
            self.denial = Denial(holder_id=self.grant.holder_id, gate=Gate.VENUE_HALT, reason=cause.message)
            return
        finally:
            self._order_in_flight = False
        market = entry.market
        self.rules = market.rules
        if entry.outcome is None:
            self.exit_reason = ExitReason.ENTRY_UNFILLED.value
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
            await self._portfolio_signal(
                "adjust_reservation",
                AdjustRequest(holder_id=self.grant.holder_id, notional_usdt=filled_notional),
            )
        self._arm_exits(market, filled)
        self.mark = outcome.avg_price
        await self._replace_hard_stop(self.exit_state.hard_stop)  # type: ignore[union-attr]
        self._project("apply_result", action="entry", outcome=outcome)

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
                start_to_close_timeout=timedelta(seconds=15),
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
        await workflow.execute_activity(
            "cancel_stop",
            CancelStopInput(symbol=self.intent.symbol, client_algo_id=self.hard_stop_id),
            task_queue=EXCHANGE_TASK_QUEUE,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=QUICK_RETRY,
        )
        self.hard_stop_id = None

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
                        ),
                        timeout=timedelta(seconds=self.options.mark_check_seconds),
                    )
                except TimeoutError:
                    await self._check_mark()  # the safety net when the watcher is down
            if self._venue_changed:
                await self._settle_with_venue()
            await self._process_exits()
            if self._price is not None and self._tally().open_qty > 0 and not self._venue_flat:
                price, self._price = self._price, None
                await self._apply_exit_policies(price)
            self._publish_levels()
            if self._should_continue_as_new():
                await self._continue_as_new()

    async def _check_mark(self) -> None:
        self.mark = await workflow.execute_activity(
            "get_mark_price",
            MarkPriceInput(symbol=self.intent.symbol),
            result_type=Decimal,
            task_queue=EXCHANGE_TASK_QUEUE,
            start_to_close_timeout=timedelta(seconds=5),
            retry_policy=QUICK_RETRY,
        )
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
                await self._close(action.quantity, action.reason, action.controller)
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
            outcome = await self._close(qty, ticket.reason, ticket.controller)
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
        outcome = await self._order(
            self.intent.side.exit_order_side, qty, f"x{self.exit_seq}", reduce_only=True
        )
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
        same symbol must not leak into this one."""
        self._venue_changed = False
        known = {f.order_id: f.client_order_id for f in self.fills if f.order_id is not None}
        since = min((f.time_ms for f in self.fills if f.time_ms), default=self.opened_at_ms) - 1_000
        fills = await workflow.execute_activity(
            "sync_fills",
            SyncFillsInput(symbol=self.intent.symbol, since_ms=since, order_ids=known),
            result_type=list[Fill],
            task_queue=EXCHANGE_TASK_QUEUE,
            start_to_close_timeout=timedelta(seconds=20),
            retry_policy=QUICK_RETRY,
        )
        # Trade ids rise per symbol: everything after this position's first entry fill is its own.
        first = min((f.trade_id for f in self.fills if f.trade_id is not None), default=-1)
        seen = {f.trade_id for f in self.fills}
        new = []
        room = self._tally().open_qty
        for f in sorted(fills, key=lambda f: f.trade_id or 0):
            if f.trade_id in seen or f.side != self.intent.side.exit_order_side or (f.trade_id or 0) <= first:
                continue
            if f.qty > room:
                workflow.logger.error("venue fill %s exceeds the open quantity %s: ignored", f, room)
                continue
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
            venue = await workflow.execute_activity(
                "get_position",
                ExchangePositionInput(symbol=self.intent.symbol),
                result_type=ExchangePosition,
                task_queue=EXCHANGE_TASK_QUEUE,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=QUICK_RETRY,
            )
            self._venue_flat = venue.position_amt == 0

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
        # Projections catch up after a Redis outage; the trade itself is already done and released.
        await asyncio.gather(
            *self._projections, *([self._publishing] if self._publishing else []), return_exceptions=True
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
        outcome = await workflow.execute_activity(
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
            start_to_close_timeout=timedelta(seconds=20),
            retry_policy=ORDER_RETRY,
        )
        self._record_fills(outcome)
        return outcome

    def _record_fills(self, outcome: OrderOutcome) -> None:
        known = {(f.client_order_id, f.trade_id) for f in self.fills}
        self.fills.extend(f for f in outcome.fills if (f.client_order_id, f.trade_id) not in known)
        self._update_details()

    # ------------------------------------------------------------------ portfolio
    async def _portfolio_signal(self, name: str, arg: object) -> None:
        await workflow.get_external_workflow_handle(DEFAULT_PORTFOLIO_ID).signal(name, arg)

    async def _release(self, reason: str, *, traded: bool | None = None) -> None:
        assert self.grant is not None
        self._released = True
        if traded is None:
            traded = bool(self.fills)
        await self._portfolio_signal(
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
        await workflow.wait_condition(lambda: workflow.all_handlers_finished() and not self._queue)
        await asyncio.gather(*self._projections, return_exceptions=True)
        assert self.rules is not None and self.grant is not None
        assert self.profile is not None and self.exit_state is not None
        if self._publishing is not None:
            await self._publishing
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
        if self.status in (PositionStatus.OPEN, PositionStatus.CLOSING):
            self._enqueue(None, ExitReason.EMERGENCY_FLATTEN.value, "portfolio")

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
        # Raw JSON parsed here, so a bad field is refused by name before anything reaches history.
        req = parse_message(ClosePositionRequest, raw)
        if self.status not in (PositionStatus.OPEN, PositionStatus.CLOSING):
            raise ValueError(f"position is {self.status.value}, not open: nothing to close")
        open_qty = self._tally().open_qty
        if req.quantity is not None and req.quantity > open_qty:
            raise ValueError(f"quantity {req.quantity} exceeds the open quantity {open_qty}")

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
