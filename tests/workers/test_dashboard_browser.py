"""The dashboard in real headless Chromium (Debian's, driven by Playwright): a position opened through
`qtrader trade open` appears on the open page without a reload, its mark moves live, the kill switch
and flatten-all work from the page with the token (the portfolio workflow's own query confirms it) and
are refused without it; a page without a configured token is read-only. Screenshots are written as test
artifacts ($QT_TEST_ARTIFACTS, else the test's tmp folder) and their paths printed."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from pathlib import Path

from tests.conftest import REPO
from tests.workers.chromium import WAIT_MS, artifacts_dir, chromium_page, require_chromium
from tests.workflows.conftest import Stack, stack  # noqa: F401  (the fixture)
from tests.workflows.test_trade_cli import qtrader
from workers.processes import ManagedProcess, free_port, http_ok
from workflows.messages import DEFAULT_PORTFOLIO_ID, PortfolioView, PositionResult, PositionStatus

TOKEN = "browser-test-token-5f2c9a"
WF = "position-BTCUSDT-dashboard-1"


def start_dashboard(tmp: Path, env: dict[str, str], name: str) -> tuple[ManagedProcess, str]:
    port = free_port()
    proc = ManagedProcess(
        name=name,
        argv=[sys.executable, "-m", "workers.cli", "dashboard", "--port", str(port), "--interval", "0.5"],
        log_path=tmp / f"{name}.log",
        env=env,
        cwd=REPO,
    )
    proc.start()
    url = f"http://127.0.0.1:{port}"
    proc.wait_ready(lambda: http_ok(f"{url}/metrics"), 60, f"on {url}")
    return proc, url


async def post_from_page(page, path: str, body: dict, token: str | None) -> int:  # type: ignore[no-untyped-def]
    """A request made by the page's own script context (same origin), with or without a token."""
    return await page.evaluate(
        """async ([path, body, token]) => {
            const headers = {"Content-Type": "application/json"};
            if (token) headers.Authorization = `Bearer ${token}`;
            const res = await fetch(path, {method: "POST", headers, body: JSON.stringify(body)});
            return res.status;
        }""",
        [path, body, token],
    )


async def portfolio(stack: Stack) -> PortfolioView:  # noqa: F811
    return await stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID).query(
        "state", result_type=PortfolioView
    )


