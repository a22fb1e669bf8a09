"""How PositionWorkflow ends and what it leaves behind: the exchange stop cancelled, the levels
removed, the slot given back, the trade-journal row, the read-model projections, the result, and
the view's derived fields (next target, next trigger)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from trading.execution import OrderOutcome
    from trading.records import closed_trade
    from workflows import calls
    from workflows.messages import PositionResult, PositionStatus, ProjectionInput
    from workflows.position_base import E, PositionBase


class PositionRecords(PositionBase):
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

    # ------------------------------------------------------------------ records
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
