"""Kill the lifecycle worker (SIGKILL, no goodbye) in the middle of an entry and restart it: the
position ends up open exactly once at the exchange, with one entry order."""

from __future__ import annotations

import asyncio
import os
import signal
from decimal import Decimal

from tests.workflows.conftest import Stack
from tests.workflows.test_position_lifecycle import start_position, wait_status
from trading.intents import Side, TradeIntent
from workflows.messages import PositionStatus

D = Decimal


async def wait_for_event(handle, activity_type: str, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while True:
            history = await handle.fetch_history()
            for event in history.events:
                attrs = event.activity_task_scheduled_event_attributes
                if attrs and attrs.activity_type.name == activity_type:
                    return
            await asyncio.sleep(0.05)


async def test_sigkill_lifecycle_worker_mid_entry(stack: Stack) -> None:
    stack.exchange.set_price("BTCUSDT", "60000")
    # Orders take 1.5 s at the venue, so the kill lands while the entry order is in flight.
    stack.exchange.set_faults(latency_ms=1500, paths=["/fapi/v1/order"])
    worker = stack.start_worker_process("lifecycle", "--metrics-port", "0")
    async with stack.workers(lifecycle=False):
        await asyncio.sleep(1.0)  # the child connects and polls
        handle = await start_position(
            stack, TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150))
        )
        await wait_for_event(handle, "open_entry")
        os.kill(worker.pid, signal.SIGKILL)
        worker.popen.wait(timeout=5)  # type: ignore[union-attr]
        await asyncio.sleep(2.0)  # the order completes at the venue while no lifecycle worker runs
        stack.start_worker_process("lifecycle", "--metrics-port", "0")
        view = await wait_status(handle, PositionStatus.OPEN, timeout=40)
        stack.exchange.clear_faults()
    orders = stack.exchange.admin("GET", "orders?symbol=BTCUSDT")
    assert [(o["side"], o["status"], o["origQty"]) for o in orders] == [("BUY", "FILLED", "0.002")]
    assert view.open_qty == D("0.002")
    algos = stack.exchange.admin("GET", "algo-orders?symbol=BTCUSDT")
    assert [(a["orderType"], a["algoStatus"]) for a in algos] == [("STOP_MARKET", "NEW")]
