"""PositionWorkflow's way in: validate the symbol, govern (ask the portfolio for a slot), then execute
the entry (or adopt a position found on the venue) and arm its exits. Also the rest of the portfolio
slot's life: adjusted when the entry filled below the grant, given back when the machine allows."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from trading.execution import (
        EntryMarket,
        OpenEntryInput,
        OpenEntryOutcome,
        PrepareEntryInput,
        SymbolCheck,
        SymbolCheckInput,
    )
    from trading.exit_policy import initial_state, resolve_profile
    from trading.governor import Denial, Gate, Grant, ReservationRequest
    from trading.ids import client_order_id
    from trading.pnl import Fill, PositionTally
    from trading.position_state import mark_released, may_release
    from workflows import calls
    from workflows.errors import ErrorType
    from workflows.messages import (
        DEFAULT_PORTFOLIO_ID,
        AdjustRequest,
        AdoptedPosition,
        ExitReason,
        ReleaseRequest,
    )
    from workflows.position_base import E, PositionBase

# A grant without a parent (the portfolio's `start_positions`) is trusted when its worker vouches for it.
PATCH_GRANT_VOUCHED = "position-grant-vouched-by-worker"


class PositionEntry(PositionBase):
    # ------------------------------------------------------------------ steps
    async def _validate(self) -> SymbolCheck:
        try:
            check = await calls.CHECK_SYMBOL.run(
                SymbolCheckInput(
                    symbol=self.intent.symbol,
                    want_price=self.intent.quantity is not None,
                    vouch_for=workflow.info().workflow_id if self._vouch_asked() else None,
                )
            )
        except (ActivityError, ApplicationError) as err:
            # A local activity's failure arrives as the activity's own ApplicationError, not wrapped.
            cause = err.cause if isinstance(err, ActivityError) else err
            if isinstance(cause, ApplicationError) and cause.type == ErrorType.UNKNOWN_SYMBOL:
                self._on(E.INVALID, reason=cause.message)
                self._show()
                if self._grant_from_portfolio() is not None or self._vouch_asked():
                    # Admitted before it was checked: the slot taken for it goes back now, not at the
                    # portfolio's next holder check.
                    await self._tell_portfolio(
                        "release_reservation",
                        ReleaseRequest(
                            holder_id=workflow.info().workflow_id, reason="invalid symbol", cooldown=False
                        ),
                    )
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
        self._decision: Grant | Denial | None = self._grant_from_portfolio() or self._grant_vouched(check)
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

    def _grant_from_portfolio(self) -> Grant | None:
        """The grant this workflow was started with as the portfolio's child (before the portfolio
        started admitted positions by activity): its parent vouches for it."""
        grant = self.input.grant
        parent = workflow.info().parent
        if grant is None or parent is None or parent.workflow_id != DEFAULT_PORTFOLIO_ID:
            return None
        if grant.holder_id != workflow.info().workflow_id:
            workflow.logger.warning("a grant for %s is ignored: asking the portfolio", grant.holder_id)
            return None
        return grant

    def _vouch_asked(self) -> bool:
        """Started with a grant and no parent (by the portfolio's `start_positions`, or typed in): the
        symbol check asks whether this worker started it with that grant."""
        started_with_grant = self.input.grant is not None and workflow.info().parent is None
        return started_with_grant and workflow.patched(PATCH_GRANT_VOUCHED)

    def _grant_vouched(self, check: SymbolCheck) -> Grant | None:
        """The grant the portfolio's `start_positions` started this workflow with (one portfolio round
        trip fewer), trusted only when the worker that started it vouches for it in the symbol check
        (activities/vouchers.py): an operator's `temporal workflow start` with a grant in its input
        goes through the gates like any intent. Not vouched for (typed in, or started by another
        worker), the position asks the portfolio, which answers a slot it holds with the grant it
        made."""
        grant = self.input.grant
        if grant is None or not self._vouch_asked():
            if grant is not None and workflow.info().parent is None:  # before the patch: ignored
                workflow.logger.warning("a grant not from the portfolio is ignored: asking the portfolio")
            return None
        if grant.holder_id != workflow.info().workflow_id or check.vouched_notional != grant.notional_usdt:
            workflow.logger.info("a grant this worker did not start it with: asking the portfolio")
            return None
        return grant

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
