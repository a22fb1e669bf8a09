"""The pure parts of the notifier, hit directly: stream entry → alert → text → payload, the scrubber, the
rate limit, the worker-state machine, when the daily summary is due and what it says."""

from __future__ import annotations

from decimal import Decimal

import pytest

from alerts.conditions import DAY_MS, Health, Poller, latest_due_day, queue_health, step, summary_offset_ms
from alerts.events import (
    Alert,
    Kind,
    MalformedEvent,
    Severity,
    ban_alert,
    drift_alert,
    emergency_alert,
    liquidation_alert,
    observed_alert,
)
from alerts.messages import DISCORD_LIMIT, Scrubber, render, telegram_payload, webhook_payload
from alerts.ratelimit import RateLimiter
from alerts.senders import RetryPolicy
from alerts.summary import daily_summary_text
from tests.alerts.conftest import API_KEY, API_SECRET, TOKEN
from trading.intents import Side
from trading.records import RecordMode, TradeRecord

D = Decimal
MAY_1 = 19844  # 2024-05-01 as days since the epoch


def test_emergency_changes_become_alerts_with_their_severity() -> None:
    halted = emergency_alert(
        {
            "from": "NORMAL",
            "to": "HALTED",
            "kill_switch_from": "false",
            "kill_switch": "false",
            "slots_used": "2",
            "max_open_positions": "10",
            "notional_used": "400",
            "max_total_notional": "2000",
            "updated_at": "1",
        }
    )
    assert halted is not None and halted.severity is Severity.CRITICAL
    assert halted.title == "Emergency state NORMAL → HALTED"
    assert any("Open positions 2/10" in line for line in halted.details)
    back = emergency_alert(
        {"from": "HALTED", "to": "NORMAL", "kill_switch_from": "false", "kill_switch": "false"}
    )
    assert back is not None and back.severity is Severity.INFO and back.key == halted.key == "emergency"
    warn = emergency_alert({"from": "NORMAL", "to": "WARNING"})
    assert warn is not None and warn.severity is Severity.WARNING
    kill = emergency_alert(
        {"from": "NORMAL", "to": "NORMAL", "kill_switch_from": "false", "kill_switch": "true"}
    )
    assert kill is not None and "kill switch ON" in kill.title and kill.severity is Severity.WARNING
    # A projection that changed neither (written by hand, say) is no alert.
    assert emergency_alert({"from": "NORMAL", "to": "NORMAL"}) is None
    with pytest.raises(MalformedEvent, match="'to'"):
        emergency_alert({"from": "NORMAL"})
    with pytest.raises(MalformedEvent, match="not an emergency state"):
        emergency_alert({"from": "NORMAL", "to": "PANIC"})


def test_a_ban_says_until_when_and_what_drew_it() -> None:
    a = ban_alert(
        {
            "budget_id": "host-a",
            "until_ms": str(1_714_521_720_000),
            "seen_ms": str(1_714_521_600_000),
            "endpoint": "GET /fapi/v1/userTrades",
            "retry_after_s": "120",
        }
    )
    assert a.kind is Kind.BAN and a.severity is Severity.CRITICAL
    assert "418" in a.title and "2024-05-01 00:02:00 UTC" in a.title
    assert any("GET /fapi/v1/userTrades" in d for d in a.details) and any("120 s" in d for d in a.details)
    with pytest.raises(MalformedEvent, match="until_ms"):
        ban_alert({"budget_id": "x"})


def _fill(**kw: str) -> dict[str, str]:
    base = {
        "kind": "order_update",
        "symbol": "BTCUSDT",
        "event_ms": "1714521600000",
        "exec_type": "TRADE",
        "order_status": "FILLED",
        "side": "SELL",
        "last_qty": "0.002",
        "last_price": "58000.5",
        "realized_pnl": "-12.3",
        "commission": "0.05",
        "order_id": "77",
        "client_order_id": "autoclose-1",
        "reason": "liquidation",
    }
    base.update(kw)
    return base


