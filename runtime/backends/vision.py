"""Vision backend: image classifiers on timm (`modality vision`, `task image_classification`).

Public API (the executor's):
    train(ctx) -> TrainResult            fit(ctx) -> Fitted (the same, keeping the model in memory)
    evaluate(ctx, model_dir, split) -> EvalResult         model_dir None = the base   vision_eval.py
    evaluate_file(ctx, model_dir, dataset) -> EvalResult  an image folder/table named by a gate
    measure_latency(ctx, model_dir, split="test", warmup=None, n=50) -> dict
    load_trained(ctx, model_dir) -> (model, head note)                                 vision_model.py

The pieces: vision_data.py (where images are, decoding, timm preprocessing, augmentations),
vision_model.py (the local timm base and its head, full / LoRA, artifacts), vision_loop.py (the
training loop, checkpoints, resume, early stopping), vision_eval.py (metrics, slices, latency).

Training is `signal sft { input "image"; target "label" }`: cross-entropy on the spec's labels,
seeded (the same seed gives the same weights) and resumable to the same final weights. Events go
through ctx.log like the text backends': start, step (loss, lr, grad_norm, samples_per_s, rss_mb,
gpu_mb on CUDA), eval (the val split's metrics), note, end. Artifacts load without ftc (timm and
peft only): see vision_model.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftc.runtime.api import EvalResult, TrainContext, TrainResult
from ftc.runtime.backends import vision_data as vd
from ftc.runtime.backends import vision_eval as ve
from ftc.runtime.backends import vision_model as vm
from ftc.runtime.backends.artifacts import Fitted
from ftc.runtime.backends.hf import Recorder, device_of, train_block
from ftc.runtime.backends.loading import labels_of, set_seed
from ftc.runtime.backends.vision_loop import Loop, load_checkpoint_weights

__all__ = ["evaluate", "evaluate_file", "fit", "load_trained", "measure_latency", "train"]


def _check(ctx: TrainContext) -> None:
    sig, model = ctx.spec.signal, ctx.spec.model
    if model.task != "image_classification":
        raise ValueError(f"the vision backend trains `task image_classification`, not `{model.task}`")
    if sig is None or sig.kind != "sft" or not sig.input or not sig.target:
        raise ValueError('image classification trains with `signal sft { input "image"; target "label" }`')
    if "train" not in ctx.parts or len(ctx.parts["train"]) == 0:
        raise ValueError("no training rows")
    vd.refuse_unknown(tuple(train_block(ctx).augment))


def _split_images(ctx: TrainContext, split: str, labels: list[str], rec: Recorder) -> vd.Images:
    found = vd.load_images(ctx, ctx.parts[split].rows, vd.image_root(ctx, split), labels)
    if found.skipped:
        rec.note(f"skipped {found.skipped} {split} row(s) without an image or with a label outside `labels`")
    return found


def fit(ctx: TrainContext) -> Fitted:
    """Train as the spec says and write the artifacts; keeps the trained model (tests, merging)."""
    _check(ctx)
    rec = Recorder(ctx)
    tr = train_block(ctx)
    set_seed(tr.seed)
    labels = labels_of(ctx)
    model, note = vm.load_base(ctx)
    if note:
        rec.note(note)
    model, groups = vm.attach(model, ctx)
    model.to(device_of(ctx))
    if tr.gradient_checkpointing:
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        inner.set_grad_checkpointing(True)
    train = _split_images(ctx, "train", labels, rec)
    if not train.images:
        raise ValueError("no training image has a label in `labels`")
    has_val = "val" in ctx.parts and len(ctx.parts["val"]) > 0
    val, val_labels = None, []
    found = _split_images(ctx, "val", labels, rec) if has_val else None
    if found is not None and found.images:  # decoded a batch at a time at every validation
        val, val_labels = found.images, found.labels
    if tr.early_stopping is not None and val is None:
        rec.note("early stopping needs a validation split; there is none, so it is off")
    loop = Loop(ctx, model, groups, train, val, val_labels, rec)
    rec({"event": "start", "method": ctx.spec.method.kind, "task": ctx.spec.model.task, "precision": loop.precision,
         "requested_precision": tr.precision, "max_steps": loop.total, "device": ctx.device,
         "augment": list(tr.augment), "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
         "total_params": sum(p.numel() for p in model.parameters())})
    state = loop.run()
    best = Path(state.best_checkpoint) if state.best_checkpoint else None
    if state.stopped_early:
        rec.note(f"early stopping at step {state.step}: {tr.early_stopping.metric if tr.early_stopping else ''} did "
                 f"not improve for {tr.early_stopping.patience if tr.early_stopping else 0} evaluations",
                 step=state.step)
    if best is not None and best.is_dir() and tr.early_stopping is not None:
        load_checkpoint_weights(model, best)  # the best evaluation's weights, as load_best_model_at_end
        rec.note(f"the weights of {best.name} (best {tr.early_stopping.metric}) are the final ones")
    model.eval()
    model_dir, kind = vm.save_artifacts(ctx, model)
    merged = _merged(ctx, model, rec)
    rec({"event": "end", "step": state.step, "stopped_early": state.stopped_early, "artifact": str(model_dir),
         "best_checkpoint": str(best) if best else None, "best_metric": state.best, "precision": loop.precision})
    result = TrainResult(model_dir=model_dir, kind=kind, merged_dir=merged, history=rec.history, steps=state.step,
                         stopped_early=state.stopped_early, best_checkpoint=best)
    return Fitted(result, model, None, rec.history)


def _merged(ctx: TrainContext, model: Any, rec: Recorder) -> Path | None:
    try:
        return vm.export_merged(ctx, model, rec)
    except (ValueError, RuntimeError) as e:  # peft cannot merge some layers (grouped convolutions)
        rec.note(f"`merge true` is skipped: {e}")
        return None


def train(ctx: TrainContext) -> TrainResult:
    """Fine-tune the spec's timm base on its images; see the module docstring."""
    return fit(ctx).result


def evaluate(ctx: TrainContext, model_dir: Path | None, split: str) -> EvalResult:
    """Metrics of the model in `model_dir` (None = the base) on `split`, overall and per slice."""
    return ve.evaluate(ctx, model_dir, split)


def evaluate_file(ctx: TrainContext, model_dir: Path | None, dataset: str) -> EvalResult:
    """The same metrics on an image folder or table named by a gate, relative to the gate's file."""
    return ve.evaluate_file(ctx, model_dir, dataset)


def measure_latency(ctx: TrainContext, model_dir: Path | None, split: str = "test", warmup: int | None = None,
                    n: int = 50) -> dict[str, Any]:
    """p50/p95/p99 seconds of single-image requests after `warmup` untimed ones."""
    return ve.measure_latency(ctx, model_dir, split, warmup, n)


def load_trained(ctx: TrainContext, model_dir: Path | None) -> tuple[Any, str | None]:
    return vm.load_trained(ctx, model_dir)
