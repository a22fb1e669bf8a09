"""SQLite persistence of the paper exchange: one row of JSON per object, written through per request.

Tables hold orders, algo orders, positions, trades, income rows and a key/value table (wallet, id
counters, symbol settings, listen key, manual prices, funding clock). The engine collects what a
request changed and calls `write` once, so every request is one transaction.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

TABLES = ("orders", "algos", "trades", "income")


class Store:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # No automatic checkpoint inside a request's commit: the engine calls `checkpoint` from its
        # clock tick instead, so a write never pays for copying the WAL back (and its fsync).
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self.pending_writes = 0
        for t in TABLES:
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {t} (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS positions (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
        self._sql = {t: f"INSERT OR REPLACE INTO {t} (id, v) VALUES (?, ?)" for t in TABLES}
        self._sql["positions"] = "INSERT OR REPLACE INTO positions (k, v) VALUES (?, ?)"
        self._sql["kv"] = "INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)"

    def load(self) -> dict[str, Any]:
        """Everything stored: {table: [(key, value)]} in key order, kv as a dict."""
        out: dict[str, Any] = {}
        for t in TABLES:
            out[t] = [json.loads(v) for (v,) in self._db.execute(f"SELECT v FROM {t} ORDER BY id")]
        out["positions"] = {k: json.loads(v) for k, v in self._db.execute("SELECT k, v FROM positions")}
        out["kv"] = {k: json.loads(v) for k, v in self._db.execute("SELECT k, v FROM kv")}
        return out

    def is_empty(self) -> bool:
        return self._db.execute("SELECT COUNT(*) FROM kv").fetchone()[0] == 0

    def write(self, rows: dict[str, dict[Any, Any]]) -> None:
        """Upsert `{table: {key: json-able value}}` in one transaction."""
        db = self._db
        dumps = json.dumps
        db.execute("BEGIN")
        try:
            for table, items in rows.items():
                if not items:
                    continue
                sql = self._sql[table]
                if len(items) == 1:
                    ((k, v),) = items.items()
                    db.execute(sql, (k, dumps(v, separators=(",", ":"))))
                else:
                    db.executemany(sql, [(k, dumps(v, separators=(",", ":"))) for k, v in items.items()])
            db.execute("COMMIT")
            self.pending_writes += 1
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def checkpoint(self) -> None:
        """Copy the WAL back into the database file (PASSIVE: never waits for readers)."""
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self.pending_writes = 0

    def close(self) -> None:
        if self.pending_writes:
            self.checkpoint()
        self._db.close()
