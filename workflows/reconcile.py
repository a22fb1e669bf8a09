"""ReconcileWorkflow: the exchange against the position workflows, every fix applied and recorded.
Run by a Temporal Schedule (default every 30 s) and on demand; the lifecycle worker runs one at start
before the portfolio allows any new entry."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import FailureError

with workflow.unsafe.imports_passed_through():
    from trading.reconcile import Fix, TrackedPosition, reconcile
    from workflows.messages import (
        DEFAULT_PORTFOLIO_ID,
        EXCHANGE_TASK_QUEUE,
        LIFECYCLE_TASK_QUEUE,
        ReconcileInput,
        VenueState,
    )

RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=500), maximum_attempts=5)


@workflow.defn(name="ReconcileWorkflow", sandboxed=False)  # see PositionWorkflow
class ReconcileWorkflow:
    @workflow.run
    async def run(self, inp: ReconcileInput | None = None) -> list[Fix]:
        inp = inp or ReconcileInput()
        # Workflows first, then the venue: see `reconcile` for why that order (and this time) matter.
        listed_ms = int(workflow.now().timestamp() * 1000)
        tracked = await workflow.execute_activity(
            "tracked_positions",
            result_type=list[TrackedPosition],
            task_queue=LIFECYCLE_TASK_QUEUE,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RETRY,
        )
        venue = await workflow.execute_activity(
            "venue_state",
            result_type=VenueState,
            task_queue=EXCHANGE_TASK_QUEUE,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RETRY,
        )
        fixes = reconcile(
            venue.positions, venue.orders, tracked, listed_ms, adopt_after_ms=inp.adopt_after_ms
        )
        await asyncio.gather(*(self._apply(fix) for fix in fixes))
        if fixes:
            await workflow.execute_activity(
                "record_reconcile",
                fixes,
                task_queue=LIFECYCLE_TASK_QUEUE,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RETRY,
            )
        try:
            await workflow.get_external_workflow_handle(DEFAULT_PORTFOLIO_ID).signal("reconciled", len(fixes))
        except FailureError:
            pass  # no portfolio yet: it starts open for entries when nothing waited for this reconcile
        return fixes

    async def _apply(self, fix: Fix) -> None:
        if fix.kind == "cancel_orphan":
            name, queue = "cancel_orphan", EXCHANGE_TASK_QUEUE
        elif fix.kind == "adopt":
            name, queue = "adopt_position", LIFECYCLE_TASK_QUEUE
        else:  # close_gone, resize: the workflow takes the venue's numbers
            name, queue = "tell_position", LIFECYCLE_TASK_QUEUE
        await workflow.execute_activity(
            name, fix, task_queue=queue, start_to_close_timeout=timedelta(seconds=30), retry_policy=RETRY
        )
