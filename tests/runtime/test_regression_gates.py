"""Several regression gates in one spec: each data file named by a gate gets its own pair of
evaluation nodes (base and tuned), its own results ("base:<file>", "tuned:<file>") and its own
cached base evaluation, so every gate is measured, even two files of the same name in different
folders. One tiny DPO spec (GPT-2, 2 training steps) runs twice through `ftc.runtime.run.run`:
the second run, after one file was edited, re-evaluates the base model on that file only.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from tests.runtime import _pref_fixtures as F
from tests.runtime.test_eval_dispatch import DPO_DATA, DPO_SIGNAL, LORA_GPT2, _dpo_renamed, _spec

FILES = ("general.jsonl", "safety.jsonl", "more/general.jsonl")  # two of them share a name
GATES = "".join(f'    gate regression <= 100 vs base on "{name}"\n' for name in FILES)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("regression-gates")
    rows = F.preference_rows(150)
    F.write_jsonl(root / "data.jsonl", _dpo_renamed(rows))
    F.make_tiny_gpt2(root / "model", F._texts(rows))
    return root


def _project(root: Path) -> Path:
    folder = F.fresh(root, "two-sets", ("data.jsonl", "model"))
    for seed, name in enumerate(FILES, start=5):  # different rows in each file: different base losses
        F.write_jsonl(folder / name, _dpo_renamed(F.preference_rows(8 + 2 * seed, seed=seed)))
    (folder / "spec.ftspec").write_text(_spec("preference", LORA_GPT2, DPO_SIGNAL, DPO_DATA, GATES),
                                        encoding="utf-8")
    return folder


def _run(folder: Path) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    from ftc.runtime.run import EXIT_PROMOTED, run

    out = io.StringIO()
    outcome = run("spec.ftspec", max_steps=2, out=out)
    assert outcome.exit_code == EXIT_PROMOTED, (outcome.message, out.getvalue())
    record = json.loads((outcome.run_dir / "record.json").read_text())
    events = [json.loads(line) for line in (outcome.run_dir / "events.jsonl").read_text().splitlines()]
    return outcome, record, events


def test_every_regression_set_is_measured_on_its_own_file(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _project(root)
    monkeypatch.chdir(folder)
    monkeypatch.setenv("FTC_HOME", str(folder / ".ftc"))
    monkeypatch.delenv("FTC_NO_CACHE", raising=False)  # the base results' cache is under test (a private one)
    _, record, events = _run(folder)
    gates = {g["gate"]: g for g in record["gates"]}
    metrics = record["metrics"]
    base_losses = []
    for name in FILES:
        gate = gates[f'regression <= 100 vs base on "{name}"']
        assert gate["passed"] and gate["value"] is not None, gate  # measured, not "was not measured"
        base, tuned = metrics[f"base:{name}"], metrics[f"tuned:{name}"]
        assert gate["note"] == f"loss: base {base['loss']:.4g}, tuned {tuned['loss']:.4g}"
        assert gate["value"] == pytest.approx((tuned["loss"] - base["loss"]) / abs(base["loss"]))
        base_losses.append(base["loss"])
    assert len(set(base_losses)) == len(FILES)  # each result comes from its own file's rows
    evaluated = {(e.get("model"), e.get("split")) for e in events if e.get("event") == "eval"}
    assert {(who, name) for who in ("base", "tuned") for name in FILES} <= evaluated
    ids = [e["id"] for e in events if e.get("event") == "node" and e["id"].startswith("eval.base.regression.")]
    assert len(ids) == len(set(ids)) == len(FILES)

    # The second run: the base model's results come from the cache, but for the edited file.
    with (folder / "safety.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(_dpo_renamed(F.preference_rows(1, seed=42))[0]) + "\n")
    _, again, events = _run(folder)
    reused = {e["message"].split(":")[0] for e in events if "reused from the cache" in str(e.get("message"))}
    evaluated = {e["split"] for e in events if e.get("event") == "eval" and e.get("model") == "base"}
    assert evaluated == {"safety.jsonl"}, evaluated
    assert len([i for i in reused if i.startswith("eval.base.regression.")]) == len(FILES) - 1
    assert again["metrics"]["base:general.jsonl"] == metrics["base:general.jsonl"]
    assert again["metrics"]["base:safety.jsonl"] != metrics["base:safety.jsonl"]
    assert all(g["value"] is not None for g in again["gates"])
