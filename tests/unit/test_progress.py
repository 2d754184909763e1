"""`ftc run`'s progress lines: each training node counts its own steps, out of what its trainer
says it will take (the step event's `of`), else the plan's estimate for that node; never "step
40/33" or a negative ETA."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from ftc.runtime.run import Progress, _planned_steps


def _lines(out: io.StringIO) -> list[str]:
    return [line.strip() for line in out.getvalue().splitlines() if line.strip()]


def test_each_node_counts_against_its_own_plan_estimate(tmp_path: Path) -> None:
    out = io.StringIO()
    progress = Progress(tmp_path, 33, stream=out, planned={"train.reward": 18, "train.policy": 60})
    progress({"event": "node", "id": "train.reward", "kind": "train_reward"})
    for step in (1, 10, 18):
        progress({"event": "step", "step": step, "loss": 0.5, "lr": 1e-3})
    progress({"event": "node", "id": "train.policy", "kind": "train_policy"})
    for step in (1, 10, 60):
        progress({"event": "step", "step": step, "loss": 0.1, "lr": 1e-4})
    progress.close()
    steps = [line for line in _lines(out) if line.startswith("step ")]
    assert [s.split()[1] for s in steps] == ["1/18", "10/18", "18/18", "1/60", "10/60", "60/60"]
    assert not any(re.search(r"eta -\d", s) for s in steps) and steps[0].endswith("eta --:--")
    assert re.search(r"eta 0:00$", steps[-1])
    events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert len(events) == 8


def test_the_trainers_own_step_count_wins_and_a_step_never_exceeds_its_total(tmp_path: Path) -> None:
    out = io.StringIO()
    progress = Progress(tmp_path, 33, stream=out, planned={"train": 33})
    progress({"event": "node", "id": "train", "kind": "train"})
    progress({"event": "step", "step": 1, "of": 60, "loss": 0.3, "lr": 1e-4})
    progress({"event": "step", "step": 40, "loss": 0.3, "lr": 1e-4})  # an event without `of`: the last one holds
    progress({"event": "step", "step": 70, "loss": 0.3, "lr": 1e-4})  # past every count: shown as n/n
    progress.close()
    steps = [line.split()[1] for line in _lines(out) if line.startswith("step ")]
    assert steps == ["1/60", "40/60", "70/70"]
    assert not re.search(r"eta -\d", out.getvalue())


def test_planned_steps_are_capped_by_max_steps() -> None:
    assert _planned_steps(60, None) == 60
    assert _planned_steps(60, 2) == 2
    assert _planned_steps(0, 5) == 5
    assert _planned_steps(0, None) == 0
