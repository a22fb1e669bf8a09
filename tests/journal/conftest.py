"""Journals on both backends: a SQLite file, and a real PostgreSQL server started from the machine's
binaries (initdb + postgres on a free loopback port, stopped by PID). Without PostgreSQL binaries the
PostgreSQL cases are skipped and say why."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from journal.store import Journal, open_journal
from tests.workflows.conftest import stack  # noqa: F401  (the whole local stack, for end-to-end tests)
from workers.processes import ManagedProcess, free_port, port_open


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: drop to the `postgres` account the package created."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
    if not (initdb and postgres):
        pytest.skip("no PostgreSQL binaries (initdb, postgres) on this machine: apt-get install postgresql")
    prefix = _as_postgres_user()
    data = Path(tempfile.mkdtemp(prefix="qt-pg-"))
    if prefix:
        shutil.chown(data, "postgres", "postgres")
    proc = None
    try:
        subprocess.run(
            [*prefix, initdb, "-D", str(data / "db"), "-U", "qt", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        port = free_port()
        proc = ManagedProcess(
            name="postgres",
            argv=[
                *prefix,
                postgres,
                "-D",
                str(data / "db"),
                "-p",
                str(port),
                "-k",
                str(data),
                "-c",
                "listen_addresses=127.0.0.1",
            ],
            log_path=data / "postgres.log",
        )
        proc.start()
        proc.wait_ready(lambda: port_open("127.0.0.1", port), 60, f"on port {port}")
        url = f"postgresql://qt@127.0.0.1:{port}/postgres"
        _wait_accepting(url, proc)
        yield url
    finally:
        if proc is not None:
            proc.stop(timeout=20)
        shutil.rmtree(data, ignore_errors=True)


def _wait_accepting(url: str, proc: ManagedProcess) -> None:
    """The port opens before start-up recovery ends; wait for a real connection."""
    import time

    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline or not proc.alive():
                raise RuntimeError(f"postgres does not accept connections:\n{proc.log_tail()}") from None
            time.sleep(0.1)


def _fresh_database(url: str, name: str) -> str:
    import psycopg

    with contextlib.closing(psycopg.connect(url, autocommit=True)) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """None (the default SQLite file under the test's QT_HOME) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    url = request.getfixturevalue("postgres_url")
    return _fresh_database(url, f"j_{abs(hash(request.node.nodeid)) % 10**10}")


@pytest.fixture
def journal(journal_url: str | None, tmp_path: Path) -> Journal:
    return open_journal(journal_url, tmp_path / "qt")
