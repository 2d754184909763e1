"""A spec's artifact retention, `train { artifacts keep N }`, applied by `ftc gc`: per spec name, the
artifacts of the newest N rejected or failed runs that were never promoted stay, older ones go (and
their records say so), the artifacts of promoted and active runs always stay, a spec that declares
nothing keeps everything, the newest run's declaration is the one applied, and `--dry-run` removes
nothing. Records and artifacts are synthetic (as tests/runtime/test_registry.py makes them)."""

from __future__ import annotations

import json
import platform
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from ftc.compiler.cli import cli
from ftc.runtime.registry import Registry
from ftc.runtime.retention import collect
from ftc.runtime.runrecord import RunRecord
from ftc.runtime.store import Store

from tests.conftest import ROOT


def add(reg: Registry, run_id: str, at: float, *, status: str = "rejected", spec: str = "demo",
        keep: int | None = None, artifact: bool = True, weights: bytes = b"") -> None:
    """A run as `ftc run` records it, started at `at` and finished 10 s later, whose lineage records
    `artifacts keep N` (None: not declared); its artifact in the store."""
    record: dict[str, Any] = {"run_id": run_id, "spec": {"name": spec, "path": f"{spec}.ftspec"},
                              "retention": {"artifacts_keep": keep}, "run_dir": str(reg.root / "runs" / run_id),
                              "hardware": {"host": platform.node()},
                              "gates": [{"gate": "f1 >= 0.8 on test", "value": 0.9 if status == "promoted" else 0.5,
                                         "before": 0.3, "passed": status == "promoted", "note": ""}]}
    reg.start(run_id, spec, f"plan-{run_id}", RunRecord.from_json(record))
    if artifact:
        folder = reg.root / "runs" / run_id / "artifacts" / "adapter"
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(weights or run_id.encode() * 50)
        path, digest, _ = Store(reg.root).put(folder)
        record["artifact"] = {"path": str(path), "sha256": digest, "kind": "adapter", "merged": None,
                              "merged_sha256": None, "store": True}
    if status != "running":
        reg.finish(run_id, status, RunRecord.from_json(record), user="tester")
    with sqlite3.connect(reg.path) as db:  # deterministic times: the order gc sees
        db.execute("UPDATE runs SET started=?, finished=? WHERE id=?",
                   (at, None if status == "running" else at + 10, run_id))


def artifact(reg: Registry, run_id: str) -> Path:
    row = reg.get(run_id)
    assert row is not None
    return Path(row["record"].artifact.path)


def removed_by(reg: Registry, run_id: str) -> str | None:
    row = reg.get(run_id)
    assert row is not None
    art = row["record"].artifact
    return art.removed.by if art is not None and art.removed is not None else None


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_the_newest_n_keep_their_artifacts_and_older_ones_go(home: Path) -> None:
    reg = Registry()
    for n in range(1, 6):
        add(reg, f"rej{n}", 100.0 * n, keep=2)
    add(reg, "crashed", 550.0, status="failed", keep=2)  # a failed run with an artifact counts too
    add(reg, "stopped", 560.0, status="interrupted", keep=2, artifact=False)  # no artifact: takes no place
    add(reg, "twin", 50.0, weights=b"rej5" * 50, keep=2)  # beyond N, but its bytes are rej5's: they stay
    out = collect(reg)
    assert out.retention == {"demo": 2}
    # newest by finish time: crashed (560), rej5 (510) stay; rej4, rej3, rej2, rej1 and twin are beyond 2
    assert out.pruned_runs == ["rej1", "rej2", "rej3", "rej4"]
    gone = {(i.run_id, i.why) for i in out.items if i.run_id}
    assert gone == {(f"rej{n}", "artifact of a rejected run beyond `artifacts keep 2` of `demo`") for n in range(1, 5)}
    for run_id in ("rej1", "rej2", "rej3", "rej4"):
        assert not artifact(reg, run_id).exists()
        assert removed_by(reg, run_id) == "ftc gc (artifacts keep 2)"
        assert [e["action"] for e in reg.history(run_id=run_id)] == ["artifact-removed"]
    for run_id in ("rej5", "crashed", "twin"):
        assert artifact(reg, run_id).is_dir() and removed_by(reg, run_id) is None
    shown = invoke("runs", "show", "rej1")
    assert "removed by `ftc gc (artifacts keep 2)`" in shown.output and "MISSING" not in shown.output
    refused = invoke("promote", "rej1", "--force", "--reason", "x")
    assert refused.exit_code == 1 and "removed by `ftc gc (artifacts keep 2)`" in refused.output
    assert collect(reg).items == []  # idempotent: a removed artifact no longer takes a place
    add(reg, "rej6", 700.0, keep=2)  # a newer one pushes rej5 out, and with it twin, which shares its bytes
    again = collect(reg)
    assert again.pruned_runs == ["rej5", "twin"]
    assert [i.why for i in again.items] == ["artifact of a rejected run beyond `artifacts keep 2` of `demo`"]
    assert not artifact(reg, "twin").exists() and removed_by(reg, "twin") == "ftc gc (artifacts keep 2)"
    assert artifact(reg, "crashed").is_dir() and artifact(reg, "rej6").is_dir()


