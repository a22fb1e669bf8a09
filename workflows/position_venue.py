"""PositionWorkflow and the venue: the exchange's hard stop, venue calls that must eventually succeed
while money is on the venue, the venue's own word on the position (its fills, its size, drift), and
the orders, shielded so that cancelling the workflow never cancels one that may have executed."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from trading.execution import (
        CancelStopInput,
        ExchangePosition,
        ExchangePositionInput,
        OpenEntryOutcome,
        OrderOutcome,
        PlaceOrderInput,
        PlaceStopInput,
        SyncFillsInput,
    )
    from trading.exits import close_quantity
    from trading.ids import client_order_id
    from workflows import calls
    from workflows.messages import ExitReason, PositionStatus
    from workflows.position_base import E, PositionBase

# The activities' timeouts and retry policies: workflows/calls.py.
# A venue read while money is on the venue never fails the position: after the quick retries it is
# reported (log, metric, details) and tried again after a capped pause, for as long as it takes.
VENUE_READ_PAUSE_MAX_S = 30.0


def _venue_reason(client_id: str, hard_stop_prefix: str) -> str:
    if client_id.startswith(hard_stop_prefix):
        return ExitReason.HARD_STOP.value
    if client_id.startswith("autoclose"):
        return ExitReason.LIQUIDATION.value
    if client_id.startswith("adl_autoclose"):
        return ExitReason.ADL.value
    return ExitReason.EXCHANGE_CLOSED.value


_T = TypeVar("_T")
_A = TypeVar("_A")


class PositionVenue(PositionBase):
    # ------------------------------------------------------------------ the hard stop
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

    # ------------------------------------------------------------------ venue calls
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
