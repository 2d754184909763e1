"""The model registry: every run's record, which model is active per spec name, and why.

Embedded SQLite under the project's `.ftc/` (`FTC_HOME` moves it): WAL mode, one transaction per
change, a busy timeout (`FTC_REGISTRY_TIMEOUT` seconds, default 30) so that concurrent `ftc run`
processes wait for each other instead of failing. Tables:

  runs    one row per run: id, spec name, status (running | promoted | rejected | failed |
          interrupted), plan hash, start and finish times, and the record (a JSON document: the
          lineage: spec text and hash, base, method and training settings, data hashes and sizes,
          seed, versions, hardware, metrics, gates, artifact path and sha256, user, git commit)
  active  which run serves each spec name now
  events  the promotion log, oldest first: promote, promote-forced (a run whose gates failed,
          with the reason), rollback, artifact-removed (by `ftc gc --prune-rejected`), each with
          its time and user

Promotion is a stack per spec name, replayed from the events: each promotion pushes a run, each
rollback pops one, the top is active. So `ftc rollback` twice goes two promotions back, and
promoting an older run again is allowed (it is pushed again; rolling back returns to the model
that was active before it). A registry that cannot be used (not a database, damaged, locked for
longer than the timeout, not writable) raises RegistryError with what to do; nothing is written
then. An action the registry refuses (promoting a run whose gates failed, rolling back with no
earlier model) raises Refused.
"""

from __future__ import annotations

import errno
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from ftc.runtime import registry_file
from ftc.runtime.runrecord import ForcedPromotion, RecordFormatError, Removal, RunRecord, RunRow

SCHEMA_VERSION = 3  # 3: the meta table and SQLite's application id mark the file as ftc's (registry_file.py)
DEFAULT_TIMEOUT = 30.0
FINISHED = ("promoted", "rejected")
RESUMABLE = ("interrupted", "failed", "running")
PUSH = ("promote", "promote-forced")

TABLES = (
    ("CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, spec_name TEXT NOT NULL, status TEXT NOT NULL, "
     "plan_hash TEXT NOT NULL, started REAL NOT NULL, finished REAL, record TEXT NOT NULL)"),
    "CREATE INDEX IF NOT EXISTS runs_by_spec ON runs (spec_name, started)",
    ("CREATE TABLE IF NOT EXISTS active (spec_name TEXT PRIMARY KEY, run_id TEXT NOT NULL REFERENCES runs(id), "
     "since REAL NOT NULL)"),
    ("CREATE TABLE IF NOT EXISTS events (at REAL NOT NULL, spec_name TEXT NOT NULL, run_id TEXT NOT NULL, "
     "action TEXT NOT NULL, reason TEXT, user TEXT, previous TEXT)"),
    "CREATE INDEX IF NOT EXISTS events_by_spec ON events (spec_name)",
)


class _Explained(Exception):
    """A message saying what happened and a hint saying what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message, self.hint = message, hint

    def __str__(self) -> str:
        return self.message + (f"\n  hint: {self.hint}" if self.hint else "")


class RegistryError(_Explained):
    """The registry cannot be used (not a database, damaged, locked too long, not writable).
    Nothing was written. `ftc` prints it and exits 6."""


class Refused(_Explained):
    """The registry refuses an action (exit 1): the message says why, the hint what to do."""


class BadUsage(Refused):
    """A mistake in the command itself (exit 2): options that do not go together, a bad id."""


class UnknownRun(BadUsage):
    """No run matches the id (or several do)."""


def default_root() -> Path:
    return Path(os.environ.get("FTC_HOME") or Path.cwd() / ".ftc")


def timeout_seconds() -> float:
    """How long a command waits for a registry (or store) lock: FTC_REGISTRY_TIMEOUT, default 30 s."""
    raw = os.environ.get("FTC_REGISTRY_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise RegistryError(f"FTC_REGISTRY_TIMEOUT must be a number of seconds (>= 0), not {raw!r}",
                            f"unset it for the default ({DEFAULT_TIMEOUT:g} s), or e.g. FTC_REGISTRY_TIMEOUT=60")
    return value


def current_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (some containers)
        return os.environ.get("USER") or "unknown"


def when(ts: float | None) -> str:
    return "—" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def artifact_problem(record: RunRecord) -> str | None:
    """Why the run's model cannot be served (None when its artifact is on disk)."""
    art = record.artifact
    if art is None:
        return "it has no artifact"
    if art.removed is not None:
        return f"its artifact was removed by `{art.removed.by}` on {when(art.removed.at)}"
    if not art.path or not Path(art.path).exists():
        return f"its artifact is missing from disk ({art.path})"
    return None


