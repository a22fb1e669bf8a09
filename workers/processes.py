"""Starting, waiting for and stopping the local processes we own, by PID only (never by name)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

_LOWEST_PORT = 10_000  # below are the well-known services (PostgreSQL 5432, Redis 6379, Temporal 7233)
_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):  # no /proc here: Linux's default
        return 32_768, 60_999


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now, for a server we are about to start.

    Taken below the kernel's ephemeral range: a port the kernel hands out (bind to port 0) is one it
    also picks for outgoing connections, and between this answer and the server's bind a client of
    another process took it (CI: the paper exchange failed with "address already in use" on 50545).
    Never the same port twice in one process, so two servers started together cannot share one."""
    low, _ = _ephemeral_range()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(_LOWEST_PORT, low) if low > _LOWEST_PORT + 1_000 else 0
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # someone listens there, or a connection of it lingers in TIME_WAIT
                continue
            port = int(sock.getsockname()[1])
        _handed_out.add(port)
        return port
    raise OSError(f"no free loopback port between {_LOWEST_PORT} and {low} after 200 tries")


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """An exited process that its parent has not reaped yet. `stack down` stops what an earlier `stack
    up` started, whose parent is then init: an init that reaps every ~2 s made each of ten stops wait
    that long for a process that had already exited."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone meanwhile, or no /proc here: kill(0) said it exists
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


class StartupError(RuntimeError):
    """A process we started did not come up; the message says which and shows its log's tail."""


@dataclass
class ManagedProcess:
    """One child process with its log file and (optionally) a pid file."""

    name: str
    argv: Sequence[str]
    log_path: Path
    pid_path: Path | None = None
    env: dict[str, str] | None = None
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> int:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.popen = subprocess.Popen(
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # our own process group: a Ctrl-C in the shell does not hit it
            )
        finally:
            log.close()
        if self.pid_path is not None:
            self.pid_path.parent.mkdir(parents=True, exist_ok=True)
            self.pid_path.write_text(str(self.popen.pid))
        return self.popen.pid

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was not started"
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is None:
            return
        stop_pid(self.popen.pid, timeout=timeout, popen=self.popen)
        if self.pid_path is not None:
            self.pid_path.unlink(missing_ok=True)

    def wait_ready(self, check: callable, timeout: float, what: str) -> None:  # type: ignore[valid-type]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise StartupError(f"{self.name} exited during start-up:\n{self.log_tail()}")
            if check():
                return
            time.sleep(0.05)
        raise StartupError(f"{self.name} did not answer {what} within {timeout:.0f} s:\n{self.log_tail()}")


def stop_pid(pid: int, timeout: float = 10.0, popen: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the process (and its group, which it leads), then SIGKILL after `timeout`."""
    if not pid_alive(pid):
        return
    _signal(pid, signal.SIGTERM)
    if not _wait_gone(pid, popen, time.monotonic() + timeout):
        _kill(pid, popen)


def stop_all(
    procs: Sequence[ManagedProcess], *, kill: Sequence[ManagedProcess] = (), timeout: float = 10.0
) -> None:
    """Stop several processes at once: SIGTERM to each of `procs` (SIGKILL at once to those in `kill`:
    throw-away servers with nothing to keep, such as a test's Temporal dev server, whose graceful stop
    takes a second), then wait for all of them together, SIGKILL for any still running after `timeout`.
    One after another, a test's three servers took 1.5 s to stop, in every test."""
    running = [p for p in procs if p.popen is not None and pid_alive(p.popen.pid)]
    for p in running:
        assert p.popen is not None
        if p in kill:
            _kill(p.popen.pid, None)
        else:
            _signal(p.popen.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in running:
        assert p.popen is not None
        if not _wait_gone(p.popen.pid, p.popen, deadline):
            _kill(p.popen.pid, p.popen)
        if p.pid_path is not None:
            p.pid_path.unlink(missing_ok=True)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_gone(pid: int, popen: subprocess.Popen[bytes] | None, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if popen is not None and popen.poll() is not None:
            return True
        if popen is None and not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def _kill(pid: int, popen: subprocess.Popen[bytes] | None) -> None:
    _signal(pid, signal.SIGKILL)
    if popen is not None:
        popen.wait(timeout=5)


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code < 500
    except httpx.HTTPError:
        return False
