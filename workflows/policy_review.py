"""PolicyReviewWorkflow: the adviser of the risk layer (trading/policy_review.py). It reads the window's
closed trades and the emergency stop's moves, proposes a change of the risk policy as a diff with its
reasons (shown in the Web UI's details and the `proposal` query), and waits for an operator's verdict
(the `verdict` update). Approved, the change goes to the portfolio through its validated
`set_risk_policy` update, unless the policy was edited since the proposal (then nothing changes: stale);
rejected or not answered in time, nothing changes. Run by a Temporal Schedule
(`POLICY_REVIEW_INTERVAL_HOURS`) or by hand."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from trading.policy_review import Proposal, ReviewFacts, propose
    from trading.risk import RiskLayerPolicy
    from workflows import calls
    from workflows.errors import ErrorType
    from workflows.messages import (
        PolicyReviewInput,
        PolicyReviewResult,
        PolicyVerdict,
        ReviewContext,
        parse_message,
    )

POLICY_REVIEW_WORKFLOW_ID = "policy-review"
# The portfolio refused an approved proposal (apply_policy_proposal's error types): nothing changed.
REFUSALS = {ErrorType.STALE_PROPOSAL: "stale", ErrorType.PROPOSAL_REFUSED: "refused"}


@workflow.defn(name="PolicyReviewWorkflow", sandboxed=False)
class PolicyReviewWorkflow:
    def __init__(self) -> None:
        self.proposal: Proposal | None = None
        self.verdict: PolicyVerdict | None = None

    @workflow.run
    async def run(self, inp: PolicyReviewInput) -> PolicyReviewResult:
        ctx: ReviewContext = await calls.POLICY_REVIEW_FACTS.run(inp)
        if ctx.policy is None:
            return PolicyReviewResult(outcome="off", detail="the portfolio's risk layer is off")
        facts = ReviewFacts.model_validate(ctx.model_dump(exclude={"policy"}))
        self.proposal = propose(ctx.policy, facts, RiskLayerPolicy(), inp.min_trades)
        workflow.set_current_details(self.proposal.as_markdown())
        if not self.proposal.changes:
            return PolicyReviewResult(
                outcome="no_change", detail=self.proposal.summary, proposal=self.proposal
            )
        try:
            await workflow.wait_condition(
                lambda: self.verdict is not None, timeout=timedelta(hours=inp.approval_hours)
            )
        except TimeoutError:
            workflow.set_current_details(f"{self.proposal.as_markdown()}\n\nExpired: no verdict.")
            return PolicyReviewResult(
                outcome="expired", detail=f"no verdict in {inp.approval_hours:g} h", proposal=self.proposal
            )
        verdict = self.verdict
        assert verdict is not None
        if not verdict.approve:
            return self._done("rejected", f"rejected by {verdict.operator}: {verdict.reason}", verdict)
        try:
            await calls.APPLY_POLICY_PROPOSAL.run(self.proposal)
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type in REFUSALS:
                return self._done(REFUSALS[cause.type], str(cause.message), verdict)
            raise
        return self._done("applied", f"approved by {verdict.operator}: {verdict.reason}", verdict)

    def _done(self, outcome: str, detail: str, verdict: PolicyVerdict) -> PolicyReviewResult:
        assert self.proposal is not None
        workflow.set_current_details(f"{self.proposal.as_markdown()}\n\n**{outcome}**: {detail}")
        return PolicyReviewResult(outcome=outcome, detail=detail, proposal=self.proposal, verdict=verdict)

    @workflow.query(name="proposal")
    def get_proposal(self) -> Proposal | None:
        return self.proposal

    @workflow.update(name="verdict")
    def give_verdict(self, raw: dict) -> str:
        self.verdict = parse_message(PolicyVerdict, raw)
        return "approved" if self.verdict.approve else "rejected"

    @give_verdict.validator
    def _validate_verdict(self, raw: dict) -> None:
        parse_message(PolicyVerdict, raw)
        if self.proposal is None or not self.proposal.changes:
            raise ValueError("verdict: there is no proposal waiting for one")
        if self.verdict is not None:
            raise ValueError(f"verdict: already {'approved' if self.verdict.approve else 'rejected'}")
