"""The portfolio's commands follow from history events, never from comparing the clock.

The first workflow task after a Temporal server restart can reach the worker carrying the previous
task's time. `bench.faults` found it twice (seeds 10 and 78): the live portfolio waited where its
replay ran the holder check (or projected), and the portfolio stopped replaying. Moving that one
task's time back to its predecessor's made each failing history replay, which is how the cause was
confirmed. So every history of the portfolio must replay with any one task moved back to the previous
task's time; the loop before `portfolio-steps-on-timers` fails this on its holder checks."""

from __future__ import annotations

import json

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.workflows.conftest import Stack
from tests.workflows.test_portfolio_resilience import (
    ROOMY,
    decision_of,
    eventually,
    portfolio_worker,
    request,
    start_probe,
    view,
)
from tests.workflows.test_replay import one_task_late
from trading.governor import Grant
from workflows.messages import DEFAULT_PORTFOLIO_ID, LIFECYCLE_TASK_QUEUE, PortfolioInput
from workflows.portfolio import PortfolioWorkflow


def count(history: WorkflowHistory, activity: str) -> int:
    return sum(
        1
        for e in json.loads(history.to_json())["events"]
        if e["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED"
        and e["activityTaskScheduledEventAttributes"]["activityType"]["name"] == activity
    )


async def test_the_portfolio_replays_whatever_time_a_task_carries(stack: Stack) -> None:
    async with portfolio_worker(stack):
        portfolio = await stack.client.start_workflow(
            "PortfolioWorkflow",
            PortfolioInput(policy=ROOMY, holder_check_seconds=0.3),
            id=DEFAULT_PORTFOLIO_ID,
            task_queue=LIFECYCLE_TASK_QUEUE,
        )
        probes = [await start_probe(stack, f"probe-clock-{i}") for i in range(4)]
        for i, probe in enumerate(probes):
            await portfolio.signal("request_reservation", request(probe.id, f"T{i:03d}USDT"))
        for probe in probes:
            assert isinstance(await decision_of(probe), Grant)
        for probe in probes[:2]:
            await probe.terminate("gone without releasing: the holder check frees its slot")

        async def freed_and_checked_again() -> bool:
            held = set((await view(stack)).book.reservations)
            history = await portfolio.fetch_history()
            return held == {p.id for p in probes[2:]} and count(history, "find_stopped_holders") >= 6

        await eventually(freed_and_checked_again, 60)
        history = await portfolio.fetch_history()

    assert count(history, "project_portfolio") >= 2  # the projection's rest timer ran too
    replayer = Replayer(workflows=[PortfolioWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
    failed = []
    for task, late in one_task_late(history):
        result = await replayer.replay_workflow(late, raise_on_replay_failure=False)
        if result.replay_failure is not None:
            failed.append(f"task {task}: {str(result.replay_failure)[:200]}")
    assert not failed, failed
