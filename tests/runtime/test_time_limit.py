"""`budget { max_time }` is applied: training stops at the first step after the budget is spent,
and the model trained so far is evaluated, gated and recorded. The clock is replaced by one that
advances a minute per reading, so the stop step is exact (no wall-clock timing)."""

from __future__ import annotations

import itertools
import json
import re
import shutil
from pathlib import Path

import pytest

from ftc.runtime import api
from ftc.runtime.registry import Registry
from ftc.runtime.run import EXIT_FAILED, run
from tests.conftest import ROOT


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTC_HOME", str(tmp_path / ".ftc"))
    ticks = itertools.count()
    monkeypatch.setattr(api, "now", lambda: 60.0 * next(ticks))  # reading k (from 0) is k minutes
    return tmp_path


def _with_max_time(spec: Path, limit: str) -> None:
    text = spec.read_text()
    text, n = re.subn(r"max_time \S+", f"max_time {limit}", text)
    assert n == 1, "the example declares max_time"
    spec.write_text(text)


@pytest.mark.parametrize("example", ["ticket-triage", "defect-inspection"])  # the Trainer; ftc's own loop
def test_training_stops_when_max_time_is_spent(project: Path, example: str) -> None:
    spec = project / "specs" / example / f"{example}.ftspec"
    _with_max_time(spec, "3min")  # the clock starts at 0; steps read 1, 2, 3 minutes: the stop is at step 3
    outcome = run(str(spec.relative_to(project)))
    assert outcome.exit_code != EXIT_FAILED, outcome.message
    [row] = Registry().runs(example)
    events = [json.loads(line) for line in (outcome.run_dir / "events.jsonl").read_text().splitlines()]
    stops = [e for e in events if e.get("kind") == "max_time"]
    assert [e["step"] for e in stops] == [3], stops
    assert max(e["step"] for e in events if e.get("event") == "step") <= 3
    assert row["record"].metrics["tuned:test"]  # the model trained so far was evaluated and gated
