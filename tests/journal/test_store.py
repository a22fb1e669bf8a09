"""The journal on SQLite and on a real PostgreSQL: idempotent by trade id, exact amounts, filters."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from journal.store import Journal, JournalError, open_journal
from tests.trading.test_records import DAY_MS, T0, rec
from trading.records import TradeRecord

D = Decimal


def test_a_trade_is_written_once_whatever_the_retries(journal: Journal) -> None:
    first = rec(1, "12.34")
    assert journal.record(first) is True
    assert journal.record(first) is False  # a retried writer
    assert journal.record_many([first, rec(2, "-1"), rec(2, "-1")]) == 1  # only trade 2 is new
    assert [r.trade_id for r in journal.trades()] == ["bt:1", "bt:2"]


def test_amounts_come_back_exactly(journal: Journal) -> None:
    r = rec(
        1,
        "-123456789.123456789",
        quantity=D("0.00000001"),
        entry_price=D("98765.4321"),
        exit_price=D("0.000001234"),
        fees=D("0.00000042"),
        funding=D("-0.0000375"),
        regime="trend_up",
        model_version="xgb-7",
        exit_controller="trailing",
    )
    journal.record(r)
    (back,) = journal.trades()
    assert back == r  # every field, Decimals to the last digit, enums and optional texts


def test_filters_by_time_run_and_mode(journal: Journal) -> None:
    journal.record_many(
        [
            rec(1, "1", day=0),
            rec(2, "2", day=2),
            rec(3, "3", day=1, trade_id="position-x", run_id="paper", mode="paper"),
        ]
    )
    assert [r.trade_id for r in journal.trades()] == ["bt:1", "position-x", "bt:2"]  # closing order
    assert [r.trade_id for r in journal.trades(since_ms=T0 + DAY_MS)] == ["position-x", "bt:2"]
    assert [r.trade_id for r in journal.trades(run_id="bt")] == ["bt:1", "bt:2"]
    assert [r.trade_id for r in journal.trades(mode="paper")] == ["position-x"]
    assert journal.trades(run_id="bt", since_ms=T0 + 3 * DAY_MS) == []


def test_many_trades_are_all_or_nothing(journal: Journal) -> None:
    def batch() -> Iterator[TradeRecord]:
        yield rec(1, "1")
        raise RuntimeError("the writer failed halfway through its batch")

    with pytest.raises(RuntimeError):
        journal.record_many(batch())
    assert journal.trades() == []  # the insert already made in the batch was rolled back
    assert journal.record_many([rec(1, "1"), rec(2, "2")]) == 2


def test_default_is_a_sqlite_file_under_the_data_folder(tmp_path: Path) -> None:
    journal = open_journal(None, tmp_path / "home")
    journal.record(rec(1, "5"))
    path = tmp_path / "home" / "journal.sqlite"
    assert journal.where == str(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT trade_id, realized_pnl FROM trades").fetchall() == [("bt:1", "5")]
    other = open_journal(f"sqlite:///{tmp_path}/elsewhere/j.sqlite", tmp_path / "home")
    assert other.trades() == [] and (tmp_path / "elsewhere" / "j.sqlite").exists()


def test_bad_urls_are_refused_by_name_without_the_password(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="DATABASE_URL") as err:
        open_journal("mysql://trader:hunter2@db/journal", tmp_path)
    assert "hunter2" not in str(err.value) and "trader:***@db" in str(err.value)


def test_an_unreachable_postgres_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    from workers.processes import free_port

    journal = open_journal(f"postgresql://qt:s3cret@127.0.0.1:{free_port()}/journal", tmp_path)
    with pytest.raises(JournalError, match="unreachable") as err:
        journal.trades()
    assert "s3cret" not in str(err.value)
