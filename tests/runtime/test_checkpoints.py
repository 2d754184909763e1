"""Cheap atomic checkpoints: finishing (marker, fsync, move, retention) runs on a background thread
and everything that reads the final folder waits for it; a checkpoint marked but not moved, or
one being deleted, is never picked by resume; the trainer state and the training arguments are
serialised once."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ftc.runtime import checkpoints
from ftc.runtime.backends import text

from tests.runtime.conftest import MakeCtx

FAST = "learning_rate 1e-3; batch_size 8; precision fp32; seed 5"


def _steps(folder: Path) -> list[int]:
    return [checkpoints.step_of(p) or 0 for p in checkpoints.complete_checkpoints(folder)]


def _staged(root: Path, step: int) -> Path:
    src = root / checkpoints.STAGING / f"checkpoint-{step}"
    src.mkdir(parents=True)
    (src / "adapter_model.safetensors").write_bytes(b"weights")
    (src / "trainer_state.json").write_text(json.dumps({"global_step": step}), encoding="utf-8")
    return src


# ---------------------------------------------------------------------------------------------
# finish, remove: no training


def test_finish_marks_moves_and_keeps_n(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        dst = checkpoints.finish(_staged(root, step), root, keep=2, best=str(root / "checkpoint-1"))
        assert dst == root / f"checkpoint-{step}"
        assert json.loads((dst / checkpoints.COMPLETE).read_text(encoding="utf-8")) == {"step": step}
        assert not (root / checkpoints.STAGING).exists()
    assert _steps(root) == [1, 3]  # keep 2: the newest and the best
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-1", "checkpoint-3"]


def test_a_checkpoint_marked_but_not_moved_is_never_picked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "checkpoints"
    checkpoints.finish(_staged(root, 1), root)

    def cut(*_: Any) -> None:  # the process dies between the marker + fsync and the move
        raise OSError("killed")

    monkeypatch.setattr(checkpoints.os, "replace", cut)
    with pytest.raises(OSError, match="killed"):
        checkpoints.finish(_staged(root, 2), root)
    monkeypatch.undo()
    assert (root / checkpoints.STAGING / "checkpoint-2" / checkpoints.COMPLETE).is_file()
    assert checkpoints.last_complete(root) == root / "checkpoint-1"
    assert checkpoints.remove_incomplete(root) == [root / checkpoints.STAGING]
    assert _steps(root) == [1]


def test_remove_deletes_the_marker_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        checkpoints.finish(_staged(root, step), root)
    real = checkpoints.shutil.rmtree
    seen: list[bool] = []

    def killed_midway(path: Any, *a: Any, **kw: Any) -> None:  # a kill while the files go
        seen.append((Path(path) / checkpoints.COMPLETE).exists())
        (Path(path) / "trainer_state.json").unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.rotate(root, keep=2)
    monkeypatch.setattr(checkpoints.shutil, "rmtree", real)
    assert seen == [False]
    assert _steps(root) == [2, 3]  # the half-deleted checkpoint-1 is not complete any more


def test_finisher_raises_the_jobs_error_in_the_caller() -> None:
    jobs = checkpoints.Finisher()
    ran: list[str] = []
    jobs.start(lambda: ran.append(threading.current_thread().name))
    jobs.wait()
    assert ran == ["ftc-checkpoint"]

    def broken() -> None:
        raise OSError("disk full")

    jobs.start(broken)
    with pytest.raises(OSError, match="disk full"):
        jobs.wait()
    jobs.wait()  # raised once


# ---------------------------------------------------------------------------------------------
# Through the trainer


def test_checkpoints_finish_in_the_background_and_state_is_written_once(
        make_ctx: MakeCtx, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import TrainerState, TrainingArguments

    threads: list[str] = []
    real_finish = checkpoints.finish

    def finish(*a: Any, **kw: Any) -> Path:
        threads.append(threading.current_thread().name)
        return real_finish(*a, **kw)

    counts = {"state": 0, "args": 0}
    real_state, real_args = TrainerState.save_to_json, TrainingArguments.to_json_string

    def save_state(self: Any, path: str) -> None:
        counts["state"] += 1
        real_state(self, path)

    def args_json(self: Any) -> str:
        counts["args"] += 1
        return real_args(self)  # type: ignore[no-any-return]

    monkeypatch.setattr(checkpoints, "finish", finish)
    monkeypatch.setattr(TrainerState, "save_to_json", save_state)
    monkeypatch.setattr(TrainingArguments, "to_json_string", args_json)
    ctx = make_ctx(train=f"steps 4; {FAST}; checkpoints keep 2 every 1 steps; early_stopping patience 5 on val.loss")
    run = text.fit_sft(ctx)
    folder = ctx.run_dir / "checkpoints"
    assert threads == ["ftc-checkpoint"] * 4
    assert counts == {"state": 4, "args": 1}  # once per checkpoint; once per train()
    best = run.trainer.state.best_model_checkpoint
    assert best is not None and Path(best).parent == folder and Path(best).is_dir()
    names = [p.name for p in folder.iterdir()]
    assert checkpoints.STAGING not in names and len(_steps(folder)) >= 2
    args_files = set()
    for ck in checkpoints.complete_checkpoints(folder):
        state = json.loads((ck / "trainer_state.json").read_text(encoding="utf-8"))
        assert state["best_model_checkpoint"] is not None and checkpoints.STAGING not in state["best_model_checkpoint"]
        assert Path(state["best_model_checkpoint"]).parent == folder
        args_files.add((ck / checkpoints.ARGS).read_text(encoding="utf-8"))
    assert len(args_files) == 1 and json.loads(args_files.pop())["save_total_limit"] == 2


class Interrupt(KeyboardInterrupt):
    pass


def test_an_interrupt_waits_for_the_checkpoint_being_finished(
        make_ctx: MakeCtx, monkeypatch: pytest.MonkeyPatch) -> None:
    real_finish = checkpoints.finish
    done: list[int] = []
    interrupted = threading.Event()

    def slow_finish(src: Path, *a: Any, **kw: Any) -> Path:
        interrupted.wait(timeout=30)  # still running when the next step is interrupted
        out = real_finish(src, *a, **kw)
        done.append(checkpoints.step_of(out) or 0)
        return out

    monkeypatch.setattr(checkpoints, "finish", slow_finish)
    ctx = make_ctx(train=f"steps 6; {FAST}; checkpoints keep 3 every 2 steps")
    events = ctx.events  # type: ignore[attr-defined]

    def stop_at_3(event: dict[str, Any]) -> None:
        events.append(event)
        if event.get("event") == "step" and event["step"] == 3:
            assert done == []  # checkpoint-2 is being finished right now
            interrupted.set()
            raise Interrupt

    ctx.log = stop_at_3
    with pytest.raises(Interrupt):
        text.fit_sft(ctx)
    assert done == [2] and _steps(ctx.run_dir / "checkpoints") == [2]


def test_a_failed_background_finish_stops_training_and_is_never_picked(
        make_ctx: MakeCtx, monkeypatch: pytest.MonkeyPatch) -> None:
    real = checkpoints._fsync_tree
    calls = {"n": 0}

    def flaky(path: Path) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real(path)

    monkeypatch.setattr(checkpoints, "_fsync_tree", flaky)
    train = f"steps 4; {FAST}; checkpoints keep 5 every 1 steps"
    ctx = make_ctx(train=train)
    with pytest.raises(OSError, match="disk full"):
        text.fit_sft(ctx)
    folder = ctx.run_dir / "checkpoints"
    assert _steps(folder) == [1]
    # marked complete, never moved: out of resume's sight
    assert (folder / checkpoints.STAGING / "checkpoint-2" / checkpoints.COMPLETE).is_file()
    monkeypatch.setattr(checkpoints, "_fsync_tree", real)
    resumed = make_ctx(train=train, run_dir=ctx.run_dir, resume=True)
    result = text.fit_sft(resumed).result
    assert result.steps == 4 and _steps(folder) == [1, 2, 3, 4]
    assert any(e.get("message") == "resuming from checkpoint-1" for e in resumed.events.of("note"))  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["AdamW8bit", "PagedAdamW8bit"])
def test_an_8bit_optimizer_state_is_saved_without_pickle_and_resumes_exactly(name: str) -> None:
    # bitsandbytes keeps its quantisation state in a nested dict: it must round-trip through
    # safetensors + JSON (before, such a state made the loops fail and the Trainer fall back to pickle)
    import bitsandbytes as bnb
    import torch

    def make() -> tuple[Any, Any]:
        torch.manual_seed(0)
        model = torch.nn.Linear(128, 128)  # 16K weights: over bitsandbytes' 4,096 for 8-bit state
        return model, getattr(bnb.optim, name)(model.parameters(), lr=1e-2)

    x = torch.randn(4, 128, generator=torch.Generator().manual_seed(1))

    def steps(model: Any, opt: Any, n: int) -> None:
        for _ in range(n):
            model(x).square().sum().backward()
            opt.step()
            opt.zero_grad()

    a, opt_a = make()
    steps(a, opt_a, 2)
    files = checkpoints.optimizer_files(opt_a.state_dict())
    assert files is not None
    tensors, meta = files
    assert any("__bnb_optimizer_quant_state__" in k for k in tensors) and json.loads(meta)
    b, opt_b = make()
    b.load_state_dict(a.state_dict())
    opt_b.load_state_dict(checkpoints.optimizer_state(tensors, meta))
    steps(a, opt_a, 3)
    steps(b, opt_b, 3)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
