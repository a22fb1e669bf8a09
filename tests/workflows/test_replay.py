"""Determinism: every workflow's history replays against the current code, both histories recorded
today from a full run and the ones committed under histories/ (a change that breaks determinism for
workflows already running in production fails here). Also: no API key or secret in any history.

Changing a workflow's commands: guard the new path with `workflow.patched(...)` so old histories still
replay, then record new histories with `RECORD_HISTORIES=1 pytest tests/workflows/test_replay.py`.
(Before the first deployment they were simply re-recorded.)"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.workflows.conftest import Stack
from tests.workflows.test_position_lifecycle import FAST, start_position, wait_status
from trading.intents import ExitOverrides, Side, TradeIntent
from workflows.bar_close import BarCloseWorkflow
from workflows.messages import ClosePositionRequest, PositionStatus
from workflows.portfolio import PortfolioWorkflow
from workflows.position import PositionWorkflow
from workflows.reconcile import ReconcileWorkflow
from workflows.retrain import RetrainWorkflow
from workflows.universe import UniverseWorkflow

HISTORIES = Path(__file__).parent / "histories"
D = Decimal


def replayer() -> Replayer:
    return Replayer(
        workflows=[
            PositionWorkflow,
            PortfolioWorkflow,
            BarCloseWorkflow,
            UniverseWorkflow,
            RetrainWorkflow,
            ReconcileWorkflow,
        ],
        data_converter=pydantic_data_converter,
    )


async def run_scenario(stack: Stack) -> None:
    """Open → partial close → stop-loss; a rejected intent; a failed one; the portfolio behind them."""
    stack.exchange.set_price("BTCUSDT", "60000")
    stack.exchange.set_price("ETHUSDT", "3000")
    async with stack.workers():
        full = await start_position(
            stack,
            TradeIntent(
                symbol="BTCUSDT",
                side=Side.LONG,
                notional_usdt=D(150),
                exits=ExitOverrides(stop_loss_pct=D(2)),
            ),
            "replay-full",
        )
        await wait_status(full, PositionStatus.OPEN)
        await full.execute_update("close", ClosePositionRequest(quantity=D("0.001")))
        stack.exchange.set_price("BTCUSDT", "58000")
        await asyncio.wait_for(full.result(), 20)
        rejected = await start_position(
            stack,
            TradeIntent(symbol="ETHUSDT", side=Side.SHORT, notional_usdt=D(50), kill_score=0.95),
            "replay-rejected",
        )
        await asyncio.wait_for(rejected.result(), 20)
        failed = await start_position(
            stack,
            TradeIntent(symbol="FOOUSDT", side=Side.LONG, notional_usdt=D(50)),
            "replay-failed",
            options=FAST,
        )
        with pytest.raises(WorkflowFailureError) as err:
            await asyncio.wait_for(failed.result(), 20)
        assert "symbol: FOOUSDT is not a trading symbol" in str(err.value.cause)


async def fetch_histories(stack: Stack) -> list[WorkflowHistory]:
    ids = {(wf.id, wf.run_id) async for wf in stack.client.list_workflows()}
    return [
        await stack.client.get_workflow_handle(wid, run_id=rid).fetch_history() for wid, rid in sorted(ids)
    ]


async def test_histories_replay_and_hold_no_secrets(stack: Stack) -> None:
    await run_scenario(stack)
    histories = await fetch_histories(stack)
    types = {
        json.loads(h.to_json())["events"][0]["workflowExecutionStartedEventAttributes"]["workflowType"][
            "name"
        ]
        for h in histories
    }
    assert types == {"PositionWorkflow", "PortfolioWorkflow"}
    for history in histories:
        text = history.to_json()
        assert stack.exchange.api_key not in text, f"API key in the history of {history.workflow_id}"
        assert stack.exchange.api_secret not in text, f"API secret in the history of {history.workflow_id}"

    # The portfolio is still running: replay what it has so far, as a worker restart would.
    async def each() -> AsyncIterator[WorkflowHistory]:
        for history in histories:
            yield history

    results = await replayer().replay_workflows(each(), raise_on_replay_failure=False)
    assert not results.replay_failures, results.replay_failures
    if os.environ.get("RECORD_HISTORIES"):
        HISTORIES.mkdir(exist_ok=True)
        for history in histories:
            (HISTORIES / f"{history.workflow_id}.json").write_text(history.to_json())


# Histories of earlier versions stay in dated folders (histories/2026-12-v1/: before the position state
# machine); each file is named by its workflow id, which the replay needs (client ids derive from it).
@pytest.mark.parametrize(
    "path", sorted(HISTORIES.rglob("*.json")), ids=lambda p: str(p.relative_to(HISTORIES).with_suffix(""))
)
async def test_committed_histories_still_replay(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await replayer().replay_workflow(history)


def test_there_are_committed_histories_for_each_workflow() -> None:
    names = {p.stem for p in HISTORIES.glob("*.json")}
    assert {"replay-full", "replay-rejected", "replay-failed", "portfolio-default"} <= names
    assert {"bar-close", "bar-close-shadow", "universe"} <= names  # tests/workflows/test_bar_close.py
    assert "retrain" in names  # recorded by tests/workflows/test_retrain.py
    assert "reconcile-adopt" in names  # tests/workflows/test_reconcile.py
