"""The notifier against a real redis-server and a local receiver: each event kind, written by the code
that writes it in the running system, arrives once; retries, the bounded give-up, the rate limit of a
flapping condition, no secret anywhere, and one alert per event across restarts."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from temporalio.testing import ActivityEnvironment

from activities.projections import EMERGENCY_STREAM, PORTFOLIO_KEY, ProjectionActivities
from activities.reconcile import RECONCILE_STREAM, ReconcileActivities
from alerts.conditions import DAY_MS
from alerts.service import Notifier
from alerts.sources import GROUP, SUMMARY_DAY_KEY
from exchange.client import BinanceFuturesClient
from exchange.errors import IpBannedError
from exchange.shared_budget import BAN_STREAM, SharedWeightBudget
from feeds.user_stream import NORMALIZED_STREAM, UserStream
from journal.store import open_journal
from tests.alerts.conftest import (
    API_KEY,
    API_SECRET,
    CHAT_ID,
    TOKEN,
    Clock,
    Receiver,
    RedisServer,
    alert_settings,
    running,
    wait_for,
)
from trading.governor import EmergencyState, PortfolioBook, RiskPolicy
from trading.intents import Side
from trading.reconcile import Fix
from trading.records import RecordMode, TradeRecord
from workers.devservers import start_paper_exchange
from workflows.messages import PortfolioView

D = Decimal


def _sample(notifier: Notifier, name: str, **labels: str) -> float:
    return notifier.metrics.registry.get_sample_value(name, labels) or 0.0


def _view(state: EmergencyState, kill: bool = False) -> PortfolioView:
    return PortfolioView(
        policy=RiskPolicy(kill_switch=kill),
        book=PortfolioBook(emergency=state),
        slots_used=1,
        notional_used=D(150),
        granted_total=0,
        denied_total=0,
        last_decisions=[],
    )


async def test_emergency_state_changes(tmp_path: Path, redis_server: RedisServer, receiver: Receiver) -> None:
    r = redis_server.client
    env, projections = ActivityEnvironment(), ProjectionActivities(r)
    notifier = Notifier(alert_settings(tmp_path, redis_server.port, receiver), r)
    async with running(notifier):
        await env.run(
            projections.project_portfolio, _view(EmergencyState.NORMAL)
        )  # the first write: no change
        await env.run(projections.project_portfolio, _view(EmergencyState.HALTED))
        await env.run(
            projections.project_portfolio, _view(EmergencyState.HALTED)
        )  # a repeat tells nothing new
        await wait_for(lambda: receiver.delivered(), what="the HALTED alert")
        await env.run(projections.project_portfolio, _view(EmergencyState.NORMAL, kill=True))
        await wait_for(lambda: len(receiver.delivered()) >= 2, what="the back-to-NORMAL alert")
        await asyncio.sleep(0.5)  # nothing more arrives
    halted, back = receiver.texts()
    assert halted.startswith("🚨 CRITICAL · qtrader paper · Emergency state NORMAL → HALTED")
    assert "Open positions 1/10, notional 150 / 2000 USDT" in halted
    assert "HALTED → NORMAL; kill switch ON" in back
    assert len(receiver.requests) == 2 and len(await r.xrange(EMERGENCY_STREAM)) == 2
    state = await r.hgetall(PORTFOLIO_KEY)  # the read model is written as before
    assert (
        state[b"emergency"] == b"NORMAL" and state[b"kill_switch"] == b"true" and state[b"slots_used"] == b"1"
    )
    assert _sample(notifier, "alerts_sent_total", kind="emergency", target="webhook-1") == 2


async def test_an_ip_ban_from_the_venue(
    tmp_path: Path, redis_server: RedisServer, receiver: Receiver
) -> None:
    venue = start_paper_exchange(tmp_path)
    r = redis_server.client
    notifier = Notifier(alert_settings(tmp_path, redis_server.port, receiver), r)
    try:
        async with (
            running(notifier),
            BinanceFuturesClient(
                venue.base_url, venue.api_key, venue.api_secret, shared_budget=SharedWeightBudget(r, "ip-a")
            ) as worker_a,
            BinanceFuturesClient(
                venue.base_url, venue.api_key, venue.api_secret, shared_budget=SharedWeightBudget(r, "ip-a")
            ) as worker_b,
        ):
            venue.set_faults(http_418_rate=1.0, retry_after_s=120, count=1)
            with pytest.raises(IpBannedError):
                await worker_a.server_time()
            with pytest.raises(IpBannedError):  # the other worker behind the IP stops too: the same ban
                await worker_b.server_time()
            await SharedWeightBudget(r, "ip-a").block(120, banned=True)  # another 418 during the ban
            await wait_for(lambda: receiver.delivered(), what="the ban alert")
            await asyncio.sleep(0.5)
    finally:
        venue.process.stop()
    (text,) = receiver.texts()
    assert (
        "IP banned by the venue (HTTP 418) until" in text
        and "Drawn by GET /fapi/v1/time (IP budget ip-a)" in text
    )
    assert len(await r.xrange(BAN_STREAM)) == 1


def _liquidation(order_id: int, status: str, qty: str) -> str:
    return json.dumps(
        {
            "e": "ORDER_TRADE_UPDATE",
            "E": 1_714_521_600_000,
            "T": 1_714_521_600_000,
            "o": {
                "s": "BTCUSDT",
                "c": f"autoclose-{order_id}",
                "S": "SELL",
                "o": "LIQUIDATION",
                "f": "IOC",
                "q": "0.002",
                "p": "58000",
                "ap": "58000.5",
                "x": "TRADE",
                "X": status,
                "i": order_id,
                "l": qty,
                "z": qty,
                "L": "58000.5",
                "n": "0.02",
                "N": "USDT",
                "rp": "-6.1",
            },
        }
    )


async def test_a_liquidation_from_the_user_data_stream(
    tmp_path: Path, redis_server: RedisServer, receiver: Receiver
) -> None:
    """The venue's messages go through the user-data stream's own code to its normalized stream."""
    r = redis_server.client
    stream = UserStream(ws_url="ws://127.0.0.1:1", venue=None, redis=r, client=None)
    stream._tasks = [asyncio.create_task(stream._stream_writer(), name="stream-writer")]  # its writer alone
    notifier = Notifier(alert_settings(tmp_path, redis_server.port, receiver), r)
    try:
        async with running(notifier):
            now = time.perf_counter()
            stream.on_message(_liquidation(77, "PARTIALLY_FILLED", "0.001"), now)  # two fills of one order
            stream.on_message(_liquidation(77, "FILLED", "0.001"), now)
            ordinary = json.loads(_liquidation(78, "FILLED", "0.002"))
            ordinary["o"].update(c="position-BTCUSDT-manual-1-x", o="MARKET")  # an ordinary fill: no alert
            stream.on_message(json.dumps(ordinary), now)
            await wait_for(lambda: receiver.delivered(), what="the liquidation alert")
            await asyncio.sleep(1.0)  # the other fills are read too, and say nothing
            assert (await r.xinfo_groups(NORMALIZED_STREAM))[0]["pending"] == 0
    finally:
        await stream.close()
    (text,) = receiver.texts()
    assert "Liquidation: BTCUSDT SELL 0.001 @ 58000.5" in text and "Realized PnL -6.1 USDT" in text
    assert len(await r.xrange(NORMALIZED_STREAM)) == 3
    assert _sample(notifier, "alerts_duplicates_total", kind="liquidation") == 1


async def test_drift_found_by_reconcile(
    tmp_path: Path, redis_server: RedisServer, receiver: Receiver
) -> None:
    r = redis_server.client
    reconciling = ReconcileActivities(None, r)  # type: ignore[arg-type]  # record_reconcile needs no Temporal
    fixes = [
        Fix(
            kind="adopt",
            symbol="ETHUSDT",
            field="position",
            venue_amt=D("0.5"),
            entry_price=D(3000),
            detail="0.5 @ 3000 with no workflow",
        ),
        Fix(
            kind="close_gone",
            symbol="BTCUSDT",
            field="position",
            workflow_id="position-BTCUSDT-manual-1",
            venue_amt=D(0),
            detail="position-BTCUSDT-manual-1 holds 0.002; the venue is flat",
        ),
    ]
    async with running(Notifier(alert_settings(tmp_path, redis_server.port, receiver), r)):
        await ActivityEnvironment().run(reconciling.record_reconcile, fixes)
        await wait_for(lambda: len(receiver.delivered()) >= 2, what="two drift alerts")
    texts = receiver.texts()
    assert "Reconcile drift: ETHUSDT: a venue position had no workflow; adopted" in texts[0]
    assert "0.5 @ 3000 with no workflow" in texts[0]
    assert (
        "BTCUSDT: the position is gone from the venue" in texts[1] and "position-BTCUSDT-manual-1" in texts[1]
    )
    assert len(await r.xrange(RECONCILE_STREAM)) == 2


def _record(n: int, closed_ms: int, pnl: str) -> TradeRecord:
    return TradeRecord(
        trade_id=f"position-BTCUSDT-{n}",
        run_id="paper",
        mode=RecordMode.PAPER,
        symbol="BTCUSDT",
        side=Side.LONG,
        strategy="trend",
        source="signal",
        quantity=D("0.01"),
        entry_price=D(60000),
        exit_price=D(60500),
        opened_at_ms=closed_ms - 60_000,
        closed_at_ms=closed_ms,
        realized_pnl=D(pnl),
        gross_pnl=D(pnl),
        fees=D(0),
        exit_reason="take_profit",
    )


async def test_the_daily_summary_once_a_day(
    tmp_path: Path, redis_server: RedisServer, receiver: Receiver
) -> None:
    r = redis_server.client
    day = 19_844  # 2024-05-01
    settings = alert_settings(tmp_path, redis_server.port, receiver, alert_daily_summary_at="00:05")
    open_journal(None, settings.qt_home).record_many(
        [_record(1, day * DAY_MS + 3_600_000, "25.5"), _record(2, day * DAY_MS + 7_200_000, "-5.5")]
    )
    await r.hset(
        PORTFOLIO_KEY,
        mapping={
            "slots_used": "1",
            "max_open_positions": "10",
            "notional_used": "150",
            "max_total_notional": "2000",
            "emergency": "NORMAL",
            "kill_switch": "false",
        },
    )
    clock = Clock((day + 1) * DAY_MS / 1000 - 60)  # 23:59 on May 1st
    async with running(Notifier(settings, r, clock=clock)):
        await wait_for(lambda: r.get(SUMMARY_DAY_KEY), what="the first check")  # notes the day, sends nothing
        clock.now += 6 * 60  # 00:05 on May 2nd
        await wait_for(lambda: receiver.delivered(), what="the summary")
    async with running(Notifier(settings, r, clock=clock)):  # a restart the same day sends it no second time
        await asyncio.sleep(1.0)
    (text,) = receiver.texts()
    assert "Daily summary 2024-05-01 (UTC), paper" in text
    assert "Trades: 2 closed, 1 won (50 %); net PnL +20.00 USDT" in text
    assert "Now: 1/10 positions open" in text
    assert (await r.get(SUMMARY_DAY_KEY)) == str(day).encode()


async def test_telegram_and_webhook_together_and_no_secret_anywhere(
    tmp_path: Path, redis_server: RedisServer, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    r = redis_server.client
    hook = f"{receiver.url}/services/T0001/B0002/XyZsecretPart123456"
    settings = alert_settings(
        tmp_path,
        redis_server.port,
        receiver,
        alert_webhook_urls=hook,
        alert_telegram_bot_token=TOKEN,
        alert_telegram_chat_id=CHAT_ID,
        alert_telegram_api_url=receiver.url,
        binance_api_key=API_KEY,
        binance_api_secret=API_SECRET,
    )
    leaky = (
        f"venue said: apiKey={API_KEY} secret {API_SECRET}; bot{TOKEN} via {hook} "
        f"GET /fapi/v1/order?signature=0a1b2c3d4e5f&timestamp=1"
    )
    caplog.set_level(logging.DEBUG)
    notifier = Notifier(settings, r)
    async with running(notifier):
        await r.xadd(RECONCILE_STREAM, {"kind": "resize", "symbol": "BTCUSDT", "detail": leaky})
        await r.xadd(RECONCILE_STREAM, {"kind": "resize"})  # malformed: told in the log, skipped
        await wait_for(lambda: len(receiver.delivered()) >= 2, what="both targets")
    telegram = receiver.delivered(f"/bot{TOKEN}/")
    webhook = receiver.delivered("/services/")
    assert len(telegram) == 1 and len(webhook) == 1
    assert set(telegram[0].body) == {"chat_id", "text"} and telegram[0].body["chat_id"] == CHAT_ID
    assert (
        set(webhook[0].body) == {"text", "content"} and webhook[0].body["text"] == webhook[0].body["content"]
    )
    assert "quantity differs" in telegram[0].body["text"]
    seen = [req.raw for req in receiver.requests]
    seen.append(generate_latest(notifier.metrics.registry).decode())
    seen.append(caplog.text)
    for text in seen:
        for secret in (API_KEY, API_SECRET, TOKEN, "XyZsecretPart123456", "0a1b2c3d4e5f"):
            assert secret not in text
    assert _sample(notifier, "alerts_malformed_events_total", source="drift") == 1
    assert _sample(notifier, "alerts_sent_total", kind="drift", target="telegram") == 1


async def test_retries_then_delivers_and_gives_up_when_bounded(
    tmp_path: Path, redis_server: RedisServer, receiver: Receiver
) -> None:
    r = redis_server.client
    notifier = Notifier(alert_settings(tmp_path, redis_server.port, receiver, alert_max_attempts=4), r)
    async with running(notifier):
        receiver.set(fail_first=2, fail_status=503)
        await r.xadd(RECONCILE_STREAM, {"kind": "adopt", "symbol": "SOLUSDT", "detail": "first"})
        await wait_for(lambda: receiver.delivered(), what="delivery after two failures")
        assert [q.status for q in receiver.requests] == [503, 503, 200]
        assert _sample(notifier, "alerts_retried_total", kind="drift", target="webhook-1") == 2
        receiver.set(fail_first=-1)
        await r.xadd(RECONCILE_STREAM, {"kind": "adopt", "symbol": "XRPUSDT", "detail": "second"})
        await wait_for(
            lambda: _sample(notifier, "alerts_failed_total", kind="drift", target="webhook-1") == 1,
            what="the give-up",
        )
        assert len(receiver.requests) == 3 + 4  # exactly max_attempts for the second
        await wait_for(lambda: _pending(r, RECONCILE_STREAM, 0), what="the entry acknowledged")


async def _pending(r, stream: str, n: int) -> bool:  # type: ignore[no-untyped-def]
    return (await r.xpending(stream, GROUP))["pending"] == n


async def test_a_flapping_condition_is_rate_limited(
    tmp_path: Path, redis_server: RedisServer, receiver: Receiver
) -> None:
    r = redis_server.client
    clock = Clock()
    settings = alert_settings(
        tmp_path, redis_server.port, receiver, alert_rate_limit_count=2, alert_rate_limit_window_seconds=600
    )
    env, projections = ActivityEnvironment(), ProjectionActivities(r)
    notifier = Notifier(settings, r, clock=clock)
    async with running(notifier):
        for state in [EmergencyState.WARNING, EmergencyState.NORMAL] * 3:  # six changes within a minute
            await env.run(projections.project_portfolio, _view(state))
        await wait_for(lambda: _pending(r, EMERGENCY_STREAM, 0), what="all six read")
        await wait_for(
            lambda: _sample(notifier, "alerts_suppressed_total", kind="emergency") == 4, what="four held back"
        )
        assert len(receiver.delivered()) == 2
        clock.now += 601  # the window has room again: the latest goes, counting the others
        await wait_for(lambda: len(receiver.delivered()) >= 3, what="the digest")
    texts = receiver.texts()
    assert "NORMAL → WARNING" in texts[0] and "WARNING → NORMAL" in texts[1]
    assert "WARNING → NORMAL" in texts[2] and "(+3 more alerts of this condition since" in texts[2]


async def test_one_alert_per_event_across_restarts(tmp_path: Path, redis_server: RedisServer) -> None:
    """Stopped between events, and stopped in the middle of a delivery that one of two targets had
    taken: after each restart every event reaches every target exactly once."""
    r = redis_server.client
    ok, flaky = Receiver().start(), Receiver().start()
    try:
        settings = alert_settings(
            tmp_path,
            redis_server.port,
            ok,
            alert_webhook_urls=f"{ok.url}/a,{flaky.url}/b",
            alert_max_attempts=20,
            alert_retry_base_seconds=0.1,
            alert_retry_max_seconds=0.2,
        )

        async def drift(symbol: str) -> None:
            await r.xadd(RECONCILE_STREAM, {"kind": "adopt", "symbol": symbol, "detail": f"event {symbol}"})

        async with running(Notifier(settings, r)):
            await drift("AAAUSDT")
            await wait_for(lambda: len(ok.delivered()) == 1 and len(flaky.delivered()) == 1, what="the first")
        await drift("BBBUSDT")  # while the notifier is down
        async with running(Notifier(settings, r)):
            await wait_for(
                lambda: len(ok.delivered()) == 2 and len(flaky.delivered()) == 2, what="the second"
            )
            flaky.set(fail_first=-1)
            await drift("CCCUSDT")
            await wait_for(lambda: len(ok.delivered()) == 3, what="C at the good target")
            await wait_for(lambda: len(flaky.requests) >= 2 + 2, what="C failing at the other")
        # Stopped mid-delivery: C is neither acknowledged nor marked for the failing target.
        assert await _pending(r, RECONCILE_STREAM, 1)
        flaky.set(fail_first=0)
        async with running(Notifier(settings, r)):
            await wait_for(lambda: len(flaky.delivered()) == 3, what="C resumed")
            await wait_for(lambda: _pending(r, RECONCILE_STREAM, 0), what="C acknowledged")
            await asyncio.sleep(0.5)
        for receiver in (ok, flaky):
            events = [t.split("\n")[1] for t in receiver.texts()]
            assert events == ["event AAAUSDT", "event BBBUSDT", "event CCCUSDT"], events
    finally:
        ok.stop()
        flaky.stop()
