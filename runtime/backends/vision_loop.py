"""The vision training loop: cross-entropy over augmented batches, evaluation, checkpoints, resume.

The loop is embedding_loop.Loop's (whose checkpoint format, optimizer, scheduler and resume it
reuses): shuffled micro-batches (a permutation seeded by (seed, epoch)), gradient accumulation,
clipping, the spec's schedule; at each epoch end (or every `checkpoints every N steps`) the
validation split is scored (loss and every classification metric) and a checkpoint is staged, then
finished (marker, fsync, atomic move, retention) on a background thread. Early stopping watches
the spec's metric (`early_stopping patience 2 on val.f1` works as well as `val.loss`); with early
stopping the best checkpoint's weights are the final ones (as the text trainer's
load_best_model_at_end).

Checkpoints hold the trainable weights (embedding_loop.write_checkpoint) plus the model's buffers
(BatchNorm statistics: buffers.safetensors), the optimizer, scheduler and RNG states: a resumed
run ends with the same weights as an uninterrupted one. Augmentations are seeded per image and
batch (vision_data), so nothing else consumes the RNG streams that matter.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Any

from ftc.runtime import checkpoints, metrics
from ftc.runtime.api import TrainContext
from ftc.runtime.backends import vision_data as vd
from ftc.runtime.backends import vision_model as vm
from ftc.runtime.backends.embedding_loop import (
    State,
    _optimizer,
    _permutation,
    _resume,
    _scheduler,
    judge,
    load_weights,
    optimizer_step,
    step_event,
    write_checkpoint,
)
from ftc.runtime.backends.hf import (
    Recorder,
    early_stopping_metric,
    resolve_precision,
    resume_checkpoint,
    train_block,
)
from ftc.runtime.backends.loading import labels_of

BUFFERS = "buffers.safetensors"


def declared(ctx: TrainContext) -> list[tuple[str, str | None]]:
    return [(m.name, m.average) for m in ctx.spec.eval.metrics] if ctx.spec.eval else []


def scores(y: list[int], probs: Any, declared_metrics: list[tuple[str, str | None]]) -> dict[str, float]:
    """Every classification metric (text_eval's names: accuracy, f1.macro, ..., auc, loss) plus the
    bare precision/recall/f1: the declared average, macro otherwise."""
    m = metrics.classification_metrics(y, probs)
    m.pop("n", None)
    m = metrics.with_declared_averages(m, declared_metrics)
    for name in ("precision", "recall", "f1"):
        m.setdefault(name, m[f"{name}.macro"])
    return m


def predict(model: Any, batch: Any, size: int) -> Any:
    """Class probabilities (numpy) of preprocessed images, in batches, without gradients."""
    import numpy as np
    import torch

    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(0, batch.shape[0], size):
            out.append(model(batch[i:i + size].to(device)).float().cpu().numpy())
    return metrics.softmax(np.concatenate(out)) if out else np.zeros((0, 0))


def batches(order: list[int], size: int) -> list[list[int]]:
    """Micro-batches of `size` rows; a last batch of one row joins the one before (BatchNorm
    cannot normalise a single example)."""
    out = [order[j:j + size] for j in range(0, len(order), size)]
    if len(out) > 1 and len(out[-1]) == 1:
        out[-2].extend(out.pop())
    return out


def total_steps(ctx: TrainContext, n: int) -> int:
    tr = train_block(ctx)
    planned = tr.steps or max(1, math.ceil(len(batches(list(range(n)), tr.batch_size)) / tr.grad_accum)) * (
        tr.epochs or 1)
    return min(planned, ctx.max_steps) if ctx.max_steps else planned


def save_buffers(folder: Path, model: Any) -> None:
    from safetensors.torch import save_file

    buffers = {n: b.detach().contiguous().cpu() for n, b in model.named_buffers()}
    if buffers:
        save_file(buffers, str(folder / BUFFERS), metadata={"format": "pt"})


def load_buffers(model: Any, folder: Path) -> None:
    from safetensors.torch import load_file

    if (folder / BUFFERS).is_file():
        model.load_state_dict(load_file(str(folder / BUFFERS)), strict=False)


def load_checkpoint_weights(model: Any, folder: Path) -> None:
    """A checkpoint's trainable weights and buffers into `model` (the best one, at the end)."""
    load_weights(model, folder)
    load_buffers(model, folder)


class Loop:
    """See the module docstring."""

    background = True  # finish checkpoints on a background thread (False: before training goes on)

    def __init__(self, ctx: TrainContext, model: Any, groups: list[list[Any]], train: vd.Images, val: Any,
                 val_labels: list[int], rec: Recorder) -> None:
        import torch

        self.ctx, self.model, self.groups, self.rec = ctx, model, groups, rec
        self.tr = tr = train_block(ctx)
        self.train, self.val, self.val_labels = train, val, val_labels
        self.transform = vd.train_transform(model, tuple(tr.augment))
        self.n_classes = len(labels_of(ctx))
        self.total = total_steps(ctx, len(train.images))
        self.device = next(model.parameters()).device
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = _optimizer(params, tr, self.device, rec)
        self.scheduler = _scheduler(self.optimizer, tr, self.total)
        self.folder = ctx.run_dir / "checkpoints"
        self.every = tr.checkpoints.every if tr.checkpoints is not None else None
        self.keep = tr.checkpoints.keep if tr.checkpoints is not None else 1
        self.es = early_stopping_metric(ctx) if val is not None else None
        self.precision = resolve_precision(ctx, rec)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.state = State()
        self.saved_at = -1
        self.grad_norm = 0.0
        self.finisher = checkpoints.Finisher()
        if groups:
            self._unfreeze(0)

    def run(self) -> State:
        self.finisher.wait()
        try:
            self._run()
        except BaseException as error:
            try:
                self.finisher.wait()
            except Exception as also:  # noqa: BLE001
                error.add_note(f"finishing the last checkpoint failed too: {also!r}")
            raise
        self.finisher.wait()
        return self.state

    def _train_mode(self) -> None:
        self.model.train()
        vm.freeze_frozen_norms(self.model)

    def _unfreeze(self, epoch: int) -> None:
        """Progressive unfreezing: group i trains from epoch i * unfreeze_every."""
        every = int(self.ctx.spec.method.unfreeze_every)
        for i, group in enumerate(self.groups):
            for p in group:
                p.requires_grad_(epoch >= i * every)

    def _run(self) -> None:
        last = resume_checkpoint(self.ctx, self.rec)
        if last is not None:
            self.state = _resume(Path(last), self.model, self.optimizer, self.scheduler, self.scaler)
            load_buffers(self.model, Path(last))
            self.rec.history[:0] = self.state.history
            self.saved_at = self.state.step
        self.state.history = self.rec.history
        while self.state.step < self.total and not self.state.stopped_early:
            if self.groups:
                self._unfreeze(self.state.epoch)
            self._train_mode()
            order = [int(i) for i in _permutation(len(self.train.images), self.tr.seed, self.state.epoch)]
            self._epoch(batches(order, self.tr.batch_size))
            if self.state.step >= self.total or self.state.stopped_early:
                break
            self.state.epoch, self.state.micro = self.state.epoch + 1, 0
            if self.every is None:
                self._checkpoint()
        if self.saved_at != self.state.step:
            self._checkpoint()

    def _epoch(self, groups: list[list[int]]) -> None:
        accum = self.tr.grad_accum
        for i in range(self.state.micro, len(groups), accum):
            start = time.perf_counter()
            group = groups[i:i + accum]
            loss = self._step(group, i)
            self.state.step += 1
            self.state.micro = i + len(group)
            self._log(loss, sum(len(b) for b in group) / max(time.perf_counter() - start, 1e-9))
            if self.every is not None and self.state.step % self.every == 0:
                self._checkpoint()
                self._train_mode()
            if self.state.step >= self.total or self.state.stopped_early:
                return

    def _batch(self, rows: list[int], index: int) -> tuple[Any, Any]:
        import torch

        seed, epoch = self.tr.seed, self.state.epoch
        images = torch.stack([vd.seeded(self.transform, self.train.images[r], vd.draw_seed(seed, epoch, r))
                              for r in rows])
        targets = torch.tensor([self.train.labels[r] for r in rows])
        images, soft = vd.mix(images, targets, self.n_classes, tuple(self.tr.augment),
                              vd.draw_seed(seed, epoch, -1 - index))
        return images.to(self.device), soft.to(self.device)

    def _step(self, group: list[list[int]], first: int) -> float:
        import contextlib

        import torch

        total = 0.0
        for k, rows in enumerate(group):
            images, soft = self._batch(rows, first + k)
            cast = (torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None
                    else contextlib.nullcontext())
            with cast:
                logits = self.model(images)
            loss: Any = torch.nn.functional.cross_entropy(logits.float(), soft) / len(group)
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            total += float(loss.detach())
        self.grad_norm = optimizer_step(self.model, self.optimizer, self.scheduler, self.scaler, self.tr.max_grad_norm)
        return total

    def _log(self, loss: float, samples_per_s: float) -> None:
        self.rec(step_event(self.state, self.scheduler, loss, self.grad_norm, samples_per_s, self.device))

    def _evaluate(self) -> dict[str, float] | None:
        if self.val is None:
            return None
        self.model.eval()
        result = scores(self.val_labels, predict(self.model, self.val, self.tr.batch_size), declared(self.ctx))
        self.rec({"event": "eval", "step": self.state.step, "split": "val", **result})
        return result

    def _checkpoint(self) -> None:
        result = self._evaluate()
        if result is not None and self.es is not None and self.tr.early_stopping is not None:
            name, higher = self.es
            value = result.get(name)
            if value is None:
                raise ValueError(f"early stopping watches `val.{name}`, which image classification does not "
                                 f"report (it reports {', '.join(sorted(result))})")
            judge(self.state, value, higher, self.tr.early_stopping, self.folder / f"checkpoint-{self.state.step}")
        self.finisher.wait()
        if self.groups:  # every group's weights, trained yet or not: loading the best one restores them all
            for p in (p for g in self.groups for p in g):
                p.requires_grad_(True)
        staged = write_checkpoint(self.folder, self.model, self.optimizer, self.scheduler, self.scaler, self.state)
        if self.groups:
            self._unfreeze(self.state.epoch)
        save_buffers(staged, self.model)
        job = functools.partial(checkpoints.finish, staged, self.folder, self.keep, self.state.best_checkpoint)
        if self.background:
            self.finisher.start(job)
        else:
            job()
        self.saved_at = self.state.step
