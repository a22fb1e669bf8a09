"""Each worker exposes Prometheus metrics on its own port: the Temporal SDK's and the seed's names."""

from __future__ import annotations

import asyncio
import re
from decimal import Decimal

import httpx

from tests.workflows.conftest import Stack
from tests.workflows.test_position_lifecycle import start_position, wait_status
from trading.intents import Side, TradeIntent
from workers.processes import free_port, http_ok
from workflows.messages import PositionStatus

D = Decimal


def sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


async def test_worker_metrics(stack: Stack) -> None:
    stack.exchange.set_price("BTCUSDT", "60000")
    ports = {"lifecycle": free_port(), "exchange": free_port()}
    for kind, port in ports.items():
        proc = stack.start_worker_process(kind, "--metrics-port", str(port))
        proc.wait_ready(lambda p=port: http_ok(f"http://127.0.0.1:{p}/metrics"), 30, "metrics")
    handle = await start_position(stack, TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150)))
    await wait_status(handle, PositionStatus.OPEN, timeout=30)
    denied = await start_position(stack, TradeIntent(symbol="BTCUSDT", side=Side.SHORT, notional_usdt=D(150)))
    await asyncio.wait_for(denied.result(), 30)
    await handle.execute_update("close", {})
    await asyncio.wait_for(handle.result(), 30)
    await asyncio.sleep(1.5)
    lifecycle = httpx.get(f"http://127.0.0.1:{ports['lifecycle']}/metrics").text
    exchange = httpx.get(f"http://127.0.0.1:{ports['exchange']}/metrics").text
    assert sample(lifecycle, "quantum_govern_allow_total") == 1
    assert sample(lifecycle, "quantum_govern_deny_total", gate="symbol_open") == 1
    assert sample(lifecycle, "quantum_portfolio_slots_used") == 0
    assert sample(lifecycle, "quantum_open_positions") == 0
    assert sample(lifecycle, "quantum_portfolio_notional_used_usdt") == 0
    assert sample(lifecycle, "temporal_workflow_completed_total", workflow_type="PositionWorkflow") == 2
    assert sample(exchange, "apply_layer_exec_total", symbol="BTCUSDT", action="open") == 1
    assert sample(exchange, "apply_layer_exec_total", symbol="BTCUSDT", action="close") == 1
    assert sample(exchange, "apply_layer_exec_success_total") == 2
    assert sample(exchange, "quantum_intent_to_order_seconds_count") == 1
    assert "temporal_activity_execution_latency" in exchange
    # The venue's request weight as the exchange worker sees it, and the entries' budget (80 % of 2,400).
    assert sample(exchange, "binance_request_weight_used_1m") > 0
    assert sample(exchange, "binance_request_weight_budget_1m") == 1920
    assert sample(exchange, "binance_ip_banned") == 0
