"""ReconcileWorkflow: the exchange against the position workflows, every fix applied and recorded.
Run by a Temporal Schedule (default every 30 s) and on demand; the lifecycle worker runs one at start
before the portfolio allows any new entry."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import FailureError

with workflow.unsafe.imports_passed_through():
    from trading.reconcile import Fix, reconcile
    from workflows import calls
    from workflows.messages import DEFAULT_PORTFOLIO_ID, ReconcileInput


@workflow.defn(name="ReconcileWorkflow", sandboxed=False)  # see PositionWorkflow
class ReconcileWorkflow:
    @workflow.run
    async def run(self, inp: ReconcileInput | None = None) -> list[Fix]:
        inp = inp or ReconcileInput()
        # Workflows first, then the venue: see `reconcile` for why that order (and this time) matter.
        listed_ms = int(workflow.now().timestamp() * 1000)
        tracked = await calls.TRACKED_POSITIONS.run()
        venue = await calls.VENUE_STATE.run()
        fixes = reconcile(
            venue.positions, venue.orders, tracked, listed_ms, adopt_after_ms=inp.adopt_after_ms
        )
        await asyncio.gather(*(self._apply(fix) for fix in fixes))
        if fixes:
            await calls.RECORD_RECONCILE.run(fixes)
        try:
            await workflow.get_external_workflow_handle(DEFAULT_PORTFOLIO_ID).signal("reconciled", len(fixes))
        except FailureError:
            pass  # no portfolio yet: it starts open for entries when nothing waited for this reconcile
        return fixes

    async def _apply(self, fix: Fix) -> None:
        call: calls.Activity[Fix, Any]
        if fix.kind == "cancel_orphan":
            call = calls.CANCEL_ORPHAN
        elif fix.kind == "adopt":
            call = calls.ADOPT_POSITION
        else:  # close_gone, resize: the workflow takes the venue's numbers
            call = calls.TELL_POSITION
        await call.run(fix)