def test_only_liquidation_and_adl_fills_are_alerts_and_one_per_order() -> None:
    a = liquidation_alert(_fill())
    assert a is not None and a.title == "Liquidation: BTCUSDT SELL 0.002 @ 58000.5"
    assert "Realized PnL -12.3 USDT, fee 0.05 USDT" in a.details
    b = liquidation_alert(_fill(order_status="PARTIALLY_FILLED", last_qty="0.001"))
    assert b is not None and b.once == a.once == "liquidation:BTCUSDT:77"  # the same event
    adl = liquidation_alert(_fill(reason="adl", client_order_id="adl_autoclose", order_id="78"))
    assert adl is not None and adl.title.startswith("Auto-deleveraged") and adl.once != a.once
    assert liquidation_alert(_fill(reason="venue")) is None  # an ordinary fill
    assert liquidation_alert(_fill(exec_type="CANCELED", order_status="CANCELED")) is None
    assert liquidation_alert({"kind": "account_update", "symbol": "BTCUSDT", "reason": "ORDER"}) is None


def test_drift_says_what_reconcile_found_and_did() -> None:
    a = drift_alert(
        {
            "kind": "adopt",
            "symbol": "ETHUSDT",
            "field": "position",
            "detail": "0.5 @ 3000 with no workflow",
            "workflow_id": "",
            "timestamp": "1714521600000",
        }
    )
    assert a.title == "Reconcile drift: ETHUSDT: a venue position had no workflow; adopted"
    assert a.details == ("0.5 @ 3000 with no workflow",) and a.severity is Severity.WARNING
    gone = drift_alert(
        {
            "kind": "close_gone",
            "symbol": "BTCUSDT",
            "detail": "w holds 0.002; the venue is flat",
            "workflow_id": "position-BTCUSDT-manual-1",
        }
    )
    assert "gone from the venue" in gone.title and "Workflow position-BTCUSDT-manual-1" in gone.details
    assert gone.key != a.key  # each symbol and kind has its own rate limit
    with pytest.raises(MalformedEvent, match="not a reconcile fix"):
        drift_alert({"kind": "explode", "symbol": "BTCUSDT"})


def test_observed_worker_and_summary_entries() -> None:
    down = observed_alert(
        {
            "kind": "worker_down",
            "condition": "queue:exchange",
            "what": "Workers of task queue exchange",
            "details": "No worker polls.\nNo order reaches the venue.",
            "at_ms": "1",
        }
    )
    assert down.severity is Severity.CRITICAL and down.title.endswith("DOWN") and len(down.details) == 2
    up = observed_alert(
        {"kind": "worker_up", "condition": "queue:exchange", "what": "Workers of task queue exchange"}
    )
    assert up.severity is Severity.INFO and up.key == down.key
    summary = observed_alert(
        {"kind": "daily_summary", "day": "19844", "text": "Daily summary X\nTrades: none"}
    )
    assert summary.title == "Daily summary X" and summary.details == ("Trades: none",)
    with pytest.raises(MalformedEvent):
        observed_alert({"kind": "nonsense"})


def test_render_and_payload_shapes() -> None:
    alert = Alert(
        Kind.DRIFT, Severity.WARNING, "Reconcile drift: X", ("detail one",), at_ms=1_714_521_600_000
    )
    text = render(alert, label="qtrader paper")
    assert text.splitlines() == [
        "⚠️ WARNING · qtrader paper · Reconcile drift: X",
        "detail one",
        "2024-05-01 00:00:00 UTC",
    ]
    digest = render(alert, suppressed=3, suppressed_since_ms=1_714_521_600_000)
    assert "(+3 more alerts of this condition since 2024-05-01 00:00:00 UTC held back" in digest
    scrub = Scrubber()
    hook = webhook_payload(text, scrub)
    assert hook == {"text": text, "content": text}  # Slack reads text, Discord content
    assert telegram_payload("-100", text, scrub) == {"chat_id": "-100", "text": text}
    long = webhook_payload("word " * 1000, scrub)
    assert len(long["content"]) == DISCORD_LIMIT and long["content"].endswith("…")


