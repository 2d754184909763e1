"""The vision training loop: cross-entropy over augmented batches, evaluation, checkpoints, resume.

The loop is loop.py's (its checkpoint format, optimizer, scheduler and resume): shuffled micro-batches (a permutation seeded by (seed, epoch)), gradient accumulation,
clipping, the spec's schedule; at each epoch end (or every `checkpoints every N steps`) the
validation split is scored (loss and every classification metric) and a checkpoint is staged, then
finished (marker, fsync, atomic move, retention) on a background thread. Early stopping watches
the spec's metric (`early_stopping patience 2 on val.f1` works as well as `val.loss`); with early
stopping the best checkpoint's weights are the final ones (as the text trainer's
load_best_model_at_end).

Checkpoints hold the trainable weights (loop.write_checkpoint) plus the model's buffers
(BatchNorm statistics: buffers.safetensors), the optimizer, scheduler and RNG states: a resumed
run ends with the same weights as an uninterrupted one. Augmentations are seeded per image and
batch (vision_data), so nothing else consumes the RNG streams that matter.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ftc.runtime import metrics
from ftc.runtime.api import TrainContext
from ftc.runtime.backends import loop
from ftc.runtime.backends import vision_data as vd
from ftc.runtime.backends import vision_model as vm
from ftc.runtime.backends.hf import Recorder, train_block
from ftc.runtime.backends.loading import labels_of
from ftc.runtime.backends.loop import load_weights
from ftc.runtime.backends.text_eval import declared_metrics

BUFFERS = "buffers.safetensors"


def scores(y: list[int], probs: Any, declared_metrics: list[tuple[str, str | None]]) -> dict[str, float]:
    """Every classification metric (text_eval's names: accuracy, f1.macro, ..., auc, loss) plus the
    bare precision/recall/f1: the declared average, macro otherwise."""
    m = metrics.classification_metrics(y, probs)
    m.pop("n", None)
    m = metrics.with_declared_averages(m, declared_metrics)
    for name in ("precision", "recall", "f1"):
        m.setdefault(name, m[f"{name}.macro"])
    return m


def predict(model: Any, transform: Any, images: Any, size: int) -> Any:
    """Class probabilities (numpy) of `images`, decoded and preprocessed `size` at a time, without
    gradients."""
    import numpy as np
    import torch

    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), size):
            out.append(model(vd.stack(transform, images, i, i + size).to(device)).float().cpu().numpy())
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


class Loop(loop.Loop):
    """loop.Loop with images: see the module docstring."""

    def __init__(self, ctx: TrainContext, model: Any, groups: list[list[Any]], train: vd.Images, val: Any,
                 val_labels: list[int], rec: Recorder) -> None:
        self.groups_to_unfreeze = groups
        self.train_images, self.val_images, self.val_labels = train, val, val_labels
        self.transform = vd.train_transform(model, tuple(train_block(ctx).augment))
        self.val_transform = vd.eval_transform(model)
        self.n_classes = len(labels_of(ctx))
        self.device = next(model.parameters()).device
        super().__init__(ctx, model, None, rec)  # the optimizer holds every group's parameters
        if groups:
            self._unfreeze(0)  # then only the first groups train

    def setup(self) -> None:
        self.items = list(range(len(self.train_images.images)))

    def planned_steps(self) -> int:
        return total_steps(self.ctx, len(self.items))

    def groups(self, order: list[int]) -> list[list[int]]:
        return batches(order, self.tr.batch_size)

    def has_val(self) -> bool:
        return self.val_images is not None

    def train_mode(self) -> None:
        if self.groups_to_unfreeze:
            self._unfreeze(self.state.epoch)
        self.model.train()
        vm.freeze_frozen_norms(self.model)

    def _unfreeze(self, epoch: int) -> None:
        """Progressive unfreezing: group i trains from epoch i * unfreeze_every."""
        every = int(self.ctx.spec.method.unfreeze_every)
        for i, group in enumerate(self.groups_to_unfreeze):
            for p in group:
                p.requires_grad_(epoch >= i * every)

    def loss(self, batch: list[int], index: int) -> Any:
        """Cross-entropy of the augmented micro-batch (soft targets when mixup/cutmix mix labels)."""
        import torch

        seed, epoch = self.tr.seed, self.state.epoch
        images = torch.stack([vd.seeded(self.transform, self.train_images.images[r], vd.draw_seed(seed, epoch, r))
                              for r in batch])
        targets = torch.tensor([self.train_images.labels[r] for r in batch])
        images, soft = vd.mix(images, targets, self.n_classes, tuple(self.tr.augment),
                              vd.draw_seed(seed, epoch, -1 - index))
        logits = self.model(images.to(self.device))
        return torch.nn.functional.cross_entropy(logits.float(), soft.to(self.device))

    def validate(self) -> dict[str, float]:
        self.model.eval()
        probs = predict(self.model, self.val_transform, self.val_images, self.tr.batch_size)
        return scores(self.val_labels, probs, declared_metrics(self.ctx))

    def restored(self, last: Path) -> None:
        load_buffers(self.model, last)

    def write(self) -> Path:
        """The checkpoint holds every unfreezing group's weights, trained yet or not (loading the best
        one restores them all), and the buffers (BatchNorm statistics)."""
        if self.groups_to_unfreeze:
            for p in (p for g in self.groups_to_unfreeze for p in g):
                p.requires_grad_(True)
        staged = super().write()
        if self.groups_to_unfreeze:
            self._unfreeze(self.state.epoch)
        save_buffers(staged, self.model)
        return staged
