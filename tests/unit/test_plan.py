"""The plan: deterministic JSON, a valid graph, the steps a spec implies, and `ftc plan` formats."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftc.compiler.check import CheckOptions, check_file
from ftc.compiler.cli import cli
from ftc.compiler.plan import FORMAT_VERSION, Plan, build_plan
from tests.conftest import ROOT

EXAMPLES = sorted((ROOT / "specs").glob("*/*.ftspec"))


def _plan(spec: Path) -> Plan:
    result = check_file(spec, CheckOptions())
    assert result.checked is not None and result.ok, [d.message for d in result.diagnostics]
    return build_plan(result.checked)


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda p: p.parent.name)
def test_plan_is_a_valid_deterministic_graph(spec: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    rel = spec.relative_to(ROOT)
    first, second = _plan(rel), _plan(rel)
    assert first.to_json() == second.to_json()
    doc = json.loads(first.to_json())
    assert doc["format_version"] == FORMAT_VERSION
    ids = [n["id"] for n in doc["nodes"]]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    assert doc["edges"] == sorted(doc["edges"], key=lambda e: (e["from"], e["to"]))
    assert all(e["from"] in ids and e["to"] in ids for e in doc["edges"])
    assert len(first.topological()) == len(ids)
    assert "/work/" not in first.to_json()  # no absolute paths
    assert Plan.from_dict(doc).hash == first.hash


def test_rlhf_has_two_train_nodes_with_an_edge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    plan = _plan(Path("specs/rlhf-helpfulness/rlhf-helpfulness.ftspec"))
    assert ("train.reward", "train.policy") in plan.edges
    assert plan.node("train.policy").kind == "train_policy"


def test_text_plan_steps_and_estimates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    plan = _plan(Path("specs/ticket-triage/ticket-triage.ftspec"))
    kinds = {n.kind for n in plan.nodes}
    assert {"read_data", "validate", "split", "tokenize", "load_base", "attach_method", "train", "evaluate",
            "gates", "register"} <= kinds
    train = plan.node("train")
    assert train.estimate["examples"] == plan.data["sizes"]["train"]
    assert train.estimate["steps"] > 0 and train.estimate["memory_bytes"] > 0
    assert {"eval.base.test", "eval.tuned.test"} <= {n.id for n in plan.nodes}


def test_changed_data_changes_hashes_downstream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    spec = Path("specs/ticket-triage/ticket-triage.ftspec")
    before = _plan(spec)
    test_file = tmp_path / "specs/ticket-triage/data/test.jsonl"
    lines = test_file.read_text().splitlines(keepends=True)
    test_file.write_text("".join(reversed(lines)))
    after = _plan(spec)
    assert before.node("model.load_base").hash == after.node("model.load_base").hash
    assert before.node("data.split").hash != after.node("data.split").hash
    assert before.node("train").hash != after.node("train").hash


@pytest.mark.parametrize("fmt", ["text", "json", "dot", "mermaid"])
def test_plan_command_formats(fmt: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(ROOT)
    out = tmp_path / "plan.json"
    res = CliRunner().invoke(cli, ["plan", "specs/ticket-triage/ticket-triage.ftspec", "--format", fmt,
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["nodes"]
    if fmt == "json":
        doc = json.loads(res.output)
        assert {"nodes", "edges"} <= set(doc)
    elif fmt == "dot":
        assert res.output.startswith("digraph plan {") and '"train" -> "eval.tuned.test"' in res.output
    elif fmt == "mermaid":
        assert res.output.startswith("flowchart LR") and "train --> eval_tuned_test" in res.output
    else:
        assert "train" in res.output and "steps" in res.output


def test_plan_refuses_a_refused_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.ftspec").write_text('spec "x" { intent { goal knowledge } }\n')
    res = CliRunner().invoke(cli, ["plan", "bad.ftspec"])
    assert res.exit_code == 1 and "refused" in res.output


def test_dry_run_walks_every_node(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("FTC_HOME", str(tmp_path / "home"))
    res = CliRunner().invoke(cli, ["run", "specs/ticket-triage/ticket-triage.ftspec", "--dry-run"])
    assert res.exit_code == 0, res.output
    plan = _plan(Path("specs/ticket-triage/ticket-triage.ftspec"))
    for node in plan.nodes:
        assert f"· {node.id} ({node.kind}) [dry run]" in res.output
    assert not (tmp_path / "home").exists()  # a dry run leaves no run record


def test_reviewed_plan_is_refused_when_data_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTC_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    assert runner.invoke(cli, ["plan", "specs/ticket-triage/ticket-triage.ftspec", "--out", "plan.json"]).exit_code == 0
    test_file = tmp_path / "specs/ticket-triage/data/test.jsonl"
    test_file.write_text("".join(reversed(test_file.read_text().splitlines(keepends=True))))
    res = runner.invoke(cli, ["run", "plan.json", "--dry-run"])
    assert res.exit_code == 1 and "the test data changed" in res.output
