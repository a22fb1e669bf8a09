"""The portfolio singleton: slots come back on every path, the kill switch and flatten work, policy
changes are validated, and continue-as-new loses nothing."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from temporalio import workflow
from temporalio.client import WorkflowUpdateFailedError
from temporalio.worker import Worker

from tests.workflows.conftest import Stack
from tests.workflows.test_position_lifecycle import start_position, wait_status
from trading.governor import Denial, Grant, ReservationRequest, RiskPolicy
from trading.intents import Side, TradeIntent
from workflows.messages import (
    DEFAULT_PORTFOLIO_ID,
    LIFECYCLE_TASK_QUEUE,
    FlattenRequest,
    KillSwitchRequest,
    PortfolioInput,
    PortfolioView,
    PositionStatus,
)

D = Decimal


async def portfolio_view(stack: Stack) -> PortfolioView:
    return await stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID).query(
        "state", result_type=PortfolioView
    )


async def eventually(check, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.2)


async def test_terminated_holder_gets_its_slot_back(stack: Stack) -> None:
    stack.exchange.set_price("BTCUSDT", "60000")
    async with stack.workers(holder_check_seconds=1):
        handle = await start_position(
            stack, TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150))
        )
        await wait_status(handle, PositionStatus.OPEN)
        assert (await portfolio_view(stack)).slots_used == 1
        await handle.terminate("operator pulled the plug")  # no code of the workflow runs

        async def freed() -> bool:
            return (await portfolio_view(stack)).slots_used == 0

        await eventually(freed)
        view = await portfolio_view(stack)
        assert view.notional_used == 0


async def test_kill_switch_denies_entries_but_exits_still_run(stack: Stack) -> None:
    stack.exchange.set_price("BTCUSDT", "60000")
    stack.exchange.set_price("ETHUSDT", "3000")
    async with stack.workers():
        open_one = await start_position(
            stack, TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150))
        )
        await wait_status(open_one, PositionStatus.OPEN)
        portfolio = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
        policy = await portfolio.execute_update(
            "set_kill_switch", KillSwitchRequest(on=True), result_type=RiskPolicy
        )
        assert policy.kill_switch
        denied = await start_position(
            stack, TradeIntent(symbol="ETHUSDT", side=Side.LONG, notional_usdt=D(50))
        )
        result = await asyncio.wait_for(denied.result(), 10)
        assert result.status == PositionStatus.REJECTED and result.rejection_gate == "kill_switch"
        # The open position can still be closed.
        await open_one.execute_update("close", {"reason": "manual"})
        closed = await asyncio.wait_for(open_one.result(), 10)
        assert closed.status == PositionStatus.CLOSED
    assert len(stack.exchange.admin("GET", "orders?symbol=ETHUSDT")) == 0


async def test_emergency_flatten_closes_every_holder(stack: Stack) -> None:
    for sym, price in (("BTCUSDT", "60000"), ("ETHUSDT", "3000"), ("SOLUSDT", "150")):
        stack.exchange.set_price(sym, price)
    async with stack.workers():
        handles = [
            await start_position(stack, TradeIntent(symbol=s, side=Side.LONG, notional_usdt=D(150)))
            for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")
        ]
        for h in handles:
            await wait_status(h, PositionStatus.OPEN)
        portfolio = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
        told = await portfolio.execute_update(
            "emergency_flatten", FlattenRequest(reason="drill"), result_type=list[str]
        )
        assert sorted(told) == sorted(h.id for h in handles)
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 20)
        view = await portfolio_view(stack)
    assert {r.exit_reason for r in results} == {"emergency_flatten"}
    assert {r.exit_controller for r in results} == {"portfolio"}
    assert view.slots_used == 0 and view.book.emergency == "HALTED"


async def test_invalid_policy_is_rejected_with_the_reason(stack: Stack) -> None:
    async with stack.workers():
        await stack.client.start_workflow(
            "PortfolioWorkflow", PortfolioInput(), id=DEFAULT_PORTFOLIO_ID, task_queue=LIFECYCLE_TASK_QUEUE
        )
        portfolio = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await portfolio.execute_update("set_policy", {"max_open_positions": 0})
        assert "max_open_positions" in str(err.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await portfolio.execute_update(
                "set_policy", {"max_notional_per_trade_usdt": "500", "max_total_notional_usdt": "100"}
            )
        assert "max_total_notional_usdt" in str(err.value.cause)
        updated = await portfolio.execute_update(
            "set_policy", RiskPolicy(max_open_positions=3, allowlist=("*",)), result_type=RiskPolicy
        )
        assert updated.max_open_positions == 3
        assert (await portfolio_view(stack)).policy.max_open_positions == 3


@workflow.defn(name="StubHolder", sandboxed=False)
class StubHolder:
    """Stands in for a position: waits for the portfolio's answer and returns it."""

    def __init__(self) -> None:
        self.decision: Grant | Denial | None = None

    @workflow.run
    async def run(self) -> Grant | Denial:
        await workflow.wait_condition(lambda: self.decision is not None)
        assert self.decision is not None
        return self.decision

    @workflow.signal(name="reservation_decided")
    def reservation_decided(self, decision: Grant | Denial) -> None:
        self.decision = decision


async def test_continue_as_new_keeps_reservations_and_pending_requests(stack: Stack) -> None:
    """The portfolio continues-as-new every ~100 events while 120 requests stream in: every holder
    gets exactly one answer, and the book after the runs equals the grants."""
    policy = RiskPolicy(
        max_open_positions=40,
        allowlist=("*",),
        max_exec_per_hour=1000,
        max_exec_per_5min=1000,
        max_total_notional_usdt=D(100000),
    )
    async with (
        stack.workers(exchange=False),
        Worker(stack.client, task_queue="stub-holders", workflows=[StubHolder]),
    ):
        first = await stack.client.start_workflow(
            "PortfolioWorkflow",
            PortfolioInput(policy=policy, max_history_events=100),
            id=DEFAULT_PORTFOLIO_ID,
            task_queue=LIFECYCLE_TASK_QUEUE,
        )
        holders = [
            await stack.client.start_workflow(StubHolder.run, id=f"holder-{i}", task_queue="stub-holders")
            for i in range(120)
        ]
        portfolio = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
        for i, h in enumerate(holders):  # one by one: many small batches, many events
            await portfolio.signal(
                "request_reservation",
                ReservationRequest(
                    holder_id=h.id, symbol=f"S{i % 60}USDT", side=Side.LONG, notional_usdt=D(10)
                ),
            )
        answers = await asyncio.wait_for(asyncio.gather(*(h.result() for h in holders)), 60)
        view = await portfolio_view(stack)
        latest = await portfolio.describe()
    granted = {a.holder_id for a in answers if isinstance(a, Grant)}
    assert len(granted) == 40  # 60 symbols, 40 slots
    assert sum(isinstance(a, Denial) for a in answers) == 80
    assert set(view.book.reservations) == granted
    assert view.granted_total == 40 and view.denied_total == 80
    assert latest.run_id != first.result_run_id, "the portfolio never continued as new"
