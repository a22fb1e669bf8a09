"""Lifecycle-queue activities that talk to Temporal itself: reserve through the portfolio (starting it
if needed), find holders whose workflows stopped without releasing, and tell a fresh portfolio what the
running positions hold."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from temporalio import activity
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.vouchers import GrantVouchers
from trading.governor import HOLDING_STATES, Denial, Grant, PortfolioBook, ReservationRequest, RiskPolicy
from trading.intents import Side
from trading.risk import RiskLayerPolicy
from workflows import calls
from workflows.messages import (
    DEFAULT_PORTFOLIO_ID,
    LIFECYCLE_TASK_QUEUE,
    DecisionBatch,
    PortfolioInput,
    PortfolioView,
    PositionStart,
    PositionStarts,
    PositionStatus,
    PositionView,
    RunningHolder,
)
from workflows.search_attributes import SA_OPEN_QTY, SA_SIDE, SA_STATUS, SA_SYMBOL

RUNNING_POSITIONS = "WorkflowType='PositionWorkflow' AND ExecutionStatus='Running'"
CLOSED_PORTFOLIO_RUNS = f"WorkflowId='{DEFAULT_PORTFOLIO_ID}' AND ExecutionStatus!='Running'"
PREVIOUS_STATE_TIMEOUT_S = 60.0
STATE_QUERY_TIMEOUT_S = 10.0


async def start_portfolio(
    client: Client,
    policy: RiskPolicy,
    holder_check_seconds: float,
    *,
    request: ReservationRequest | None = None,
    await_reconcile: bool = False,
    risk: RiskLayerPolicy | None = None,
) -> None:
    """Start the account's portfolio unless it runs (a running one keeps its policy: that changes only
    through its validated update); with `request`, signal-with-start it. With `await_reconcile`, new
    entries wait for the first reconcile. `risk`: the risk layer it starts with (None: the governor alone)."""
    signal = {"start_signal": "request_reservation", "start_signal_args": [request]} if request else {}
    await client.start_workflow(
        "PortfolioWorkflow",
        PortfolioInput(
            policy=policy,
            holder_check_seconds=holder_check_seconds,
            book=PortfolioBook(reconciled=not await_reconcile),
            risk=risk,
        ),
        id=DEFAULT_PORTFOLIO_ID,
        task_queue=LIFECYCLE_TASK_QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary="Portfolio: position slots, notional budget and risk limits",
        **signal,
    )


class PortfolioActivities:
    def __init__(
        self,
        client: Client,
        default_policy: RiskPolicy,
        holder_check_seconds: float = 30.0,
        risk: RiskLayerPolicy | None = None,
        vouchers: GrantVouchers | None = None,
    ) -> None:
        self.client = client
        # shared with this worker's check_symbol
        self.vouchers = vouchers if vouchers is not None else GrantVouchers()
        self.default_policy = default_policy
        self.holder_check_seconds = holder_check_seconds
        self.risk = risk

    @activity.defn(name=calls.REQUEST_RESERVATION.name)
    async def request_reservation(self, portfolio_id: str, request: ReservationRequest) -> None:
        """Signal-with-start: the request reaches the running portfolio, or starts it with the policy
        from this worker's settings."""
        assert portfolio_id == DEFAULT_PORTFOLIO_ID, portfolio_id
        await start_portfolio(
            self.client, self.default_policy, self.holder_check_seconds, request=request, risk=self.risk
        )

    @activity.defn(name=calls.DELIVER_DECISIONS.name)
    async def deliver_decisions(self, batch: DecisionBatch) -> list[str]:
        """Signal each holder its decision, concurrently; return the holders that are gone.

        One activity per batch keeps the portfolio's history at three events per batch instead of
        two events and a workflow task per holder (what capped a burst when the workflow signalled)."""
        limit = asyncio.Semaphore(64)

        async def deliver(decision: Grant | Denial) -> str | None:
            async with limit:
                try:
                    await self.client.get_workflow_handle(decision.holder_id).signal(
                        "reservation_decided", decision
                    )
                except RPCError as err:
                    if err.status == RPCStatusCode.NOT_FOUND:
                        return decision.holder_id
                    raise
            return None

        gone = await asyncio.gather(*(deliver(d) for d in batch.decisions))
        return [g for g in gone if g is not None]

    @activity.defn(name=calls.START_POSITIONS.name)
    async def start_positions(self, batch: PositionStarts) -> list[str]:
        """Start the admitted intents' PositionWorkflows, concurrently; return the ids that ran before
        (nothing started for them, their slots go back). One that runs already is this activity's own
        earlier attempt: kept. Each grant is vouched for in this worker (activities/vouchers.py).

        Started as the portfolio's children they cost the singleton a command and two events each, and
        the server records each child's start in the parent under its lock, one at a time."""
        for one in batch.starts:
            if one.position.grant is not None:
                self.vouchers.vouch(one.workflow_id, one.position.grant.notional_usdt)
        limit = asyncio.Semaphore(64)

        async def start(one: PositionStart) -> str | None:
            async with limit:
                try:
                    await self.client.start_workflow(
                        "PositionWorkflow",
                        one.position,
                        id=one.workflow_id,
                        task_queue=LIFECYCLE_TASK_QUEUE,
                        # client order ids derive from the id: a position's id is never used twice
                        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                        static_summary=one.summary,
                    )
                except WorkflowAlreadyStartedError:
                    self.vouchers.forget(one.workflow_id)
                    return one.workflow_id
            return None

        ran_before = await asyncio.gather(*(start(one) for one in batch.starts))
        return [wid for wid in ran_before if wid is not None]

    @activity.defn(name=calls.FIND_STOPPED_HOLDERS.name)
    async def find_stopped_holders(self, holder_ids: list[str]) -> list[str]:
        limit = asyncio.Semaphore(20)

        async def stopped(workflow_id: str) -> bool:
            async with limit:
                try:
                    desc = await self.client.get_workflow_handle(workflow_id).describe()
                except RPCError as err:
                    if err.status == RPCStatusCode.NOT_FOUND:
                        return True
                    raise
                return desc.status != WorkflowExecutionStatus.RUNNING

        flags = await asyncio.gather(*(stopped(h) for h in holder_ids))
        return [h for h, gone in zip(holder_ids, flags, strict=True) if gone]

    @activity.defn(name=calls.PREVIOUS_PORTFOLIO_STATE.name)
    async def previous_portfolio_state(self) -> PortfolioView | None:
        """What the portfolio's last run (failed, terminated, timed out, or continued as new) held, as its
        `state` query answers on its replayed history: a fresh run takes over its policy (the kill switch
        with it), emergency state, cooldowns, entry times and risk layer. None when there is no earlier
        run, or its state cannot be read (then the fresh run starts from its input, and says so)."""
        latest: WorkflowExecution | None = None
        async for wf in self.client.list_workflows(CLOSED_PORTFOLIO_RUNS):
            if wf.close_time is not None and (latest is None or wf.close_time > latest.close_time):  # type: ignore[operator]
                latest = wf
        if latest is None:
            return None
        handle = self.client.get_workflow_handle(latest.id, run_id=latest.run_id)
        try:
            return await asyncio.wait_for(
                handle.query("state", result_type=PortfolioView), PREVIOUS_STATE_TIMEOUT_S
            )
        except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError, TimeoutError) as err:
            activity.logger.error(
                "the portfolio's previous run %s cannot say its state (%s): the fresh run starts without it",
                latest.run_id,
                err,
            )
            return None

    @activity.defn(name=calls.RUNNING_HOLDERS.name)
    async def running_holders(self) -> list[RunningHolder]:
        """Every running position and what it holds, for a fresh portfolio rebuilding its book: listed
        through visibility (one paged call), each asked by its `state` query, since visibility has no
        entry price and positions still entering are not indexed. One that does not answer is described
        by what visibility indexes, or has no status when it indexed nothing yet."""
        listed = [
            wf
            async for wf in self.client.list_workflows(RUNNING_POSITIONS)
            # Indexed as done (closed, rejected, ...): released already, and a final status never changes.
            if wf.typed_search_attributes.get(SA_STATUS) in (None, *HOLDING_STATES)
        ]
        limit = asyncio.Semaphore(20)

        async def ask(wf: WorkflowExecution) -> RunningHolder | None:
            async with limit:
                try:
                    v = await asyncio.wait_for(
                        self.client.get_workflow_handle(wf.id).query("state", result_type=PositionView),
                        STATE_QUERY_TIMEOUT_S,
                    )
                except RPCError as err:
                    if err.status == RPCStatusCode.NOT_FOUND:
                        return None  # gone since the listing: it holds nothing
                    return indexed_holder(wf)
                except (WorkflowQueryFailedError, WorkflowQueryRejectedError, TimeoutError):
                    return indexed_holder(wf)
            return RunningHolder(
                holder_id=wf.id,
                status=v.status,
                symbol=v.symbol,
                side=v.side,
                open_qty=v.open_qty,
                entry_price=v.entry_price,
            )

        found = await asyncio.gather(*(ask(wf) for wf in listed))
        return [h for h in found if h is not None]


def indexed_holder(wf: WorkflowExecution) -> RunningHolder:
    """A position that did not answer, as visibility indexes it (its open quantity without a price)."""
    sa = wf.typed_search_attributes
    symbol, side, status, qty = (sa.get(k) for k in (SA_SYMBOL, SA_SIDE, SA_STATUS, SA_OPEN_QTY))
    if symbol is None or side is None or status not in PositionStatus.__members__:
        return RunningHolder(holder_id=wf.id)
    return RunningHolder(
        holder_id=wf.id,
        status=PositionStatus(status),
        symbol=symbol,
        side=Side(side),
        open_qty=Decimal(str(qty or 0)),
    )
