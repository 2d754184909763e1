"""The registry without training: records round-trip, promote/rollback/active semantics, the
content-addressed store, gc (keeps what is needed, removes the rest), corrupt and locked
databases, `ftc runs diff`, and many processes writing at once. Runs are synthetic records with
small artifact folders, so these tests take seconds."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ftc.compiler.cli import cli
from ftc.runtime.executor import sha256_tree
from ftc.runtime.registry import BadUsage, Refused, Registry, RegistryError, UnknownRun
from ftc.runtime.retention import collect
from ftc.runtime.rundiff import diff_runs, render_text, to_json
from ftc.runtime.runrecord import RunRecord
from ftc.runtime.store import Store, tree_digest

SPEC_A = 'spec "demo" {\n  method lora { rank 8 }\n  train { learning_rate 1e-3 }\n}\n'
SPEC_B = 'spec "demo" {\n  method lora { rank 16 }\n  train { learning_rate 1e-3 }\n}\n'


def _record(run_id: str, *, spec_text: str | None = SPEC_A, passed: bool = True, f1: float = 0.9,
            rank: int = 8, train_sha: str = "a" * 64) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "run_id": run_id, "spec": {"name": "demo", "path": "demo.ftspec", "sha256": str(hash(spec_text))},
        "base": {"ref": "models/tiny", "revision": None, "sha256": "b" * 64, "local": True},
        "method": {"kind": "lora", "rank": rank, "alpha": 16.0}, "seed": 7,
        "training": {"train": {"train": {"learning_rate": 0.001, "epochs": 3}}},
        "options": {"max_steps": None, "device": "cpu", "resume": False},
        "versions": {"torch": "2.14.1", "peft": "0.21.2"}, "python": "3.11.7", "ftc_version": "0.1.0",
        "hardware": {"machine": "x86_64", "processor": None, "host": platform.node()},
        "data": {"sizes": {"train": 120, "test": 30}, "hashes": {"train": train_sha, "test": "c" * 64}},
        "metrics": {"base:test": {"f1": 0.3, "loss": 1.4}, "tuned:test": {"f1": f1, "loss": 0.5},
                    "latency": {"p95": 0.01, "samples": [0.01, 0.02], "unit": "s"}},
        "slices": {"base:test": {"email": {"f1": 0.2, "n": 10.0}}, "tuned:test": {"email": {"f1": f1 - 0.1,
                                                                                           "n": 10.0}}},
        "gates": [{"gate": "f1 >= 0.8 on test", "value": f1, "before": 0.3, "passed": passed, "note": ""}],
        "note": "ünïcode ✓ and \"quotes\"",
    }
    if spec_text is not None:
        rec["spec_text"] = spec_text
        rec["spec_sources"] = {"demo.ftspec": spec_text}
    return rec


def add_run(reg: Registry, run_id: str, *, status: str = "promoted", spec: str = "demo", weights: bytes = b"",
            artifact: bool = True, **record_kw: Any) -> dict[str, Any]:
    """A finished run as `ftc run` leaves it: run folder with a checkpoint, artifact in the store."""
    record = _record(run_id, passed=status != "rejected", **record_kw)
    record["run_dir"] = str(reg.root / "runs" / run_id)
    reg.start(run_id, spec, f"plan-{run_id}", RunRecord.from_json(record))
    run_dir = reg.root / "runs" / run_id
    ckpt = run_dir / "checkpoints" / "checkpoint-2"
    ckpt.mkdir(parents=True)
    (ckpt / "COMPLETE").write_text("{}")
    (ckpt / "adapter_model.safetensors").write_bytes(b"x" * 1000)
    (run_dir / "plan.json").write_text("{}")
    if artifact:
        folder = run_dir / "artifacts" / "adapter"
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(weights or run_id.encode() * 50)
        (folder / "adapter_config.json").write_text('{"r": 8}')
        path, digest, _ = Store(reg.root).put(folder)
        record["artifact"] = {"path": str(path), "sha256": digest, "kind": "adapter", "merged": None,
                              "merged_sha256": None, "store": True}
    if status != "running":
        reg.finish(run_id, status, RunRecord.from_json(record), user="tester")
    return record


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), env=env)


# ---------------------------------------------------------------------------------------------
# Records


def test_records_round_trip_and_ids_resolve_by_unique_prefix(home: Path) -> None:
    reg = Registry()
    rec = add_run(reg, "demo-20260101-000000-aaaa")
    add_run(reg, "demo-20260101-000001-bbbb", status="rejected")
    row = Registry().get("demo-20260101-000000-aaaa")  # a fresh connection reads what was committed
    assert row is not None
    stored = row["record"].to_json()  # every key written reads back with its value (and `format` is added)
    written = json.loads(json.dumps(rec))
    assert {k: stored[k] for k in written if k != "artifact"} == {k: v for k, v in written.items() if k != "artifact"}
    assert stored["artifact"] == {**stored["artifact"], **written["artifact"]} and stored["format"] == 2
    assert row["record"] == RunRecord.from_json(rec) and row["record"].other == {"note": rec["note"]}
    assert row["status"] == "promoted" and row["spec_name"] == "demo" and row["finished"] >= row["started"]
    assert [r["id"] for r in reg.runs()] == ["demo-20260101-000000-aaaa", "demo-20260101-000001-bbbb"]
    assert reg.runs("other") == []
    assert reg.resolve("demo-20260101-000001") == "demo-20260101-000001-bbbb"
    with pytest.raises(UnknownRun, match="matches 2 runs"):
        reg.resolve("demo-2026")
    with pytest.raises(UnknownRun, match="no run `nope`"):
        reg.resolve("nope")
    for wrong in ("demo_", "demo%", "DEMO-20260101-000001", ""):  # no wildcards, case-sensitive
        with pytest.raises(UnknownRun):
            reg.resolve(wrong)


def test_an_older_registry_is_upgraded_in_place(home: Path) -> None:
    home.mkdir()
    db = sqlite3.connect(home / "registry.db")
    db.executescript("""
        CREATE TABLE runs (id TEXT PRIMARY KEY, spec_name TEXT NOT NULL, status TEXT NOT NULL, plan_hash TEXT NOT
          NULL, started REAL NOT NULL, finished REAL, record TEXT NOT NULL);
        CREATE TABLE active (spec_name TEXT PRIMARY KEY, run_id TEXT NOT NULL, since REAL NOT NULL);
        CREATE TABLE events (at REAL NOT NULL, spec_name TEXT NOT NULL, run_id TEXT NOT NULL, action TEXT NOT NULL,
          reason TEXT);
        INSERT INTO runs VALUES ('old-1', 'demo', 'promoted', 'p', 1.0, 2.0, '{"gates": []}');
        INSERT INTO active VALUES ('demo', 'old-1', 2.0);
        INSERT INTO events VALUES (2.0, 'demo', 'old-1', 'promote', 'gates passed');
    """)
    db.commit()
    db.close()
    reg = Registry()
    assert reg.active("demo") == "old-1"
    [event] = reg.history("demo")
    assert event["action"] == "promote" and event["user"] is None
    mode = sqlite3.connect(home / "registry.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


# ---------------------------------------------------------------------------------------------
# Promotion, rollback, active


def test_promote_only_what_passed_its_gates_unless_forced_with_a_reason(home: Path) -> None:
    reg = Registry()
    add_run(reg, "good", status="promoted")
    add_run(reg, "bad", status="rejected", f1=0.5)
    add_run(reg, "broken", status="failed", artifact=False)
    add_run(reg, "stopped", status="interrupted", artifact=False)
    add_run(reg, "busy", status="running", artifact=False)
    add_run(reg, "gone", status="promoted")
    Path(reg.get("gone")["record"].artifact.path).rename(home / "moved-away")  # type: ignore[index]
    for run_id, words in (("bad", "gates failed: f1 >= 0.8 on test"), ("broken", "failed"),
                          ("stopped", "interrupted"), ("busy", "still running"), ("gone", "missing from disk")):
        with pytest.raises(Refused, match=words):
            reg.promote(run_id)
    with pytest.raises(Refused, match="missing"):  # --force never serves a model that is not there
        reg.promote("gone", force=True, reason="please")
    with pytest.raises(Refused, match="interrupted"):
        reg.promote("stopped", force=True, reason="please")
    with pytest.raises(BadUsage, match="--reason"):
        reg.promote("bad", force=True, reason="   ")
    assert reg.active("demo") == "gone"  # the last one that finished with its gates passed
    done = reg.promote("bad", force=True, reason="pilot only", user="alice")
    assert done == {"spec": "demo", "run_id": "bad", "previous": "gone", "forced": True, "changed": True}
    assert reg.active("demo") == "bad" and reg.get("bad")["status"] == "promoted"  # type: ignore[index]
    last = reg.history("demo")[-1]
    assert (last["action"], last["reason"], last["user"], last["previous"]) == ("promote-forced", "pilot only",
                                                                                "alice", "gone")
    assert time.time() - last["at"] < 60
    forced = reg.get("bad")["record"].forced_promotion  # type: ignore[index]
    assert (forced.reason, forced.user, forced.was) == ("pilot only", "alice", "rejected")
    assert not reg.get("bad")["record"].gates[0].passed  # type: ignore[index]
    assert reg.promote("bad")["changed"] is False  # already active: no event
    assert len(reg.history("demo")) == 3  # good, gone (by finish), bad (forced); nothing for the no-op


def test_rollback_walks_back_through_promotions(home: Path) -> None:
    reg = Registry()
    for run_id in ("a", "b", "c"):
        add_run(reg, run_id)  # each finished with its gates passed: promoted in turn
    assert reg.active("demo") == "c"
    assert reg.rollback("demo", user="bob") == {"spec": "demo", "run_id": "b", "previous": "c"}
    assert reg.rollback("demo")["run_id"] == "a"  # twice goes further back
    with pytest.raises(Refused, match="no earlier promoted model"):
        reg.rollback("demo")
    assert reg.active("demo") == "a"
    reg.promote("c")  # promoting again is allowed
    assert reg.rollback("demo")["run_id"] == "a"  # ...and undone by a rollback
    reg.promote("b")
    reg.promote("a")  # an older run
    assert reg.active("demo") == "a" and reg.rollback("demo")["run_id"] == "b"
    with pytest.raises(Refused, match="was ever promoted"):
        reg.rollback("nothing")
    rolled = [e for e in reg.history("demo") if e["action"] == "rollback"]
    assert [(e["run_id"], e["previous"]) for e in rolled] == [("b", "c"), ("a", "b"), ("a", "c"), ("b", "a")]
    assert rolled[0]["user"] == "bob"


def test_rollback_refuses_a_model_whose_artifact_is_gone(home: Path) -> None:
    reg = Registry()
    add_run(reg, "a")
    add_run(reg, "b")
    import shutil

    shutil.rmtree(reg.get("a")["record"].artifact.path)  # type: ignore[index]
    events = len(reg.history("demo"))
    with pytest.raises(Refused, match="cannot roll back `demo` to a: its artifact is missing"):
        reg.rollback("demo")
    assert reg.active("demo") == "b" and len(reg.history("demo")) == events  # nothing written


def test_promote_rollback_active_commands(home: Path) -> None:
    reg = Registry()
    add_run(reg, "demo-1")
    add_run(reg, "demo-2", status="rejected", f1=0.5)
    refused = invoke("promote", "demo-2")
    assert refused.exit_code == 1 and "gates failed" in refused.output and "--force --reason" in refused.output
    assert "Traceback" not in refused.output
    assert invoke("promote", "demo-2", "--force").exit_code == 2
    assert invoke("promote", "demo-9").exit_code == 2
    assert invoke("promote", "demo-").exit_code == 2  # ambiguous prefix
    forced = invoke("promote", "demo-2", "--force", "--reason", "pilot")
    assert forced.exit_code == 0 and "forced" in forced.output and "was demo-1" in forced.output
    assert invoke("active", "demo").output.strip() == "demo-2"
    path = reg.get("demo-2")["record"].artifact.path  # type: ignore[index]
    assert invoke("active", "demo", "--path").output.strip() == path
    doc = json.loads(invoke("active", "demo", "--format", "json", "--history").output)
    assert doc["active"]["run_id"] == "demo-2" and doc["active"]["event"]["action"] == "promote-forced"
    assert [e["action"] for e in doc["history"]] == ["promote", "promote-forced"]
    back = invoke("rollback", "demo", "--reason", "regression in prod")
    assert back.exit_code == 0 and "demo-1 is active again" in back.output
    assert invoke("rollback", "demo").exit_code == 1
    history = invoke("active", "demo", "--history").output
    assert "rollback" in history and "regression in prod" in history and "pilot" in history
    assert invoke("active", "other").exit_code == 1
    listed = json.loads(invoke("runs", "list", "--format", "json").output)
    assert [(r["id"], r["active"]) for r in listed["runs"]] == [("demo-1", True), ("demo-2", False)]
    shown = invoke("runs", "show", "demo-2")
    assert "promote-forced" in shown.output and "forced promotion: by" in shown.output and "pilot" in shown.output


def test_read_commands_on_a_project_with_no_registry(home: Path) -> None:
    assert json.loads(invoke("runs", "list", "--format", "json").output)["runs"] == []
    assert invoke("runs", "show", "x").exit_code == 2
    assert invoke("active", "demo").exit_code == 1
    assert invoke("rollback", "demo").exit_code == 1
    assert not home.exists()  # reading created nothing


# ---------------------------------------------------------------------------------------------
# Store


def test_store_moves_artifacts_in_once_and_they_stay_loadable_as_folders(home: Path) -> None:
    store = Store(home)
    first = home / "runs" / "r1" / "artifacts" / "adapter"
    (first / "sub").mkdir(parents=True)
    (first / "adapter_model.safetensors").write_bytes(b"\0" * 3000)
    (first / "a-b.json").write_text("{}")
    (first / "sub" / "x.json").write_text("[]")
    digest = sha256_tree(first)
    assert tree_digest(first) == digest  # the store's streaming digest is executor.sha256_tree
    where, got, new = store.put(first)
    assert (got, new) == (digest, True) and where == store.path_for(digest) and not first.exists()
    assert (where / "sub" / "x.json").read_text() == "[]" and tree_digest(where) == digest
    assert not os.access(where / "adapter_model.safetensors", os.W_OK) or os.geteuid() == 0
    assert oct((where / "adapter_model.safetensors").stat().st_mode & 0o777) == oct(0o444)
    second = home / "runs" / "r2" / "artifacts" / "adapter"
    import shutil

    shutil.copytree(where, second)
    again, got2, new2 = store.put(second)
    assert (again, got2, new2) == (where, digest, False) and not second.exists()  # stored once
    assert store.all_objects() == [where] and list(store.tmp.iterdir()) == []


def test_store_copies_across_filesystems(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    store = Store(home)
    src = home / "elsewhere" / "model"
    src.mkdir(parents=True)
    (src / "model.safetensors").write_bytes(b"1234")
    real = os.replace
    calls: list[str] = []

    def replace(a: Any, b: Any) -> None:
        calls.append(str(a))
        if len(calls) == 1:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real(a, b)

    monkeypatch.setattr(os, "replace", replace)
    where, _, new = store.put(src)
    assert new and (where / "model.safetensors").read_bytes() == b"1234" and not src.exists()


def test_a_finished_run_stores_its_model_and_merged_model(home: Path) -> None:
    from ftc.runtime.api import TrainResult
    from ftc.runtime.run import _store_artifact

    run_dir = home / "runs" / "r"
    adapter, merged = run_dir / "artifacts" / "adapter", run_dir / "artifacts" / "merged"
    for folder, data in ((adapter, b"lora"), (merged, b"full")):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(data * 100)
        (folder / "config.json").write_text("{}")
    digests = (sha256_tree(adapter), sha256_tree(merged))
    art = _store_artifact(Store(home), TrainResult(adapter, "adapter", merged_dir=merged))
    assert (art.sha256, art.merged_sha256) == digests and art.store is True and art.merged
    assert Path(str(art.path)) == Store(home).path_for(digests[0]) and Path(art.merged).name == digests[1]
    assert art.source == str(adapter) and not adapter.exists() and not merged.exists()
    assert (Path(art.merged) / "model.safetensors").read_bytes() == b"full" * 100


# ---------------------------------------------------------------------------------------------
# gc


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_gc_removes_what_no_record_needs_and_keeps_the_rest(home: Path) -> None:
    reg = Registry()
    add_run(reg, "old")  # promoted, then superseded: rollback needs it
    add_run(reg, "live")  # promoted, active
    add_run(reg, "rej", status="rejected", f1=0.5)
    add_run(reg, "twin", status="rejected", f1=0.5, weights=b"live" * 50)  # the same bytes as `live`: one object
    add_run(reg, "stopped", status="interrupted", artifact=False)
    add_run(reg, "crashed", status="failed", artifact=False)
    runs = home / "runs"
    for run_id in ("stopped", "crashed"):
        (runs / run_id / "checkpoints" / ".staging" / "checkpoint-3").mkdir(parents=True)
        (runs / run_id / "checkpoints" / "checkpoint-3").mkdir()  # half-written: no COMPLETE
    # a run still going (this process) and one whose process died
    for run_id, pid in (("going", os.getpid()), ("dead", _dead_pid())):
        rec = _record(run_id)
        rec["pid"] = pid
        reg.start(run_id, "demo", "p", RunRecord.from_json(rec))
        (runs / run_id / "checkpoints" / "checkpoint-1").mkdir(parents=True)
        (runs / run_id / "checkpoints" / "checkpoint-1" / "COMPLETE").write_text("{}")
        (runs / run_id / "checkpoints" / ".staging").mkdir()
        (runs / run_id / "artifacts" / ".adapter.tmp").mkdir(parents=True)
    (runs / "stray" / "checkpoints").mkdir(parents=True)
    (runs / "stray" / "checkpoints" / "big.safetensors").write_bytes(b"z" * 5000)
    store = Store(home)
    orphan = home / "orphan"
    orphan.mkdir()
    (orphan / "w.safetensors").write_bytes(b"orphan")
    orphan_obj, _, _ = store.put(orphan)
    (store.tmp / "leftover-123").mkdir(parents=True)
    needed = [Path(reg.get(r)["record"].artifact.path)  # type: ignore[index]
              for r in ("old", "live", "rej", "twin")]

    dry = collect(reg, dry_run=True)
    assert dry.items and all(i.path.exists() for i in dry.items)  # nothing removed
    out = collect(reg)
    assert {(i.path.relative_to(home).as_posix(), i.why) for i in out.items} == {
        ("runs/old/checkpoints", "checkpoints of a promoted run"),
        ("runs/live/checkpoints", "checkpoints of a promoted run"),
        ("runs/rej/checkpoints", "checkpoints of a rejected run"),
        ("runs/twin/checkpoints", "checkpoints of a rejected run"),
        ("runs/stopped/checkpoints/.staging", "leftover staging folder"),
        ("runs/stopped/checkpoints/checkpoint-3", "leftover staging folder"),
        ("runs/crashed/checkpoints/.staging", "leftover staging folder"),
        ("runs/crashed/checkpoints/checkpoint-3", "leftover staging folder"),
        ("runs/dead/checkpoints/.staging", "leftover staging folder"),
        ("runs/dead/artifacts/.adapter.tmp", "leftover staging folder"),
        ("runs/stray", "run folder the registry does not know"),
        (orphan_obj.relative_to(home).as_posix(), "store object no record references"),
        ("store/tmp/leftover-123", "leftover store staging"),
    }
    assert out.bytes == dry.bytes > 5000 and not any(i.path.exists() for i in out.items)
    assert all(p.is_dir() for p in needed)  # every artifact a record references
    for run_id in ("stopped", "crashed", "dead", "going"):  # resumable checkpoints stay
        assert (runs / run_id / "checkpoints").is_dir()
    assert (runs / "dead" / "checkpoints" / "checkpoint-1").is_dir()
    assert (runs / "going" / "checkpoints" / ".staging").is_dir()  # a live run is not touched at all
    assert (runs / "going" / "artifacts" / ".adapter.tmp").is_dir()
    assert not (home / "trash").exists()
    assert collect(reg).items == []  # idempotent


def test_gc_prune_rejected_removes_only_unshared_artifacts_and_says_so(home: Path) -> None:
    reg = Registry()
    add_run(reg, "keep", weights=b"same" * 100)
    add_run(reg, "rej", status="rejected", f1=0.5)
    add_run(reg, "rej-twin", status="rejected", f1=0.5, weights=b"same" * 100)  # bytes shared with `keep`
    add_run(reg, "forced", status="rejected", f1=0.5)
    reg.promote("forced", force=True, reason="pilot")
    reg.rollback("demo")  # `forced` was active once: rollback history keeps its artifact
    rej_path = Path(reg.get("rej")["record"].artifact.path)  # type: ignore[index]
    assert collect(reg).pruned_runs == []  # without the flag, rejected artifacts stay
    assert rej_path.is_dir()
    out = collect(reg, prune_rejected=True)
    assert out.pruned_runs == ["rej"]
    assert [(i.path, i.why) for i in out.items] == [(rej_path, "artifact of a rejected run (--prune-rejected)")]
    assert not rej_path.exists()
    for run_id in ("keep", "rej-twin", "forced"):
        assert Path(reg.get(run_id)["record"].artifact.path).is_dir()  # type: ignore[index]
    removed = reg.get("rej")["record"].artifact.removed  # type: ignore[index]
    assert removed.by == "ftc gc --prune-rejected" and removed.user
    shown = invoke("runs", "show", "rej")
    assert "removed by `ftc gc --prune-rejected`" in shown.output and "MISSING" not in shown.output
    assert json.loads(invoke("runs", "show", "rej", "--format", "json").output)["artifact_removed"] is True
    refused = invoke("promote", "rej", "--force", "--reason", "x")
    assert refused.exit_code == 1 and "removed by `ftc gc --prune-rejected`" in refused.output
    assert [e["action"] for e in reg.history(run_id="rej")] == ["artifact-removed"]


def test_gc_command_output_and_the_empty_registry_guard(home: Path) -> None:
    reg = Registry()
    add_run(reg, "one")
    dry = invoke("gc", "--dry-run")
    assert dry.exit_code == 0 and "would remove" in dry.output and "nothing was removed" in dry.output
    assert (home / "runs" / "one" / "checkpoints").is_dir()
    done = invoke("gc", "--format", "json")
    doc = json.loads(done.output)
    assert doc["bytes_freed"] > 1000 and doc["removed"][0]["why"] == "checkpoints of a promoted run"
    assert invoke("gc").output.strip() == "gc: nothing to remove"
    # a registry.db replaced by an empty one must not cost every model
    (home / "registry.db").rename(home / "registry.db.old")
    for suffix in ("-wal", "-shm"):
        (home / f"registry.db{suffix}").unlink(missing_ok=True)
    Registry()
    guarded = invoke("gc")
    assert guarded.exit_code == 1 and "records no run" in guarded.output and "Traceback" not in guarded.output
    assert (home / "runs" / "one").is_dir() and Store(home).all_objects()
    assert invoke("gc", "--allow-empty-registry", "--dry-run").exit_code == 0


def test_gc_waits_for_a_run_that_is_storing_its_artifact(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = Registry()
    add_run(reg, "one")
    monkeypatch.setenv("FTC_REGISTRY_TIMEOUT", "0.3")
    with Store(home).lock(exclusive=False):  # as `ftc run` holds it while it stores and records
        result = invoke("gc")
    assert result.exit_code == 6 and "store" in result.output and "is locked" in result.output
    assert (home / "runs" / "one" / "checkpoints").is_dir()  # nothing removed
    assert invoke("gc").exit_code == 0


# ---------------------------------------------------------------------------------------------
# Faults


def test_a_corrupt_database_gives_a_clear_message_and_nothing_is_written(home: Path) -> None:
    home.mkdir()
    garbage = bytes(range(256)) * 40
    (home / "registry.db").write_bytes(garbage)
    for args in (["runs", "list"], ["runs", "show", "x"], ["promote", "x"], ["rollback", "demo"],
                 ["active", "demo"], ["gc"], ["runs", "diff", "a", "b"]):
        result = invoke(*args)
        assert result.exit_code == 6, (args, result.output)
        assert f"the registry {home / 'registry.db'} is not an SQLite database" in result.output
        assert "nothing was written" in result.output and "hint: restore it from a backup" in result.output
        assert "Traceback" not in result.output and not isinstance(result.exception, sqlite3.Error)
    assert (home / "registry.db").read_bytes() == garbage
    assert sorted(p.name for p in home.iterdir()) == ["registry.db"]  # no -wal, -shm, store or runs
    with pytest.raises(RegistryError):
        Registry()


def test_a_damaged_database_suggests_recovery(home: Path) -> None:
    reg = Registry()
    for i in range(30):
        add_run(reg, f"r{i}", artifact=False, status="rejected")
    db = sqlite3.connect(reg.path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = bytearray(reg.path.read_bytes())
    data[4096:4096 * 4] = b"\x5a" * (4096 * 3)  # pages 2-4: tables and records
    reg.path.write_bytes(bytes(data))
    result = invoke("runs", "list")
    assert result.exit_code == 6 and "is damaged" in result.output and ".recover" in result.output


def _hold_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    code = (f"import sqlite3, sys, time\ndb = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
            "db.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\n"
            f"time.sleep({seconds})\ndb.execute('ROLLBACK')\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_locked_database_times_out_with_a_clear_message_and_no_partial_write(home: Path) -> None:
    reg = Registry()
    add_run(reg, "a")
    add_run(reg, "b")
    before = reg.history("demo")
    holder = _hold_lock(reg.path, 6)
    try:
        started = time.monotonic()
        result = invoke("rollback", "demo", env={"FTC_REGISTRY_TIMEOUT": "1"})
        waited = time.monotonic() - started
        assert result.exit_code == 6, result.output
        assert "is locked by another process (waited 1 s)" in result.output and "FTC_REGISTRY_TIMEOUT" in result.output
        assert 0.9 <= waited < 5
        listed = invoke("runs", "list", "--format", "json", env={"FTC_REGISTRY_TIMEOUT": "1"})
        assert listed.exit_code == 0 and len(json.loads(listed.output)["runs"]) == 2  # WAL: readers go on
    finally:
        holder.kill()
        holder.wait()
    assert reg.history("demo") == before and reg.active("demo") == "b"
    bad = invoke("runs", "list", env={"FTC_REGISTRY_TIMEOUT": "soon"})
    assert bad.exit_code == 6 and "FTC_REGISTRY_TIMEOUT must be a number of seconds" in bad.output


WRITER = """
import json, sys, time
from pathlib import Path
from ftc.runtime.registry import Registry
from ftc.runtime.runrecord import RunRecord
worker, n = int(sys.argv[1]), int(sys.argv[2])
while time.time() < float(sys.argv[4]):  # all start at once
    time.sleep(0.005)
