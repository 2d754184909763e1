"""The hand-written training loop that the contrastive (text and image-text) and vision backends share.

Optimizer steps over micro-batches in a seeded permutation per epoch, gradient accumulation,
clipping, the spec's optimizer (bitsandbytes' 8-bit AdamW on CUDA) and schedule, bf16/fp16 autocast
(fp16 with a loss scaler), a step event per optimizer step; at each epoch end (or every
`checkpoints every N steps`) the validation metrics (early stopping on the spec's one) and a
checkpoint. A model family fills in the hooks of `Loop`: embedding_loop.Loop (text triples,
InfoNCE), multimodal_train.ClipLoop (image-caption pairs), vision_loop.Loop (augmented images,
cross-entropy, BatchNorm statistics).

Checkpoints (run_dir/checkpoints/checkpoint-N) hold the trainable weights, the optimizer state and
the RNG states (safetensors + JSON), the scheduler and loss-scaler states and state.json: no
pickles. The files are written under .staging on the training thread; `checkpoints.finish` (the
COMPLETE marker, an fsync of every file and folder, one atomic move into place, retention with the
marker removed first) runs on a background `checkpoints.Finisher` while training goes on. The loop
waits for it before the next checkpoint, at the end of `run` (so the best checkpoint is in place
before it is loaded) and when an error leaves the loop; an error the finisher met is raised there.
A kill at any point leaves either a complete checkpoint or one resume ignores, and resume restores
the RNG states too, so a resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftc.compiler import schema as s
from ftc.runtime import checkpoints
from ftc.runtime.api import TrainContext
from ftc.runtime.backends import hf


def device_of(model: Any) -> Any:
    return next(model.parameters()).device


# ---------------------------------------------------------------------------------------------
# Checkpoints

@dataclass
class State:
    step: int = 0
    epoch: int = 0
    micro: int = 0  # micro-batches of `epoch` consumed
    best: float | None = None
    bad_evals: int = 0
    best_checkpoint: str | None = None
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


WEIGHTS, STATE = "trainable.safetensors", "state.json"
LEGACY_OPTIMIZER = "optimizer.pt"  # written by earlier versions (torch.save); read with weights_only


def _json_state(what: str, state: dict[str, Any]) -> str:
    try:
        return json.dumps(state, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise TypeError(f"the {what} state cannot be checkpointed as JSON ({e}); checkpoints hold no pickles") from e


def write_checkpoint(folder: Path, model: Any, optimizer: Any, scheduler: Any, scaler: Any, state: State) -> Path:
    """Write checkpoint-<step> into `folder`/.staging (on the training thread: the tensors are
    copied now); returns it, unmarked, for `checkpoints.finish`."""
    from safetensors.torch import save_file

    staging = folder / checkpoints.STAGING
    shutil.rmtree(staging, ignore_errors=True)
    tmp = staging / f"checkpoint-{state.step}"
    tmp.mkdir(parents=True)
    weights = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
    save_file(weights, str(tmp / WEIGHTS), metadata={"format": "pt"})
    opt = checkpoints.optimizer_files(optimizer.state_dict())
    if opt is None:
        raise TypeError(f"the {type(optimizer).__name__} state holds objects other than tensors and numbers; "
                        "checkpoints hold no pickles")
    save_file(opt[0], str(tmp / checkpoints.OPTIMIZER), metadata={"format": "pt"})
    (tmp / checkpoints.OPTIMIZER_META).write_text(opt[1], encoding="utf-8")
    (tmp / checkpoints.SCHEDULER).write_text(_json_state("scheduler", scheduler.state_dict()), encoding="utf-8")
    if scaler is not None:
        (tmp / checkpoints.SCALER).write_text(_json_state("loss scaler", scaler.state_dict()), encoding="utf-8")
    rng, rng_meta = checkpoints.rng_files()
    save_file(rng, str(tmp / checkpoints.RNG), metadata={"format": "pt"})
    (tmp / checkpoints.RNG_META).write_text(rng_meta, encoding="utf-8")
    (tmp / STATE).write_text(json.dumps(asdict(state), default=str), encoding="utf-8")
    return tmp


def load_weights(model: Any, checkpoint: Path) -> None:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(checkpoint / WEIGHTS)), strict=False)


def _resume(last: Path, model: Any, optimizer: Any, scheduler: Any, scaler: Any) -> State:
    import torch
    from safetensors.torch import load_file

    load_weights(model, last)
    if (last / checkpoints.OPTIMIZER_META).is_file():
        tensors = load_file(str(last / checkpoints.OPTIMIZER))  # load_state_dict moves them to the params
        meta = (last / checkpoints.OPTIMIZER_META).read_text(encoding="utf-8")
        optimizer.load_state_dict(checkpoints.optimizer_state(dict(tensors), meta))
        scheduler.load_state_dict(json.loads((last / checkpoints.SCHEDULER).read_text(encoding="utf-8")))
    else:
        saved = torch.load(last / LEGACY_OPTIMIZER, map_location=device_of(model), weights_only=True)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
    if scaler is not None and (last / checkpoints.SCALER).is_file():
        scaler.load_state_dict(json.loads((last / checkpoints.SCALER).read_text(encoding="utf-8")))
    if (last / checkpoints.RNG_META).is_file():
        checkpoints.restore_rng(dict(load_file(str(last / checkpoints.RNG))),
                                (last / checkpoints.RNG_META).read_text(encoding="utf-8"))
    return State(**json.loads((last / STATE).read_text(encoding="utf-8")))


# ---------------------------------------------------------------------------------------------
# The loop


def _optimizer(params: list[Any], tr: s.Train, device: Any = None, emit: Any = None) -> Any:
    """The spec's optimizer for a hand-written loop: SGD (momentum 0.9), AdamW, or bitsandbytes'
    8-bit AdamW (paged or not) on CUDA; on another device the 8-bit ones are AdamW, said in a note
    (as the Trainer path does: runtime/backends/hf.py)."""
    import torch

    if tr.optimizer == "sgd":
        return torch.optim.SGD(params, lr=tr.learning_rate, momentum=0.9, weight_decay=tr.weight_decay)
    if tr.optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        if getattr(device, "type", str(device)) == "cuda":
            from bitsandbytes.optim.adamw import AdamW8bit, PagedAdamW8bit

            cls = PagedAdamW8bit if tr.optimizer == "paged_adamw_8bit" else AdamW8bit
            return cls(params, lr=tr.learning_rate, weight_decay=tr.weight_decay)
        if emit is not None:
            emit({"event": "note", "message": f"optimizer {tr.optimizer} needs CUDA; using adamw on {device or 'cpu'}"})
    return torch.optim.AdamW(params, lr=tr.learning_rate, weight_decay=tr.weight_decay)


def _scheduler(optimizer: Any, tr: s.Train, total: int) -> Any:
    from transformers import get_scheduler

    name = ("constant_with_warmup" if tr.warmup else "constant") if tr.schedule == "constant" else tr.schedule
    return get_scheduler(name, optimizer, num_warmup_steps=math.ceil(total * tr.warmup), num_training_steps=total)


def _permutation(n: int, seed: int, epoch: int) -> Any:
    import torch

    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))


def optimizer_step(model: Any, optimizer: Any, scheduler: Any, scaler: Any, max_grad_norm: float) -> float:
    """After the micro-batches' backward passes: unscale (fp16), clip, step, schedule, zero the
    gradients; returns the gradient norm before clipping."""
    import torch

    if scaler is not None:
        scaler.unscale_(optimizer)
    params = [p for p in model.parameters() if p.requires_grad]
    clip = max_grad_norm if max_grad_norm > 0 else math.inf
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def step_event(state: State, scheduler: Any, loss: float, grad_norm: float, samples_per_s: float,
               device: Any = None, of: int | None = None) -> dict[str, Any]:
    """The `step` event every hand-written loop logs (monitor.py measures memory); `of`: the
    steps this training will take, at most."""
    from ftc.runtime.backends.monitor import gpu_mb, rss_mb

    event: dict[str, Any] = {"event": "step", "step": state.step, **({"of": of} if of else {}),
                             "epoch": state.epoch, "loss": loss,
                             "lr": float(scheduler.get_last_lr()[0]), "grad_norm": grad_norm,
                             "samples_per_s": samples_per_s, "rss_mb": round(rss_mb(), 1)}
    gpu = gpu_mb(device)
    if gpu is not None:
        event["gpu_mb"] = round(gpu, 1)
    return event


def judge(state: State, value: float, higher: bool, es: Any, checkpoint: Path) -> None:
    """Early stopping after one validation: `value` becomes the best (this checkpoint the best
    one) when it beats the best by `min_delta`; otherwise one more bad evaluation, and training
    stops after `patience` of them. NaN is never judged."""
    if math.isnan(value):
        return
    better = state.best is None or (value > state.best + es.min_delta if higher
                                    else value < state.best - es.min_delta)
    if better:
        state.best, state.bad_evals = value, 0
        state.best_checkpoint = str(checkpoint)
    else:
        state.bad_evals += 1
        state.stopped_early = state.bad_evals >= es.patience


class Loop:
    """Optimizer steps over shuffled micro-batches; at each epoch end (or every `checkpoints every
    N steps`): validation (with early stopping) and a checkpoint, finished in the background.
    A model family subclasses it and fills in the hooks below."""

    background = True  # finish checkpoints on a background thread (False: before training goes on)

    def __init__(self, ctx: TrainContext, model: Any, tok: Any, rec: hf.Recorder) -> None:
        import torch

        self.ctx, self.model, self.tok, self.rec = ctx, model, tok, rec
        self.out_of_time = False  # `budget { max_time }` spent (_time_spent)
        self.tr = tr = hf.train_block(ctx)
        self.temperature = float(getattr(ctx.spec.signal, "temperature", None) or math.nan)  # contrastive only
        self.items: list[Any] = []
        self.val: list[Any] = []
        self.setup()
        self.total = self.planned_steps()
        self.optimizer = _optimizer([p for p in model.parameters() if p.requires_grad], tr, device_of(model), rec)
        self.scheduler = _scheduler(self.optimizer, tr, self.total)
        self.folder = ctx.run_dir / "checkpoints"
        self.every = tr.checkpoints.every if tr.checkpoints is not None else None
        self.keep = tr.checkpoints.keep if tr.checkpoints is not None else 1
        self.es = hf.early_stopping_metric(ctx)  # (name as validate() reports it, higher is better)
        self.precision = hf.resolve_precision(ctx, rec)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.state = State()
        self.saved_at = -1
        self.grad_norm = 0.0
        self.finisher = checkpoints.Finisher()

    # The hooks a model family overrides (embedding_loop's text contrastive loop, the multimodal
    # and vision loops): what the examples are and how they batch, the loss of one micro-batch,
    # the validation metrics, the training mode, what a checkpoint holds besides the weights.

    def setup(self) -> None:
        """Fill `items` (training examples, or their indices) and `val` (validation examples)."""
        raise NotImplementedError

    def planned_steps(self) -> int:
        """Optimizer steps the run makes (the spec's `steps`, else epochs x steps per epoch, capped)."""
        raise NotImplementedError

    def groups(self, order: list[int]) -> list[list[Any]]:
        """One epoch's micro-batches of `items` in `order` (a seeded permutation)."""
        raise NotImplementedError

    def loss(self, batch: list[Any], index: int) -> Any:
        """The loss of one micro-batch (the `index`-th of its epoch): a scalar tensor with gradients."""
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """Metrics on `val` at a checkpoint; early stopping watches the spec's one among them."""
        raise NotImplementedError

    def has_val(self) -> bool:
        return bool(self.val)

    def train_mode(self) -> None:
        """Before each epoch and after an evaluation inside one."""
        self.model.train()

    def restored(self, last: Path) -> None:
        """After resuming from checkpoint `last` (weights, optimizer, scheduler, RNG: done)."""

    def write(self) -> Path:
        """Stage this step's checkpoint folder; returns it (checkpoints.finish moves it in place)."""
        return write_checkpoint(self.folder, self.model, self.optimizer, self.scheduler, self.scaler, self.state)

    def run(self) -> State:
        """Train to the last step; every checkpoint is finished (in place, retention done) on return."""
        self.finisher.wait()
        try:
            self._run()
        except BaseException as error:
            try:  # the checkpoint before the error still lands; the training error is the one raised
                self.finisher.wait()
            except Exception as also:  # noqa: BLE001
                error.add_note(f"finishing the last checkpoint failed too: {also!r}")
            raise
        self.finisher.wait()  # before the caller loads the best checkpoint or exports
        return self.state

    def _run(self) -> None:
        last = hf.resume_checkpoint(self.ctx, self.rec)
        if last is not None:
            self.state = _resume(Path(last), self.model, self.optimizer, self.scheduler, self.scaler)
            self.restored(Path(last))
            self.rec.history[:0] = self.state.history  # the events before the resume, then ours
            self.saved_at = self.state.step
        self.state.history = self.rec.history
        while self.state.step < self.total and not self.state.stopped_early and not self.out_of_time:
            self.train_mode()
            order = [int(i) for i in _permutation(len(self.items), self.tr.seed, self.state.epoch)]
            self._epoch(self.groups(order))
            if self.state.step >= self.total or self.state.stopped_early or self.out_of_time:
                break
            self.state.epoch, self.state.micro = self.state.epoch + 1, 0
            if self.every is None:
                self._checkpoint()
        if self.saved_at != self.state.step:
            self._checkpoint()

    def _epoch(self, groups: list[list[Any]]) -> None:
        accum = self.tr.grad_accum
        for i in range(self.state.micro, len(groups), accum):
            start = time.perf_counter()
            group = groups[i:i + accum]
            loss = self._step(group, i)
            self.state.step += 1
            self.state.micro = i + len(group)
            seconds = max(time.perf_counter() - start, 1e-9)
            self._log(loss, sum(len(b) for b in group) / seconds)
            if self.every is not None and self.state.step % self.every == 0:
                self._checkpoint()
                self.train_mode()
            if self.state.step >= self.total or self.state.stopped_early or self._time_spent():
                return

    def _time_spent(self) -> bool:
        """`budget { max_time }` spent: stop after this step (not saved as `stopped_early`, so that a
        resumed run trains on)."""
        limit = self.ctx.time_limit
        if limit is not None and not self.out_of_time and limit.spent():
            self.out_of_time = True
            self.rec(limit.note(self.state.step))
        return self.out_of_time

    def _step(self, group: list[list[Any]], first: int) -> float:
        import contextlib

        import torch

        total = 0.0
        for k, batch in enumerate(group):
            cast = (torch.autocast(device_of(self.model).type, dtype=self.dtype) if self.dtype is not None
                    else contextlib.nullcontext())
            with cast:
                loss = self.loss(batch, first + k) / len(group)
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            total += float(loss.detach())
        self.grad_norm = optimizer_step(self.model, self.optimizer, self.scheduler, self.scaler, self.tr.max_grad_norm)
        return total

    def _log(self, loss: float, samples_per_s: float) -> None:
        self.rec(step_event(self.state, self.scheduler, loss, self.grad_norm, samples_per_s, device_of(self.model),
                            self.total))

    def _checkpoint(self) -> None:
        es = self.tr.early_stopping
        if self.has_val():
            scores = self.validate()
            self.rec({"event": "eval", "step": self.state.step, "split": "val", **scores})
            if es is not None and self.es is not None:
                name, higher = self.es
                if name not in scores:
                    raise ValueError(f"early stopping watches `val.{name}`, which this model's validation does "
                                     f"not compute (it computes {', '.join(sorted(scores))}); watch one of those")
                judge(self.state, scores[name], higher, es, self.folder / f"checkpoint-{self.state.step}")
        self.finisher.wait()  # the previous one is in place (and retention done) before this one is staged
        staged = self.write()
        job = functools.partial(checkpoints.finish, staged, self.folder, self.keep, self.state.best_checkpoint)
        if self.background:
            self.finisher.start(job)
        else:
            job()
        self.saved_at = self.state.step
