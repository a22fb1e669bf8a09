"""PositionWorkflow's management of an open position: the loop that waits for a price, a close or a
flatten, the exit engine (trading/exit_policy.py) acting one action at a time, the queue of manual
closes and flattens, each exit order and what it did, the trigger levels published to the price
watcher, and the continue-as-new at a quiet point of the loop."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from trading.execution import MarkPriceInput, OrderOutcome, OrderStatus
    from trading.exit_policy import evaluate, trigger_levels
    from trading.exits import close_quantity
    from trading.position_state import must_flatten, offer_price, take_price
    from workflows import calls
    from workflows.messages import CloseResult, ExitReason, PositionInput, PublishLevelsInput
    from workflows.position_base import E, PositionBase, _ExitTicket

PUBLISH_PAUSE_S = 5.0
PATCH_PUBLISH_PAUSE = "position-publish-pause-timer"


class _ExitRefused(Exception):
    """The venue refused an exit order for good; the position stays open and managed."""


class PositionExits(PositionBase):
    # ------------------------------------------------------------------ managing the open position
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