reg = Registry(Path(sys.argv[3]))
for i in range(n):
    run_id = f"w{worker}-{i:03d}"
    record = {"run_id": run_id, "payload": "x" * (1000 + i), "worker": worker, "i": i,
              "gates": [{"gate": "g", "passed": True}]}
    reg.start(run_id, f"spec{worker % 2}", "plan", RunRecord.from_json(record))
    reg.finish(run_id, "promoted" if i % 2 == 0 else "rejected", RunRecord.from_json({**record, "done": True}))
"""


def test_concurrent_writer_processes_lose_and_tear_nothing(tmp_path: Path) -> None:
    root = tmp_path / ".ftc"  # a fresh registry: the processes also race to create it
    workers, n = 4, 40
    env = {**os.environ, "FTC_REGISTRY_TIMEOUT": "60"}
    start_at = str(time.time() + 1.5)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(w), str(n), str(root), start_at], env=env,
                              stderr=subprocess.PIPE, text=True) for w in range(workers)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    reg = Registry(root)
    rows = reg.runs()
    assert len(rows) == workers * n
    for row in rows:
        w, i = row["record"].other["worker"], row["record"].other["i"]
        assert row["id"] == f"w{w}-{i:03d}" and row["record"].other["done"] is True
        assert row["record"].other["payload"] == "x" * (1000 + i)
        assert row["status"] == ("promoted" if i % 2 == 0 else "rejected") and row["finished"] is not None
    promotes = reg.history("spec0") + reg.history("spec1")
    assert len(promotes) == workers * n // 2 and {e["action"] for e in promotes} == {"promote"}
    for spec in ("spec0", "spec1"):
        assert reg.active(spec) == reg.history(spec)[-1]["run_id"]  # active agrees with the log
    check = sqlite3.connect(reg.path).execute("PRAGMA integrity_check").fetchone()[0]
    assert check == "ok"


SETUP = """
import sys, time
from pathlib import Path
from ftc.runtime.registry import Registry
while time.time() < float(sys.argv[2]):  # all start at once
    pass
