"""Which file `registry.db` is: ftc's own registry, or something ftc must not adopt.

A registry is created only where no file is, and atomically: the schema is written into a private
temporary file beside it (`.registry.db.<pid>.<random>.tmp`), which is then hard-linked into
place, so that no process ever sees a half-made registry, a disk that fills during the creation
leaves no `registry.db` behind (only the temporary file, removed), and of several processes
creating it at once one wins and the others open its file. Every other file is verified before
anything is written to it:

  ftc's      SQLite, `PRAGMA application_id` = APP_ID, and a `meta` table whose `application`
             row is `ftc-registry` (schema 3 on): used as is
  legacy     SQLite written by ftc before schema 3 (user_version 0 to 2, ftc's runs table, tables
             active/events, no application id): upgraded in place (a `meta` table and the application id are added)
  empty      0 bytes (what a disk that filled while an older ftc created it leaves behind, or a
             `touch`): refused; SQLite would take it for an empty database and ftc would write
             its schema into it, silently starting a new registry over what may have been one
  foreign    not SQLite, or an SQLite database of another program (its tables are named): refused
`ftc runs list` and the other reading commands never write into a file they refuse.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

APP_ID = 0x66746331  # "ftc1": SQLite's header field for the program that owns a database file
APPLICATION = "ftc-registry"
HEADER = b"SQLite format 3\x00"
LEGACY_VERSION = 2  # the schema ftc wrote before the application id and the meta table (0 before it counted)
LEGACY_TABLES = frozenset({"runs", "active", "events"})
RUNS_COLUMNS = frozenset({"id", "spec_name", "status", "plan_hash", "started", "finished", "record"})
META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


@dataclass(frozen=True)
class Found:
    """What an existing registry.db is: kind (ftc, legacy, empty, not-sqlite, foreign) and, for a
    file that is refused, what was found there in words."""

    kind: str
    detail: str = ""

    @property
    def usable(self) -> bool:
        return self.kind in ("ftc", "legacy")


def from_header(path: Path) -> Found | None:
    """An empty or non-SQLite file, told from its first bytes (nothing is opened with SQLite);
    None when it starts as an SQLite database."""
    with path.open("rb") as fh:
        head = fh.read(len(HEADER))
    if not head:
        return Found("empty", "an empty file (0 bytes)")
    if head != HEADER:
        return Found("not-sqlite", "a file that is not an SQLite database")
    return None


def identify(db: sqlite3.Connection) -> Found:
    """What an SQLite database is, from its header fields, its tables and its meta row (reads only)."""
    app_id = int(db.execute("PRAGMA application_id").fetchone()[0])
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    tables = {str(r[0]) for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if app_id == APP_ID:
        row = db.execute("SELECT value FROM meta WHERE key='application'").fetchone() if "meta" in tables else None
        if row is not None and row[0] == APPLICATION and LEGACY_TABLES <= tables:
            return Found("ftc")
        return Found("foreign", f"a database marked as ftc's without ftc's tables or meta row "
                                f"(tables: {_listing(tables)})")
    if app_id == 0 and version <= LEGACY_VERSION and LEGACY_TABLES <= tables and _ftc_runs(db):
        return Found("legacy")
    what = f"application id {app_id:#x}, " if app_id else ""
    return Found("foreign", f"an SQLite database of another program ({what}schema version {version}, "
                            f"tables: {_listing(tables)})")


def _ftc_runs(db: sqlite3.Connection) -> bool:
    """The `runs` table has the columns every ftc registry's has."""
    return RUNS_COLUMNS <= {str(r[1]) for r in db.execute("PRAGMA table_info(runs)")}


def _listing(tables: set[str]) -> str:
    shown = sorted(tables)
    return ", ".join(shown[:8]) + (f" and {len(shown) - 8} more" if len(shown) > 8 else "") if shown else "none"


def mark(db: sqlite3.Connection, ftc_version: str) -> None:
    """Write the meta table and its rows, and the application id (inside the caller's transaction)."""
    db.execute(META)
    db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('application', ?)", (APPLICATION,))
    db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('created_by', ?)", (f"ftc {ftc_version}",))
    db.execute(f"PRAGMA application_id={APP_ID}")


def _place(tmp: Path, path: Path) -> bool:
    """Link the finished file into place; where the file system has no hard links, rename it
    there unless a file appeared meanwhile (a narrower window, the same outcome)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if os.path.lexists(path):
            return False
        os.replace(tmp, path)
    return True


def create(path: Path, build: Callable[[sqlite3.Connection], None]) -> bool:
    """Create the registry at `path` where there is none, atomically (see the module's notes):
    True when this call made it, False when another process did first. `build` writes the schema
    (in one transaction, WAL mode already set). Any error leaves no file at `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("BEGIN IMMEDIATE")
            build(db)
            db.execute("COMMIT")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()
        return _place(tmp, path)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm"),
                         tmp.with_name(tmp.name + "-journal")):
            with contextlib.suppress(OSError):
                leftover.unlink()
