"""The registry end to end with real `ftc run` processes on the bundled example: two runs started
at the same time both recorded with full lineage (artifacts in the store, loadable without ftc,
a report and a diff for them), SIGTERM recorded as an interruption, and a corrupt registry
stopping `ftc run` before anything is written."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ftc.runtime.registry import Registry
from ftc.runtime.store import tree_digest
from tests.conftest import ROOT

SPEC = "specs/ticket-triage/ticket-triage.ftspec"
FTC = [sys.executable, "-m", "ftc"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTC_HOME", str(tmp_path / ".ftc"))
    return tmp_path


def _env(project: Path) -> dict[str, str]:
    env = {**os.environ, "FTC_HOME": str(project / ".ftc"), "FTC_CACHE_DIR": str(project / "cache"),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("FTC_NO_CACHE", None)  # the shared caches are part of what runs at once
    return env


def test_two_runs_started_together_are_both_recorded_with_full_lineage(project: Path) -> None:
    # different string-hash seeds: nothing in an artifact may depend on set or dict iteration order
    procs = [subprocess.Popen([*FTC, "run", SPEC, "--max-steps", "2"], cwd=project,
                              env={**_env(project), "PYTHONHASHSEED": seed}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in ("1", "2")]
    for p in procs:
        out, err = p.communicate(timeout=400)
        assert p.returncode in (0, 4), out + err  # promoted or rejected: both completed
    from ftc.compiler.cli import cli

    runner = CliRunner()
    listed = json.loads(runner.invoke(cli, ["runs", "list", "--format", "json"]).output)
    ids = [r["id"] for r in listed["runs"]]
    assert len(set(ids)) == 2 and {r["status"] for r in listed["runs"]} <= {"promoted", "rejected"}
    records: list[dict[str, Any]] = []
    for run_id in ids:
        shown = json.loads(runner.invoke(cli, ["runs", "show", run_id, "--format", "json"]).output)
        rec = shown["record"]
        records.append(rec)
        assert rec["spec"]["sha256"] and "spec \"ticket-triage\"" in rec["spec_text"]
        assert set(rec["spec_sources"]) == {"specs/team-defaults.ftspec", SPEC}
        assert rec["base"]["sha256"] and rec["base"]["ref"] == "models/tiny-bert"
        assert rec["data"]["sizes"] == {"train": 168, "val": 40, "test": 40} and len(rec["data"]["hashes"]) == 3
        assert rec["method"]["kind"] == "lora" and rec["training"]["train"]["train"]["learning_rate"] == 0.003
        assert rec["seed"] is not None and rec["versions"]["torch"] and rec["user"] and rec["hardware"]["host"]
        assert rec["options"]["max_steps"] == 2 and rec["gates"] and "tuned:test" in rec["metrics"]
        assert [e for e in rec["history"] if e["event"] == "step"]
        art = rec["artifact"]
        path = Path(art["path"])
        assert path.parent.parent == project / ".ftc" / "store" / "objects" and path.name == art["sha256"]
        assert tree_digest(path) == art["sha256"] and not shown["artifact_missing"]
        assert not Path(art["source"]).exists()  # moved, not copied
        assert (project / ".ftc" / "runs" / run_id / "record.json").is_file()
    a, b = records
    # the same spec, data and seed give the same artifact bytes (runs reproduce, whichever of the two
    # filled the tokenised-data cache), and identical bytes are stored once
    assert a["artifact"]["sha256"] == b["artifact"]["sha256"] and a["artifact"]["path"] == b["artifact"]["path"]
    for entry in (project / "cache").rglob("*.json"):  # the shared caches are whole JSON files
        json.loads(entry.read_text(encoding="utf-8"))
    assert not list((project / "cache").rglob(".tmp-*"))
    # what plain transformers + peft need to load it without ftc (test_run_e2e loads a stored adapter)
    adapter = Path(a["artifact"]["path"])
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert Path(cfg["base_model_name_or_path"]).is_absolute() and Path(cfg["base_model_name_or_path"]).is_dir()
    assert (adapter / "adapter_model.safetensors").is_file()
    # a diff and a report for them
    diff = runner.invoke(cli, ["runs", "diff", ids[0], ids[1]])
    assert diff.exit_code == 0 and "spec: same" in diff.output and "seed: same" in diff.output
    pytest.importorskip("ftc.runtime.report")
    # a report by an id prefix: the shortest cut of ids[0] (two characters off at most) that is not also a
    # prefix of ids[1] (ids made in the same second share all but their random suffix)
    prefix = next(ids[0][:n] for n in range(len(ids[0]) - 2, len(ids[0]) + 1) if not ids[1].startswith(ids[0][:n]))
    result = runner.invoke(cli, ["report", prefix, "--out", str(project / "out" / "report.html")])
    assert result.exit_code == 0, result.output
    html = (project / "out" / "report.html").read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html") and "<svg" in html and ids[0] in html


def test_sigterm_is_recorded_as_an_interruption(project: Path) -> None:
    proc = subprocess.Popen([*FTC, "run", SPEC], cwd=project, env=_env(project), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    working = False
    while time.monotonic() < deadline and proc.poll() is None and not working:  # the plan is being executed
        time.sleep(0.1)
        working = any(f.read_text(encoding="utf-8").strip() for f in (project / ".ftc" / "runs").glob("*/events.jsonl"))
    assert working, "the run never started"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 5, out + err
    assert "interrupted (SIGTERM)" in err and "--resume" in err and "Traceback" not in err
    [row] = Registry().runs()
    assert row["status"] == "interrupted" and row["record"].interrupted_by == "SIGTERM"
    assert row["finished"] is not None


def test_a_corrupt_registry_stops_ftc_run_before_anything_is_written(project: Path) -> None:
    from ftc.compiler.cli import cli

    home = project / ".ftc"
    home.mkdir()
    (home / "registry.db").write_text("this is not a database\n" * 100)
    result = CliRunner().invoke(cli, ["run", SPEC, "--max-steps", "1"])
    assert result.exit_code == 6, result.output
    assert "is not an SQLite database" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in home.iterdir()) == ["registry.db"]  # no run folder, no store


def test_a_locked_registry_stops_ftc_run_and_leaves_no_run_folder(project: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from ftc.compiler.cli import cli

    reg = Registry()
    code = (f"import sqlite3, time\ndb = sqlite3.connect({str(reg.path)!r}, isolation_level=None)\n"
            "db.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\ntime.sleep(20)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        monkeypatch.setenv("FTC_REGISTRY_TIMEOUT", "1")
        result = CliRunner().invoke(cli, ["run", SPEC, "--max-steps", "1"])
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 6, result.output
    assert "is locked by another process (waited 1 s)" in result.output and "Traceback" not in result.output
    runs = project / ".ftc" / "runs"
    assert not runs.exists() or list(runs.iterdir()) == []
    assert Registry().runs() == []


def test_a_run_id_drawn_twice_in_one_second_gets_a_new_suffix(project: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs of one spec in the same second draw their suffix from 65,536: a drawn id whose folder
    exists (another process's run) is drawn again, never shared or failed on."""
    from ftc.compiler.cli import cli
    from ftc.runtime import run as run_module

    taken = project / ".ftc" / "runs" / "ticket-triage-20261123-000000-aaaa"
    taken.mkdir(parents=True)
    (taken / "marker").write_text("another run's folder\n")
    drawn = iter(["ticket-triage-20261123-000000-aaaa", "ticket-triage-20261123-000000-bbbb"])
    monkeypatch.setattr(run_module, "new_run_id", lambda _name: next(drawn))
    result = CliRunner().invoke(cli, ["run", SPEC, "--max-steps", "1"])
    assert result.exit_code in (0, 4), result.output
    assert "run ticket-triage-20261123-000000-bbbb:" in result.output
    assert [r["id"] for r in Registry().runs()] == ["ticket-triage-20261123-000000-bbbb"]
    assert sorted(p.name for p in taken.iterdir()) == ["marker"]
