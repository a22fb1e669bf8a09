"""The policy review's activities (task queue `trade-lifecycle`): read what the review looks at (the
journal's trades of the window, the portfolio's risk policy and emergency-stop moves), and hand an
approved proposal to the portfolio (workflows/policy_review.py)."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

from temporalio import activity
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from journal.store import Journal
from trading.policy_review import Proposal, worst_state
from workflows import calls
from workflows.errors import ErrorType
from workflows.messages import DEFAULT_PORTFOLIO_ID, PolicyReviewInput, PortfolioView, ReviewContext


class PolicyReviewActivities:
    def __init__(self, client: Client, journal: Journal, run_id: str) -> None:
        self.client = client
        self.journal = journal
        self.run_id = run_id

    @activity.defn(name=calls.POLICY_REVIEW_FACTS.name)
    async def policy_review_facts(self, inp: PolicyReviewInput) -> ReviewContext:
        view = await self.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID).query(
            "state", result_type=PortfolioView
        )
        since = int(time.time() * 1000 - inp.window_hours * 3_600_000)
        trades = await asyncio.to_thread(self.journal.trades, since_ms=since, run_id=self.run_id)
        now = view.risk_state.ess.state if view.risk_state is not None else view.book.emergency
        worst, moves = worst_state(now, [m.transition for m in view.ess_moves], since)
        return ReviewContext(
            window_hours=inp.window_hours,
            trades=len(trades),
            net_pnl_usdt=sum((t.realized_pnl for t in trades), Decimal(0)),
            ess_now=now,
            ess_worst=worst,
            moves=moves,
            policy=view.risk,
        )

    @activity.defn(name=calls.APPLY_POLICY_PROPOSAL.name)
    async def apply_policy_proposal(self, proposal: Proposal) -> None:
        changes = [c.model_dump(mode="json") for c in proposal.changes]
        try:
            await self.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID).execute_update(
                "apply_policy_changes", {"changes": changes}
            )
        except WorkflowUpdateFailedError as err:  # refused whole by the portfolio's validator: final
            message = str(err.cause.message if hasattr(err.cause, "message") else err.cause)
            kind = ErrorType.STALE_PROPOSAL if "stale" in message else ErrorType.PROPOSAL_REFUSED
            raise ApplicationError(
                f"portfolio refused the proposal: {message}", type=kind, non_retryable=True
            ) from err