def _fault(err: sqlite3.Error, path: Path, timeout: float) -> RegistryError:
    text = str(err)
    low = text.lower()
    if "not a database" in low or "encrypted" in low:
        return RegistryError(
            f"the registry {path} is not an SQLite database (damaged or overwritten: {text}); nothing was written",
            f"restore it from a backup, or move it aside (`mv {path} {path}.bad`) and ftc starts an empty registry;"
            f" the run folders under {path.parent / 'runs'} stay on disk")
    if "malformed" in low or "corrupt" in low:
        return RegistryError(
            f"the registry {path} is damaged ({text}); nothing was written",
            f"recover what can be read: `sqlite3 {path} .recover | sqlite3 {path}.recovered`, check it, then move"
            f" it into place; or restore a backup")
    if "locked" in low or "busy" in low:
        return RegistryError(
            f"the registry {path} is locked by another process (waited {timeout:g} s); nothing was written",
            "wait for the other `ftc` command to finish and run this one again, or wait longer with "
            "FTC_REGISTRY_TIMEOUT=<seconds>")
    if "full" in low:  # SQLITE_FULL: "database or disk is full"
        return RegistryError(
            f"the disk holding the registry {path} is full ({text}); nothing was written",
            f"free space on the disk of {path.parent} (or point FTC_HOME at another disk) and run the command "
            "again; a run that stopped resumes with `ftc run SPEC --resume`")
    if "readonly" in low or "unable to open" in low or "i/o" in low:
        return RegistryError(f"the registry {path} cannot be opened for writing ({text}); nothing was written",
                             f"check that {path.parent} exists, is writable and its disk has space, or point "
                             "FTC_HOME at another folder")
    return RegistryError(f"the registry {path} cannot be used ({text}); nothing was written",
                         "run the command again; if it persists, move the file aside and keep it for a bug report")


def _foreign(path: Path, found: registry_file.Found) -> RegistryError:
    """An existing registry.db that ftc did not write: refused, with what is there and what to do."""
    if found.kind == "empty":
        return RegistryError(
            f"the registry {path} is an empty file (0 bytes), not a registry ftc wrote (a disk that filled while "
            "it was being created leaves such a file); nothing was written",
            f"if no run was ever recorded here, remove it (`rm {path}`) and ftc creates a new registry; else "
            f"restore it from a backup (the run folders under {path.parent / 'runs'} stay on disk)")
    if found.kind == "not-sqlite":
        return RegistryError(
            f"the registry {path} is not an SQLite database (damaged or overwritten: {found.detail}); nothing was "
            "written",
            f"restore it from a backup, or move it aside (`mv {path} {path}.bad`) and ftc starts an empty registry;"
            f" the run folders under {path.parent / 'runs'} stay on disk")
    return RegistryError(
        f"the registry {path} is not ftc's: {found.detail}; nothing was written",
        f"point FTC_HOME at another folder, or move the file aside (`mv {path} {path}.other`) if it does not "
        "belong there")


def _os_fault(err: OSError, path: Path) -> RegistryError:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return RegistryError(f"the disk holding the registry {path} is full ({err.strerror}): no registry was "
                             "created, and nothing was written",
                             f"free space on the disk of {path.parent} (or point FTC_HOME at another disk) and "
                             "run the command again")
    return RegistryError(f"the registry {path} cannot be read or created ({err.strerror or err})",
                         f"check that {path.parent} is readable and writable, or point FTC_HOME at another folder")