def test_the_scrubber_removes_configured_secrets_and_credential_shapes() -> None:
    hook = "https://hooks.slack.com/services/T0001/B0002/XyZsecretPart123456"
    scrub = Scrubber([API_KEY, API_SECRET, TOKEN, hook, "postgresql://qt:pg-pass-123@db:5432/journal"])
    text = (
        f"key {API_KEY} secret {API_SECRET} bot{TOKEN}/sendMessage posted to {hook} "
        "db postgresql://qt:pg-pass-123@db:5432/journal; GET /fapi/v1/order?signature=abc123&timestamp=1 "
        "listenKey=Zq9 Authorization: Bearer eyJhbGciOi.payload.sig "
        "other host https://discord.com/api/webhooks/123/tok-en_xyz and a 7999999999:" + "A" * 35
    )
    out = scrub(text)
    for secret in (
        API_KEY,
        API_SECRET,
        TOKEN,
        hook,
        "XyZsecretPart123456",
        "pg-pass-123",
        "abc123",
        "Zq9",
        "eyJhbGciOi",
        "tok-en_xyz",
        "A" * 35,
    ):
        assert secret not in out, secret
    assert scrub(out) == out  # a second pass changes nothing
    # Ordinary text is left alone: times, prices, symbols, workflow ids.
    plain = "BTCUSDT SELL 0.002 @ 58000.5 at 12:34:56 UTC, workflow position-BTCUSDT-manual-1"
    assert scrub(plain) == plain


def test_rate_limit_holds_a_flapping_condition_back_and_tells_the_count() -> None:
    lim = RateLimiter(count=2, window_s=60)
    flap = [Alert(Kind.EMERGENCY, Severity.WARNING, f"flap {i}", key="emergency") for i in range(5)]
    other = Alert(Kind.BAN, Severity.CRITICAL, "ban", key="ban:x")
    assert lim.offer(flap[0], 0) is not None and lim.offer(flap[1], 1) is not None
    assert lim.offer(flap[2], 2) is None and lim.offer(flap[3], 3) is None and lim.offer(flap[4], 4) is None
    assert lim.offer(other, 5) is not None  # another condition is not held back
    assert lim.flush(30) == []  # the window is still full
    (release,) = lim.flush(60.5)  # the first send left the window: the latest goes, counting the others
    assert release.alert.title == "flap 4" and release.held == 2 and release.held_since_ms == 2000
    assert lim.flush(200) == [] and lim.holding() == 0
    with pytest.raises(ValueError):
        RateLimiter(0, 10)


def test_worker_state_machine() -> None:
    now = 1_000_000
    fresh, stale = Poller("1@a", now - 5_000), Poller("2@a", now - 200_000)
    assert queue_health([fresh, stale], now, 120) is Health.UP
    assert queue_health([stale], now, 120) is Health.DOWN
    assert queue_health([], now, 120) is Health.ABSENT
    assert step(None, Health.UP) == (Health.UP, None)  # first sight: nothing to tell
    assert step(Health.UP, Health.DOWN) == (Health.DOWN, Kind.WORKER_DOWN)
    assert step(Health.DOWN, Health.DOWN) == (Health.DOWN, None)  # told once
    assert step(Health.DOWN, Health.UP) == (Health.UP, Kind.WORKER_UP)
    assert step(None, Health.DOWN) == (Health.DOWN, Kind.WORKER_DOWN)  # died while the notifier was away
    assert step(None, Health.ABSENT) == (Health.ABSENT, None)  # never seen: not run here, or starting
    # Up, then no poller known at all: a restarted server forgets them for a moment; down once it lasts.
    assert step(Health.UP, Health.ABSENT, absent_for_s=5, stale_s=120) == (Health.UP, None)
    assert step(Health.UP, Health.ABSENT, absent_for_s=121, stale_s=120) == (Health.DOWN, Kind.WORKER_DOWN)


