"""Workers scaled out on the same queues start together: each registers the search attributes and the
Schedules it keeps, and none may die because another got there first. A CI run saw the second
lifecycle worker of a pair exit at startup with "Schedule already running" (describe said none, the
other created it, then this one's create raised). Against a real dev server started bare: no search
attributes, no schedules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from trading.config import load_settings
from workers.devservers import temporal_serving
from workers.processes import ManagedProcess, free_port, port_open
from workers.schedules import (
    RECONCILE_SCHEDULE_ID,
    RETRAIN_SCHEDULE_ID,
    ensure_reconcile_schedule,
    ensure_retrain_schedule,
    retrain_schedule,
)
from workers.stack import dev_server_argv
from workers.temporal_client import SEARCH_ATTRIBUTES, ensure_search_attributes

TOGETHER = 4  # workers starting at once


@pytest.fixture
async def bare_server(tmp_path: Path) -> AsyncIterator[Client]:
    port = free_port()
    argv = dev_server_argv("127.0.0.1", port, "--headless", search_attributes=False)
    proc = ManagedProcess(name="temporal", argv=argv, log_path=tmp_path / "temporal.log")
    proc.start()
    try:
        address = f"127.0.0.1:{port}"
        proc.wait_ready(lambda: port_open("127.0.0.1", port) and temporal_serving(address), 30, address)
        yield await Client.connect(address, data_converter=pydantic_data_converter)
    finally:
        proc.stop()


async def test_workers_starting_together_all_register_the_search_attributes(bare_server: Client) -> None:
    async def listed() -> dict[str, int]:
        resp = await bare_server.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=bare_server.namespace)
        )
        return {k: v for k, v in resp.custom_attributes.items() if k in SEARCH_ATTRIBUTES}

    assert await listed() == {}
    await asyncio.gather(*(ensure_search_attributes(bare_server) for _ in range(TOGETHER)))
    assert await listed() == SEARCH_ATTRIBUTES


async def test_workers_starting_together_all_keep_one_reconcile_schedule(bare_server: Client) -> None:
    await asyncio.gather(
        *(ensure_reconcile_schedule(bare_server, 30, run_now=False) for _ in range(TOGETHER))
    )
    described = await bare_server.get_schedule_handle(RECONCILE_SCHEDULE_ID).describe()
    assert described.schedule.spec.intervals[0].every == timedelta(seconds=30)
    # One that exists is kept as it is: a later start with another interval changes nothing.
    await ensure_reconcile_schedule(bare_server, 90, run_now=False)
    described = await bare_server.get_schedule_handle(RECONCILE_SCHEDULE_ID).describe()
    assert described.schedule.spec.intervals[0].every == timedelta(seconds=30)


async def test_workers_starting_together_bring_an_upserted_schedule_to_the_settings(
    bare_server: Client,
) -> None:
    daily = load_settings(retrain_interval_hours=24)
    await asyncio.gather(*(ensure_retrain_schedule(bare_server, daily) for _ in range(TOGETHER)))
    handle = bare_server.get_schedule_handle(RETRAIN_SCHEDULE_ID)
    assert (await handle.describe()).schedule.spec.intervals[0].every == timedelta(hours=24)
    # Upserted ones follow the settings: restarted with a new interval, they all agree on it.
    hourly = load_settings(retrain_interval_hours=6)
    assert retrain_schedule(hourly).spec.intervals[0].every == timedelta(hours=6)
    await asyncio.gather(*(ensure_retrain_schedule(bare_server, hourly) for _ in range(TOGETHER)))
    assert (await handle.describe()).schedule.spec.intervals[0].every == timedelta(hours=6)
