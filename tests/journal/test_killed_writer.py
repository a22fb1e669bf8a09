"""A journal writer killed with SIGKILL, at the worst moments, then run again: every trade is in the
journal exactly once (the same holds on SQLite and on a real PostgreSQL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from journal.store import Journal
from tests.conftest import REPO

N = 6


def writer(journal_url: str | None, home: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.journal.writer", journal_url or "", str(home), str(N), mode],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill_when(proc: subprocess.Popen[str], marker: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == marker, f"writer said {line!r}"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL


def rerun(journal_url: str | None, home: Path) -> int:
    proc = writer(journal_url, home, "write")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return int(out.strip().split()[-1])


def test_killed_between_commit_and_ack_then_rerun(
    journal_url: str | None, journal: Journal, tmp_path: Path
) -> None:
    kill_when(writer(journal_url, tmp_path / "qt", "hang-after-commit"), "committed, not acknowledged")
    assert len(journal.trades()) == N
    assert rerun(journal_url, tmp_path / "qt") == 0  # the retry finds every row there
    assert [r.trade_id for r in journal.trades()] == [f"bt:{i}" for i in range(1, N + 1)]


def test_killed_inside_its_transaction_then_rerun(
    journal_url: str | None, journal: Journal, tmp_path: Path
) -> None:
    kill_when(writer(journal_url, tmp_path / "qt", "hang-before-commit"), "inserted, not committed")
    assert journal.trades() == []  # nothing half-written, and the dead writer's lock is gone
    assert rerun(journal_url, tmp_path / "qt") == N
    assert rerun(journal_url, tmp_path / "qt") == 0
    trades = journal.trades()
    assert len(trades) == N and len({t.trade_id for t in trades}) == N
