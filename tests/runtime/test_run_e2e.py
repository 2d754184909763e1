"""`ftc run` end to end on the bundled text example: promotion when gates pass, no promotion when
one fails, an interrupted run recorded and resumable, and a changed spec refused on resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ftc.runtime import executor as executor_mod
from ftc.runtime.registry import Registry
from ftc.runtime.run import EXIT_FAILED, EXIT_GATES, EXIT_PROMOTED, EXIT_REFUSED, run
from tests.conftest import ROOT

SPEC = "specs/ticket-triage/ticket-triage.ftspec"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTC_HOME", str(tmp_path / ".ftc"))
    return tmp_path


def test_run_promotes_when_gates_pass(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outcome = run(SPEC)
    assert outcome.exit_code == EXIT_PROMOTED, outcome.message
    reg = Registry()
    [rec] = reg.runs("ticket-triage")
    assert rec["status"] == "promoted" and reg.active("ticket-triage") == outcome.run_id
    lineage = rec["record"].to_json()
    assert lineage["data"]["sizes"]["train"] == 168 and lineage["base"]["sha256"]
    assert lineage["artifact"]["sha256"] and all(g["passed"] for g in lineage["gates"])
    assert "f1.macro >= 0.85 on test" in capsys.readouterr().out
    # the adapter loads with plain transformers + peft, without ftc
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    adapter = Path(lineage["artifact"]["path"])
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    base = AutoModelForSequenceClassification.from_pretrained(cfg["base_model_name_or_path"])
    PeftModel.from_pretrained(base, adapter)
    assert not list(adapter.rglob("*.bin")) and not list(adapter.rglob("*.pt"))


def test_failing_gate_blocks_promotion(project: Path) -> None:
    spec = project / SPEC
    spec.write_text(spec.read_text().replace("gate f1.macro >= 0.85 on test", "gate f1.macro >= 0.999 on test"))
    outcome = run(SPEC, max_steps=3)
    assert outcome.exit_code == EXIT_GATES and "NOT promoted" in outcome.message
    reg = Registry()
    assert [r["status"] for r in reg.runs("ticket-triage")] == ["rejected"]
    assert reg.active("ticket-triage") is None


def test_interrupted_run_is_recorded_and_a_changed_spec_is_refused(project: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real = executor_mod.LocalExecutor._train

    def interrupt(self, node, state):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(executor_mod.LocalExecutor, "_train", interrupt)
    first = run(SPEC, max_steps=3)
    assert first.exit_code == EXIT_FAILED and "--resume" in first.message
    assert Registry().get(first.run_id)["status"] == "interrupted"
    monkeypatch.setattr(executor_mod.LocalExecutor, "_train", real)
    spec = project / SPEC
    original = spec.read_text()
    spec.write_text(original.replace("override learning_rate 3e-3", "override learning_rate 1e-3"))
    refused = run(SPEC, resume=True, max_steps=3)
    assert refused.exit_code == EXIT_REFUSED and "the spec text changed" in refused.message
    spec.write_text(original)
    resumed = run(SPEC, resume=True, max_steps=3)
    assert resumed.run_id == first.run_id and resumed.exit_code in (EXIT_PROMOTED, EXIT_GATES)
    assert Registry().get(first.run_id)["status"] in ("promoted", "rejected")


def test_runs_list_show_and_active(project: Path) -> None:
    from click.testing import CliRunner

    from ftc.compiler.cli import cli

    outcome = run(SPEC)
    assert outcome.exit_code == EXIT_PROMOTED
    runner = CliRunner()
    listed = json.loads(runner.invoke(cli, ["runs", "list", "--format", "json"]).output)
    assert [r["id"] for r in listed["runs"]] == [outcome.run_id] and listed["runs"][0]["status"] == "promoted"
    shown = runner.invoke(cli, ["runs", "show", outcome.run_id])
    assert shown.exit_code == 0 and "gate: f1.macro >= 0.85 on test" in shown.output and "MISSING" not in shown.output
    assert runner.invoke(cli, ["active", "ticket-triage"]).output.strip() == outcome.run_id
    record = json.loads(runner.invoke(cli, ["runs", "show", outcome.run_id, "--format", "json"]).output)
    shutil.rmtree(record["record"]["artifact"]["path"])
    assert "(MISSING on disk)" in runner.invoke(cli, ["runs", "show", outcome.run_id]).output
    assert runner.invoke(cli, ["runs", "show", "nope"]).exit_code == 2
    assert runner.invoke(cli, ["active", "other"]).exit_code == 1