Registry(Path(sys.argv[1]))
"""


def test_many_processes_creating_one_new_registry_all_succeed(tmp_path: Path) -> None:
    # SQLite refuses the switch to WAL at once (no busy wait) when two readers upgrade together;
    # without the set-up's retry 6 of 180 processes here failed with "database is locked"
    env = {**os.environ, "FTC_REGISTRY_TIMEOUT": "60"}
    for trial in range(3):
        root = tmp_path / str(trial) / ".ftc"
        start_at = str(time.time() + 1.5)
        procs = [subprocess.Popen([sys.executable, "-c", SETUP, str(root), start_at], env=env,
                                  stderr=subprocess.PIPE, text=True) for _ in range(10)]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        db = sqlite3.connect(root / "registry.db")
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] >= 2


def test_setup_retries_a_busy_database_until_the_timeout(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = Registry._setup_once

    def flaky(self: Registry) -> None:
        calls.append(1)
        if len(calls) <= 3:
            try:
                raise sqlite3.OperationalError("database is locked")
            except sqlite3.OperationalError as err:
                raise RegistryError("locked", "wait") from err
        real(self)

    monkeypatch.setattr(Registry, "_setup_once", flaky)
    reg = Registry()
    assert len(calls) == 4 and reg.runs() == []
    calls.clear()
    monkeypatch.setenv("FTC_REGISTRY_TIMEOUT", "0")
    with pytest.raises(RegistryError, match="locked"):
        Registry()
    assert len(calls) == 1  # no time left: the first failure is the answer

    def broken(self: Registry) -> None:  # not a busy database: never retried
        calls.append(1)
        try:
            raise sqlite3.DatabaseError("file is not a database")
        except sqlite3.DatabaseError as err:
            raise RegistryError("not a database", "move it aside") from err

    calls.clear()
    monkeypatch.setenv("FTC_REGISTRY_TIMEOUT", "30")
    monkeypatch.setattr(Registry, "_setup_once", broken)
    with pytest.raises(RegistryError, match="not a database"):
        Registry()
    assert len(calls) == 1


def test_cache_writes_are_atomic_for_concurrent_readers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftc.compiler.data import cache

    monkeypatch.delenv("FTC_NO_CACHE")
    monkeypatch.setenv("FTC_CACHE_DIR", str(tmp_path / "cache"))
    payloads = [{"n": i, "blob": str(i) * 200_000} for i in range(2)]
    cache.store("nodes", "k", payloads[0])
    stop, torn = threading.Event(), []

    def reader() -> None:
        path = tmp_path / "cache" / "nodes" / "k.json"
        while not stop.is_set():
            text = path.read_text(encoding="utf-8")
            try:
                json.loads(text)
            except ValueError:
                torn.append(len(text))

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(60):
        cache.store("nodes", "k", payloads[i % 2])
    stop.set()
    thread.join()
    assert torn == [] and cache.load("nodes", "k") == payloads[1]
    assert [p.name for p in (tmp_path / "cache" / "nodes").iterdir()] == ["k.json"]  # no temporary left


# ---------------------------------------------------------------------------------------------
# diff


def test_runs_diff_names_what_changed(home: Path) -> None:
    reg = Registry()
    add_run(reg, "a", spec_text=SPEC_A, f1=0.85)
    add_run(reg, "b", spec_text=SPEC_B, f1=0.9, rank=16, train_sha="d" * 64)
    add_run(reg, "legacy", spec_text=None)
    d = diff_runs(reg.get("a"), reg.get("b"))  # type: ignore[arg-type]
    assert "-  method lora { rank 8 }" in d["spec"]["diff"] and "+  method lora { rank 16 }" in d["spec"]["diff"]
    assert d["method"]["changes"] == {"rank": {"a": 8, "b": 16}} and not d["base"]["changed"]
    assert d["data"]["train"]["changed"] and not d["data"]["test"]["changed"]
    after = {(m["split"], m["slice"], m["metric"]): m for m in d["metrics"] if m["model"] == "tuned"}
    assert after[("test", None, "f1")]["delta"] == pytest.approx(0.05)
    assert after[("test", "email", "f1")]["a"] == pytest.approx(0.75)
    assert ("test", "email", "n") not in after
    before = [m for m in d["metrics"] if m["model"] == "base"]
    assert before and all(m["when"] == "before" and m["delta"] == 0 for m in before)
    assert [g["gate"] for g in d["gates"]] == ["f1 >= 0.8 on test"] and not d["artifact"]["same"]
    text = render_text(d)
    for words in ("spec: changed", "+  method lora { rank 16 }", "rank: 8 → 16", "base: same", "seed: same (7)",
                  "test f1 (after)", "+0.05", "changed", "before-training metrics are the same"):
        assert words in text, words
    legacy = diff_runs(reg.get("legacy"), reg.get("b"))  # type: ignore[arg-type]
    assert legacy["spec"]["diff"] is None and "spec text not recorded for legacy" in legacy["spec"]["note"]
    result = invoke("runs", "diff", "a", "b", "--format", "json")
    assert result.exit_code == 0 and json.loads(result.output)["method"]["changes"]["rank"] == {"a": 8, "b": 16}
    assert result.output == invoke("runs", "diff", "a", "b", "--format", "json").output == to_json(d)
    assert result.output.index('"artifact"') < result.output.index('"base"')  # sorted keys
    assert "spec text not recorded" in invoke("runs", "diff", "legacy", "b").output
    assert invoke("runs", "diff", "a", "zzz").exit_code == 2
