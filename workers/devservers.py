"""Throw-away servers for tests and benchmarks: a Temporal dev server (in memory, with the position
search attributes) and a Redis without persistence, on free loopback ports, stopped by PID."""

from __future__ import annotations

import shutil
from pathlib import Path

from workers.processes import ManagedProcess, free_port, port_open
from workers.stack import temporal_binary
from workers.temporal_client import CLI_SEARCH_ATTRIBUTES


def start_temporal(tmp: Path, *extra: str) -> tuple[ManagedProcess, str]:
    port = free_port()
    sa = [
        arg
        for name, kind in CLI_SEARCH_ATTRIBUTES.items()
        for arg in ("--search-attribute", f"{name}={kind}")
    ]
    proc = ManagedProcess(
        name="temporal",
        argv=[
            temporal_binary(),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--headless",
            "--log-level",
            "error",
            *sa,
            *extra,
        ],
        log_path=tmp / "temporal.log",
    )
    proc.start()
    proc.wait_ready(lambda: port_open("127.0.0.1", port), 30, f"on port {port}")
    return proc, f"127.0.0.1:{port}"


def start_redis(tmp: Path) -> tuple[ManagedProcess, int]:
    port = free_port()
    return start_redis_on(tmp, port), port


def start_redis_on(tmp: Path, port: int) -> ManagedProcess:
    proc = ManagedProcess(
        name="redis",
        argv=[
            shutil.which("redis-server") or "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        log_path=tmp / "redis.log",
    )
    proc.start()
    proc.wait_ready(lambda: port_open("127.0.0.1", port), 10, f"on port {port}")
    return proc
