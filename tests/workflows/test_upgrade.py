"""Upgrade safety (the README's versioning rule): positions live for days, so a deploy runs new code
over running histories. A worker whose position workflow issues a different command sequence is
deployed while positions are open: with the change behind `workflow.patched`, every position finishes
with no nondeterminism error; the same change without the patch fails to replay those histories."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pydantic
import pytest
from temporalio import workflow
from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from exchange.client import BinanceFuturesClient
from tests.workflows.conftest import Stack
from tests.workflows.drills import venue_positions
from tests.workflows.test_position_lifecycle import start_position, wait_status
from trading.intents import ExitOverrides, Side, TradeIntent
from workers.exchange_worker import exchange_worker
from workers.lifecycle import lifecycle_worker
from workflows.messages import PositionOptions, PositionResult, PositionStatus
from workflows.portfolio import PortfolioWorkflow
from workflows.position import _NO_INPUT, PositionWorkflow

D = Decimal
OPTS = PositionOptions(mark_check_seconds=0.3)


@workflow.defn(name="PositionWorkflow", sandboxed=False, failure_exception_types=[pydantic.ValidationError])
class PatchedV2(PositionWorkflow):
    """v2: reads the mark twice per timer (a different command sequence), behind a patch."""

    @workflow.run
    async def run(self, raw: object = _NO_INPUT, *extra: object) -> PositionResult:
        return await super().run(raw, *extra)

    async def _check_mark(self) -> None:
        if workflow.patched("test-upgrade-double-mark"):
            await super()._check_mark()
        await super()._check_mark()


@workflow.defn(name="PositionWorkflow", sandboxed=False, failure_exception_types=[pydantic.ValidationError])
class UnpatchedV2(PositionWorkflow):
    """The same change, deployed without the patch."""

    @workflow.run
    async def run(self, raw: object = _NO_INPUT, *extra: object) -> PositionResult:
        return await super().run(raw, *extra)

    async def _check_mark(self) -> None:
        await super()._check_mark()
        await super()._check_mark()


async def until_mark_checks(handle: WorkflowHandle, n: int, timeout_s: float = 60) -> None:
    """Until the history holds `n` mark reads: the second is scheduled only after the first completed,
    so the unpatched change has a completed read to diverge after (a fixed sleep left a loaded machine's
    history with none, and the control replayed it without an error)."""

    async def reads() -> int:
        return sum(
            1
            for e in (await handle.fetch_history()).events
            if e.HasField("activity_task_scheduled_event_attributes")
            and e.activity_task_scheduled_event_attributes.activity_type.name == "get_mark_price"
        )

    async with asyncio.timeout(timeout_s):
        while await reads() < n:
            await asyncio.sleep(0.1)


async def test_deploy_over_open_positions_finishes_every_position(stack: Stack) -> None:
    symbols = ["BTCUSDT", "ETHUSDT"]
    stack.exchange.set_price("BTCUSDT", "60000")
    stack.exchange.set_price("ETHUSDT", "3000")
    intents = [
        TradeIntent(symbol=s, side=Side.LONG, notional_usdt=D(150), exits=ExitOverrides(stop_loss_pct=D(2)))
        for s in symbols
    ]
    async with stack.workers():  # v1
        handles = [await start_position(stack, i, options=OPTS) for i in intents]
        for h in handles:
            await wait_status(h, PositionStatus.OPEN)
            await until_mark_checks(h, 2)
    histories_v1 = [await h.fetch_history() for h in handles]

    # The deploy: v1's worker is gone; v2's worker (a new process would be the same: empty cache)
    # replays every open position's history and carries on with the new code.
    async with (
        BinanceFuturesClient.from_settings(stack.settings) as venue,
        BinanceFuturesClient(stack.exchange.base_url, None, None) as market,
        exchange_worker(stack.client, venue),
    ):
        v2 = lifecycle_worker(stack.client, stack.settings, stack.redis, market, position_workflow=PatchedV2)
        async with v2:
            await asyncio.sleep(1.5)  # v2 runs its new command sequence on the old histories
            stack.exchange.set_price("BTCUSDT", "58700")
            stack.exchange.set_price("ETHUSDT", "2930")
            results = [await asyncio.wait_for(h.result(), 60) for h in handles]
    assert [r.status for r in results] == [PositionStatus.CLOSED] * 2
    assert {r.exit_reason for r in results} == {"stop_loss"}
    assert await venue_positions(stack) == {}
    for h in handles:  # no workflow task failed on the way (a nondeterminism error would show here)
        events = (await h.fetch_history()).events
        assert not [e for e in events if e.HasField("workflow_task_failed_event_attributes")]

    # The control: the same change without the patch cannot replay the histories v1 left.
    patched, unpatched = (
        Replayer(workflows=[wf, PortfolioWorkflow], data_converter=pydantic_data_converter)
        for wf in (PatchedV2, UnpatchedV2)
    )
    for history in histories_v1:
        await patched.replay_workflow(history)
        with pytest.raises(NondeterminismError):
            await unpatched.replay_workflow(history)
