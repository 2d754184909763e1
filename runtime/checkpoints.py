"""Atomic checkpoints, retention and resume for transformers' Trainer (and TRL trainers).

transformers 5's `Trainer._save_checkpoint` writes straight into `checkpoint-N/` (weights, then
optimizer, scheduler, RNG and trainer state), so a crash mid-save leaves a folder that looks like a
checkpoint and is not one; `get_last_checkpoint` would pick it on resume. Here every checkpoint is
written into `<output_dir>/.staging/checkpoint-N/`, finished with a `COMPLETE` marker, then moved
into place with one `os.replace` (atomic on one filesystem). Resume only considers folders with
the marker, so a checkpoint from before this scheme or a half-copied one is ignored.

Finishing a checkpoint (`finish`: the marker, an fsync of each file and of the folder, the move,
retention) runs on a background thread while training goes on: the files are already written and
closed, so the thread only makes them durable and moves them, and fsync waits on the disk, not the
CPU. At most one finish is in flight; the next checkpoint, the end of training (before the best
checkpoint is loaded and transformers' own clean-up), and any exception leaving `train()` wait for
it, and an error it met is raised there. A kill while it runs leaves the checkpoint in `.staging`
(or, after the move, complete): never a marked folder with missing data.

Retention (`checkpoints keep N`) runs after each move: the newest N by step survive, plus the best
checkpoint when `load_best_model_at_end` tracks one (transformers' own rule, by step, not mtime).

No pickles: transformers writes the optimizer, scheduler, scaler and RNG states and the training
arguments with `torch.save` (`optimizer.pt`, `scheduler.pt`, `rng_state.pth`, `training_args.bin`).
For a single-process run (not DeepSpeed or FSDP) the mixin writes them instead as safetensors
(tensors) plus JSON (everything else): `optimizer.safetensors` + `optimizer.json`,
`scheduler.json`, `scaler.json`, `rng_state.safetensors` + `rng_state.json`,
`training_args.json` (serialised once per `train()` call), and reads them back on resume. A state
that does not fit (an optimizer whose state holds other objects) falls back to transformers'
format, which it reloads with `torch.load(weights_only=True)`. Model weights are always safetensors.
`trainer_state.json` is written once per checkpoint, already naming the final folder as the best one.

`AtomicCheckpoints` is a mixin: `class MyTrainer(AtomicCheckpoints, SFTTrainer): ...`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import re
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMPLETE = "COMPLETE"
STAGING = ".staging"
OPTIMIZER, OPTIMIZER_META = "optimizer.safetensors", "optimizer.json"
SCHEDULER, SCALER, ARGS = "scheduler.json", "scaler.json", "training_args.json"
RNG, RNG_META = "rng_state.safetensors", "rng_state.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def step_of(path: Path) -> int | None:
    m = _NAME.match(path.name)
    return int(m.group(1)) if m else None


def complete_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints under `folder`, oldest step first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and step_of(p) is not None and (p / COMPLETE).is_file()]
    return sorted(found, key=lambda p: step_of(p) or 0)


def last_complete(folder: Path) -> Path | None:
    found = complete_checkpoints(folder)
    return found[-1] if found else None


def remove(path: Path) -> None:
    """Delete a checkpoint folder, its marker first: a kill midway leaves an incomplete folder
    (ignored by resume, removed by the next one), never a marked one with files missing."""
    with contextlib.suppress(FileNotFoundError):
        (path / COMPLETE).unlink()
    shutil.rmtree(path, ignore_errors=True)


def remove_incomplete(folder: Path) -> list[Path]:
    """Delete the staging area and checkpoint folders without the marker; returns what went."""
    gone: list[Path] = []
    if not folder.is_dir():
        return gone
    for p in folder.iterdir():
        if p.name == STAGING or (p.is_dir() and step_of(p) is not None and not (p / COMPLETE).is_file()):
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p)
    return gone


def remove_all(folder: Path) -> int:
    """Delete every checkpoint (a fresh run in a folder that held an earlier one)."""
    n = 0
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name == STAGING or (p.is_dir() and step_of(p) is not None):
                remove(p)
                n += 1
    return n


def rotate(folder: Path, keep: int | None, best: str | None = None) -> list[Path]:
    """Keep the newest `keep` complete checkpoints (and `best`); returns the deleted ones."""
    if keep is None or keep <= 0:
        return []
    found = complete_checkpoints(folder)
    protected = {found[-1].resolve()} if found else set()
    if best:
        protected.add(Path(best).resolve())
    budget = max(keep, len(protected))
    gone: list[Path] = []
    for p in found:
        if len(found) - len(gone) <= budget:
            break
        if p.resolve() not in protected:
            remove(p)
            gone.append(p)
    return gone


def _fsync(path: str | Path, *, folder: bool = False) -> None:
    if folder and os.name != "posix":  # folders cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if folder else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    """fsync every file under `path`, then each folder, so that their entries are durable too."""
    for root, _, files in os.walk(path, topdown=False):
        for name in files:
            _fsync(os.path.join(root, name))
        _fsync(root, folder=True)


def finish(src: Path, final_root: Path, keep: int | None = None, best: str | None = None) -> Path:
    """Complete a checkpoint written into the staging area: the COMPLETE marker, fsync of every
    file and folder, one `os.replace` into `final_root`, then retention; returns the final folder.
    A failure or a kill before the move leaves it in the staging area, where resume ignores it."""
    (src / COMPLETE).write_text(json.dumps({"step": step_of(src)}) + "\n", encoding="utf-8")
    _fsync_tree(src)
    dst = final_root / src.name
    if dst.exists():  # the same step saved again (e.g. right after a resume)
        remove(dst)
    os.replace(src, dst)
    _fsync(final_root, folder=True)  # the move itself survives a power cut
    if src.parent.name == STAGING:
        shutil.rmtree(src.parent, ignore_errors=True)
    rotate(final_root, keep, best)
    return dst


class Finisher:
    """At most one job (a checkpoint's `finish`) in flight on a background thread. `wait` joins
    it and raises, in the calling (training) thread, whatever the job raised."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self, job: Callable[[], object]) -> None:
        self.wait()

        def run() -> None:
            try:
                job()
            except BaseException as e:  # noqa: BLE001  (handed to the training thread by wait())
                self._error = e

        self._thread = threading.Thread(target=run, name="ftc-checkpoint", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        error, self._error = self._error, None
        if error is not None:
            raise error


def _best_to_final(state: Any, staging_root: Path, final_root: Path) -> None:
    """transformers found the best checkpoint in the staging folder: name its final place."""
    best = state.best_model_checkpoint
    if best and Path(best).parent == staging_root:
        state.best_model_checkpoint = str(final_root / Path(best).name)


# ---------------------------------------------------------------------------------------------
# Trainer states as safetensors + JSON


def _json(obj: Any) -> str | None:
    try:
        return json.dumps(obj, allow_nan=True)
    except (TypeError, ValueError):
        return None


def optimizer_files(state: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """(tensors, json) for an optimizer's state_dict, or None if it holds other objects. Values are
    tensors, numbers, strings, None, or dicts of those (bitsandbytes' 8-bit optimizers keep their
    quantisation state, `__bnb_optimizer_quant_state__`, as such a dict)."""
    tensors: dict[str, Any] = {}
    entries: dict[str, dict[str, Any]] = {}
    for pid, values in state["state"].items():
        entry = _flatten(values, str(pid), tensors)
        if entry is None:
            return None
        entries[str(pid)] = entry
    meta = _json({"state": entries, "param_groups": state["param_groups"]})
    return (tensors, meta) if meta is not None else None


def _flatten(values: dict[str, Any], prefix: str, tensors: dict[str, Any]) -> dict[str, Any] | None:
    import torch

    entry: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, torch.Tensor):
            name = f"{prefix}.{key}"
            tensors[name] = value.detach().to("cpu").contiguous()
            entry[key] = {"tensor": name}
        elif value is None or isinstance(value, (bool, int, float, str)):
            entry[key] = {"value": value}
        elif isinstance(value, dict) and all(isinstance(k, str) for k in value):
            inner = _flatten(value, f"{prefix}.{key}", tensors)
            if inner is None:
                return None
            entry[key] = {"dict": inner}
        else:
            return None
    return entry


def _unflatten(entry: dict[str, Any], tensors: dict[str, Any]) -> dict[str, Any]:
    return {k: tensors[v["tensor"]] if "tensor" in v else _unflatten(v["dict"], tensors) if "dict" in v
            else v["value"] for k, v in entry.items()}


def optimizer_state(tensors: dict[str, Any], meta: str) -> dict[str, Any]:
    doc = json.loads(meta)
    state = {int(pid): _unflatten(entry, tensors) for pid, entry in doc["state"].items()}
    return {"state": state, "param_groups": doc["param_groups"]}


def rng_files() -> tuple[dict[str, Any], str]:
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {"cpu": torch.random.get_rng_state(), "numpy": torch.from_numpy(np.asarray(keys, dtype=np.int64))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        for i, st in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = st
    meta = json.dumps({"python": [version, list(internal), gauss], "numpy": [name, int(pos), int(has_gauss),
                                                                            float(cached)]})
    return tensors, meta


def restore_rng(tensors: dict[str, Any], meta: str) -> None:
    import numpy as np
    import torch

    doc = json.loads(meta)
    version, internal, gauss = doc["python"]
    random.setstate((version, tuple(internal), gauss))
    name, pos, has_gauss, cached = doc["numpy"]
    np.random.set_state((name, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.random.set_rng_state(tensors["cpu"])
    cuda = sorted((int(k.split(".")[1]), v) for k, v in tensors.items() if k.startswith("cuda."))
    if cuda and torch.cuda.is_available():
        for i, st in cuda[: torch.cuda.device_count()]:
            torch.cuda.set_rng_state(st, i)


def _save_tensors(tensors: dict[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"format": "pt"})


def _load_tensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return dict(load_file(str(path)))


class AtomicCheckpoints:
    """Trainer mixin: each checkpoint appears complete or not at all (see the module docstring)."""

    _ftc_staging: str | None = None
    _ftc_args: str | None = None  # the training arguments as JSON, serialised once per train()
    ftc_background = True  # finish checkpoints on a background thread (False: in the save itself)

    def _ftc_finisher(self) -> Finisher:
        found: Finisher | None = self.__dict__.get("_ftc_finisher_")
        if found is None:
            found = self.__dict__["_ftc_finisher_"] = Finisher()
        return found

    def ftc_wait(self) -> None:
        """Wait for the checkpoint being finished (moved into place, retention applied)."""
        self._ftc_finisher().wait()

    def train(self, *args: Any, **kwargs: Any) -> Any:
        self.ftc_wait()
        self._ftc_args = None
        try:
            out = super().train(*args, **kwargs)  # type: ignore[misc]
        except BaseException as error:
            try:  # the checkpoint before the error still lands; the training error is the one raised
                self.ftc_wait()
            except Exception as also:  # noqa: BLE001
                error.add_note(f"finishing the last checkpoint failed too: {also!r}")
            raise
        self.ftc_wait()
        return out

    def _finalize_training(self, *args: Any, **kwargs: Any) -> Any:
        self.ftc_wait()  # it loads the best checkpoint and removes old ones in the final folder
        return super()._finalize_training(*args, **kwargs)  # type: ignore[misc]

    def _load_best_model(self) -> None:
        self.ftc_wait()
        super()._load_best_model()  # type: ignore[misc]

    def _get_output_dir(self, trial: Any) -> str:
        if self._ftc_staging is not None:
            return self._ftc_staging
        return super()._get_output_dir(trial)  # type: ignore[misc, no-any-return]

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        self.ftc_wait()  # the previous checkpoint is in place, and retention done, before this one
        from ftc.runtime import dist

        final_root = Path(super()._get_output_dir(trial))  # type: ignore[misc]
        staging_root = final_root / STAGING
        if self.args.should_save:  # type: ignore[attr-defined]  # one process (rank 0) prepares the folder
            if staging_root.exists():
                shutil.rmtree(staging_root)
            staging_root.mkdir(parents=True)
        dist.barrier()  # every rank writes its part of the checkpoint (its RNG state) into staging
        state = self.state  # type: ignore[attr-defined]
        write_state = state.save_to_json

        def save_state(path: str) -> None:  # written once, naming the final folder as the best one
            _best_to_final(state, staging_root, final_root)
            write_state(path)

        self._ftc_staging = str(staging_root)
        vars(state)["save_to_json"] = save_state
        try:
            super()._save_checkpoint(model, trial)  # type: ignore[misc]
        finally:
            self._ftc_staging = None
            vars(state).pop("save_to_json", None)
        _best_to_final(state, staging_root, final_root)
        dist.barrier()  # all parts written before rank 0 moves the checkpoint into place
        if self.args.should_save:  # type: ignore[attr-defined]
            job = functools.partial(finish, staging_root / f"checkpoint-{state.global_step}", final_root,
                                    self.args.save_total_limit, state.best_model_checkpoint)  # type: ignore[attr-defined]
            if self.ftc_background:
                self._ftc_finisher().start(job)
            else:
                job()

    # --- no pickles (single process; DeepSpeed, FSDP and several processes keep transformers' files)

    def _ftc_plain(self) -> bool:
        args = self.args  # type: ignore[attr-defined]
        return bool(args.world_size <= 1 and not getattr(self, "is_deepspeed_enabled", False)
                    and not getattr(self, "is_fsdp_enabled", False))

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if self._ftc_plain() and self.args.should_save:  # type: ignore[attr-defined]
            opt = optimizer_files(self.optimizer.state_dict())  # type: ignore[attr-defined]
            sched = _json(self.lr_scheduler.state_dict())  # type: ignore[attr-defined]
            if opt is not None and sched is not None:
                Path(output_dir).mkdir(parents=True, exist_ok=True)
                _save_tensors(opt[0], Path(output_dir) / OPTIMIZER)
                (Path(output_dir) / OPTIMIZER_META).write_text(opt[1], encoding="utf-8")
                (Path(output_dir) / SCHEDULER).write_text(sched, encoding="utf-8")
                return
        super()._save_optimizer_and_scheduler(output_dir)  # type: ignore[misc]

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        folder = Path(checkpoint) if checkpoint else None
        if folder is not None and (folder / OPTIMIZER_META).is_file():
            meta = (folder / OPTIMIZER_META).read_text(encoding="utf-8")
            self.optimizer.load_state_dict(optimizer_state(_load_tensors(folder / OPTIMIZER), meta))  # type: ignore[attr-defined]
            sched = json.loads((folder / SCHEDULER).read_text(encoding="utf-8"))
            self.lr_scheduler.load_state_dict(sched)  # type: ignore[attr-defined]
            return
        super()._load_optimizer_and_scheduler(checkpoint)  # type: ignore[misc]

    def _save_scaler(self, output_dir: str) -> None:
        scaler = getattr(getattr(self, "accelerator", None), "scaler", None)
        state = _json(scaler.state_dict()) if scaler is not None and self._ftc_plain() else None
        if state is not None:
            if self.args.should_save:  # type: ignore[attr-defined]
                (Path(output_dir) / SCALER).write_text(state, encoding="utf-8")
            return
        super()._save_scaler(output_dir)  # type: ignore[misc]

    def _load_scaler(self, checkpoint: str | None) -> None:
        if checkpoint and (Path(checkpoint) / SCALER).is_file():
            state = json.loads((Path(checkpoint) / SCALER).read_text(encoding="utf-8"))
            self.accelerator.scaler.load_state_dict(state)  # type: ignore[attr-defined]
            return
        super()._load_scaler(checkpoint)  # type: ignore[misc]

    def _save_rng_state(self, output_dir: str) -> None:
        if not self._ftc_plain():
            super()._save_rng_state(output_dir)  # type: ignore[misc]
            return
        tensors, meta = rng_files()
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        _save_tensors(tensors, Path(output_dir) / RNG)
        (Path(output_dir) / RNG_META).write_text(meta, encoding="utf-8")

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if checkpoint and (Path(checkpoint) / RNG_META).is_file():
            restore_rng(_load_tensors(Path(checkpoint) / RNG), (Path(checkpoint) / RNG_META).read_text("utf-8"))
            return
        super()._load_rng_state(checkpoint)  # type: ignore[misc]

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        super()._save(output_dir, state_dict)  # type: ignore[misc]
        folder = Path(output_dir or self.args.output_dir)  # type: ignore[attr-defined]
        pickled = folder / "training_args.bin"
        if pickled.is_file():  # transformers always writes it with torch.save: keep JSON instead
            if self._ftc_args is None:
                self._ftc_args = self.args.to_json_string()  # type: ignore[attr-defined]
            (folder / ARGS).write_text(self._ftc_args, encoding="utf-8")
            pickled.unlink()
