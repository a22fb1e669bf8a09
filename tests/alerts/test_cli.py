"""`qtrader alerts` as a user runs it: a process with its metrics port, stopped by SIGTERM or killed in
the middle of a delivery and started again (each event still arrives once), `--test`, clear refusals of
bad settings, and `stack up` starting it only when a target is configured."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from activities.reconcile import RECONCILE_STREAM
from tests.alerts.conftest import API_KEY, API_SECRET, CHAT_ID, TOKEN, Receiver, RedisServer, wait_for
from tests.conftest import REPO
from trading.config import load_settings
from workers import stack
from workers.processes import ManagedProcess, free_port, http_ok

SECRETS = (API_KEY, API_SECRET, TOKEN, "HookSecretPart98765")


def _env(tmp_path: Path, redis_port: int, receiver: Receiver, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALERT", "BINANCE_", "REDIS_"))}
    env.update(
        QT_HOME=str(tmp_path / "qt"),
        REDIS_PORT=str(redis_port),
        ALERT_WEBHOOK_URLS=f"{receiver.url}/services/T1/B2/HookSecretPart98765",
        ALERT_TELEGRAM_BOT_TOKEN=TOKEN,
        ALERT_TELEGRAM_CHAT_ID=CHAT_ID,
        ALERT_TELEGRAM_API_URL=receiver.url,
        ALERT_TASK_QUEUES="",
        ALERT_DAILY_SUMMARY_AT="off",
        ALERT_RETRY_BASE_SECONDS="0.2",
        ALERT_RETRY_MAX_SECONDS="0.5",
        ALERT_MAX_ATTEMPTS="20",
        BINANCE_API_KEY=API_KEY,
        BINANCE_API_SECRET=API_SECRET,
    )
    env.update(extra)
    return env


def _qtrader(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", "alerts", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _notifier(tmp_path: Path, env: dict[str, str], port: int, n: int) -> ManagedProcess:
    proc = ManagedProcess(
        name="alerts",
        argv=[sys.executable, "-m", "workers.cli", "alerts", "--metrics-port", str(port)],
        log_path=tmp_path / f"alerts-{n}.log",
        env=env,
        cwd=REPO,
    )
    proc.start()
    proc.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/metrics"), 60, "its metrics endpoint")
    return proc


async def test_the_process_delivers_counts_and_resumes_after_sigterm_and_sigkill(
    tmp_path: Path, redis_server: RedisServer, receiver: Receiver
) -> None:
    r = redis.Redis(port=redis_server.port)
    env = _env(tmp_path, redis_server.port, receiver)
    port = free_port()

    def drift(symbol: str) -> None:
        r.xadd(RECONCILE_STREAM, {"kind": "adopt", "symbol": symbol, "detail": f"event {symbol}"})

    def events(prefix: str) -> list[str]:
        return [t.split("\n")[1] for t in receiver.texts(prefix)]

    proc = _notifier(tmp_path, env, port, 1)
    try:
        await wait_for(lambda: r.exists("quantum:stream:alerts.observed"), what="its consumer group")
        drift("AAAUSDT")
        await wait_for(lambda: len(receiver.delivered()) == 2, what="A at both targets")
        m = _metrics(port)
        assert m[("alerts_sent_total", (("kind", "drift"), ("target", "webhook-1")))] == 1
        assert m[("alerts_sent_total", (("kind", "drift"), ("target", "telegram")))] == 1
        assert m.get(("alerts_failed_total", (("kind", "drift"), ("target", "telegram"))), 0) == 0
        proc.popen.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert proc.popen.wait(timeout=30) == 0  # type: ignore[union-attr]

        drift("BBBUSDT")  # while it is down
        receiver.set(fail_first=-1, fail_status=503)
        proc = _notifier(tmp_path, env, port, 2)

        def retried(target: str) -> float:
            return _metrics(port).get(("alerts_retried_total", (("kind", "drift"), ("target", target))), 0)

        await wait_for(
            lambda: retried("webhook-1") >= 1 and retried("telegram") >= 1, what="B failing at both"
        )
        proc.popen.kill()  # type: ignore[union-attr]  # SIGKILL in the middle of the retries
        proc.popen.wait(timeout=10)  # type: ignore[union-attr]

        receiver.set(fail_first=0)
        proc = _notifier(tmp_path, env, port, 3)
        drift("CCCUSDT")
        await wait_for(lambda: len(receiver.delivered()) == 6, what="B and C at both targets")
        proc.popen.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert proc.popen.wait(timeout=30) == 0  # type: ignore[union-attr]
    finally:
        proc.stop()
        r.close()
    for prefix in ("/services/", f"/bot{TOKEN}/sendMessage"):
        assert events(prefix) == ["event AAAUSDT", "event BBBUSDT", "event CCCUSDT"]
    logs = "".join(p.read_text() for p in tmp_path.glob("alerts-*.log"))
    assert "alert sent kind=drift target=telegram" in logs
    for secret in SECRETS:
        assert secret not in logs
        assert all(secret not in req.raw for req in receiver.requests)


def test_test_message_reaches_every_target(
    tmp_path: Path, redis_server: RedisServer, receiver: Receiver
) -> None:
    done = _qtrader(_env(tmp_path, redis_server.port, receiver), "--test")
    assert done.returncode == 0, done.stderr
    assert "webhook-1  delivered" in done.stdout and "telegram   delivered" in done.stdout
    assert {r.path for r in receiver.delivered()} == {
        "/services/T1/B2/HookSecretPart98765",
        f"/bot{TOKEN}/sendMessage",
    }
    assert all("Test alert" in t for t in receiver.texts())
    receiver.set(fail_first=-1, fail_status=404)  # a wrong URL: said, exit 1
    failed = _qtrader(_env(tmp_path, redis_server.port, receiver), "--test")
    assert failed.returncode == 1 and "FAILED (HTTP 404" in failed.stdout
    for secret in SECRETS:
        assert secret not in failed.stdout + failed.stderr + done.stdout + done.stderr


def test_refusals_name_the_setting_and_never_the_secret(
    tmp_path: Path, redis_server: RedisServer, receiver: Receiver
) -> None:
    env = _env(tmp_path, redis_server.port, receiver)
    for name in ("ALERT_WEBHOOK_URLS", "ALERT_TELEGRAM_BOT_TOKEN", "ALERT_TELEGRAM_CHAT_ID"):
        env.pop(name)
    nothing = _qtrader(env)
    assert nothing.returncode == 2 and "no alert target: set ALERT_WEBHOOK_URLS" in nothing.stderr

    lone = _qtrader({**env, "ALERT_TELEGRAM_BOT_TOKEN": TOKEN})
    assert lone.returncode == 2
    assert "ALERT_TELEGRAM_BOT_TOKEN and ALERT_TELEGRAM_CHAT_ID must be set together" in lone.stderr
    bad = _qtrader({**env, "ALERT_WEBHOOK_URLS": f"https://ok.example/x,hooks.slack.com/{TOKEN}"})
    assert bad.returncode == 2 and "ALERT_WEBHOOK_URLS" in bad.stderr and "URL #2" in bad.stderr
    when = _qtrader({**env, "ALERT_WEBHOOK_URLS": "https://ok.example/x", "ALERT_DAILY_SUMMARY_AT": "25:00"})
    assert when.returncode == 2 and "ALERT_DAILY_SUMMARY_AT" in when.stderr and "HH:MM" in when.stderr
    for run in (lone, bad, when):
        assert TOKEN not in run.stdout + run.stderr


def test_stack_starts_the_notifier_only_with_a_target(tmp_path: Path) -> None:
    quiet = load_settings(qt_home=tmp_path / "a", alert_webhook_urls="", alert_telegram_bot_token="")
    assert "alerts" not in [s.name for s in stack.service_specs(quiet)]
    assert "alerts" not in stack.status(quiet)["services"]  # type: ignore[operator]
    assert "alerts_metrics" not in stack.addresses(quiet)
    told = load_settings(
        qt_home=tmp_path / "b", alert_webhook_urls="https://hooks.example/x", alerts_metrics_port=9555
    )
    (spec,) = [s for s in stack.service_specs(told) if s.name == "alerts"]
    assert spec.argv[-4:] == ["workers.cli", "alerts", "--metrics-port", "9555"] and spec.port == 9555
    assert stack.status(told)["services"]["alerts"] == {"running": False, "pid": None}  # type: ignore[index]
    assert stack.addresses(told)["alerts_metrics"] == "http://127.0.0.1:9555/metrics"
