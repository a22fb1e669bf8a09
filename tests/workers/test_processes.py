"""workers/processes.py: whether a process is still running, across a real process tree."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time

import pytest

from workers.processes import _ephemeral_range, free_port, pid_alive, stop_pid

# A parent that starts a child which exits at once, prints its PID and never reaps it: the child stays
# a zombie of a process that is not ours, as a stopped service does under an init that reaps late.
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "pass"])
print(child.pid, flush=True)
time.sleep(60)
"""


def test_an_exited_process_nobody_reaped_is_not_running() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 30  # an upper bound for a loaded machine
        while pid_alive(child):
            assert time.monotonic() < deadline, "an exited, unreaped process still counts as running"
            time.sleep(0.05)
        assert pid_alive(parent.pid)  # the sleeping parent does run
    finally:
        stop_pid(parent.pid, timeout=5, popen=parent)
    assert not pid_alive(parent.pid)


def test_a_free_port_is_outside_the_kernels_outgoing_range_and_never_handed_out_twice() -> None:
    # A port from the ephemeral range can be taken by any outgoing connection before our server binds
    # it; two servers started together must not get the same one either.
    low, _ = _ephemeral_range()
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(1024 < port < low for port in ports)


def test_a_port_somebody_listens_on_is_not_free(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        busy = taken.getsockname()[1]
        draws = iter([busy, busy + 1 if busy + 1 < _ephemeral_range()[0] else busy - 1])
        monkeypatch.setattr(random.Random, "randrange", lambda self, *_: next(draws))
        assert free_port() != busy  # the listener's port was drawn first, and passed over