def test_daily_summary_is_due_once_a_day_after_its_time() -> None:
    at = summary_offset_ms("00:30")
    day_start = MAY_1 * DAY_MS
    assert latest_due_day(day_start + 29 * 60_000, at) == MAY_1 - 2  # 00:29: yesterday's is not due
    assert latest_due_day(day_start + 31 * 60_000, at) == MAY_1 - 1  # 00:31: yesterday's is
    assert latest_due_day(day_start + DAY_MS - 1, at) == MAY_1 - 1


def _trade(n: int, day: int, pnl: str, reason: str = "take_profit", symbol: str = "BTCUSDT") -> TradeRecord:
    closed = day * DAY_MS + n * 3_600_000
    return TradeRecord(
        trade_id=f"t{n}-{day}",
        run_id="paper",
        mode=RecordMode.PAPER,
        symbol=symbol,
        side=Side.LONG,
        strategy="trend",
        source="signal",
        quantity=D("0.01"),
        entry_price=D("60000"),
        exit_price=D("60100"),
        opened_at_ms=closed - 600_000,
        closed_at_ms=closed,
        realized_pnl=D(pnl),
        gross_pnl=D(pnl) + D("0.1"),
        fees=D("0.1"),
        exit_reason=reason,
    )


def test_daily_summary_text() -> None:
    records = [
        _trade(1, MAY_1 - 1, "100"),  # the day before: equity and drawdown only
        _trade(1, MAY_1, "12.5"),
        _trade(2, MAY_1, "-4.25", "stop_loss", "ETHUSDT"),
        _trade(3, MAY_1, "3", "stop_loss"),
        _trade(1, MAY_1 + 1, "999"),  # the day after: left out
    ]
    portfolio = {
        "slots_used": "2",
        "max_open_positions": "10",
        "notional_used": "400",
        "max_total_notional": "2000",
        "emergency": "NORMAL",
        "kill_switch": "false",
    }
    text = daily_summary_text(MAY_1, records, D("10000"), portfolio, "paper")
    lines = text.splitlines()
    assert lines[0] == "Daily summary 2024-05-01 (UTC), paper"
    assert lines[1] == (
        "Trades: 3 closed, 2 won (67 %); net PnL +11.25 USDT, fees 0.30 USDT, funding 0.00 USDT"
    )
    assert lines[2] == "Best BTCUSDT +12.50 USDT, worst ETHUSDT -4.25 USDT"
    assert lines[3] == "Exits: stop_loss 2, take_profit 1"
    assert lines[4].startswith(
        "Equity 10 111.25 USDT (capital 10 000.00 USDT), drawdown 0.01 % from the peak, max 0.04 %"
    )
    assert lines[5] == "Now: 2/10 positions open, notional 400 / 2000 USDT, emergency NORMAL, kill switch off"
    quiet = daily_summary_text(MAY_1 + 5, [], D("10000"), {}, "paper").splitlines()
    assert quiet[1] == "Trades: none closed" and "not in Redis" in quiet[-1]
    broken = daily_summary_text(
        MAY_1, [], D("10000"), portfolio, "paper", journal_error="OperationalError: down"
    )
    assert "could not be read (OperationalError: down)" in broken


def test_backoff_doubles_is_capped_and_honours_retry_after() -> None:
    p = RetryPolicy(max_attempts=6, base_s=1.0, max_s=10.0)
    assert [p.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 10.0]
    assert p.delay(1, retry_after_s=5) == 5.0  # the receiver's own wait, when longer
    assert p.delay(1, retry_after_s=3600) == 10.0  # capped: a receiver cannot stall the notifier for an hour
