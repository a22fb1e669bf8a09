"""End to end through the local stack: a position opened and closed by the real workflows lands as
exactly one journal row carrying the workflow's own PnL, the lifecycle worker's performance gauges show
it, and a restarted worker shows the same figures (they come from the journal, not from memory)."""

from __future__ import annotations

import asyncio
import os
import signal
from decimal import Decimal

import httpx
import pytest

from journal.store import open_journal
from tests.workflows.conftest import Stack
from tests.workflows.test_metrics import sample
from tests.workflows.test_position_lifecycle import start_position, wait_status
from trading.intents import Side, TradeIntent
from trading.records import RecordMode
from workers.processes import ManagedProcess, free_port, http_ok
from workflows.messages import PositionStatus

D = Decimal


def start_lifecycle(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> tuple[ManagedProcess, int, int]:
    metrics, performance = free_port(), free_port()
    monkeypatch.setenv("PERFORMANCE_METRICS_PORT", str(performance))
    proc = stack.start_worker_process("lifecycle", "--metrics-port", str(metrics))
    proc.wait_ready(lambda: http_ok(f"http://127.0.0.1:{performance}/metrics"), 30, "performance metrics")
    return proc, metrics, performance


async def test_a_closed_position_is_journaled_once_with_its_pnl(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack.exchange.set_price("BTCUSDT", "60000")
    lifecycle, temporal_port, port = start_lifecycle(stack, monkeypatch)
    async with stack.workers(lifecycle=False):
        handle = await start_position(
            stack,
            TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150), strategy="journal-e2e"),
        )
        await wait_status(handle, PositionStatus.OPEN, timeout=30)
        stack.exchange.set_price("BTCUSDT", "60600")
        await handle.execute_update("close", {"reason": "take profit by hand"})
        result = await asyncio.wait_for(handle.result(), 30)
    assert result.status == PositionStatus.CLOSED and result.realized_pnl != 0

    (row,) = open_journal(None, stack.settings.qt_home).trades()
    assert row.trade_id == handle.id and (row.run_id, row.mode) == ("paper", RecordMode.PAPER)
    assert (row.realized_pnl, row.gross_pnl, row.fees) == (result.realized_pnl, result.gross_pnl, result.fees)
    assert (row.quantity, row.entry_price, row.exit_price) == (
        result.quantity,
        result.entry_price,
        result.exit_price,
    )
    assert (row.symbol, row.side, row.strategy, row.source) == ("BTCUSDT", Side.LONG, "journal-e2e", "manual")
    assert (row.exit_reason, row.exit_controller) == ("take profit by hand", "manual")
    assert 0 < row.opened_at_ms <= row.closed_at_ms
    # The exit at 60600 after an entry near 60000: a gain of about 1 % of ~150 USDT, less two fees.
    assert D("0.5") < row.gross_pnl < D("2") and row.realized_pnl == row.gross_pnl - row.fees

    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert sample(text, "quantum_journal_trades", mode="paper") == 1
    assert sample(text, "quantum_realized_pnl_usdt", mode="paper") == float(result.realized_pnl)
    assert sample(text, "quantum_equity_usdt", mode="paper") == float(D(10000) + result.realized_pnl)
    # The model-confidence panel's series: one intent (manual, confidence 1) started one position.
    text = httpx.get(f"http://127.0.0.1:{temporal_port}/metrics").text
    assert sample(text, "quantum_intent_confidence_count", source="manual") == 1
    assert sample(text, "quantum_intent_confidence_sum", source="manual") == 1.0

    # Killed outright and started again: the figures come back from the journal.
    os.kill(lifecycle.pid, signal.SIGKILL)
    lifecycle.popen.wait(timeout=10)  # type: ignore[union-attr]
    _, _, port = start_lifecycle(stack, monkeypatch)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert sample(text, "quantum_journal_trades", mode="paper") == 1
    assert sample(text, "quantum_realized_pnl_usdt", mode="paper") == float(result.realized_pnl)
