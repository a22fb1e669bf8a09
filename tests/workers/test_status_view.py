"""`qtrader status` renders the real portfolio: slots and notional from the portfolio workflow, each open
position's numbers from its own workflow, the portfolio's denials with their reasons, and the model
decisions from Redis — on a whole local stack, in-process and through the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from activities.inference import DECISION_STREAM
from tests.conftest import REPO
from tests.workers.test_stack import qtrader, stack_env  # noqa: F401  (the fixture)
from tests.workflows.conftest import Stack, stack  # noqa: F401  (the fixture)
from tests.workflows.test_position_lifecycle import start_position, wait_status
from trading.intents import Side, TradeIntent
from workers.status_view import render, snapshot
from workflows.messages import PositionResult, PositionStatus


async def test_status_frame_shows_the_real_portfolio(stack: Stack) -> None:  # noqa: F811
    stack.exchange.set_price("BTCUSDT", "60000")
    await stack.redis.xadd(
        DECISION_STREAM,
        {
            "symbol": "ETHUSDT",
            "bar_open_ms": "1700000000000",
            "side": "SHORT",
            "confidence": "0.5123",
            "action": "skip",
            "reason": "confidence 0.512 below the threshold 0.550",
        },
    )
    async with stack.workers():
        handle = await start_position(
            stack,
            TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=Decimal(150)),
            "position-status-1",
        )
        await wait_status(handle, PositionStatus.OPEN)
        second = await start_position(
            stack,
            TradeIntent(symbol="BTCUSDT", side=Side.SHORT, notional_usdt=Decimal(150)),
            "position-status-2",
        )
        result: PositionResult = await asyncio.wait_for(second.result(), 20)
        assert result.status is PositionStatus.REJECTED
        stack.exchange.set_price("BTCUSDT", "60600")
        await asyncio.sleep(1.0)  # the mark-price timer moves the position's mark
        snap = await snapshot(stack.client, stack.redis)
        view = await handle.query("state")
        frame = render(snap, color=False)

        p = snap["portfolio"]
        assert p["slots_used"] == 1 and p["max_open_positions"] == stack.settings.gov_max_open_positions
        assert Decimal(p["notional_used"]) > 0
        [pos] = snap["positions"]
        assert pos["workflow_id"] == "position-status-1" and pos["status"] == "OPEN"
        assert Decimal(pos["entry_price"]) == Decimal(view["entry_price"])
        assert Decimal(pos["unrealized_pnl"]) > 0  # long, and the mark rose 1 %
        assert f"slots 1/{stack.settings.gov_max_open_positions}" in frame
        line = next(li for li in frame.splitlines() if li.startswith("BTCUSDT"))
        assert "LONG" in line and "OPEN" in line and f"{Decimal(pos['entry_price']):,.2f}" in line
        assert "denied  position-status-2: symbol_open" in frame
        assert "ETHUSDT   SHORT conf 0.512 skip confidence 0.512 below the threshold" in frame

        # the CLI: one JSON object with the same numbers, and one plain frame
        env = stack.env()
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "workers.cli", "status", "--json"],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        cli = json.loads(out.stdout)
        assert (
            cli["portfolio"]["slots_used"] == 1 and cli["positions"][0]["workflow_id"] == "position-status-1"
        )
        await handle.execute_update("close", {"reason": "test"})
        await asyncio.wait_for(handle.result(), 20)  # closed before the workers stop


def test_paper_runs_the_whole_system_and_exits_with_a_summary(
    stack_env: dict[str, str],  # noqa: F811
    champion_registry: Path,
) -> None:
    """`qtrader paper --for N` (what `./quantum paper --for N` runs): stack up with replayed prices, the
    registry's champion reused, bars replayed, intents → positions, a summary, exit 0."""
    import re
    import shutil

    shutil.copytree(champion_registry, Path(stack_env["QT_HOME"]) / "models")
    env = {**stack_env, "SIGNAL_CONFIDENCE_THRESHOLD": "0.505", "APPLY_ALLOWLIST": "BTCUSDT,ETHUSDT,SOLUSDT"}
    run = qtrader(env, "paper", "--for", "15", "--plain", "--speed", "3600", timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "champion reused from" in run.stdout
    assert f"Web UI http://127.0.0.1:{env['TEMPORAL_UI_PORT']}" in run.stdout
    m = re.search(
        r"summary: (\d+) bars streamed, (\d+) model decisions, (\d+) intents, (\d+) positions", run.stdout
    )
    assert m, run.stdout[-2000:]
    bars, decisions, intents, positions = map(int, m.groups())
    assert bars >= 3 * 5 and decisions >= 3 * 3  # five replayed bars or more, decisions for all three symbols
    # positions are counted through Temporal's visibility, a moment after the intents: both, not equal
    assert intents >= 1 and positions >= 1
    import httpx

    metrics = httpx.get(f"http://127.0.0.1:{env['INFERENCE_METRICS_PORT']}/metrics", timeout=5).text
    assert "inference_seconds" in metrics and 'action="open"' in metrics
    market = httpx.get(f"http://127.0.0.1:{env['MARKET_DATA_METRICS_PORT']}/metrics", timeout=5).text
    assert 'market_data_bars_total{source="replay"}' in market
    status = json.loads(qtrader(env, "status", "--json").stdout)
    # the stack keeps running (and trading) after the summary; the portfolio has been deciding
    assert status["portfolio"]["granted_total"] + status["portfolio"]["denied_total"] >= 1
