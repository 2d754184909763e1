"""registry.db is never adopted silently (issue 15): a registry is created only where no file is,
atomically (a disk that fills during the creation leaves no file behind); an empty (0-byte) or
foreign file is refused with its path, what was found and what to do, and nothing is written into
it, not even by `ftc runs list`."""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from ftc.compiler.cli import cli
from ftc.runtime import registry_file
from ftc.runtime.registry import SCHEMA_VERSION, TABLES, Registry, RegistryError

READERS = (["runs", "list"], ["runs", "show", "x"], ["active", "demo"], ["gc", "--dry-run"])
WRITERS = (["promote", "x"], ["rollback", "demo"], ["gc"])


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_a_new_registry_is_marked_as_ftcs_and_leaves_no_temporary_file(home: Path) -> None:
    reg = Registry()
    db = sqlite3.connect(reg.path)
    assert db.execute("PRAGMA application_id").fetchone()[0] == registry_file.APP_ID
    assert db.execute("SELECT value FROM meta WHERE key='application'").fetchone()[0] == "ftc-registry"
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    assert [p.name for p in home.iterdir() if p.name.endswith(".tmp")] == []
    assert registry_file.identify(sqlite3.connect(reg.path)).kind == "ftc"


def test_an_empty_registry_file_is_refused_and_never_written(home: Path) -> None:
    home.mkdir()
    (home / "registry.db").touch()
    before = _files(home)
    for args in READERS + WRITERS:
        result = _invoke(*args)
        assert result.exit_code == 6, (args, result.output)
        assert f"the registry {home / 'registry.db'} is an empty file (0 bytes)" in result.output
        assert f"rm {home / 'registry.db'}" in result.output and "Traceback" not in result.output
    with pytest.raises(RegistryError, match="empty file"):
        Registry()
    assert _files(home) == before  # still 0 bytes, same mtime, no -wal/-shm, no store, no runs folder


def test_a_foreign_sqlite_database_is_refused_naming_its_tables(home: Path) -> None:
    home.mkdir()
    db = sqlite3.connect(home / "registry.db")
    db.executescript("CREATE TABLE customers (id INTEGER, name TEXT); INSERT INTO customers VALUES (1, 'x');")
    db.close()
    data = (home / "registry.db").read_bytes()
    result = _invoke("runs", "list")
    assert result.exit_code == 6, result.output
    assert "is not ftc's: an SQLite database of another program" in result.output
    assert "tables: customers" in result.output and "FTC_HOME" in result.output
    with pytest.raises(RegistryError, match="not ftc's"):
        Registry()
    assert (home / "registry.db").read_bytes() == data
    assert sorted(p.name for p in home.iterdir()) == ["registry.db"]


def test_a_database_claiming_ftcs_id_without_its_tables_is_refused(home: Path) -> None:
    home.mkdir()
    db = sqlite3.connect(home / "registry.db")
    db.execute(f"PRAGMA application_id={registry_file.APP_ID}")
    db.execute("CREATE TABLE runs (id TEXT)")
    db.commit()
    db.close()
    with pytest.raises(RegistryError, match="marked as ftc's without ftc's tables or meta row"):
        Registry()


def test_a_registry_of_an_older_ftc_is_upgraded_and_marked(home: Path) -> None:
    reg = Registry()
    db = sqlite3.connect(reg.path)  # as ftc wrote it before schema 3: no meta table, no application id
    db.executescript("DROP TABLE meta; PRAGMA application_id=0; PRAGMA user_version=2;")
    db.close()
    assert registry_file.identify(sqlite3.connect(reg.path)).kind == "legacy"
    Registry()
    assert registry_file.identify(sqlite3.connect(reg.path)).kind == "ftc"


def test_several_processes_creating_the_registry_at_once_share_one(home: Path) -> None:
    """Eight creators released together: one links its file into place, the others find it there."""
    barrier = threading.Barrier(8, timeout=60)
    made: list[bool] = []
    errors: list[BaseException] = []

    def build(db: sqlite3.Connection) -> None:
        for statement in TABLES:
            db.execute(statement)
        registry_file.mark(db, "test")
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        barrier.wait()  # every creator has its schema written, none has placed it yet

    def create() -> None:
        try:
            made.append(registry_file.create(home / "registry.db", build))
        except BaseException as err:  # noqa: BLE001 (reported below)
            errors.append(err)

    home.mkdir()
    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and sorted(made) == [False] * 7 + [True]
    assert sorted(p.name for p in home.iterdir()) == ["registry.db"]  # the seven others' files are gone
    assert registry_file.identify(sqlite3.connect(home / "registry.db")).kind == "ftc"
    assert Registry().runs() == []


@pytest.mark.parametrize("where", ["schema", "link"])
def test_a_disk_that_fills_while_the_registry_is_created_leaves_no_file(home: Path, where: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    home.mkdir()
    if where == "schema":
        real = registry_file.mark

        def full(db: sqlite3.Connection, version: str) -> None:
            real(db, version)
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(registry_file, "mark", full)
    else:
        def full_link(src: Any, dst: Any) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(registry_file.os, "link", full_link)
    with pytest.raises(RegistryError, match=r"the disk holding the registry .* is full") as raised:
        Registry()
    assert "free space" in raised.value.hint
    assert list(home.iterdir()) == []  # no 0-byte registry.db, no temporary file
    monkeypatch.undo()  # space freed: the next command creates the registry
    assert Registry().runs() == []