def test_promoted_and_active_artifacts_are_never_removed(home: Path) -> None:
    reg = Registry()
    add(reg, "first", 100.0, status="promoted", keep=0)  # promoted, then superseded: rollback may need it
    add(reg, "forced", 200.0, keep=0)
    reg.promote("forced", force=True, reason="pilot")
    reg.rollback("demo")  # active once: kept even though its status says promoted now
    add(reg, "waived", 250.0, keep=0)
    reg.promote("waived", force=True, reason="pilot")  # active now
    add(reg, "old-rej", 300.0, keep=0)
    add(reg, "going", 400.0, status="running", keep=0, artifact=False)  # the newest record: its declaration applies
    with sqlite3.connect(reg.path) as db:  # as a registry may hold them: the events, not the status, decide
        db.execute("UPDATE runs SET status='rejected' WHERE id IN ('forced', 'waived')")
    out = collect(reg)
    assert out.retention == {"demo": 0} and out.pruned_runs == ["old-rej"]
    assert not artifact(reg, "old-rej").exists()
    for run_id in ("first", "forced", "waived"):
        assert artifact(reg, run_id).is_dir() and removed_by(reg, run_id) is None
    assert reg.active("demo") == "waived"
    assert invoke("rollback", "demo").exit_code == 0 and reg.active("demo") == "first"  # still loadable


def test_a_spec_without_the_setting_keeps_every_artifact(home: Path) -> None:
    reg = Registry()
    for n in range(4):
        add(reg, f"other{n}", 100.0 + n, spec="other")  # never declared
        add(reg, f"demo{n}", 200.0 + n, keep=1)
    add(reg, "undeclared", 300.0, spec="third", keep=0)
    add(reg, "newest", 301.0, spec="third")  # the newest run of `third` declares nothing: its old `keep 0` ends
    out = collect(reg)
    assert out.retention == {"demo": 1}
    assert out.pruned_runs == ["demo0", "demo1", "demo2"]
    for run_id in ("other0", "other1", "other2", "other3", "undeclared", "newest", "demo3"):
        assert artifact(reg, run_id).is_dir() and removed_by(reg, run_id) is None


def test_prune_rejected_and_the_retention_together_each_recorded(home: Path) -> None:
    reg = Registry()
    add(reg, "a-old", 100.0, spec="a", keep=1)
    add(reg, "a-new", 200.0, spec="a", keep=1)
    add(reg, "b-old", 100.0, spec="b")
    add(reg, "b-failed", 150.0, spec="b", status="failed")  # --prune-rejected leaves failed runs alone
    out = collect(reg, prune_rejected=True)
    assert out.pruned_by == {"a-new": "ftc gc --prune-rejected", "a-old": "ftc gc --prune-rejected",
                             "b-old": "ftc gc --prune-rejected"}
    assert artifact(reg, "b-failed").is_dir()
    reg2_home = home.parent / "second"
    reg2 = Registry(reg2_home)
    add(reg2, "a-old", 100.0, spec="a", keep=1)
    add(reg2, "a-new", 200.0, spec="a", keep=1)
    add(reg2, "b-old", 100.0, spec="b")
    assert collect(reg2).pruned_by == {"a-old": "ftc gc (artifacts keep 1)"}  # without the flag: the spec's


def test_dry_run_removes_nothing_and_shows_what_would_go(home: Path) -> None:
    reg = Registry()
    for n in range(3):
        add(reg, f"rej{n}", 100.0 * (n + 1), keep=1)
    dry = collect(reg, dry_run=True)
    assert dry.pruned_runs == ["rej0", "rej1"] and dry.bytes > 0
    for n in range(3):
        assert artifact(reg, f"rej{n}").is_dir() and removed_by(reg, f"rej{n}") is None
    assert all(reg.history(run_id=f"rej{n}") == [] for n in range(3))
    shown = invoke("gc", "--dry-run")
    assert shown.exit_code == 0 and "nothing was removed" in shown.output
    assert "beyond `artifacts keep 1` of `demo`" in shown.output and "would mark rej0" in shown.output
    doc = json.loads(invoke("gc", "--dry-run", "--format", "json").output)
    assert doc["dry_run"] and doc["bytes_freed"] == 0 and doc["retention"] == {"demo": 1}
    assert doc["pruned_by"] == {"rej0": "ftc gc (artifacts keep 1)", "rej1": "ftc gc (artifacts keep 1)"}
    assert all(artifact(reg, f"rej{n}").is_dir() for n in range(3))
    done = invoke("gc")
    assert done.exit_code == 0 and "marked rej0: artifact removed by gc" in done.output
    assert not artifact(reg, "rej0").exists() and artifact(reg, "rej2").is_dir()


def test_the_setting_is_recorded_in_the_lineage_and_changes_no_plan_hash(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from ftc.compiler.check import CheckOptions, check_file
    from ftc.compiler.plan import build_plan
    from ftc.runtime.run import lineage

    shutil.copytree(ROOT / "specs", tmp_path / "specs", ignore=shutil.ignore_patterns("models"))
    monkeypatch.chdir(tmp_path)
    spec = Path("specs/ticket-triage/ticket-triage.ftspec")
    plain = spec.read_text(encoding="utf-8")
    found = []
    for text in (plain, plain.replace("  train {\n", "  train {\n    artifacts keep 3\n", 1)):
        spec.write_text(text, encoding="utf-8")
        result = check_file(spec, CheckOptions(no_data=True))
        assert result.checked is not None and result.ok, [d.message for d in result.diagnostics]
        plan = build_plan(result.checked)
        assert "artifacts" not in plan.node("train").params["train"]
        found.append((plan.hash, lineage(plan, result.checked).to_json()["retention"]))
    assert found[0][0] == found[1][0]  # a run interrupted before the setting was added still resumes
    assert [r for _, r in found] == [{"artifacts_keep": None}, {"artifacts_keep": 3}]
