"""PortfolioWorkflow's decisions: the requests that can be decided now, each decided in arrival order
by the governor's gates (and the risk layer when it is on), the book updated, and the answers
delivered to their holders by one activity per batch."""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from trading.governor import Denial, Gate, Grant, ReservationRequest, apply_grant, decide, release
    from trading.risk import assess
    from workflows import calls
    from workflows.messages import DecisionBatch
    from workflows.portfolio_base import PATCH_SURVIVE, PortfolioBase

LAST_DECISIONS_KEPT = 50


class PortfolioDecisions(PortfolioBase):
    # ------------------------------------------------------------------ decisions
    def _actionable(self) -> list[ReservationRequest]:
        """Requests that can be decided now: all of them once the startup reconcile is done, before that
        only adoptions of positions the venue already holds. Nothing before a fresh run's book is rebuilt
        (decided against an empty book, every request would pass the limits)."""
        if not self._book_known:
            return []
        if self.book.reconciled:
            return self.pending
        return [p for p in self.pending if p.adoption]

    def _take_actionable(self) -> list[ReservationRequest]:
        """`_actionable()`, taken out of `pending` in one pass. (Filtering `pending` by membership in the
        batch compared pydantic models pairwise: with 500 signals in one workflow task that was 250,000
        comparisons, and the portfolio fell further behind the more it had to decide.)"""
        batch = self._actionable()
        if batch:
            self.pending = [] if batch is self.pending else [p for p in self.pending if not p.adoption]
        return batch

    async def _decide_pending(self) -> None:
        while batch := self._take_actionable():
            now = self._now_ms()
            decisions: list[Grant | Denial] = []
            for req in batch:
                decision = self._decide(req, now)
                self._record_decision(req, decision, now)
                decisions.append(decision)
            self._remember(decisions)
            # Delivered by one activity per batch; decisions go on while it runs.
            self._deliveries.append(asyncio.ensure_future(self._deliver(decisions)))
        if self._admissible():  # intents with no workflow yet (workflows/portfolio_admission.py)
            self._remember(self._admit(self._now_ms()))
        self._deliveries = [d for d in self._deliveries if not d.done()]

    def _record_decision(self, req: ReservationRequest, decision: Grant | Denial, now_ms: int) -> None:
        """The book and the counters after one decision."""
        if isinstance(decision, Grant):
            apply_grant(self.book, req, decision, now_ms)
            if decision.over_limit:
                self._adopted_over.add(1, {"limit": decision.over_limit})
                workflow.logger.error(
                    "adopted %s beyond %s: managed anyway", req.holder_id, decision.over_limit
                )
            self.granted_total += 1
            self._allow.add(1)
        else:
            self.denied_total += 1
            self._deny.add(1, {"gate": decision.gate.value})

    def _remember(self, decisions: list[Grant | Denial]) -> None:
        self.last_decisions = [*self.last_decisions, *decisions][-LAST_DECISIONS_KEPT:]
        self._changed()

    def _decide(self, req: ReservationRequest, now_ms: int) -> Grant | Denial:
        """The governor's gates, then (when the risk layer is on) the emergency stop, protections, heat,
        concentration and allocation (trading/risk.py), each cut logged with its figures."""
        if self.risk is None:
            return decide(self.book, self.policy, req, now_ms)
        verdict = assess(self.book, self.policy, self.risk, self.risk_state, req, now_ms)
        decision = verdict.decision
        for cut in verdict.cuts:
            workflow.logger.info("%s cut by %s: %s", req.holder_id, cut.gate.value, cut.reason)
        last = self.risk_state.last_transition
        if isinstance(decision, Denial) and decision.gate is Gate.EMERGENCY and last is not None:
            # The governor's own emergency gate answers first: name the rule that put the stop there.
            if last.reason not in decision.reason:
                decision = decision.model_copy(update={"reason": f"{decision.reason} ({last.reason})"})
        return decision

    async def _deliver(self, decisions: list[Grant | Denial]) -> None:
        try:
            gone: list[str] = await calls.DELIVER_DECISIONS.run(DecisionBatch(decisions=decisions))
        except ActivityError as err:
            if not workflow.patched(PATCH_SURVIVE):
                raise  # the first version failed here: its histories replay that way
            # Raised at the continue-as-new, this failed the singleton (restarted empty). A holder not
            # told asks again and gets the same answer; one that is gone is freed by the holder check.
            self._step_failed("delivery", err)
            return
        for holder in gone:  # terminated between asking and hearing back: take the slot back
            release(self.book, self.policy, holder, self._now_ms())
            self._changed()
