"""PortfolioWorkflow's admission: trade intents decided before any workflow exists for them.

An intent sent with the `admit_intents` signal (workers/admission.py) is decided by the same gates, in
arrival order, next to the reservations of running positions. Granted, the portfolio starts its
PositionWorkflow holding the grant (one `start_positions` activity per batch, not a child each: the
server records a child's start in its parent one at a time), which goes straight to its entry once
the worker that started it vouches for the grant; refused, nothing starts: the
refusal is counted (`quantum_govern_deny` by gate), kept in `last_decisions` and published to
`quantum:stream:intent.refused`. A refused intent used to cost a workflow start, a reservation
signal, a delivery and a signal back; an admitted one now reaches its entry one portfolio round
trip sooner.

Each intent names its position's workflow id, so a submitter's retry never makes a second position:
an id the book holds or is starting is skipped, and an id that ran before (the same intent, already
closed) is refused by the start itself (RejectDuplicate), its slot given back at once.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from trading.governor import Denial, Gate, Grant, ReservationRequest, release
    from workflows import calls
    from workflows.messages import (
        LIFECYCLE_TASK_QUEUE,
        START_BATCH,
        AdmitIntent,
        PositionStart,
        PositionStarts,
        Refusal,
    )
    from workflows.portfolio_base import (
        ADMISSION_CALLS_MAX,
        ADMIT_SLICE,
        PATCH_ADMIT_IN_SLICES,
        PATCH_START_BY_ACTIVITY,
        PortfolioBase,
    )


class PortfolioAdmission(PortfolioBase):
    def _admissible(self) -> bool:
        """Admissions wait, like reservations, for the book (a fresh run) and the startup reconcile;
        decided a slice at a time, the next slice also waits until fewer than ADMISSION_CALLS_MAX of
        the activities that start or refuse them are running."""
        if not (self.admissions and self._book_known and self.book.reconciled):
            return False
        if not self._sliced:
            return True
        self._starts = [s for s in self._starts if not s.done()]
        self._refusing = [r for r in self._refusing if not r.done()]
        return len(self._starts) + len(self._refusing) < ADMISSION_CALLS_MAX

    def _admit(self, now_ms: int) -> list[Grant | Denial]:
        """Decide the admissions that arrived (at most ADMIT_SLICE of them), start a position for each
        grant; the decisions made. The slice bounds what one workflow task sends: 5,000 intents
        decided at once scheduled 25 start activities in one task completion, over the 4 MB a gRPC
        message may carry, and the server terminated the portfolio (GrpcMessageTooLarge)."""
        self._sliced = self._sliced or workflow.patched(PATCH_ADMIT_IN_SLICES)
        if self._sliced:
            batch, self.admissions = self.admissions[:ADMIT_SLICE], self.admissions[ADMIT_SLICE:]
        else:
            batch, self.admissions = self.admissions, []
        decisions: list[Grant | Denial] = []
        refused: list[Refusal] = []
        granted: list[tuple[AdmitIntent, Grant]] = []
        for adm in batch:
            wid = adm.workflow_id
            if wid in self.book.reservations or wid in self._starting:
                continue  # admitted already (a submitter's retry): one position, one slot
            p = adm.position
            assert p.notional_usdt is not None  # AdmitIntent requires it
            req = ReservationRequest(
                holder_id=wid,
                symbol=p.symbol,
                side=p.side,
                notional_usdt=p.notional_usdt,
                kill_score=p.kill_score,
                intent_id=p.intent_id,
            )
            decision = self._stale(adm, now_ms) or self._decide(req, now_ms)
            self._record_decision(req, decision, now_ms)
            decisions.append(decision)
            if isinstance(decision, Grant):
                self._starting.add(wid)
                granted.append((adm, decision))
            else:
                refused.append(
                    Refusal(
                        workflow_id=wid,
                        intent_id=p.intent_id,
                        symbol=p.symbol,
                        side=p.side,
                        notional_usdt=p.notional_usdt,
                        gate=decision.gate.value,
                        reason=decision.reason,
                        at_ms=now_ms,
                    )
                )
        if granted and workflow.patched(PATCH_START_BY_ACTIVITY):
            for at in range(0, len(granted), START_BATCH):
                chunk = granted[at : at + START_BATCH]
                self._starts.append(asyncio.ensure_future(self._start_by_activity(chunk)))
        else:  # as children (the runs that started so replay so)
            for adm, grant in granted:
                self._starts.append(asyncio.ensure_future(self._start_admitted(adm, grant)))
        if refused:
            publishing = asyncio.ensure_future(self._publish_refusals(refused))
            self._deliveries.append(publishing)
            if self._sliced:
                self._refusing.append(publishing)
        return decisions

    @staticmethod
    def _stale(adm: AdmitIntent, now_ms: int) -> Denial | None:
        deadline_s = adm.position.options.entry_deadline_seconds
        if adm.at_ms is None or now_ms - adm.at_ms <= deadline_s * 1000:
            return None
        return Denial(
            holder_id=adm.workflow_id,
            gate=Gate.ENTRY_DEADLINE,
            reason=f"not decided within {deadline_s:g} s of the intent ({(now_ms - adm.at_ms) / 1000:.1f} s)",
        )

    async def _start_by_activity(self, granted: list[tuple[AdmitIntent, Grant]]) -> None:
        """Start the granted positions through one `start_positions` activity (the worker that runs it
        vouches for their grants). Failed for good, nothing is released here: whatever
        did not start is freed by the holder check, which skips only the ids still starting."""
        starts = [
            PositionStart(
                workflow_id=adm.workflow_id,
                position=adm.position.model_copy(update={"grant": grant}),
                summary=_summary(adm, grant),
            )
            for adm, grant in granted
        ]
        try:
            ran_before = await calls.START_POSITIONS.run(PositionStarts(starts=starts))
        except ActivityError as err:
            self._step_failed("start_positions", err)
            ran_before = []
        finally:
            self._starting.difference_update(adm.workflow_id for adm, _ in granted)
            self._starts = [s for s in self._starts if not s.done()]
        for wid in ran_before:
            self._void(wid)

    def _void(self, workflow_id: str) -> None:
        """That id ran before: nothing was started, so nothing holds the slot."""
        release(self.book, self.policy, workflow_id, self._now_ms(), cooldown=False)
        workflow.logger.warning("%s was started before: its admission is void", workflow_id)
        self._changed()

    async def _start_admitted(self, adm: AdmitIntent, grant: Grant) -> None:
        """As a child (before PATCH_START_BY_ACTIVITY): the position trusts a grant from its parent."""
        p = adm.position
        try:
            await workflow.start_child_workflow(
                "PositionWorkflow",
                p.model_copy(update={"grant": grant}),
                id=adm.workflow_id,
                task_queue=LIFECYCLE_TASK_QUEUE,
                # the position outlives this run (and its continue-as-new); its id is never reused
                # (client order ids derive from it)
                parent_close_policy=ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                static_summary=_summary(adm, grant),
            )
        except WorkflowAlreadyStartedError:
            self._void(adm.workflow_id)
        finally:
            self._starting.discard(adm.workflow_id)
            self._starts = [s for s in self._starts if not s.done()]

    async def _publish_refusals(self, refused: list[Refusal]) -> None:
        """A read model: a failed write is counted and logged, the decisions stay in the portfolio."""
        try:
            await calls.PUBLISH_REFUSALS.run(refused)
        except ActivityError as err:
            self._step_failed("refusals", err)


def _summary(adm: AdmitIntent, grant: Grant) -> str:
    """What the Web UI shows for an admitted position."""
    p = adm.position
    return f"{p.side.value} {p.symbol} {grant.notional_usdt} USDT ({p.strategy})"
