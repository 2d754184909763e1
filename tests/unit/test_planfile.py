"""A reviewed plan file is input: a damaged, foreign or hand-edited plan.json is refused with a
located FT007 (exit 1), never an internal error; the plan is the program (every kind it holds is
one executor step, and an unknown kind stops both executors)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ftc.compiler.cli import cli
from ftc.compiler.plan import NODE_KINDS, PlanNode
from ftc.compiler.planfile import load_plan
from ftc.runtime import executor as ex
from tests.conftest import ROOT

SPEC = "specs/ticket-triage/ticket-triage.ftspec"


@pytest.fixture
def plan_doc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTC_HOME", str(tmp_path / ".ftc"))
    res = CliRunner().invoke(cli, ["plan", SPEC, "--out", "plan.json"])
    assert res.exit_code == 0, res.output
    doc: dict[str, Any] = json.loads(Path("plan.json").read_text())
    return doc


def _node(doc: dict[str, Any], node_id: str) -> dict[str, Any]:
    return next(n for n in doc["nodes"] if n["id"] == node_id)


def _refusal(doc: dict[str, Any] | str) -> tuple[list[str], str]:
    text = doc if isinstance(doc, str) else json.dumps(doc, indent=2)
    Path("edited.json").write_text(text)
    plan, diags, _ = load_plan(Path("edited.json"), "edited.json")
    assert plan is None and diags and all(d.code == "FT007" for d in diags)
    first = diags[0].span
    assert first is not None
    located = text.splitlines()[first.line - 1][first.column - 1:]
    return [d.message for d in diags], located


def test_a_written_plan_loads_back_as_the_same_plan(plan_doc: dict[str, Any]) -> None:
    plan, diags, _ = load_plan(Path("plan.json"), "plan.json")
    assert diags == [] and plan is not None
    assert plan.to_dict() == plan_doc


def test_a_node_without_its_kind_is_refused_where_it_is(plan_doc: dict[str, Any]) -> None:
    del _node(plan_doc, "data.validate")["kind"]
    messages, located = _refusal(plan_doc)
    index = [n["id"] for n in plan_doc["nodes"]].index("data.validate")
    assert messages == [f"the plan has no `nodes.{index}.kind`"]  # and no cascade about its readers
    assert located.startswith("{")


def test_a_hand_edited_parameter_is_refused_at_the_nodes_hash(plan_doc: dict[str, Any]) -> None:
    _node(plan_doc, "train")["params"]["train"]["learning_rate"] = 1.0
    messages, located = _refusal(plan_doc)
    assert messages == ["plan node `train` does not match its hash: it was edited after `ftc plan`"]
    assert located.startswith(f'"{_node(plan_doc, "train")["hash"]}"')


def test_an_unknown_kind_an_unknown_input_and_a_cycle_are_refused(plan_doc: dict[str, Any]) -> None:
    doc = json.loads(json.dumps(plan_doc))
    _node(doc, "data.read")["kind"] = "tokenize"
    messages, located = _refusal(doc)
    assert "has kind `tokenize`, which this ftc has no step for" in messages[0] and located == '"tokenize",'
    doc = json.loads(json.dumps(plan_doc))
    _node(doc, "gates")["inputs"].append("eval.nowhere")
    messages, located = _refusal(doc)
    assert messages == ["plan node `gates` reads `eval.nowhere`, which is no node"]
    assert located.startswith('"eval.nowhere"')
    doc = json.loads(json.dumps(plan_doc))
    _node(doc, "data.read")["inputs"] = ["register"]
    messages, _ = _refusal(doc)
    assert any("form a cycle" in m for m in messages)


def test_truncated_foreign_and_non_object_plans_are_refused(plan_doc: dict[str, Any]) -> None:
    text = json.dumps(plan_doc, indent=2)
    messages, _ = _refusal(text[:300])
    assert messages[0].startswith("edited.json is not JSON")
    messages, located = _refusal({**plan_doc, "format_version": 1})
    assert "format_version 1 is not" in messages[0] and located.startswith("1")
    messages, _ = _refusal("[1, 2]")
    assert messages == ["a plan file holds one JSON object"]
    messages, _ = _refusal({k: v for k, v in plan_doc.items() if k != "nodes"})
    assert messages == ["the plan has no `nodes`"]


def test_ftc_run_refuses_a_malformed_plan_with_exit_1(plan_doc: dict[str, Any]) -> None:
    del _node(plan_doc, "train")["params"]
    Path("plan.json").write_text(json.dumps(plan_doc, indent=2))
    res = CliRunner().invoke(cli, ["run", "plan.json", "--dry-run"])
    assert res.exit_code == 1, res.output
    assert "error[FT007]" in res.output and "--> plan.json:" in res.output and "internal error" not in res.output


def test_every_node_kind_is_one_executor_step() -> None:
    steps = {name[1:] for name in vars(ex.LocalExecutor) if name.startswith("_") and not name.startswith("__")}
    assert steps == set(NODE_KINDS)


@pytest.mark.parametrize("executor", [ex.LocalExecutor(), ex.DryRunExecutor()], ids=lambda e: e.name)
def test_an_unknown_kind_stops_the_walk(executor: ex.Executor) -> None:
    events: list[dict[str, Any]] = []
    state = ex.RunState(plan=None, checked=None, run_dir=Path("."), log=events.append)  # type: ignore[arg-type]
    with pytest.raises(ex.PlanError, match="kind `tokenize`"):
        executor.run(PlanNode("data.tokenize", "tokenize", (), {}), state)
    assert events == []  # nothing is reported as run


def test_the_register_step_refuses_to_run_without_a_registry() -> None:
    state = ex.RunState(plan=None, checked=None, run_dir=Path("."), log=lambda e: None)  # type: ignore[arg-type]
    with pytest.raises(ex.PlanError, match="no registry"):
        ex.LocalExecutor().run(PlanNode("register", "register", (), {}), state)


def _checked_and_plan() -> tuple[Any, Any]:
    from ftc.compiler.check import check_file
    from ftc.compiler.checked import CheckOptions
    from ftc.compiler.plan import build_plan

    result = check_file(Path(SPEC), CheckOptions())
    assert result.ok and result.checked is not None
    return result.checked, build_plan(result.checked)


def test_validate_refuses_rows_that_are_not_the_planned_ones(plan_doc: dict[str, Any]) -> None:
    import dataclasses

    from ftc.compiler.data.analyze import DataReport

    checked, plan = _checked_and_plan()
    restored = DataReport(sizes=dict(checked.data.sizes), hashes=dict(checked.data.hashes))  # as a cache hit keeps
    state = ex.RunState(plan, dataclasses.replace(checked, data=restored), Path("."), lambda e: None)
    train = Path(SPEC).parent / "data" / "train.jsonl"
    lines = train.read_text().splitlines()
    train.write_text("\n".join(lines[1:]) + "\n")  # one row fewer after the plan was made
    step = ex.LocalExecutor()
    step.run(plan.node("data.read"), state)
    assert state.checked.data.parts  # read_data read the rows
    with pytest.raises(ex.DriftError, match="the train data changed since the plan was made"):
        step.run(plan.node("data.validate"), state)


def test_load_base_locates_and_verifies_the_base(plan_doc: dict[str, Any]) -> None:
    checked, plan = _checked_and_plan()
    node = plan.node("model.load_base")
    state = ex.RunState(plan, checked, Path("."), lambda e: None)
    ex.LocalExecutor().run(node, state)
    assert state.base_dir == (Path(SPEC).parent / "models" / "tiny-bert").resolve()
    assert state.context().base_path() == state.base_dir
    weights = next(p for p in state.base_dir.iterdir() if p.suffix == ".safetensors")
    weights.write_bytes(weights.read_bytes() + b" ")
    with pytest.raises(ex.DriftError, match="changed since the plan was made"):
        ex.LocalExecutor().run(node, ex.RunState(plan, checked, Path("."), lambda e: None))
    shutil.rmtree(state.base_dir)
    with pytest.raises(ex.DriftError, match="is not on this machine"):
        ex.LocalExecutor().run(node, ex.RunState(plan, checked, Path("."), lambda e: None))


def test_the_dedup_step_deduplicates_the_reward_stages_own_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`signal rlhf { reward { data { dedup near 0.85 } } }` is applied: the plan's dedup node
    removes from the reward stage's train split exactly what the plan counted."""
    from ftc.compiler.check import check_file
    from ftc.compiler.checked import CheckOptions
    from ftc.compiler.data.dedup import deduplicated_train
    from ftc.compiler.plan import build_plan

    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTC_HOME", str(tmp_path / ".ftc"))
    spec = Path("specs/rlhf-helpfulness/rlhf-helpfulness.ftspec")
    prefs = spec.parent / "data" / "preferences.jsonl"
    lines = prefs.read_text().splitlines()
    first = check_file(spec, CheckOptions())
    assert first.checked is not None and first.checked.data is not None
    in_train = first.checked.data.stages["reward"]["train"].rows[:2]
    # near copies (one word more) of two training rows, in the same topic group: the same split
    copies = [json.dumps({**row, "prompt": row["prompt"] + " Thanks"}) for row in in_train]
    prefs.write_text("\n".join([*lines, *copies]) + "\n")
    spec.write_text(spec.read_text().replace('preferences.jsonl" rows 200', 'preferences.jsonl" rows 202'))
    result = check_file(spec, CheckOptions())
    assert result.ok, [d.message for d in result.diagnostics]
    assert result.checked is not None
    plan = build_plan(result.checked)
    node = plan.node("data.dedup")
    assert node.params["reward.train"]["kind"] == "near"
    state = ex.RunState(plan, result.checked, Path("."), lambda e: None)
    for step in ("data.read", "data.validate", "data.split", "data.dedup"):
        ex.LocalExecutor().run(plan.node(step), state)
    kept = deduplicated_train(state.checked, "reward")
    before = result.checked.sizes["reward.train"]
    assert kept is not None and len(state.stage_parts["train"].rows) == len(kept.rows) < before
    assert node.estimate["rows"]["reward.train"] == len(kept.rows)
    assert plan.data["after_dedup"]["reward.train"] == len(kept.rows)
