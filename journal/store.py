"""The trade journal: one row per closed position (or backtest trade), in SQLite or PostgreSQL.

The primary key is the trade id, and every write is `INSERT ... ON CONFLICT (trade_id) DO NOTHING`
in one transaction, so a writer that is retried, or killed after its insert and run again, never
leaves a second row, and one killed before its commit leaves none. Each call opens its own short
connection: trades close a few times a minute at most, and nothing is left open across a worker's
life or a killed process.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from pydantic import SecretStr

from trading.records import TradeRecord

SQLITE_FILE = "journal.sqlite"
TEXT_COLUMNS = (
    "trade_id",
    "run_id",
    "mode",
    "symbol",
    "side",
    "strategy",
    "regime",
    "model_version",
    "source",
)
MONEY_COLUMNS = ("quantity", "entry_price", "exit_price", "realized_pnl", "gross_pnl", "fees", "funding")
TIME_COLUMNS = ("opened_at_ms", "closed_at_ms")
TAIL_COLUMNS = ("exit_reason", "exit_controller")
COLUMNS = (*TEXT_COLUMNS, *MONEY_COLUMNS, *TIME_COLUMNS, *TAIL_COLUMNS)
_NULLABLE = {"regime", "model_version", "exit_controller"}


class JournalError(RuntimeError):
    """The journal's database cannot be used (bad URL, unreachable server)."""


class _Connection(Protocol):
    def cursor(self) -> Any: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class _Dialect:
    name: str
    money_type: str  # SQLite has no exact decimal type: amounts are kept as their exact text
    param: str

    def schema(self) -> list[str]:
        cols = [
            *(f"{c} TEXT{'' if c in _NULLABLE else ' NOT NULL'}" for c in TEXT_COLUMNS),
            *(f"{c} {self.money_type} NOT NULL" for c in MONEY_COLUMNS),
            *(f"{c} BIGINT NOT NULL" for c in TIME_COLUMNS),
            *(f"{c} TEXT{'' if c in _NULLABLE else ' NOT NULL'}" for c in TAIL_COLUMNS),
        ]
        cols[0] = "trade_id TEXT PRIMARY KEY"
        return [
            f"CREATE TABLE IF NOT EXISTS trades ({', '.join(cols)})",
            "CREATE INDEX IF NOT EXISTS trades_run_closed ON trades (run_id, closed_at_ms)",
            "CREATE INDEX IF NOT EXISTS trades_mode_closed ON trades (mode, closed_at_ms)",
        ]

    def insert(self) -> str:
        marks = ", ".join([self.param] * len(COLUMNS))
        return f"INSERT INTO trades ({', '.join(COLUMNS)}) VALUES ({marks}) ON CONFLICT (trade_id) DO NOTHING"

    def row(self, rec: TradeRecord) -> tuple[Any, ...]:
        data = rec.model_dump(mode="python")
        out: list[Any] = []
        for c in COLUMNS:
            value = data[c]
            if c in MONEY_COLUMNS and self.name == "sqlite":
                value = str(value)
            elif value is not None and c in ("side", "mode"):
                value = str(getattr(value, "value", value))
            out.append(value)
        return tuple(out)


SQLITE = _Dialect("sqlite", "TEXT", "?")
POSTGRES = _Dialect("postgresql", "NUMERIC", "%s")


class Journal:
    """Trade rows in one database. `record` and `record_many` are idempotent by trade id."""

    def __init__(self, dialect: _Dialect, target: str) -> None:
        self.dialect = dialect
        self._target = target  # a file path (SQLite) or a libpq URL (PostgreSQL)
        self._schema_ready = False  # created on first use: a database that is down never stops a worker

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._transaction(schema=False) as cur:
            for statement in self.dialect.schema():
                cur.execute(statement)
        self._schema_ready = True

    @property
    def where(self) -> str:
        """Where the journal is, without any password (for messages and logs)."""
        if self.dialect is SQLITE:
            return self._target
        return _redact(self._target)

    def _connect(self) -> _Connection:
        if self.dialect is SQLITE:
            # Autocommit mode: transactions are begun explicitly below, and PRAGMAs run outside one.
            conn = sqlite3.connect(self._target, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")  # readers (reports) never block the writer
            return conn
        import psycopg

        try:
            return psycopg.connect(self._target, connect_timeout=10)
        except psycopg.OperationalError as err:
            raise JournalError(f"journal database {self.where} is unreachable: {err}") from None

    @contextlib.contextmanager
    def _transaction(self, *, write: bool = True, schema: bool = True) -> Iterator[Any]:
        if schema:
            self._ensure_schema()
        conn = self._connect()
        try:
            cur = conn.cursor()
            if self.dialect is SQLITE:
                # A writer takes the write lock at once, not halfway through.
                cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield cur
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()

    def record(self, rec: TradeRecord) -> bool:
        """Write one trade; True when it was new, False when its trade id was already there."""
        return self.record_many([rec]) == 1

    def record_many(self, recs: Iterable[TradeRecord]) -> int:
        """Write trades in one transaction (all or none); returns how many were new."""
        inserted = 0
        sql = self.dialect.insert()
        with self._transaction() as cur:
            for rec in recs:
                cur.execute(sql, self.dialect.row(rec))
                inserted += max(cur.rowcount, 0)
        return inserted

    def trades(
        self, since_ms: int | None = None, run_id: str | None = None, mode: str | None = None
    ) -> list[TradeRecord]:
        """Trades closed at or after `since_ms`, optionally of one run or mode, in closing order."""
        where, args = [], []
        p = self.dialect.param
        if since_ms is not None:
            where.append(f"closed_at_ms >= {p}")
            args.append(since_ms)
        if run_id is not None:
            where.append(f"run_id = {p}")
            args.append(run_id)
        if mode is not None:
            where.append(f"mode = {p}")
            args.append(str(getattr(mode, "value", mode)))
        sql = f"SELECT {', '.join(COLUMNS)} FROM trades"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY closed_at_ms, trade_id"
        with self._transaction(write=False) as cur:
            cur.execute(sql, tuple(args))
            rows = cur.fetchall()
        return [self._record(row) for row in rows]

    @staticmethod
    def _record(row: tuple[Any, ...]) -> TradeRecord:
        data = dict(zip(COLUMNS, row, strict=True))
        for c in MONEY_COLUMNS:
            data[c] = Decimal(str(data[c]))
        return TradeRecord.model_validate(data)


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def open_journal(url: str | SecretStr | None, home: Path) -> Journal:
    """The journal `DATABASE_URL` names (`postgresql://...`, or `sqlite:///path`), else a SQLite file
    `journal.sqlite` under the data folder `home` (QT_HOME)."""
    if isinstance(url, SecretStr):
        url = url.get_secret_value()
    if not url:
        home.mkdir(parents=True, exist_ok=True)
        return Journal(SQLITE, str(home / SQLITE_FILE))
    if url.startswith(("postgresql://", "postgres://")):
        return Journal(POSTGRES, url)
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))  # sqlite:////abs/path or sqlite:///relative/path
        path.parent.mkdir(parents=True, exist_ok=True)
        return Journal(SQLITE, str(path))
    raise JournalError(
        f"DATABASE_URL: {_redact(url)!r} is neither postgresql://user:password@host/db nor sqlite:///path"
    )
