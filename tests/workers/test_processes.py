"""workers/processes.py: whether a process is still running, across a real process tree."""

from __future__ import annotations

import subprocess
import sys
import time

from workers.processes import pid_alive, stop_pid

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
