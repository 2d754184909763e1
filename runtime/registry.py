"""The model registry: every run's record, and which model is active per spec name.

Embedded SQLite under the project's `.ftc/` (WAL mode, one transaction per write, a busy timeout so
that concurrent `ftc run` processes wait instead of failing). The record is a JSON document (the
lineage: spec, base, data hashes, seed, versions, metrics, gates, artifact hash); a few columns are
indexed for listing. Issue 5 grows this into `ftc runs`, promote/rollback and reports.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, spec_name TEXT NOT NULL, status TEXT NOT NULL, plan_hash TEXT NOT NULL,
  started REAL NOT NULL, finished REAL, record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_spec ON runs (spec_name, started);
CREATE TABLE IF NOT EXISTS active (
  spec_name TEXT PRIMARY KEY, run_id TEXT NOT NULL REFERENCES runs(id), since REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
  at REAL NOT NULL, spec_name TEXT NOT NULL, run_id TEXT NOT NULL, action TEXT NOT NULL, reason TEXT
);
"""


class RegistryError(Exception):
    """A registry that cannot be used (corrupt, locked too long): a clear message, no partial write."""


def default_root() -> Path:
    return Path(os.environ.get("FTC_HOME") or Path.cwd() / ".ftc")


class Registry:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "registry.db"
        try:
            db = sqlite3.connect(self.path, timeout=30)
            try:
                db.execute("PRAGMA busy_timeout=30000")
                db.executescript(SCHEMA)  # idempotent; executescript commits by itself
            finally:
                db.close()
        except sqlite3.DatabaseError as err:
            raise RegistryError(f"the registry {self.path} cannot be used: {err}") from err

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def start(self, run_id: str, spec_name: str, plan_hash: str, record: dict[str, Any]) -> None:
        with self._db() as db:
            db.execute("INSERT INTO runs (id, spec_name, status, plan_hash, started, record) VALUES (?,?,?,?,?,?)",
                       (run_id, spec_name, "running", plan_hash, time.time(), json.dumps(record, sort_keys=True)))

    def mark(self, run_id: str, status: str) -> None:
        with self._db() as db:
            db.execute("UPDATE runs SET status=? WHERE id=?", (status, run_id))

    def finish(self, run_id: str, status: str, record: dict[str, Any]) -> None:
        with self._db() as db:
            db.execute("UPDATE runs SET status=?, finished=?, record=? WHERE id=?",
                       (status, time.time(), json.dumps(record, sort_keys=True), run_id))
            if status == "promoted":
                spec_name = db.execute("SELECT spec_name FROM runs WHERE id=?", (run_id,)).fetchone()[0]
                db.execute("INSERT INTO active (spec_name, run_id, since) VALUES (?,?,?) ON CONFLICT(spec_name) "
                           "DO UPDATE SET run_id=excluded.run_id, since=excluded.since",
                           (spec_name, run_id, time.time()))
                db.execute("INSERT INTO events VALUES (?,?,?,?,?)", (time.time(), spec_name, run_id, "promote",
                                                                     "gates passed"))

    def get(self, run_id: str) -> dict[str, Any] | None:
        with self._db() as db:
            row = db.execute("SELECT id, spec_name, status, plan_hash, started, finished, record FROM runs "
                             "WHERE id=?", (run_id,)).fetchone()
        return _row(row) if row else None

    def runs(self, spec_name: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT id, spec_name, status, plan_hash, started, finished, record FROM runs"
        args: tuple[Any, ...] = ()
        if spec_name:
            query += " WHERE spec_name=?"
            args = (spec_name,)
        with self._db() as db:
            rows = db.execute(query + " ORDER BY started, id", args).fetchall()
        return [_row(r) for r in rows]

    def active(self, spec_name: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT run_id FROM active WHERE spec_name=?", (spec_name,)).fetchone()
        return row[0] if row else None


def _row(row: tuple[Any, ...]) -> dict[str, Any]:
    return {"id": row[0], "spec_name": row[1], "status": row[2], "plan_hash": row[3], "started": row[4],
            "finished": row[5], "record": json.loads(row[6])}