def _mappable(err: BaseException) -> bool:
    # IntegrityError, ProgrammingError...: bugs in ftc, not a damaged or busy database
    return isinstance(err, sqlite3.OperationalError) or type(err) is sqlite3.DatabaseError


class Registry:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_root()
        self.path = self.root / "registry.db"
        self.timeout = timeout_seconds()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RegistryError(f"cannot create the registry folder {self.root}: {err.strerror}",
                                "point FTC_HOME at a writable folder") from err
        self._setup()

    # -----------------------------------------------------------------------------------------
    # Connections

    def _connect(self) -> sqlite3.Connection:
        try:
            return sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as err:
            raise _fault(err, self.path, self.timeout) from err

    def _abort(self, db: sqlite3.Connection, err: BaseException) -> None:
        """Roll back what the failed transaction wrote; a SQLite fault becomes a RegistryError."""
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        if isinstance(err, sqlite3.Error) and _mappable(err):
            raise _fault(err, self.path, self.timeout) from err

    def _setup(self) -> None:
        """Create the registry where no file is (atomically), else verify that the file is ftc's
        and upgrade an older ftc's schema; an empty or foreign file is refused (registry_file.py)."""
        if not os.path.lexists(self.path):
            self._create()
        self._verify()
        self._upgrade()

    def _create(self) -> None:
        from ftc import __version__

        def build(db: sqlite3.Connection) -> None:
            for statement in TABLES:
                db.execute(statement)
            registry_file.mark(db, __version__)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

        try:
            registry_file.create(self.path, build)
        except sqlite3.Error as err:
            raise _fault(err, self.path, self.timeout) from err
        except OSError as err:
            raise _os_fault(err, self.path) from err

    def _verify(self) -> None:
        """Refuse a registry.db that ftc did not write, before anything is written to it."""
        try:
            found = registry_file.from_header(self.path)
        except OSError as err:
            raise _os_fault(err, self.path) from err
        if found is None:
            db = self._connect()
            try:
                found = registry_file.identify(db)
            except sqlite3.Error as err:
                raise _fault(err, self.path, self.timeout) from err
            finally:
                db.close()
        if not found.usable:
            raise _foreign(self.path, found)

    def _upgrade(self) -> None:
        """Upgrade the schema, retrying while other processes do the same.

        Switching a fresh database to WAL needs an exclusive lock, and SQLite answers "database is
        locked" at once, without waiting on the busy timeout, when two connections that both read
        the file try to upgrade their locks together (its deadlock avoidance). Several `ftc`
        processes started at the same time on a new registry meet exactly that, so the set-up is
        retried until the timeout has passed."""
        deadline = time.monotonic() + self.timeout
        pause = 0.005
        while True:
            try:
                self._setup_once()
                return
            except RegistryError as err:
                cause = err.__cause__
                busy = isinstance(cause, sqlite3.OperationalError) and (
                    "locked" in str(cause).lower() or "busy" in str(cause).lower())
                if not busy or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.2)

    def _setup_once(self) -> None:
        """Create or upgrade the schema (WAL mode first, outside a transaction); reads only, when
        it is current."""
        db = self._connect()
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                return
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
        except BaseException as err:
            self._abort(db, err)
            raise
        finally:
            db.close()
        from ftc import __version__

        with self._db(write=True) as db:
            if db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:  # another process may have
                for statement in TABLES:
                    db.execute(statement)
                columns = {r[1] for r in db.execute("PRAGMA table_info(events)")}
                for column in ("user", "previous"):
                    if column not in columns:  # a registry written by an earlier ftc
                        db.execute(f"ALTER TABLE events ADD COLUMN {column} TEXT")
                registry_file.mark(db, __version__)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def _db(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction: IMMEDIATE for a change (writers queue on the busy timeout), deferred
        for a read (WAL: a consistent snapshot, never blocked by a writer)."""
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield db
            db.execute("COMMIT")
        except BaseException as err:
            self._abort(db, err)
            raise
        finally:
            db.close()

    # -----------------------------------------------------------------------------------------
    # Runs

    def start(self, run_id: str, spec_name: str, plan_hash: str, record: RunRecord) -> None:
        with self._db(write=True) as db:
            db.execute("INSERT INTO runs (id, spec_name, status, plan_hash, started, record) VALUES (?,?,?,?,?,?)",
                       (run_id, spec_name, "running", plan_hash, time.time(), record.dumps()))

    def mark(self, run_id: str, status: str) -> None:
        with self._db(write=True) as db:
            db.execute("UPDATE runs SET status=? WHERE id=?", (status, run_id))

    def finish(self, run_id: str, status: str, record: RunRecord, *, user: str | None = None) -> None:
        """Record the outcome; a `promoted` run becomes the active model of its spec (same transaction)."""
        with self._db(write=True) as db:
            now = time.time()
            db.execute("UPDATE runs SET status=?, finished=?, record=? WHERE id=?",
                       (status, now, record.dumps(), run_id))
            if status == "promoted":
                spec_name = db.execute("SELECT spec_name FROM runs WHERE id=?", (run_id,)).fetchone()[0]
                self._activate(db, spec_name, run_id, "promote", "gates passed", user or current_user(), now)

    def update_record(self, run_id: str, change: Callable[[RunRecord], RunRecord]) -> None:
        """Read, change and write one record in one transaction."""
        with self._db(write=True) as db:
            row = db.execute("SELECT record FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is not None:
                db.execute("UPDATE runs SET record=? WHERE id=?", (change(RunRecord.loads(row[0])).dumps(), run_id))

    def get(self, run_id: str) -> RunRow | None:
        with self._db() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM runs WHERE id=?", (run_id,)).fetchone()
        return _row(row) if row else None

    def resolve(self, ref: str) -> str:
        """A run id from an id or a unique prefix of one; UnknownRun otherwise."""
        with self._db() as db:
            if db.execute("SELECT 1 FROM runs WHERE id=?", (ref,)).fetchone():
                return ref
            query = "SELECT id FROM runs WHERE substr(id, 1, ?) = ? ORDER BY started, id"  # case-sensitive prefix
            found: list[str] = [str(r[0]) for r in db.execute(query, (len(ref), ref))] if ref else []
        if len(found) == 1:
            return found[0]
        if found:
            shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
            raise UnknownRun(f"`{ref}` matches {len(found)} runs: {shown}", "give more of the id")
        raise UnknownRun(f"no run `{ref}` in {self.path}", "`ftc runs list` shows the recorded runs")

    def runs(self, spec_name: str | None = None) -> list[RunRow]:
        query = f"SELECT {_COLUMNS} FROM runs"
        args: tuple[Any, ...] = ()
        if spec_name:
            query += " WHERE spec_name=?"
            args = (spec_name,)
        with self._db() as db:
            rows = db.execute(query + " ORDER BY started, id", args).fetchall()
        return [_row(r) for r in rows]

    # -----------------------------------------------------------------------------------------
    # Active models, promotion, rollback

    def active(self, spec_name: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT run_id FROM active WHERE spec_name=?", (spec_name,)).fetchone()
        return row[0] if row else None

    def active_all(self) -> dict[str, str]:
        with self._db() as db:
            return {r[0]: r[1] for r in db.execute("SELECT spec_name, run_id FROM active")}

    def active_info(self, spec_name: str) -> dict[str, Any] | None:
        """The active run with the event that made it active (who, when, why)."""
        with self._db() as db:
            row = db.execute("SELECT run_id, since FROM active WHERE spec_name=?", (spec_name,)).fetchone()
            if row is None:
                return None
            events = _events(db, "spec_name=?", (spec_name,))
        last = next((e for e in reversed(events) if e["action"] in (*PUSH, "rollback") and e["run_id"] == row[0]),
                    None)
        return {"spec": spec_name, "run_id": row[0], "since": row[1], "event": last}

    def history(self, spec_name: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        """Events, oldest first, of a spec name or a run (or all)."""
        where: str = "1"
        args: tuple[Any, ...] = ()
        if spec_name is not None:
            where, args = "spec_name=?", (spec_name,)
        elif run_id is not None:
            where, args = "run_id=? OR previous=?", (run_id, run_id)
        with self._db() as db:
            return _events(db, where, args)

    def promoted_ever(self) -> set[str]:
        """Runs that were active at some time (rollback may need them again)."""
        with self._db() as db:
            ids = {r[0] for r in db.execute("SELECT run_id FROM events WHERE action IN ('promote', "
                                            "'promote-forced', 'rollback')")}
            ids |= {r[0] for r in db.execute("SELECT run_id FROM active")}
        return ids

    def promote(self, run_id: str, *, force: bool = False, reason: str | None = None,
                user: str | None = None) -> dict[str, Any]:
        """Make a run the active model of its spec; returns {spec, run_id, previous, forced, changed}."""
        reason = (reason or "").strip() or None
        if force and reason is None:
            raise BadUsage("--force needs --reason TEXT (recorded with your name in the registry)",
                             'e.g. --force --reason "latency gate waived for the internal pilot"')
        with self._db(write=True) as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None:
                raise UnknownRun(f"no run `{run_id}`", "`ftc runs list` shows the recorded runs")
            run = _row(row)
            status, record, name = run["status"], run["record"], run["spec_name"]
            if status == "running":
                raise Refused(f"{run_id} is still running (or its process died before recording an outcome)",
                              "wait for it to finish; a run whose process died can be continued with "
                              "`ftc run SPEC --resume`")
            if status in ("failed", "interrupted"):
                raise Refused(f"{run_id} {status}: only a completed run can be promoted",
                              "continue it with `ftc run SPEC --resume`, then promote it if its gates pass")
            problem = artifact_problem(record)
            if problem:
                raise Refused(f"{run_id} cannot be promoted: {problem}",
                              "promote another run (`ftc runs list`) or run the spec again")
            current = db.execute("SELECT run_id FROM active WHERE spec_name=?", (name,)).fetchone()
            previous = current[0] if current else None
            if previous == run_id:
                return {"spec": name, "run_id": run_id, "previous": previous, "forced": False, "changed": False}
            passed = record.gates_passed
            if not passed and not force:
                failed = record.failed_gates()
                why = f"its gates failed: {'; '.join(failed)}" if failed else "it has no gates that passed"
                raise Refused(f"{run_id} was not promoted: {why}",
                              'promote it anyway with --force --reason "why" (recorded with your name)')
            forced = not passed
            action = "promote-forced" if forced else "promote"
            self._activate(db, name, run_id, action, reason or ("gates passed" if passed else None),
                           user or current_user(), time.time())
            if status != "promoted":  # a rejected run, forced: the record keeps its failed gates and says why
                record = record.but(status="promoted", forced_promotion=ForcedPromotion(
                    reason=reason, user=user or current_user(), at=time.time(), was=status))
                db.execute("UPDATE runs SET status='promoted', record=? WHERE id=?", (record.dumps(), run_id))
        return {"spec": name, "run_id": run_id, "previous": previous, "forced": forced, "changed": True}

    def rollback(self, spec_name: str, *, reason: str | None = None, user: str | None = None) -> dict[str, Any]:
        """Make the model promoted before the active one active again; returns {spec, run_id, previous}."""
        with self._db(write=True) as db:
            stack = _stack(_events(db, "spec_name=?", (spec_name,)))
            if not stack:
                known = db.execute("SELECT 1 FROM runs WHERE spec_name=?", (spec_name,)).fetchone()
                raise Refused(f"no model of `{spec_name}` was ever promoted, so there is nothing to roll back",
                              "`ftc promote RUN` makes a run active" if known else
                              "check the spec name: `ftc runs list` shows the recorded ones")
            if len(stack) == 1:
                raise Refused(f"`{spec_name}` has no earlier promoted model to roll back to: {stack[0]} is the "
                              "first one", "`ftc promote RUN` makes another run active")
            target, current = stack[-2], stack[-1]
            row = db.execute(f"SELECT {_COLUMNS} FROM runs WHERE id=?", (target,)).fetchone()
            problem = artifact_problem(_row(row)["record"]) if row else "its record is gone"
            if problem:
                raise Refused(f"cannot roll back `{spec_name}` to {target}: {problem}",
                              "`ftc promote RUN` makes another run active")
            self._activate(db, spec_name, target, "rollback", (reason or "").strip() or None,
                           user or current_user(), time.time(), previous=current)
        return {"spec": spec_name, "run_id": target, "previous": current}

    def mark_artifact_removed(self, run_ids: list[str], by: str, user: str | None = None) -> None:
        """Note in each record (and the events) that gc removed its artifact: one transaction."""
        now, who = time.time(), user or current_user()
        with self._db(write=True) as db:
            for run_id in run_ids:
                row = db.execute("SELECT spec_name, record FROM runs WHERE id=?", (run_id,)).fetchone()
                if row is None:
                    continue
                record = RunRecord.loads(row[1])
                if record.artifact is not None:
                    record = record.but(artifact=replace(record.artifact, removed=Removal(by=by, at=now, user=who)))
                db.execute("UPDATE runs SET record=? WHERE id=?", (record.dumps(), run_id))
                db.execute("INSERT INTO events (at, spec_name, run_id, action, reason, user) VALUES (?,?,?,?,?,?)",
                           (now, row[0], run_id, "artifact-removed", by, who))

    @staticmethod
    def _activate(db: sqlite3.Connection, spec_name: str, run_id: str, action: str, reason: str | None,
                  user: str, now: float, previous: str | None = None) -> None:
        if previous is None:
            row = db.execute("SELECT run_id FROM active WHERE spec_name=?", (spec_name,)).fetchone()
            previous = row[0] if row else None
        db.execute("INSERT INTO active (spec_name, run_id, since) VALUES (?,?,?) ON CONFLICT(spec_name) "
                   "DO UPDATE SET run_id=excluded.run_id, since=excluded.since", (spec_name, run_id, now))
        db.execute("INSERT INTO events (at, spec_name, run_id, action, reason, user, previous) "
                   "VALUES (?,?,?,?,?,?,?)", (now, spec_name, run_id, action, reason, user, previous))


_COLUMNS = "id, spec_name, status, plan_hash, started, finished, record"


def _row(row: tuple[Any, ...]) -> RunRow:
    try:
        record = RunRecord.loads(row[6])
    except RecordFormatError as err:
        raise RegistryError(f"run {row[0]}: {err}", "a newer ftc wrote to this registry: use that version "
                            "(`pip install -U ftc`), or point FTC_HOME at another registry") from err
    return {"id": row[0], "spec_name": row[1], "status": row[2], "plan_hash": row[3], "started": row[4],
            "finished": row[5], "record": record}


def _events(db: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
    rows = db.execute(f"SELECT at, spec_name, run_id, action, reason, user, previous FROM events WHERE {where} "
                      "ORDER BY rowid", args).fetchall()
    return [{"at": r[0], "spec": r[1], "run_id": r[2], "action": r[3], "reason": r[4], "user": r[5],
             "previous": r[6]} for r in rows]


def _stack(events: list[dict[str, Any]]) -> list[str]:
    """Replay promotions (push) and rollbacks (pop): the last entry is the active run."""
    stack: list[str] = []
    for e in events:
        if e["action"] in PUSH:
            stack.append(e["run_id"])
        elif e["action"] == "rollback" and stack:
            stack.pop()
    return stack
