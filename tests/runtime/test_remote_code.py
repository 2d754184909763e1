"""Remote code (issue 15): `trust_remote_code true` over a base whose config.json has an `auto_map`
is warned about by `ftc check` (FT163); the code files' sha256 are recorded in the plan's base
section (so in its hash and in the run's record), and the executor's locate_base refuses to run
code that changed since the plan was made, for a local base and for a hub snapshot."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from ftc.compiler.check import CheckOptions, FileResult, check_file
from ftc.compiler.plan import build_plan, render_text

from tests.runtime.conftest import spec_text, ticket_rows, write_jsonl

pytest.importorskip("torch")

COMMIT = "c0de" + "0" * 36
CONFIG_PY = """from transformers import BertConfig


class TinyRemoteConfig(BertConfig):
    model_type = "tiny-remote"
"""
MODEL_PY = """from transformers import BertForSequenceClassification

from .configuration_tiny import TinyRemoteConfig


class TinyRemoteForSequenceClassification(BertForSequenceClassification):
    config_class = TinyRemoteConfig
"""


def _remote_base(tiny_bert: Path, folder: Path) -> Path:
    shutil.copytree(tiny_bert, folder)
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    cfg["auto_map"] = {"AutoConfig": "configuration_tiny.TinyRemoteConfig",
                       "AutoModelForSequenceClassification": "modeling_tiny.TinyRemoteForSequenceClassification"}
    (folder / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    (folder / "configuration_tiny.py").write_text(CONFIG_PY, encoding="utf-8")
    (folder / "modeling_tiny.py").write_text(MODEL_PY, encoding="utf-8")
    return folder


def _check(where: Path, base: str, extra: str = "") -> FileResult:
    for name, seed in (("train", 1), ("val", 2), ("test", 3)):
        write_jsonl(where / f"{name}.jsonl", ticket_rows(120 if name == "train" else 30, seed))
    text = spec_text(base=Path(base), task="classification", method="lora { rank 4; alpha 8 }",
                     train="steps 2; batch_size 8; seed 7; checkpoints keep 1; early_stopping patience 2 on val.loss",
                     eval_="metric f1 macro; gate f1 >= 0.1 on test",
                     data='train "train.jsonl"; val "val.jsonl"; test "test.jsonl"',
                     model_extra=f"trust_remote_code true {extra}")
    (where / "spec.ftspec").write_text(text, encoding="utf-8")
    return check_file(where / "spec.ftspec", CheckOptions())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def local_base(tmp_path: Path, tiny_bert: Path) -> Path:
    return _remote_base(tiny_bert, tmp_path / "models" / "remote-bert")


def test_check_warns_and_the_plan_records_the_code(tmp_path: Path, local_base: Path) -> None:
    from ftc.runtime.run import lineage

    result = _check(tmp_path, str(local_base))
    hits = [d for d in result.diagnostics if d.code == "FT163"]
    assert result.ok and len(hits) == 1 and hits[0].severity.value == "warning", [d.message for d in result.diagnostics]
    assert "configuration_tiny.py" in hits[0].message and "modeling_tiny.py" in hits[0].message
    assert hits[0].span is not None and hits[0].span.line == 3
    assert result.checked is not None
    plan = build_plan(result.checked)
    expected = {n: _sha(local_base / n) for n in ("configuration_tiny.py", "modeling_tiny.py")}
    assert plan.base["remote_code"] == expected
    assert plan.node("model.load_base").params["remote_code"] == expected  # in the plan's hash
    assert f"remote code: modeling_tiny.py sha256 {expected['modeling_tiny.py'][:12]}" in render_text(plan)
    assert lineage(plan, result.checked).base["remote_code"] == expected  # and in the run's record


def test_a_changed_code_file_changes_the_plan_and_is_refused(tmp_path: Path, local_base: Path) -> None:
    from ftc.runtime.executor import DriftError, locate_base
    from ftc.runtime.run import plan_mismatch

    first = _check(tmp_path, str(local_base))
    assert first.checked is not None
    reviewed = build_plan(first.checked)
    (local_base / "modeling_tiny.py").write_text(MODEL_PY + "print('hello from the base')\n", encoding="utf-8")
    again = _check(tmp_path, str(local_base))
    assert again.checked is not None
    current = build_plan(again.checked)
    assert current.hash != reviewed.hash and plan_mismatch(reviewed, current)
    params = dict(reviewed.node("model.load_base").params)
    with pytest.raises(DriftError, match="changed"):
        locate_base(again.checked, params)
    params.pop("sha256")  # the folder's hash aside, the code's own hashes refuse it, naming the file
    with pytest.raises(DriftError, match=r"trust_remote_code.*\(modeling_tiny.py\)"):
        locate_base(again.checked, params)
    (local_base / "helpers.py").write_text("X = 1\n", encoding="utf-8")  # a new file beside the code
    with pytest.raises(DriftError, match=r"helpers.py"):
        locate_base(again.checked, dict(current.node("model.load_base").params, sha256=None))


def test_a_hub_snapshot_has_no_folder_hash_but_its_code_is_pinned(tmp_path: Path, tiny_bert: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from ftc.runtime.executor import DriftError, locate_base

    cache = tmp_path / "hub"
    repo = cache / "models--org--remote"
    snap = _remote_base(tiny_bert, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT, encoding="utf-8")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    result = _check(tmp_path, "hf:org/remote", extra=f'revision "{COMMIT}"')
    assert result.ok and "FT163" in {d.code for d in result.diagnostics}, [d.message for d in result.diagnostics]
    assert result.checked is not None
    plan = build_plan(result.checked)
    assert plan.base["sha256"] is None and plan.base["remote_code"]["modeling_tiny.py"] == _sha(snap / "modeling_tiny.py")
    params = plan.node("model.load_base").params
    assert locate_base(result.checked, params) == snap.resolve()
    (snap / "configuration_tiny.py").write_text(CONFIG_PY + "\nimport os\n", encoding="utf-8")
    with pytest.raises(DriftError, match=r"configuration_tiny.py"):
        locate_base(result.checked, params)
    assert build_plan(result.checked).hash != plan.hash


def test_the_runtime_runs_the_code_that_was_pinned(tmp_path: Path, local_base: Path) -> None:
    """The hashed files are the ones transformers imports with trust_remote_code."""
    from ftc.runtime.api import TrainContext
    from ftc.runtime.backends import loading

    result = _check(tmp_path, str(local_base))
    assert result.checked is not None and result.checked.data is not None
    ctx = TrainContext(result.checked, result.checked.data.parts, tmp_path / "run", lambda e: None)
    model, _ = loading.load_base(ctx)
    assert type(model).__name__ == "TinyRemoteForSequenceClassification"
