"""A full disk is a clear exit, never "internal error ... a bug in ftc" (issue 15): ENOSPC is
simulated deterministically (the write functions raise OSError(ENOSPC)) at start-up (creating the
registry, the store's lock), mid-training (a checkpoint write, with error.txt unwritable too: the
report goes to stderr) and at the record write; each exit says what was kept and how to go on, and
a run stopped mid-training resumes once there is space."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ftc.runtime import checkpoints, registry_file
from ftc.runtime.registry import Registry, _fault

from tests.conftest import ROOT

SPEC = "specs/ticket-triage/ticket-triage.ftspec"


def _enospc(filename: str | None = None) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTC_HOME", str(tmp_path / ".ftc"))
    monkeypatch.setenv("FTC_ROOT", str(tmp_path))
    return tmp_path


@dataclass
class Result:
    exit_code: int
    output: str


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """`ftc ARGS` through main(), where an unexpected exception would become exit 3."""
    from ftc.compiler.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    out = capsys.readouterr()
    return Result(code, out.out + out.err)


def _clear(result: Result) -> None:
    assert "internal error" not in result.output and "bug in ftc" not in result.output, result.output
    assert result.exit_code != 3, result.output


def test_a_full_disk_at_start_up_leaves_no_registry_file(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_link(src: Any, dst: Any) -> None:
        raise _enospc(str(dst))

    monkeypatch.setattr(registry_file.os, "link", full_link)
    result = _run(capsys, "run", SPEC, "--max-steps", "1")
    _clear(result)
    assert result.exit_code == 6 and "the disk holding the registry" in result.output and "is full" in result.output
    assert "free space" in result.output
    assert not (project / ".ftc" / "registry.db").exists() and not (project / ".ftc" / "runs").exists()


def test_a_full_disk_creating_the_store_lock_stops_before_a_run_folder(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    Registry()  # the registry exists; the disk fills before the store's lock file can be created
    real_open = os.open

    def full_open(path: Any, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith(".lock"):
            raise _enospc(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", full_open)
    result = _run(capsys, "run", SPEC, "--max-steps", "1")
    _clear(result)
    assert result.exit_code == 6 and "store's lock" in result.output and "free space" in result.output
    assert not (project / ".ftc" / "runs").exists() or not any((project / ".ftc" / "runs").iterdir())


def test_a_full_disk_writing_the_run_folder_is_a_clear_exit_and_leaves_no_run(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = Path.write_text

    def write_text(self: Path, *args: Any, **kwargs: Any) -> int:
        if self.name == "plan.json":
            raise _enospc(str(self))
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    result = _run(capsys, "run", SPEC, "--max-steps", "1")
    _clear(result)
    assert result.exit_code == 1 and "the disk is full (No space left on device writing" in result.output
    assert "plan.json" in result.output and "free space" in result.output
    assert Registry().runs() == [] and list((project / ".ftc" / "runs").iterdir()) == []


def test_a_full_disk_mid_training_is_a_resumable_failure_reported_on_stderr(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_finish(src: Path, *args: Any, **kwargs: Any) -> Path:
        raise _enospc(str(src / "adapter_model.safetensors"))

    real_write = Path.write_text

    def write_text(self: Path, *args: Any, **kwargs: Any) -> int:
        if self.name == "error.txt":
            raise _enospc(str(self))
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(checkpoints, "finish", full_finish)
    monkeypatch.setattr(Path, "write_text", write_text)
    result = _run(capsys, "run", SPEC, "--max-steps", "2")
    _clear(result)
    assert result.exit_code == 5, result.output
    assert "the disk is full (No space left on device writing" in result.output
    assert "no complete checkpoint" in result.output and f"ftc run {SPEC} --resume" in result.output
    assert "cannot write" in result.output and "error.txt" in result.output  # the report went to stderr ...
    assert "Traceback (most recent call last)" in result.output  # ... whole
    [row] = Registry().runs()
    assert row["status"] == "failed" and not (Path(row["record"].run_dir) / "error.txt").exists()
    monkeypatch.undo()  # space freed
    monkeypatch.chdir(project)
    monkeypatch.setenv("FTC_HOME", str(project / ".ftc"))
    monkeypatch.setenv("FTC_ROOT", str(project))
    again = _run(capsys, "run", SPEC, "--max-steps", "2", "--resume")
    assert again.exit_code in (0, 4), again.output  # it completed: promoted or not, by its gates
    [row] = Registry().runs()
    assert row["status"] in ("promoted", "rejected") and row["record"].resumed == 1


def test_a_full_disk_at_the_record_write_keeps_the_outcome_beside_the_run(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_finish(self: Registry, run_id: str, status: str, record: Any, **kwargs: Any) -> None:
        raise _fault(sqlite3.OperationalError("database or disk is full"), self.path, self.timeout)

    monkeypatch.setattr(Registry, "finish", full_finish)
    result = _run(capsys, "run", SPEC, "--max-steps", "2")
    _clear(result)
    assert result.exit_code == 6, result.output
    assert "the disk holding the registry" in result.output and "is full" in result.output
    [row] = Registry().runs()
    kept = Path(row["record"].run_dir) / "record.json"
    assert f"is kept in {kept}" in result.output and "free space" in result.output
    record = json.loads(kept.read_text(encoding="utf-8"))
    assert record["status"] in ("promoted", "rejected") and record["artifact"]["sha256"]


def test_the_message_names_the_last_complete_checkpoint(tmp_path: Path) -> None:
    from ftc.runtime.run import _disk_full_message, _Run, disk_full

    for step in (8, 4):  # the last by step, whatever the order they were written in
        folder = tmp_path / "checkpoints" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / checkpoints.COMPLETE).write_text("", encoding="utf-8")
    (tmp_path / "checkpoints" / ".staging" / "checkpoint-12").mkdir(parents=True)  # the one the disk stopped
    r = _Run("spec.ftspec", None, None, (), None, run_dir=tmp_path)  # type: ignore[arg-type]
    try:
        raise RuntimeError("safetensors could not write") from _enospc("x.safetensors")
    except RuntimeError as wrapped:
        full = disk_full(wrapped)  # found behind the library's own error
    assert full is not None
    text = _disk_full_message(r, full)
    assert "2 complete checkpoint(s), the last checkpoints/checkpoint-8, which --resume continues from" in text
    assert disk_full(ValueError("no")) is None
