"""Reconcile activities: read the venue (exchange queue), read the position workflows and apply fixes
(lifecycle queue), and record every difference as an event and a metric."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from decimal import Decimal

import redis.asyncio as aioredis
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.exchange import venue_errors
from exchange.client import BinanceFuturesClient
from exchange.errors import OrderNotFoundError
from trading.intents import IntentSource, Side
from trading.reconcile import UNKNOWN, Fix, TrackedPosition, VenueOrder, VenuePosition
from workflows import calls
from workflows.messages import (
    LIFECYCLE_TASK_QUEUE,
    AdoptedPosition,
    PositionInput,
    PositionView,
    VenueState,
)
from workflows.search_attributes import SA_OPEN_QTY, SA_SIDE, SA_STATUS, SA_SYMBOL

RECONCILE_STREAM = "quantum:stream:reconcile.events"


class VenueReadActivities:
    def __init__(self, client: BinanceFuturesClient) -> None:
        self.client = client

    @activity.defn(name=calls.VENUE_STATE.name)
    async def venue_state(self) -> VenueState:
        with venue_errors():
            positions, orders, algos = await asyncio.gather(
                self.client.position_risk(), self.client.open_orders(), self.client.open_algo_orders()
            )
        return VenueState(
            positions=[
                VenuePosition(
                    symbol=p.symbol,
                    position_amt=p.position_amt,
                    entry_price=p.entry_price,
                    update_ms=p.update_time,
                )
                for p in positions
                if p.position_amt != 0
            ],
            orders=[
                VenueOrder(
                    symbol=o.symbol,
                    client_id=o.client_order_id,
                    algo=False,
                    reduce_only=o.reduce_only or o.close_position,
                )
                for o in orders
            ]
            + [
                VenueOrder(
                    symbol=a.symbol,
                    client_id=a.client_algo_id,
                    algo=True,
                    reduce_only=a.reduce_only or a.close_position,
                )
                for a in algos
            ],
        )

    @activity.defn(name=calls.CANCEL_ORPHAN.name)
    async def cancel_orphan(self, fix: Fix) -> bool:
        with venue_errors():
            try:
                if fix.algo:
                    await self.client.cancel_algo_order(client_algo_id=fix.client_id)
                else:
                    await self.client.cancel_order(fix.symbol, client_order_id=fix.client_id)
            except OrderNotFoundError:
                return False
        return True


class ReconcileActivities:
    def __init__(self, client: Client, redis: aioredis.Redis) -> None:
        self.client = client
        self.redis = redis

    @activity.defn(name=calls.TRACKED_POSITIONS.name)
    async def tracked_positions(self) -> list[TrackedPosition]:
        """Every running position as visibility indexes it (one paged list call); a position that has
        not indexed its quantity yet is asked directly."""
        query = "WorkflowType='PositionWorkflow' AND ExecutionStatus='Running'"
        tracked: list[TrackedPosition] = []
        unindexed: list[str] = []
        # Pages of 100: the SDK decodes a page in one go on this worker's event loop, and a page of
        # 1,000 positions held the loop (and every workflow task waiting on it) for a few hundred ms.
        async for wf in self.client.list_workflows(query, page_size=100):
            sa = wf.typed_search_attributes
            symbol, side, status, qty = (sa.get(k) for k in (SA_SYMBOL, SA_SIDE, SA_STATUS, SA_OPEN_QTY))
            if symbol is None or side is None or status is None or qty is None:
                unindexed.append(wf.id)
                continue
            tracked.append(
                TrackedPosition(
                    workflow_id=wf.id,
                    symbol=symbol,
                    side=Side(side),
                    open_qty=Decimal(str(qty)),
                    status=status,
                )
            )

        async def ask(wid: str) -> TrackedPosition | None:
            handle = self.client.get_workflow_handle(wid)
            try:
                v = await asyncio.wait_for(handle.query("state", result_type=PositionView), 10)
            except Exception:
                # Finished between listing and asking (nothing to track), or no worker answered: then it
                # may hold anything, and this round adopts nothing.
                if await _still_running(handle):
                    return TrackedPosition(
                        workflow_id=wid, symbol="", side=Side.LONG, open_qty=Decimal(0), status=UNKNOWN
                    )
                return None
            return TrackedPosition(
                workflow_id=wid, symbol=v.symbol, side=v.side, open_qty=v.open_qty, status=v.status.value
            )

        asked = await asyncio.gather(*(ask(w) for w in unindexed))
        return tracked + [t for t in asked if t is not None]

    @activity.defn(name=calls.TELL_POSITION.name)
    async def tell_position(self, fix: Fix) -> None:
        """The workflow takes the venue's word (it settles from the venue's fills)."""
        try:
            await self.client.get_workflow_handle(fix.workflow_id or "").signal(
                "exchange_event",
                {
                    "kind": "position_snapshot",
                    "symbol": fix.symbol,
                    "position_amt": str(fix.venue_amt),
                    "reason": "reconcile",
                    "event_ms": int(time.time() * 1000),
                },
            )
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            # It finished after the listing: it settled its position itself.

    @activity.defn(name=calls.ADOPT_POSITION.name)
    async def adopt_position(self, fix: Fix) -> str:
        # One id per reconcile run and symbol: a retried attempt finds the workflow its first one started.
        run = hashlib.sha256(activity.info().workflow_run_id.encode()).hexdigest()[:8]
        wid = f"position-{fix.symbol}-adopted-{run}"
        died = await self._died_with(fix)
        if died is not None:
            activity.logger.error(
                "ALERT adopting %s %s whose workflow ended without closing it; its exits are kept",
                fix.symbol,
                fix.venue_amt,
            )
        try:
            await self.client.start_workflow(
                "PositionWorkflow",
                adoption_input(fix, wid, died),
                id=wid,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                task_queue=LIFECYCLE_TASK_QUEUE,
                static_summary=f"ADOPTED {fix.symbol} {fix.venue_amt} @ {fix.entry_price}",
            )
        except WorkflowAlreadyStartedError:
            pass
        return wid

    async def _died_with(self, fix: Fix) -> PositionInput | None:
        """The intent of the newest position workflow on this symbol and side that ended without
        closing (failed, terminated, timed out): an adopted position keeps that trade's exits (an 8 %
        exchange stop must not become the default 3 %). None when there is none, or it cannot be read."""
        side = Side.LONG if (fix.venue_amt or 0) > 0 else Side.SHORT
        query = (
            f"WorkflowType='PositionWorkflow' AND {SA_SYMBOL.name}='{fix.symbol}' "
            f"AND {SA_SIDE.name}='{side.value}' "
            "AND ExecutionStatus IN ('Failed','Terminated','TimedOut')"
        )
        try:
            async for wf in self.client.list_workflows(query, limit=1):
                history = await self.client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
                started = history.events[0].workflow_execution_started_event_attributes
                (raw,) = await self.client.data_converter.decode(started.input.payloads, [dict])
                return PositionInput.model_validate(raw)
        except Exception as err:  # an unreadable history costs the exits, never the adoption
            activity.logger.warning("could not read the ended workflow on %s: %s", fix.symbol, err)
        return None

    @activity.defn(name=calls.RECORD_RECONCILE.name)
    async def record_reconcile(self, fixes: list[Fix]) -> None:
        drift = activity.metric_meter().create_counter(
            "reconcile_drift_detected", "differences found by reconcile"
        )
        adoptions = activity.metric_meter().create_counter("reconcile_adoptions", "venue positions adopted")
        for fix in fixes:
            drift.add(1, {"symbol": fix.symbol, "field": fix.field})
            if fix.kind == "adopt":
                adoptions.add(1, {"symbol": fix.symbol})
            fields = {
                "kind": fix.kind,
                "symbol": fix.symbol,
                "field": fix.field,
                "detail": fix.detail,
                "workflow_id": fix.workflow_id or "",
                "timestamp": str(int(time.time() * 1000)),
                "payload": json.dumps(fix.model_dump(mode="json")),
            }
            try:
                await self.redis.xadd(RECONCILE_STREAM, fields, maxlen=100_000, approximate=True)
            except aioredis.RedisError:
                activity.logger.warning("reconcile event not written to Redis: %s", fix.detail)


def adoption_input(fix: Fix, wid: str, died: PositionInput | None = None) -> PositionInput:
    """The venue's position as it stands: its quantity and entry price, with the exits, leverage and
    strategy of the trade whose workflow died holding it, else the default exit profile."""
    amt = fix.venue_amt or Decimal(0)
    kept = {} if died is None else {"exits": died.exits, "leverage": died.leverage, "strategy": died.strategy}
    return PositionInput(
        symbol=fix.symbol,
        side=Side.LONG if amt > 0 else Side.SHORT,
        quantity=abs(amt),
        source=IntentSource.ADOPTED,
        **{"strategy": "adopted", **kept},
        intent_id=wid,
        adopt=AdoptedPosition(quantity=abs(amt), entry_price=fix.entry_price or Decimal(0)),
    )


async def _still_running(handle: WorkflowHandle) -> bool:
    try:
        desc = await handle.describe()
    except Exception:
        return True  # cannot tell: assume the worst
    return desc.status == WorkflowExecutionStatus.RUNNING
