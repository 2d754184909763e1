"""The contrastive loop's checkpoints: written on the training thread, finished (marker, fsync, move,
retention) by `checkpoints.finish` on a background thread the loop waits for; no pickles; a failure
at any point leaves no checkpoint that resume would pick; a resumed run is bit-identical to an
uninterrupted one."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ftc.runtime import checkpoints
from ftc.runtime.backends import embedding_loop

from tests.runtime import _pref_fixtures as F

SIGNAL = 'signal contrastive {\n  anchor "query"\n  positive "positive"\n  negative "negative"\n  temperature 0.05\n}\n'
DATA = 'data {\n  source "data.jsonl"\n  split 80/10/10\n  max_length 32 truncate\n}\n'
TRAIN = """train {
  epochs 3
  batch_size 32
  learning_rate 2e-2
  precision fp32
  seed 0
  checkpoints keep %d every %d steps
}
"""
LORA = 'method lora {\n  rank 8\n  alpha 16\n  targets ["query", "key", "value", "dense"]\n}\n'
FILES = {checkpoints.COMPLETE, "trainable.safetensors", "state.json", checkpoints.OPTIMIZER,
         checkpoints.OPTIMIZER_META, checkpoints.SCHEDULER, checkpoints.RNG, checkpoints.RNG_META}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return F.data_folder(tmp_path_factory.mktemp("contrastive_checkpoints"), F.contrastive_rows(150, negatives=True), F.make_tiny_bert)


def _spec(keep: int = 1, every: int = 2) -> str:
    return F.spec_text("embedding", LORA, SIGNAL, DATA, TRAIN % (keep, every), "recall_at_k 5", "recall_at_k >= 0.5")


def _train(work: Path, events: list[dict[str, Any]], *, keep: int = 1, every: int = 2, max_steps: int = 6,
           resume: bool = False) -> Any:
    from ftc.runtime.backends.embedding import train_contrastive

    ctx = F.context(work, _spec(keep, every), events, max_steps=max_steps, resume=resume,
                    allow=("FT217",))  # no early stopping: retention keeps exactly the newest N
    return train_contrastive(ctx)


def _folder(work: Path) -> Path:
    return work / "run" / "checkpoints"


def _complete(work: Path) -> list[int]:
    return [checkpoints.step_of(p) or 0 for p in checkpoints.complete_checkpoints(_folder(work))]


def _steps(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "step"]


def _weights(checkpoint: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return dict(load_file(str(checkpoint / "trainable.safetensors")))


def _killed_before(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """The process dies just before optimizer step `step` (a RuntimeError stands in for the kill)."""
    real = embedding_loop.Loop._step

    def step_or_die(self: Any, group: Any, first: int) -> float:
        if self.state.step + 1 == step:
            raise RuntimeError("killed")
        return float(real(self, group, first))

    monkeypatch.setattr(embedding_loop.Loop, "_step", step_or_die)


def test_a_resumed_run_is_bit_identical_to_an_uninterrupted_one(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    straight: list[dict[str, Any]] = []
    _train(F.fresh(root, "straight"), straight)

    work = F.fresh(root, "killed")
    with monkeypatch.context() as m:
        _killed_before(m, 5)  # 4 batches an epoch: the kill falls in the second epoch
        with pytest.raises(RuntimeError, match="killed"):
            _train(work, [])
    assert _complete(work) == [4]  # the checkpoint before the error landed (the loop waited for it)
    last = _folder(work) / "checkpoint-4"
    assert {p.name for p in last.iterdir()} == FILES  # safetensors + JSON: no .pt, .bin or .pth
    resumed: list[dict[str, Any]] = []
    result = _train(work, resumed, resume=True)

    assert result.steps == 6 and [e["step"] for e in _steps(resumed)] == [5, 6]
    want = {e["step"]: (e["loss"], e["lr"], e["grad_norm"]) for e in _steps(straight)}
    got = {e["step"]: (e["loss"], e["lr"], e["grad_norm"]) for e in _steps(resumed)}
    assert got == {5: want[5], 6: want[6]}  # dropout's RNG included: exactly equal, not approximately
    a = _weights(_folder(work.parent / "straight") / "checkpoint-6")
    b = _weights(_folder(work) / "checkpoint-6")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_failure_while_writing_leaves_no_checkpoint_resume_would_pick(root: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    work = F.fresh(root, "write_fails")
    real = checkpoints.rng_files
    calls: list[int] = []

    def fails_second_time() -> Any:  # checkpoint-4: weights and optimizer written, then the disk fills
        calls.append(1)
        if len(calls) == 2:
            raise OSError("no space left on device")
        return real()

    with monkeypatch.context() as m:
        m.setattr(checkpoints, "rng_files", fails_second_time)
        with pytest.raises(OSError, match="no space"):
            _train(work, [])
    staged = _folder(work) / checkpoints.STAGING / "checkpoint-4"
    assert (staged / "trainable.safetensors").is_file() and not (staged / checkpoints.COMPLETE).exists()
    assert not (_folder(work) / "checkpoint-4").exists()
    assert checkpoints.last_complete(_folder(work)) == _folder(work) / "checkpoint-2"

    events: list[dict[str, Any]] = []
    result = _train(work, events, resume=True)
    assert result.steps == 6 and [e["step"] for e in _steps(events)] == [3, 4, 5, 6]
    assert any(e["event"] == "note" and "ignored incomplete" in e["message"] for e in events)
    assert _complete(work) == [6] and not (_folder(work) / checkpoints.STAGING).exists()


def test_the_finishers_error_surfaces_and_its_checkpoint_is_never_picked(root: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    work = F.fresh(root, "finish_fails")
    real = checkpoints.os.replace
    threads: list[str] = []

    def replace(src: Any, dst: Any) -> None:  # the move of checkpoint-4 fails (on the finisher's thread)
        if Path(src).name == "checkpoint-4" and Path(src).parent.name == checkpoints.STAGING:
            threads.append(threading.current_thread().name)
            raise OSError("the move failed")
        real(src, dst)

    with monkeypatch.context() as m:
        m.setattr(checkpoints.os, "replace", replace)
        events: list[dict[str, Any]] = []
        with pytest.raises(OSError, match="the move failed"):
            _train(work, events)
    assert threads == ["ftc-checkpoint"]  # finished in the background, raised in the training thread
    assert [e["step"] for e in _steps(events)] == [1, 2, 3, 4, 5, 6]  # it surfaced at the next checkpoint
    assert (_folder(work) / checkpoints.STAGING / "checkpoint-4" / checkpoints.COMPLETE).is_file()
    assert checkpoints.last_complete(_folder(work)) == _folder(work) / "checkpoint-2"

    work = F.fresh(root, "both_fail")  # a training error while the failing finish runs: both are told
    with monkeypatch.context() as m:
        m.setattr(checkpoints.os, "replace", replace)
        _killed_before(m, 5)
        with pytest.raises(RuntimeError, match="killed") as caught:
            _train(work, [])
    assert any("finishing the last checkpoint failed too" in n and "the move failed" in n
               for n in getattr(caught.value, "__notes__", []))
    assert checkpoints.last_complete(_folder(work)) == _folder(work) / "checkpoint-2"


def test_retention_keeps_n_and_deletes_the_marker_first(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = F.fresh(root, "retention")
    real = checkpoints.shutil.rmtree
    deleted: list[tuple[str, bool]] = []

    def rmtree(path: Any, *a: Any, **kw: Any) -> None:
        p = Path(path)
        if p.parent == _folder(work) and checkpoints.step_of(p) is not None:
            deleted.append((p.name, (p / checkpoints.COMPLETE).exists()))
        real(path, *a, **kw)

    with monkeypatch.context() as m:
        m.setattr(checkpoints.shutil, "rmtree", rmtree)
        _train(work, [], keep=2, every=1, max_steps=5)
    assert _complete(work) == [4, 5]
    assert sorted(p.name for p in _folder(work).iterdir()) == ["checkpoint-4", "checkpoint-5"]
    assert deleted == [("checkpoint-1", False), ("checkpoint-2", False), ("checkpoint-3", False)]


def test_the_loop_waits_for_the_finisher_before_returning(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = F.fresh(root, "slow_disk")
    real = checkpoints._fsync_tree
    synced: list[tuple[str, str]] = []

    def slow(path: Path) -> None:  # fsync on a slow disk: training goes on meanwhile
        threading.Event().wait(0.3)
        synced.append((path.name, threading.current_thread().name))
        real(path)

    with monkeypatch.context() as m:
        m.setattr(checkpoints, "_fsync_tree", slow)
        result = _train(work, [], max_steps=6)
    assert result.steps == 6
    assert synced == [(f"checkpoint-{n}", "ftc-checkpoint") for n in (2, 4, 6)]
    assert _complete(work) == [6] and not (_folder(work) / checkpoints.STAGING).exists()
