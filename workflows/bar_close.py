"""BarCloseWorkflow: at each bar close (a Temporal Schedule), inference for the universe, the decisions
published, and the intents that cleared the confidence threshold sent to the portfolio's admission
(one signal), which starts a PositionWorkflow for each intent it grants.

The inference activity (task queue `inference`) reads the closed bars from Redis, runs the champion
ensemble, classifies the regime and sizes the trade; it returns each symbol's decision with the intent
already built (or the reason there is none). Each intent is traded as the strategy the meta-strategy
chooser picked for the decision's regime. This workflow only records them, publishes them
(`publish_decisions`) and submits the intents: only for decisions `trading.promotion.is_tradeable`
accepts, so nothing from a shadow model is ever traded. When the registry has a shadow challenger,
its predictions for the same bar are published afterwards (`publish_shadow_signals`, `shadow=true`);
a failure there is a note, never a reason to hold back the champion's positions.

A position's workflow id is derived from the symbol and the bar's open time, and the portfolio starts
it with RejectDuplicate: a re-run for the same bar (a retried schedule action, a manual trigger) never
starts a second position, and an intent older than its entry deadline is refused. With no portfolio
running, the positions are started here instead (runs before admission did that too).
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, FailureError, WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from trading.promotion import is_tradeable
    from workflows import calls
    from workflows.messages import (
        DEFAULT_PORTFOLIO_ID,
        LIFECYCLE_TASK_QUEUE,
        AdmitBatch,
        AdmitIntent,
        BarCloseInput,
        BarCloseResult,
        InferenceInput,
        InferenceResult,
        SymbolDecision,
    )

# Versioning (README): runs that started before this change start their positions one at a time.
PATCH_STARTS_TOGETHER = "bar-close-starts-positions-together"
PATCH_ADMIT = "bar-close-admits-through-the-portfolio"


@workflow.defn(name="BarCloseWorkflow", sandboxed=False)  # unsandboxed like every workflow here
class BarCloseWorkflow:
    @workflow.run
    async def run(self, inp: BarCloseInput | None = None) -> BarCloseResult:
        inp = inp or BarCloseInput()
        result: InferenceResult = await calls.INFER_BAR.run(
            InferenceInput(symbols=inp.symbols, interval=inp.interval, bar_open_ms=inp.bar_open_ms)
        )
        if result.decisions:
            await calls.PUBLISH_DECISIONS.run(result)
        started: list[str] = []
        already: list[str] = []
        refused: list[str] = []
        tradeable: list[SymbolDecision] = []
        for d in result.decisions:
            if d.intent is None or d.workflow_id is None:
                continue
            if not is_tradeable(d):
                refused.append(d.workflow_id)
                continue
            tradeable.append(d)
        admitted: list[str] = []
        if tradeable and workflow.patched(PATCH_ADMIT):
            # One signal to the portfolio: it decides them all and starts a position only for a grant
            # (workflows/portfolio_admission.py); a refused intent costs no workflow at all.
            if await self._admit(tradeable):
                admitted = [d.workflow_id for d in tradeable if d.workflow_id is not None]
                tradeable = []
        if tradeable:
            if workflow.patched(PATCH_STARTS_TOGETHER):
                # Every start in one workflow task: one at a time, a hundred symbols took a hundred
                # round trips to the server before the last position existed.
                outcomes = await asyncio.gather(*(self._start(d) for d in tradeable))
            else:
                outcomes = [await self._start(d) for d in tradeable]
            for d, was_started in zip(tradeable, outcomes, strict=True):
                assert d.workflow_id is not None
                (started if was_started else already).append(d.workflow_id)
        notes = list(result.notes)
        shadow_signals = 0
        if result.shadow is not None:
            try:
                shadow_signals = await calls.PUBLISH_SHADOW_SIGNALS.run(result.shadow)
            except ActivityError as err:
                notes.append(f"shadow predictions not published: {err.cause or err}")
        return BarCloseResult(
            bar_open_ms=result.bar_open_ms,
            decisions=len(result.decisions),
            started=started,
            already_started=already,
            admitted=admitted,
            not_tradeable=refused,
            shadow_signals=shadow_signals,
            notes=notes,
        )

    async def _admit(self, tradeable: list[SymbolDecision]) -> bool:
        """False when no portfolio runs to hear them: the positions are started instead (each asks a
        portfolio into being, as before admission)."""
        made = int(workflow.now().timestamp() * 1000)  # the intents' time: stale ones are refused
        batch = AdmitBatch(
            intents=[
                AdmitIntent(workflow_id=d.workflow_id, position=d.intent, at_ms=made)
                for d in tradeable
                if d.workflow_id is not None and d.intent is not None
            ]
        )
        try:
            await workflow.get_external_workflow_handle(DEFAULT_PORTFOLIO_ID).signal("admit_intents", batch)
        except FailureError as err:
            workflow.logger.warning("no portfolio to admit the intents (%s): starting them", err)
            return False
        return True

    async def _start(self, d: SymbolDecision) -> bool:
        """Start the decision's position; False when a run for this bar already started it."""
        try:
            await workflow.start_child_workflow(
                "PositionWorkflow",
                d.intent,
                id=d.workflow_id,
                task_queue=LIFECYCLE_TASK_QUEUE,
                # the position outlives this short run; its id is never reused (client order ids
                # derive from it)
                parent_close_policy=ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                static_summary=(
                    f"{d.side} {d.symbol} {d.notional_usdt} USDT ({d.strategy or 'model'}, "
                    f"{d.regime}, conf {d.confidence:.3f})"
                ),
            )
        except WorkflowAlreadyStartedError:
            return False
        return True