async def test_page_follows_a_cli_position_and_runs_the_controls_with_the_token(
    stack: Stack,  # noqa: F811
    tmp_path: Path,
) -> None:
    from playwright.async_api import expect

    require_chromium()  # before the stack work: a missing browser says so at once
    shots = artifacts_dir(tmp_path)
    stack.exchange.set_price("BTCUSDT", "60000")
    ui_port = free_port()
    env = {**stack.env(), "DASHBOARD_TOKEN": TOKEN, "TEMPORAL_UI_PORT": str(ui_port)}
    async with stack.workers():
        dash, url = start_dashboard(stack.tmp, env, "dashboard")
        stack.children.append(dash)  # stopped by the fixture, whatever happens here
        async with chromium_page(tmp_path) as page:
            requested: list[str] = []
            page.on("request", lambda r: requested.append(r.url))
            page_errors: list[str] = []
            page.on("pageerror", lambda e: page_errors.append(str(e)))

            await page.goto(url)
            await expect(page.locator("#connection")).to_have_text("live", timeout=WAIT_MS)
            await page.evaluate("window.__sameDocument = true")  # gone if the page ever reloads
            toggle, flatten = page.locator("#kill-switch-toggle"), page.locator("#flatten-all")
            await expect(page.locator("#controls-note")).to_contain_text("Enter the dashboard token")
            await expect(toggle).to_be_disabled()
            await expect(flatten).to_be_disabled()

            # A position opened through the CLI shows up on the open page.
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
                "--stop-loss-pct",
                "2",
                "--take-profit-pct",
                "4",
                "--id",
                WF,
            )
            assert rc == 0, (out, err)
            cli_done = time.monotonic()
            row = page.locator(f'#positions tr[data-workflow-id="{WF}"][data-status="OPEN"]')
            await expect(row).to_be_visible(timeout=WAIT_MS)
            print(f"\nposition on the page {time.monotonic() - cli_done:.2f} s after `trade open` returned")
            handle = stack.client.get_workflow_handle(WF, result_type=PositionResult)
            state = await handle.query("state")
            entry = f"{float(state['entry_price']):,.2f}"
            await expect(row).to_contain_text("BTCUSDT")
            await expect(row.locator("td").nth(2)).to_have_text("LONG")
            await expect(row.locator("td").nth(5)).to_have_text(entry)
            # the Web UI link: its address from the dashboard's settings (TEMPORAL_UI_PORT)
            web_ui = f"http://127.0.0.1:{ui_port}/namespaces/default/workflows/{WF}"
            await expect(row.locator("a")).to_have_attribute("href", web_ui)
            await expect(page.locator("#slots")).to_have_text(f"1 / {stack.settings.gov_max_open_positions}")

            # The mark moves without a reload: the venue's price rises 1 %, the long's PnL turns positive.
            stack.exchange.set_price("BTCUSDT", "60600")
            await expect(row.locator("td.mark")).to_have_text("60,600.00", timeout=WAIT_MS)
            await expect(row.locator("td.upnl")).to_have_class(re.compile(r"\bpos\b"))
            assert await page.evaluate("window.__sameDocument === true")

            # Without the token: the server refuses, the page keeps the controls disabled.
            assert await post_from_page(page, "/api/kill-switch", {"on": True, "reason": "x"}, None) == 401
            assert await post_from_page(page, "/api/flatten", {"reason": "x"}, "not-the-token-123") == 401
            await page.fill("#token", "not-the-token-123")
            await page.click("#token-submit")
            await expect(page.locator("#control-result")).to_contain_text("Token refused")
            await expect(toggle).to_be_disabled()
            assert (await portfolio(stack)).policy.kill_switch is False

            # With the token: kill switch ON after a confirmation (cancel first: nothing is sent).
            await page.fill("#token", TOKEN)
            await page.click("#token-submit")
            await expect(toggle).to_be_enabled()
            await expect(toggle).to_have_text("Turn kill switch ON")
            await toggle.click()
            await expect(page.locator("#confirm")).to_be_visible()
            await page.click("#confirm-cancel")
            await expect(page.locator("#control-result")).to_contain_text("nothing was sent")
            assert (await portfolio(stack)).policy.kill_switch is False
            await toggle.click()
            await page.fill("#confirm-reason", "browser test")
            await page.click("#confirm-ok")
            await expect(page.locator("#control-result")).to_contain_text("Kill switch is ON")
            assert (await portfolio(stack)).policy.kill_switch is True
            await expect(page.locator("#kill-state")).to_have_text("ON", timeout=WAIT_MS)
            await expect(toggle).to_have_text("Turn kill switch off")
            shot = shots / "dashboard-open-position.png"
            await page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")

            # Flatten-all from the page: the position closes, the journal's trade and curve appear.
            await flatten.click()
            await expect(page.locator("#confirm-title")).to_have_text("Flatten ALL positions?")
            await page.click("#confirm-ok")
            await expect(page.locator("#control-result")).to_contain_text("HALTED", timeout=WAIT_MS)
            result: PositionResult = await asyncio.wait_for(handle.result(), 60)
            assert result.status is PositionStatus.CLOSED
            assert (await portfolio(stack)).book.emergency.value == "HALTED"
            await expect(page.locator("#emergency")).to_have_text("HALTED", timeout=WAIT_MS)
            await expect(page.locator("#positions tbody")).to_contain_text(
                "No open positions", timeout=WAIT_MS
            )
            trade = page.locator(f'#trades tr[data-trade-id="{WF}"]')
            await expect(trade).to_be_visible(timeout=WAIT_MS)
            await expect(trade).to_contain_text(f"{float(result.realized_pnl):,.2f}")
            await expect(page.locator("#equity-chart path.series")).to_have_count(1)
            await expect(page.locator("#drawdown-chart path.series")).to_have_count(1)
            assert await page.evaluate("window.__sameDocument === true")
            shot = shots / "dashboard-after-flatten.png"
            await page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")

            assert page_errors == []
            # Nothing was loaded from anywhere but the dashboard itself (no CDN, no font, no tracker).
            assert requested and all(u.startswith(url + "/") or u.startswith("data:") for u in requested), (
                requested
            )


async def test_without_a_configured_token_the_page_is_read_only(tmp_path: Path) -> None:
    from playwright.async_api import expect

    require_chromium()
    env = {
        **{k: v for k, v in os.environ.items() if k != "DASHBOARD_TOKEN"},
        "QT_HOME": str(tmp_path / "qt"),
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",  # nothing runs there: the page says so
        "REDIS_PORT": str(free_port()),
    }
    dash, url = start_dashboard(tmp_path, env, "dashboard-read-only")
    try:
        async with chromium_page(tmp_path) as page:
            await page.goto(url)
            await expect(page.locator("#connection")).to_have_text("live", timeout=WAIT_MS)
            await expect(page.locator("#errors")).to_contain_text("unreachable", timeout=WAIT_MS)
            await expect(page.locator("#controls-note")).to_contain_text("Read-only")
            await expect(page.locator("#token-row")).to_be_hidden()
            await expect(page.locator("#kill-switch-toggle")).to_be_disabled()
            await expect(page.locator("#flatten-all")).to_be_disabled()
            assert await post_from_page(page, "/api/kill-switch", {"on": True}, TOKEN) == 403
            assert await post_from_page(page, "/api/flatten", {"reason": "x"}, TOKEN) == 403
            shot = artifacts_dir(tmp_path) / "dashboard-read-only.png"
            await page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot: {shot}")
    finally:
        dash.stop()
