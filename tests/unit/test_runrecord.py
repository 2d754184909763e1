"""The run record is a typed, versioned structure: what is written reads back the same, a record of
the untyped format (1) reads, a damaged one reads with its problems named, a newer one is refused."""

from __future__ import annotations

import json
import sqlite3

import pytest

from ftc.runtime.runrecord import (
    FORMAT,
    ArtifactRecord,
    GateRecord,
    RecordFormatError,
    Removal,
    RunRecord,
)

FORMAT_1 = {  # as ftc wrote it before the typed record (no `format` key)
    "run_id": "demo-1", "run_dir": "/runs/demo-1", "status": "promoted", "plan_hash": "ab" * 32,
    "spec": {"name": "demo", "path": "demo.ftspec", "sha256": "cd" * 32, "files": ["demo.ftspec"]},
    "base": {"ref": "models/tiny", "revision": None, "local": True, "sha256": "ef" * 32},
    "data": {"sizes": {"train": 120}, "hashes": {"train": "11" * 32}, "after_dedup": {"train": 118}},
    "method": {"kind": "lora", "rank": 8}, "seed": 7,
    "training": {"train": {"train": {"learning_rate": 0.001}}},
    "retention": {"artifacts_keep": 3}, "versions": {"torch": "2.14.1", "timm": None}, "python": "3.11.7",
    "hardware": {"machine": "x86_64", "processor": None, "host": "box"}, "git_commit": None, "user": "ana",
    "waivers": [{"code": "FT201", "reason": "pilot"}], "options": {"max_steps": 2}, "pid": 123, "resumed": 1,
    "gates": [{"gate": "f1 >= 0.8 on test", "value": 0.9, "before": 0.3, "passed": True, "note": ""}],
    "metrics": {"tuned:test": {"f1": 0.9}, "latency": {"p95": 0.01, "samples": [0.01]}},
    "slices": {"tuned:test": {"email": {"f1": 0.8}}}, "extra": {"tuned:test": {"samples": []}},
    "history": [{"event": "step", "step": 1, "loss": 1.0}],
    "artifact": {"kind": "adapter", "path": "/store/x", "sha256": "99" * 32, "merged": None, "store": True,
                 "removed": {"by": "ftc gc", "at": 1.5, "user": "bo"}},
    "forced_promotion": {"reason": "pilot", "user": "ana", "at": 2.0, "was": "rejected"},
    "mlflow": {"uri": "sqlite:///m.db", "run_id": "m1"},
    "note": "a key this ftc does not know",
}


def test_a_format_1_record_reads_typed_and_keeps_what_it_does_not_know() -> None:
    rec = RunRecord.from_json(FORMAT_1)
    assert rec.problems == ()
    assert rec.spec_name == "demo" and rec.spec_path == "demo.ftspec" and rec.artifacts_keep == 3
    assert rec.gates == (GateRecord("f1 >= 0.8 on test", 0.9, 0.3, True, ""),) and rec.gates_passed
    assert rec.artifact is not None and rec.artifact.removed == Removal("ftc gc", 1.5, "bo")
    assert rec.artifact.paths() == []  # removed: nothing of it is on disk any more
    assert rec.forced_promotion is not None and rec.forced_promotion.was == "rejected"
    assert rec.mlflow is not None and rec.mlflow.run_id == "m1" and rec.hardware.host == "box"
    assert rec.other == {"note": "a key this ftc does not know"}


def test_what_is_written_reads_back_the_same() -> None:
    rec = RunRecord.from_json(FORMAT_1)
    again = RunRecord.loads(rec.dumps())
    assert again == rec and again.other == rec.other
    out = json.loads(rec.dumps())
    assert out["format"] == FORMAT and out["note"] == FORMAT_1["note"]
    assert {k: out[k] for k in FORMAT_1 if k != "artifact"} == {k: v for k, v in FORMAT_1.items() if k != "artifact"}
    assert out["artifact"] == {**out["artifact"], **FORMAT_1["artifact"]}  # type: ignore[dict-item]


def test_a_damaged_record_reads_with_its_problems_named() -> None:
    damaged = {**FORMAT_1, "seed": "seven", "gates": [{"gate": "g", "passed": "yes"}, "junk"],
               "hardware": ["x"], "artifact": {"path": 5}}
    rec = RunRecord.from_json(damaged)
    assert rec.seed is None and rec.hardware.host is None
    assert rec.artifact == ArtifactRecord()  # its path was not a string
    assert rec.gates == ()  # a gate whose verdict is not a boolean is not a gate
    assert any("`seed`" in p for p in rec.problems) and any("`hardware`" in p for p in rec.problems)
    assert any("`artifact.path`" in p for p in rec.problems)
    assert RunRecord.loads("{not json").problems and RunRecord.from_json([1, 2]).problems


def test_an_optional_gate_value_not_recorded_reads_as_none() -> None:
    rec = RunRecord.from_json({"gates": [{"gate": "g", "passed": True}]})
    assert rec.gates == (GateRecord("g", None, None, True),) and rec.problems == ()


def test_a_record_of_a_newer_format_is_refused_not_rewritten() -> None:
    with pytest.raises(RecordFormatError, match="upgrade ftc"):
        RunRecord.from_json({**FORMAT_1, "format": FORMAT + 1})


def test_the_registry_refuses_a_newer_record_with_what_to_do(tmp_path: object) -> None:
    from pathlib import Path

    from ftc.runtime.registry import Registry, RegistryError

    reg = Registry(Path(str(tmp_path)))
    reg.start("r1", "demo", "p", RunRecord.from_json(FORMAT_1))
    with sqlite3.connect(reg.path) as db:  # as a newer ftc would leave it
        db.execute("UPDATE runs SET record=?", (json.dumps({**FORMAT_1, "format": FORMAT + 1}),))
    with pytest.raises(RegistryError, match="newer ftc"):
        reg.get("r1")
