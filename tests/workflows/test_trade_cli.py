"""`qtrader trade ...` / `qtrader portfolio ...` as an operator runs them: child processes against a real
stack (dev server, Redis, paper exchange, both workers)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from decimal import Decimal

from tests.conftest import REPO
from tests.workflows.conftest import Stack

WF = "position-BTCUSDT-manual-1"


async def qtrader(stack: Stack, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=stack.env(),
        cwd=REPO,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def listed(stack: Stack, *flags: str) -> list[dict]:
    rc, out, err = await qtrader(stack, "trade", "list", "--json", *flags)
    assert rc == 0, err
    return json.loads(out)


async def until_listed(stack: Stack, predicate, *flags: str, within: float = 10.0) -> list[dict]:
    """Visibility is eventually consistent: poll `trade list` until it agrees."""
    deadline = time.monotonic() + within
    while True:
        rows = await listed(stack, *flags)
        if predicate(rows) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.2)


async def test_open_list_close_list_through_the_project_cli(stack: Stack) -> None:
    stack.exchange.set_price("BTCUSDT", "60000")
    async with stack.workers():
        rc, out, err = await qtrader(
            stack,
            "trade",
            "open",
            "--symbol",
            "BTCUSDT",
            "--side",
            "LONG",
            "--notional",
            "150",
            "--leverage",
            "5",
            "--stop-loss-pct",
            "2",
            "--take-profit-pct",
            "4",
            "--id",
            WF,
            "--wait",
        )
        assert rc == 0, (out, err)
        assert f"started {WF}: LONG BTCUSDT 150 USDT (manual)" in out
        assert f"/namespaces/default/workflows/{WF}" in out and "status  OPEN" in out, out
        desc = await stack.client.get_workflow_handle(WF).describe()
        assert await desc.static_summary() == "LONG BTCUSDT 150 USDT (manual)"

        # The same id again is refused; nothing new is started.
        rc, out, err = await qtrader(
            stack, "trade", "open", "--symbol", "BTCUSDT", "--side", "LONG", "--notional", "150", "--id", WF
        )
        assert rc == 1 and "already exists" in err, (out, err)

        rows = await until_listed(stack, lambda r: len(r) == 1)
        assert [(r["workflow_id"], r["symbol"], r["side"], r["status"], r["open_qty"]) for r in rows] == [
            (WF, "BTCUSDT", "LONG", "OPEN", "0.002")
        ]
        assert Decimal(rows[0]["entry_price"]) == 60000 and Decimal(rows[0]["stop_loss_price"]) == 58800
        rc, out, _ = await qtrader(stack, "trade", "list")
        assert rc == 0 and WF in out and "OPEN" in out and "58800" in out, out

        rc, out, err = await qtrader(stack, "trade", "show", WF)
        assert rc == 0 and "fill    BUY 0.002 @ 60000" in out, (out, err)
        rc, out, _ = await qtrader(stack, "portfolio", "show")
        assert rc == 0 and "slots   1/" in out and WF in out, out

        # Closing more than is open is refused with the reason; a partial close; then the rest.
        rc, out, err = await qtrader(stack, "trade", "close", WF, "--quantity", "0.5")
        assert rc == 1 and "exceeds the open quantity 0.002" in err, (out, err)
        rc, out, err = await qtrader(stack, "trade", "close", WF, "--quantity", "abc")
        assert rc == 2 and "quantity" in err, (out, err)
        stack.exchange.set_price("BTCUSDT", "61000")
        rc, out, err = await qtrader(stack, "trade", "close", WF, "--quantity", "0.001", "--reason", "half")
        assert rc == 0 and "closed 0.001 @ 61000" in out and "remaining 0.001" in out, (out, err)
        rc, out, err = await qtrader(stack, "trade", "close", WF, "--wait")
        assert rc == 0 and "remaining 0" in out and "result  CLOSED" in out, (out, err)
        rc, out, err = await qtrader(stack, "trade", "close", WF)
        assert rc == 1 and "has already finished" in err, (out, err)
        rc, out, err = await qtrader(stack, "trade", "close", "position-nope")
        assert rc == 1 and "no position workflow 'position-nope'" in err, (out, err)

        assert await until_listed(stack, lambda r: r == []) == []
        rc, out, _ = await qtrader(stack, "trade", "list")
        assert rc == 0 and "no position workflows running" in out
        closed = await listed(stack, "--all")
        assert [(r["workflow_id"], r["status"], r["run_status"]) for r in closed] == [
            (WF, "CLOSED", "COMPLETED")
        ]
        rc, out, _ = await qtrader(stack, "trade", "show", WF)
        assert rc == 0 and "result  CLOSED LONG 0.002 BTCUSDT" in out, out

    orders = stack.exchange.admin("GET", "orders?symbol=BTCUSDT")
    assert [(o["side"], o["reduceOnly"]) for o in orders] == [("BUY", False), ("SELL", True), ("SELL", True)]


async def test_portfolio_controls_through_the_project_cli(stack: Stack) -> None:
    stack.exchange.set_price("BTCUSDT", "60000")
    stack.exchange.set_price("ETHUSDT", "3000")
    stack.exchange.set_price("SOLUSDT", "150")
    async with stack.workers():
        rc, out, _ = await qtrader(stack, "portfolio", "show")
        assert rc == 0 and "not running yet" in out, out

        # The kill switch works before any position exists (it starts the portfolio).
        rc, out, err = await qtrader(stack, "portfolio", "kill-switch", "on", "--reason", "test")
        assert rc == 0 and "kill switch ON" in out, (out, err)
        rc, out, err = await qtrader(
            stack,
            "trade",
            "open",
            "--symbol",
            "BTCUSDT",
            "--side",
            "LONG",
            "--notional",
            "150",
            "--id",
            "position-killed",
            "--wait",
        )
        assert rc == 3 and "REJECTED by kill_switch" in out, (out, err)
        rc, out, err = await qtrader(stack, "portfolio", "kill-switch", "off")
        assert rc == 0 and "kill switch off" in out, (out, err)

        rc, out, err = await qtrader(
            stack,
            "portfolio",
            "policy",
            "--set",
            "max_open_positions=3",
            "--set",
            "allowlist=BTCUSDT,ETHUSDT",
        )
        assert rc == 0 and "max_open_positions           3" in out and "BTCUSDT,ETHUSDT" in out, (out, err)
        # Outside the allowlist: refused, and the reason says how to widen it.
        rc, out, err = await qtrader(
            stack, "trade", "open", "--symbol", "SOLUSDT", "--side", "LONG", "--notional", "150", "--wait"
        )
        assert rc == 3 and "REJECTED by allowlist" in out, (out, err)
        assert "qtrader portfolio policy --set allowlist=BTCUSDT,ETHUSDT,SOLUSDT" in out, out
        assert "APPLY_ALLOWLIST" in out, out
        rc, out, err = await qtrader(stack, "portfolio", "policy", "--set", "max_open_positions=0")
        assert rc == 2 and "max_open_positions" in err, (out, err)
        rc, out, err = await qtrader(stack, "portfolio", "policy", "--set", "colour=red")
        assert rc == 2 and "colour" in err, (out, err)

        for symbol in ("BTCUSDT", "ETHUSDT"):
            rc, out, err = await qtrader(
                stack,
                "trade",
                "open",
                "--symbol",
                symbol,
                "--side",
                "SHORT",
                "--notional",
                "150",
                "--id",
                f"position-{symbol}-flat",
                "--wait",
            )
            assert rc == 0 and "status  OPEN" in out, (out, err)
        rc, out, err = await qtrader(stack, "portfolio", "flatten", "--reason", "drill")
        assert rc == 0 and "told 2 position(s) to close" in out, (out, err)
        for symbol in ("BTCUSDT", "ETHUSDT"):
            handle = stack.client.get_workflow_handle(f"position-{symbol}-flat")
            result = await asyncio.wait_for(handle.result(), 20)
            assert result["status"] == "CLOSED" and result["exit_reason"] == "emergency_flatten", result
        rc, out, _ = await qtrader(stack, "portfolio", "show")
        assert rc == 0 and "HALTED" in out and "slots   0/3" in out, out
