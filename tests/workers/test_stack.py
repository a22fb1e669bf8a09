"""`qtrader stack up` / `status` / `down` as a newcomer runs them: real processes, nothing left behind."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import SHIPPED_DATA
from tests.exchange.paper.kline_files import kline_rows, write_klines
from workers.processes import free_port, pid_alive, stop_pid

REPO = Path(__file__).resolve().parents[2]


def qtrader(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def processes_mentioning(text: str) -> list[int]:
    """PIDs of live processes whose command line mentions `text` (read-only scan of /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BINANCE_", "GOV_", "DASHBOARD_"))}
    env.update(
        QT_HOME=str(tmp_path / "qt"),
        TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
        TEMPORAL_UI_PORT=str(free_port()),
        REDIS_PORT=str(free_port()),
        PAPER_EXCHANGE_PORT=str(free_port()),
        LIFECYCLE_METRICS_PORT=str(free_port()),
        EXCHANGE_METRICS_PORT=str(free_port()),
        WATCHER_METRICS_PORT=str(free_port()),
        USER_STREAM_METRICS_PORT=str(free_port()),
        MARKET_DATA_METRICS_PORT=str(free_port()),
        INFERENCE_METRICS_PORT=str(free_port()),
        DASHBOARD_PORT=str(free_port()),
    )
    yield env
    qtrader(env, "stack", "down")  # whatever a failing test left up
    # Belt and braces: anything still running from this test's folder or on its ports is ours (the
    # paths and ports are unique to this test); stop it by PID and say so, so a leak is seen, not kept.
    marks = [
        str(tmp_path),
        f"dashboard --port {env['DASHBOARD_PORT']}",
        *(f"--metrics-port {env[k]}" for k in env if k.endswith("_METRICS_PORT")),
    ]
    leftovers = sorted({pid for m in marks for pid in processes_mentioning(m) if pid != os.getpid()})
    for pid in leftovers:
        stop_pid(pid, timeout=5)
    if leftovers:
        print(f"stack_env: stopped {len(leftovers)} leftover processes {leftovers}", file=sys.stderr)


def test_stack_up_status_down_leaves_no_process(stack_env: dict[str, str]) -> None:
    up = qtrader(stack_env, "stack", "up")
    assert up.returncode == 0, up.stdout + up.stderr
    for label in ("Temporal", "Web UI", "Redis", "Exchange", "Dashboard"):
        assert label in up.stdout

    status = qtrader(stack_env, "stack", "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["temporal"] == stack_env["TEMPORAL_ADDRESS"]
    assert report["ui"] == f"http://127.0.0.1:{stack_env['TEMPORAL_UI_PORT']}"
    assert report["redis"] == f"redis://127.0.0.1:{stack_env['REDIS_PORT']}/0"
    assert report["exchange"] == f"http://127.0.0.1:{stack_env['PAPER_EXCHANGE_PORT']}"
    pids = {name: info["pid"] for name, info in report["services"].items()}
    assert all(info["running"] for info in report["services"].values()), report

    # Every part really answers.
    assert httpx.get(report["ui"], timeout=5).status_code == 200
    assert redis.Redis(port=int(stack_env["REDIS_PORT"])).ping()
    assert "serverTime" in httpx.get(report["exchange"] + "/fapi/v1/time", timeout=5).json()
    for worker in ("lifecycle_metrics", "exchange_metrics"):  # both workers are up and export metrics
        assert "temporal_" in httpx.get(report[worker], timeout=5).text
    assert "price_watcher_" in httpx.get(report["watcher_metrics"], timeout=5).text
    assert "user_stream_" in httpx.get(report["user_stream_metrics"], timeout=5).text
    assert "market_data_" in httpx.get(report["market_data_metrics"], timeout=5).text
    assert "temporal_" in httpx.get(report["inference_metrics"], timeout=5).text
    assert report["dashboard"] == f"http://127.0.0.1:{stack_env['DASHBOARD_PORT']}"
    assert "dashboard_view_builds" in httpx.get(report["dashboard"] + "/metrics", timeout=5).text
    state = httpx.get(report["dashboard"] + "/api/state", timeout=30).json()  # reads the stack it runs in
    assert state["mode"] == "paper" and state["ui"] == report["ui"] and "redis_error" not in state
    assert state["controls"] is False  # no DASHBOARD_TOKEN: read-only
    host, port = report["temporal"].split(":")
    socket.create_connection((host, int(port)), timeout=2).close()
    assert (Path(stack_env["QT_HOME"]) / "temporal" / "temporal.db").exists()

    # Up again: nothing new is started.
    again = qtrader(stack_env, "stack", "up")
    assert again.returncode == 0 and again.stdout.count("already running") == 10, again.stdout
    assert (
        json.loads(qtrader(stack_env, "stack", "status", "--json").stdout)["services"]["redis"]["pid"]
        == pids["redis"]
    )

    down = qtrader(stack_env, "stack", "down")
    assert down.returncode == 0, down.stderr
    for name, pid in pids.items():
        assert not pid_alive(pid), f"{name} (pid {pid}) still alive after stack down"
    assert processes_mentioning(stack_env["QT_HOME"]) == []
    assert processes_mentioning(f"127.0.0.1:{stack_env['REDIS_PORT']}") == []
    after = json.loads(qtrader(stack_env, "stack", "status", "--json").stdout)
    assert not any(info["running"] for info in after["services"].values())


def test_port_in_use_is_a_clear_error(stack_env: dict[str, str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", int(stack_env["REDIS_PORT"])))
        busy.listen()
        env = {**stack_env, "TRADING_MODE": "testnet"}
        result = qtrader(env, "stack", "up")
    assert result.returncode == 1
    assert "REDIS_PORT" in result.stderr and "already in use" in result.stderr
    # What it had started before the failure (Temporal) was stopped again.
    assert processes_mentioning(stack_env["QT_HOME"]) == []


def test_bad_setting_fails_at_start_naming_the_variable(stack_env: dict[str, str]) -> None:
    result = qtrader({**stack_env, "GOV_MAX_OPEN_POSITIONS": "many"}, "stack", "status")
    assert result.returncode == 2
    assert "GOV_MAX_OPEN_POSITIONS" in result.stderr


def data_folder(tmp_path: Path, *symbols: str) -> Path:
    """A QT_DATA_DIR with small files for `symbols` and the shipped BTCUSDT 1h klines (the context
    symbol `stack up --symbols` always lists)."""
    data = tmp_path / "klines"
    data.mkdir()
    for symbol in symbols:
        write_klines(data, symbol, kline_rows())
    shutil.copy(SHIPPED_DATA / "binance-futures-BTCUSDT-1h.csv.gz", data)
    return data


def test_symbols_the_exchange_cannot_serve_are_refused_before_anything_starts(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    data = data_folder(tmp_path, "PEPEUSDT")
    env = {**stack_env, "QT_DATA_DIR": str(data)}
    for result in (
        qtrader(env, "stack", "up", "--symbols", "pepeusdt,NODATAUSDT"),
        qtrader({**env, "PAPER_SYMBOLS": "PEPEUSDT,NODATAUSDT"}, "stack", "up"),
    ):
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"no klines for NODATAUSDT in {data}" in result.stderr, result.stderr
        assert "PEPEUSDT" not in result.stderr.split("no klines for")[1].split(" in ")[0]
        assert "--symbols or PAPER_SYMBOLS" in result.stderr
    assert processes_mentioning(stack_env["QT_HOME"]) == []  # nothing was started

    wildcard = qtrader({**env, "PAPER_SYMBOLS": "*"}, "stack", "up")
    assert wildcard.returncode == 2 and "PAPER_SYMBOLS" in wildcard.stderr, wildcard.stderr


def test_stack_up_serves_chosen_symbols_from_the_data_folder(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """A symbol with no built-in filters, its klines in QT_DATA_DIR: listed and replayed by the stack's
    exchange; asking a running stack for another symbol says what to do instead of ignoring it."""
    data = data_folder(tmp_path, "PEPEUSDT", "WIFUSDT")
    env = {**stack_env, "QT_DATA_DIR": str(data), "APPLY_ALLOWLIST": "PEPEUSDT"}

    up = qtrader(env, "stack", "up", "--symbols", "PEPEUSDT")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "APPLY_ALLOWLIST" not in up.stdout  # the allowlist and the chosen symbols agree
    assert "BTCUSDT is listed too" in up.stdout
    base = f"http://127.0.0.1:{stack_env['PAPER_EXCHANGE_PORT']}"
    info = httpx.get(f"{base}/fapi/v1/exchangeInfo", timeout=10).json()
    assert [s["symbol"] for s in info["symbols"]] == ["PEPEUSDT", "BTCUSDT"]
    price = Decimal(
        httpx.get(f"{base}/fapi/v1/ticker/price", params={"symbol": "PEPEUSDT"}, timeout=10).json()["price"]
    )
    assert min(Decimal(r[3]) for r in kline_rows()) <= price <= max(Decimal(r[2]) for r in kline_rows())
    exchange_pid = json.loads(qtrader(env, "stack", "status", "--json").stdout)["services"]["exchange"]["pid"]

    more = qtrader(env, "stack", "up", "--symbols", "PEPEUSDT,WIFUSDT")
    assert more.returncode == 1, more.stdout + more.stderr
    assert "does not list WIFUSDT" in more.stderr and "qtrader stack down" in more.stderr, more.stderr
    assert "APPLY_ALLOWLIST (PEPEUSDT) does not name WIFUSDT" in more.stdout, more.stdout
    assert pid_alive(exchange_pid)  # the running stack is left alone
    status = json.loads(qtrader(env, "stack", "status", "--json").stdout)
    assert all(info["running"] for info in status["services"].values()), status
