"""An exchange worker (re)started while the venue does not answer serves at once: its clock offset is
measured beside it. Measured before it served, a venue that refused, hung or had banned the IP killed the
process at start-up, and every restart met the same failure (the fault explorer's seed 48). A real
exchange-worker process against the paper exchange and a dev server."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from tests.workflows.conftest import Stack
from tests.workflows.test_position_lifecycle import start_position, wait_status
from trading.intents import Side, TradeIntent
from workflows.messages import PositionStatus

CLOCK_OUTAGE = {"paths": ["/fapi/v1/time"], "mode": "refuse", "seconds": 600}


async def wait_logged(text: str, log_tail: callable, timeout: float = 60) -> None:  # type: ignore[valid-type]
    """An upper bound for a loaded machine, not a figure under test."""
    async with asyncio.timeout(timeout):
        while text not in log_tail(400):
            await asyncio.sleep(0.1)


async def test_an_exchange_worker_started_while_the_venue_clock_refuses_still_places_orders(
    stack: Stack,
) -> None:
    stack.exchange.set_price("BTCUSDT", "60000")
    stack.exchange.set_faults(outage=CLOCK_OUTAGE)
    worker = stack.start_worker_process("exchange")
    await wait_logged("venue clock not synced", worker.log_tail)
    async with stack.workers(exchange=False):
        intent = TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=Decimal(150))
        handle = await start_position(stack, intent)
        view = await wait_status(handle, PositionStatus.OPEN)
        assert view.open_qty > 0
        assert worker.alive()
        # The venue's clock answers again: the offset is measured without a restart.
        stack.exchange.clear_faults()
        await wait_logged("venue clock synced offset_ms=", worker.log_tail)
        await handle.execute_update("close", {})
        await asyncio.wait_for(handle.result(), 60)
    assert worker.alive()
