"""What the dashboard reads from a real Redis and a real journal while Temporal is away: the reconcile
events with their Web UI links, the closed trades, equity and drawdown of this stack's run (not a
backtest's), realized PnL from the ledger, and the reason the portfolio is missing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from activities.projections import LEDGER_KEY
from activities.reconcile import RECONCILE_STREAM
from journal.store import open_journal
from tests.trading.test_records import DAY_MS, T0, rec
from trading.config import load_settings
from workers.dashboard.gather import SystemView
from workers.dashboard.hub import to_json
from workers.devservers import start_redis
from workers.processes import free_port


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    proc, port = start_redis(tmp_path)
    try:
        yield port
    finally:
        proc.stop()


async def test_view_without_temporal(tmp_path: Path, redis_port: int) -> None:
    home = tmp_path / "qt"
    journal = open_journal(None, home)
    journal.record_many(
        [
            rec(1, "40", day=1, trade_id="position-BTCUSDT-manual-1", run_id="paper", mode="paper"),
            rec(2, "-90", day=2, trade_id="position-ETHUSDT-manual-2", run_id="paper", mode="paper"),
            rec(3, "999", day=3),  # a backtest's row: not this stack's
        ]
    )
    r = aioredis.Redis(port=redis_port)
    await r.xadd(
        RECONCILE_STREAM,
        {
            "kind": "close_gone",
            "symbol": "BTCUSDT",
            "field": "position_amt",
            "detail": "venue is flat, workflow holds 0.002",
            "workflow_id": "position-BTCUSDT-manual-1",
            "timestamp": str(T0),
            "payload": "{}",
        },
    )
    await r.hset(LEDGER_KEY.format(symbol="BTCUSDT"), mapping={"realized_pnl": "40", "trades": "1"})
    await r.hset(LEDGER_KEY.format(symbol="ETHUSDT"), mapping={"realized_pnl": "-90", "trades": "1"})
    await r.aclose()

    settings = load_settings(
        qt_home=home,
        redis_port=redis_port,
        temporal_address=f"127.0.0.1:{free_port()}",  # nobody listens there
        temporal_ui_port=18233,
        paper_start_balance_usdt=Decimal(1000),
        start_equity_usdt=None,
    )
    view = SystemView(settings)
    try:
        v = json.loads(to_json(await view()))  # what the page receives: valid JSON, no NaN
    finally:
        await view.close()

    assert v["portfolio"] is None and "unreachable" in v["portfolio_error"]
    assert v["mode"] == "paper" and v["controls"] is False
    assert v["ui"] == "http://127.0.0.1:18233"
    assert v["realized_pnl"] == "-50" and v["closed_trades"] == 2
    [event] = v["reconcile"]
    assert event["kind"] == "close_gone" and event["detail"] == "venue is flat, workflow holds 0.002"
    assert event["link"] == "http://127.0.0.1:18233/namespaces/default/workflows/position-BTCUSDT-manual-1"

    j = v["journal"]
    assert j["run_id"] == "paper" and j["count"] == 2 and j["capital"] == "1000"
    assert [t["trade_id"] for t in j["trades"]] == ["position-ETHUSDT-manual-2", "position-BTCUSDT-manual-1"]
    assert j["trades"][0]["link"].endswith("/workflows/position-ETHUSDT-manual-2")
    assert [(p["time_ms"], p["equity"]) for p in j["curve"]] == [
        (T0, "1000"),
        (T0 + DAY_MS, "1040"),
        (T0 + 2 * DAY_MS, "950"),
    ]
    assert j["curve"][-1]["drawdown_usdt"] == "90"
    assert j["figures"]["equity"] == 950.0 and j["figures"]["trades"] == 2
    assert j["figures"]["max_drawdown_pct"] == pytest.approx(90 / 1040 * 100)
    assert j["figures"]["rolling_sharpe"] is None or isinstance(j["figures"]["rolling_sharpe"], float)

    # With a token configured the page is told the controls exist (never the token itself).
    token = "view-token-0123456789"
    armed = SystemView(
        settings.model_copy(update={"dashboard_token": load_settings(dashboard_token=token).dashboard_token})
    )
    try:
        text = to_json(await armed())
    finally:
        await armed.close()
    assert json.loads(text)["controls"] is True and token not in text


async def test_redis_down_is_reported_not_fatal(tmp_path: Path) -> None:
    settings = load_settings(
        qt_home=tmp_path / "qt", redis_port=free_port(), temporal_address=f"127.0.0.1:{free_port()}"
    )
    view = SystemView(settings)
    try:
        v = await view()
    finally:
        await view.close()
    assert "redis_error" in v and v["reconcile"] == [] and v["realized_pnl"] is None
    assert v["journal"]["count"] == 0 and v["journal"]["curve"] == []
