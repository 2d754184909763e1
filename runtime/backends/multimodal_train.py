"""Contrastive training of an open_clip model: the text embedding loop with image-text hooks.

embedding_loop.Loop does the optimizer steps, gradient accumulation, clipping, the schedule,
checkpoints (trainable weights, optimizer, scheduler and RNG states in safetensors and JSON,
finished atomically with retention), `--resume` and early stopping; ClipLoop supplies the
examples (image index, caption; the image decoded when its batch is built), the symmetric InfoNCE loss and the validation metrics
(recall_at_k text->image, image->text recall, zero-shot accuracy, loss), so that early stopping
can watch `val.recall_at_k` as well as `val.loss`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftc.runtime.api import TrainContext, TrainResult
from ftc.runtime.backends import hf, loading
from ftc.runtime.backends import multimodal_data as D
from ftc.runtime.backends import multimodal_model as M
from ftc.runtime.backends.artifacts import Fitted
from ftc.runtime.backends.embedding_loop import Loop, load_weights, recall_k


class ClipLoop(Loop):
    """Loop over (image index, caption) items of an open_clip model (`tok` is its tokenizer)."""

    def __init__(self, ctx: TrainContext, model: Any, tok: Any, rec: hf.Recorder, preprocess: Any) -> None:
        self.preprocess = preprocess
        super().__init__(ctx, model, tok, rec)

    def setup(self) -> None:
        train, val = D.split_pairs(self.ctx, "train"), D.split_pairs(self.ctx, "val")
        self.pixels = D.load_pixels(train.images, self.preprocess)  # decoded a batch at a time
        self.items = list(enumerate(train.captions))
        self.val_pixels = D.load_pixels(val.images, self.preprocess)
        self.val = list(val.captions)
        self.k = recall_k(self.ctx)

    def loss(self, batch: list[Any], index: int) -> Any:
        import torch

        return D.batch_loss(self.model, self.tok, torch.stack([self.pixels[b[0]] for b in batch]),
                            [b[1] for b in batch], self.temperature)

    def validate(self) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        images, texts = D.encode(self.model, self.tok, self.val_pixels, self.val)
        self.model.train(was_training)
        idx = list(range(len(self.val)))
        loss = D.split_loss(images, texts, idx, self.tr.batch_size, self.temperature)
        out = D.metrics_of(D.scores(images, texts, self.val), idx, self.k, loss)
        return {name: out[name] for name in ("loss", "recall_at_k", "image_to_text_recall_at_k", "zero_shot_accuracy")}


def fit(ctx: TrainContext) -> Fitted:
    """Train the spec's method on the image-text pairs; keeps the trained model in memory
    (`Fitted.model`: the peft model for LoRA, the open_clip model for full; `.tokenizer`)."""
    sig = ctx.spec.signal
    if sig.kind != "contrastive" or sig.image is None or sig.caption is None:
        raise ValueError("the multimodal backend trains `signal contrastive { image ...; caption ... }`")
    rec = hf.Recorder(ctx)
    tr = hf.train_block(ctx)
    if tr.augment:
        rec.note(f"augment {list(tr.augment)} is not applied to image-text pairs (a flip or crop can "
                 "contradict a caption that says where things are); training uses the evaluation preprocessing")
    loading.set_seed(tr.seed)
    device = hf.device_of(ctx)
    base, tok, preprocess = M.load_clip(M.base_dir(ctx), device)
    loading.set_seed(tr.seed)  # LoRA's initialisation draws from the seeded generator, whatever loading drew
    model = M.attach(base, ctx)
    model.to(device)
    if tr.gradient_checkpointing:
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        inner.set_grad_checkpointing(True)
    loop = ClipLoop(ctx, model, tok, rec, preprocess)
    rec({"event": "start", "stage": "contrastive", "method": ctx.spec.method.kind, "max_steps": loop.total,
         "device": ctx.device, "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
         "total_params": sum(p.numel() for p in model.parameters())})
    state = loop.run()
    if state.stopped_early and state.best_checkpoint and Path(state.best_checkpoint).is_dir():
        load_weights(model, Path(state.best_checkpoint))
        rec.note(f"early stopping at step {state.step}; the model of {Path(state.best_checkpoint).name} is kept")
    model.eval()
    out, merged, kind, model = M.export(ctx, model, rec)
    rec({"event": "end", "step": state.step, "stopped_early": state.stopped_early, "artifact": str(out),
         "merged": str(merged) if merged else None, "best_checkpoint": state.best_checkpoint})
    result = TrainResult(out, kind, merged_dir=merged, history=rec.history, steps=state.step,
                         stopped_early=state.stopped_early,
                         best_checkpoint=Path(state.best_checkpoint) if state.best_checkpoint else None)
    return Fitted(result, model, tok, rec.history)
