"""The plan: deterministic JSON, a valid graph, the steps a spec implies, and `ftc plan` formats."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftc.compiler.check import CheckOptions, check_file
from ftc.compiler.cli import cli
from ftc.compiler.plan import FORMAT_VERSION, NODE_KINDS, Plan, build_plan
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
    assert {"read_data", "validate", "split", "dedup", "load_base", "train", "evaluate", "gates", "register"} <= kinds
    assert kinds <= set(NODE_KINDS)  # every kind the plan holds is an executor step
    assert plan.node("train").params["method"]["kind"] == "lora"  # the method is the training node's parameter
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


def test_ftc_run_checks_the_spec_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import ftc.compiler.check as check_mod

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("FTC_HOME", str(tmp_path / "home"))
    calls: list[str] = []
    real = check_mod.check_file

    def counted(path: Path, options: CheckOptions = CheckOptions()) -> object:
        calls.append(str(path))
        return real(path, options)

    monkeypatch.setattr(check_mod, "check_file", counted)
    res = CliRunner().invoke(cli, ["run", "specs/ticket-triage/ticket-triage.ftspec", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert calls == ["specs/ticket-triage/ticket-triage.ftspec"]


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


# ---------------------------------------------------------------------------------------------
# Regression sets: one pair of evaluation nodes per file, with the file's content hash

REGRESSION_GATES = ('    gate regression <= 0.02 vs base on "data/general.jsonl"\n'
                    '    gate regression.accuracy <= 0.05 vs base on "data/general.jsonl"\n'
                    '    gate regression <= 0.02 vs base on "extra/general.jsonl"\n'
                    '    gate regression <= 0.05 vs base on "data/safety.jsonl"\n')
WORDS = ["invoice", "crash", "login", "parcel", "refund", "screen", "token", "courier", "receipt", "timeout"]


def _regression_project(root: Path) -> Path:
    """ticket-triage with three regression sets (two of them named general.jsonl, in different folders)."""
    shutil.copytree(ROOT / "specs", root / "specs")
    folder = root / "specs/ticket-triage"
    labels = ["billing", "bug", "account", "shipping"]
    for n, rel in enumerate(("data/general.jsonl", "extra/general.jsonl", "data/safety.jsonl")):
        rows = [{"text": f"{WORDS[i % 10]} {WORDS[(i * 7 + n) % 10]} set {n} item {i} of a general check",
                 "label": labels[i % 4]} for i in range(120)]
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    spec = folder / "ticket-triage.ftspec"
    spec.write_text(spec.read_text().replace("    gate latency.p95 <= 50ms\n",
                                             "    gate latency.p95 <= 50ms\n" + REGRESSION_GATES))
    return spec.relative_to(root)


def _regression_nodes(plan: Plan) -> dict[str, tuple[str, str]]:
    """dataset -> (base node id, tuned node id)"""
    out: dict[str, dict[str, str]] = {}
    for n in plan.nodes:
        if n.kind == "evaluate" and n.params.get("dataset"):
            out.setdefault(n.params["dataset"], {})[n.params["model"]] = n.id
    return {k: (v["base"], v["tuned"]) for k, v in out.items()}


def test_each_regression_set_has_its_own_evaluation_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _regression_project(tmp_path)
    plan = _plan(spec)
    nodes = _regression_nodes(plan)
    assert sorted(nodes) == ["data/general.jsonl", "data/safety.jsonl", "extra/general.jsonl"]
    ids = [i for pair in nodes.values() for i in pair]
    assert len(ids) == len(set(ids)) == 6  # two gates on one file share its nodes; same names differ by folder
    base, tuned = nodes["data/general.jsonl"]
    assert base.startswith("eval.base.regression.general_") and tuned == base.replace(".base.", ".tuned.")
    assert nodes["extra/general.jsonl"][0].startswith("eval.base.regression.general_")
    assert nodes["data/safety.jsonl"][0].startswith("eval.base.regression.safety_")
    gates_node = plan.node("gates")
    assert set(ids) <= set(gates_node.inputs)  # every set is measured before the gates are judged
    assert plan.node(base).inputs == ("model.load_base",) and plan.node(tuned).inputs == ("train",)
    for dataset, (b, _) in nodes.items():
        params = plan.node(b).params
        data = (tmp_path / "specs/ticket-triage" / dataset).read_bytes()
        assert params["sha256"] == hashlib.sha256(data).hexdigest()
        assert params["signal"] == plan.node("train").params["signal"] and params["signal"]["input"] == "text"
        assert params["fields"] is None and params["slice_rules"][0]["name"] == "email"
    assert _plan(spec).to_json() == plan.to_json()  # deterministic, ids included


def test_a_regression_sets_bytes_change_its_nodes_hashes_and_its_path_their_ids(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _regression_project(tmp_path)
    before = _plan(spec)
    safety = tmp_path / "specs/ticket-triage/data/safety.jsonl"
    safety.write_text("".join(reversed(safety.read_text().splitlines(keepends=True))))
    after = _plan(spec)
    nodes = _regression_nodes(before)
    assert nodes == _regression_nodes(after)  # ids follow the path, not the bytes
    changed = {n.id for n in before.nodes if n.hash != after.node(n.id).hash}
    assert changed == {*nodes["data/safety.jsonl"], "gates", "register"} and before.hash != after.hash
    text = tmp_path / spec
    base_node = nodes["data/general.jsonl"][0]
    renamed = tmp_path / "specs/ticket-triage/data/general2.jsonl"
    shutil.copy(tmp_path / "specs/ticket-triage/data/general.jsonl", renamed)
    text.write_text(text.read_text().replace('on "data/general.jsonl"', 'on "data/general2.jsonl"'))
    moved = _regression_nodes(_plan(spec))["data/general2.jsonl"][0]
    assert moved != base_node and moved.startswith("eval.base.regression.general2_")


def test_the_latency_node_reads_the_base_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    plan = _plan(Path("specs/ticket-triage/ticket-triage.ftspec"))
    assert set(plan.node("eval.latency").inputs) == {"data.dedup", "model.load_base", "train"}
    assert ("model.load_base", "eval.latency") in plan.edges


def test_reviewed_plan_is_refused_when_a_regression_set_changed(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTC_HOME", str(tmp_path / "home"))
    spec = _regression_project(tmp_path)
    runner = CliRunner()
    assert runner.invoke(cli, ["plan", str(spec), "--out", "plan.json"]).exit_code == 0
    assert runner.invoke(cli, ["run", "plan.json", "--dry-run"]).exit_code == 0  # unchanged: accepted
    with (tmp_path / "specs/ticket-triage/extra/general.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps({"text": "one more general row", "label": "bug"}) + "\n")
    res = runner.invoke(cli, ["run", "plan.json", "--dry-run"])
    assert res.exit_code == 1 and 'the regression set "extra/general.jsonl" changed' in res.output, res.output
    assert "data/general.jsonl" not in res.output.replace("extra/general.jsonl", "")


def test_a_split_evaluation_node_carries_what_it_reads_from_the_spec(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the base model's evaluation is cached by its node's hash: a change of what the evaluation
    # reads (the signal's columns, the slices' rules) must change that hash, nothing else must
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    spec = Path("specs/ticket-triage/ticket-triage.ftspec")
    before = _plan(spec)
    params = before.node("eval.base.test").params
    assert params["signal"] == before.node("train").params["signal"]
    assert params["slice_rules"][0]["name"] == "email" and params["fields"] is None
    text = spec.read_text()
    spec.write_text(text.replace('slice email where channel == "email"', 'slice email where channel == "chat"'))
    after = _plan(spec)
    assert after.node("eval.base.test").hash != before.node("eval.base.test").hash
    assert after.node("eval.tuned.test").hash != before.node("eval.tuned.test").hash
    assert after.node("train").hash == before.node("train").hash  # training does not read slices


def test_rlhf_reward_metrics_evaluate_the_base_after_the_reward_model(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`reward` scores the base's replies too (for `gate reward >= 0.1 vs base`), with the reward model
    of stage 1: the base evaluation waits for it, and only when a reward metric is declared."""
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    path = Path("specs/rlhf-helpfulness/rlhf-helpfulness.ftspec")
    text = path.read_text(encoding="utf-8")
    eval_block = text[text.index("  eval {"):text.index("  budget {")]
    plain = "  eval {\n    metric loss\n    gate loss <= 20 on test\n  }\n\n"
    path.write_text(text.replace(eval_block, plain), encoding="utf-8")
    without = _plan(path)
    assert ("train.reward", "eval.base.test") not in without.edges
    rewarded = plain.replace("metric loss\n", "metric loss\n    metric reward\n    gate reward >= 0.05 vs base on test\n")
    path.write_text(text.replace(eval_block, rewarded), encoding="utf-8")
    plan = _plan(path)
    assert ("train.reward", "eval.base.test") in plan.edges
    order = [n.id for n in plan.topological()]
    assert order.index("train.reward") < order.index("eval.base.test")
    gates = plan.node("gates").params["gates"]
    [reward_gate] = [g for g in gates if g["metric"] == "reward"]
    assert reward_gate["versus"] == "base" and reward_gate["threshold"] == 0.05
