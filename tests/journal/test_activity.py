"""The journal activity: run twice (a retry) it writes one row, and the performance gauges in the
worker's performance endpoint follow the journal."""

from __future__ import annotations

import math
from decimal import Decimal

import httpx
from temporalio.testing import ActivityEnvironment

from activities.journal import JournalActivities
from journal.metrics import PerformanceGauges
from journal.store import Journal
from tests.trading.test_records import rec
from tests.workflows.test_metrics import sample
from trading.records import ClosedTrade, RecordMode
from workers.processes import free_port

D = Decimal


def closed(n: int, pnl: str) -> ClosedTrade:
    fields = rec(n, pnl, trade_id=f"position-BTCUSDT-{n}").model_dump(exclude={"run_id", "mode"})
    return ClosedTrade(**fields)


async def test_a_retried_activity_journals_once_and_the_gauges_follow(journal: Journal) -> None:
    port = free_port()
    gauges = PerformanceGauges()
    server = gauges.serve(port)
    try:
        await check_retries_and_gauges(journal, gauges, port)
    finally:
        server.shutdown()
        server.server_close()


async def check_retries_and_gauges(journal: Journal, gauges: PerformanceGauges, port: int) -> None:
    acts = JournalActivities(journal, RecordMode.PAPER, D(10000), gauges)
    env = ActivityEnvironment()

    assert await env.run(acts.journal_trade, closed(1, "250")) is True
    assert await env.run(acts.journal_trade, closed(1, "250")) is False  # Temporal retried it
    (row,) = journal.trades()
    assert (row.trade_id, row.run_id, row.mode, row.realized_pnl) == (
        "position-BTCUSDT-1",
        "paper",
        RecordMode.PAPER,
        D(250),
    )
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert sample(text, "quantum_journal_trades", mode="paper") == 1  # not 2
    assert sample(text, "quantum_realized_pnl_usdt", mode="paper") == 250
    assert sample(text, "quantum_equity_usdt", mode="paper") == 10250
    assert sample(text, "quantum_drawdown_usdt", mode="paper") == 0
    assert math.isnan(sample(text, "quantum_rolling_sharpe", mode="paper"))  # one day: undefined

    await env.run(acts.journal_trade, closed(2, "-410"))
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert sample(text, "quantum_realized_pnl_usdt", mode="paper") == -160
    assert sample(text, "quantum_equity_usdt", mode="paper") == 9840
    assert sample(text, "quantum_drawdown_usdt", mode="paper") == 410  # from the 10250 peak
    assert sample(text, "quantum_drawdown_pct", mode="paper") == 410 / 10250 * 100
    assert sample(text, "quantum_max_drawdown_pct", mode="paper") == 410 / 10250 * 100
