"""Evaluation and latency for the vision backend (public through vision.py).

Every metric image classification allows, with text_eval's names: accuracy, precision/recall/f1
(.micro, .macro, .weighted, and the bare name = the declared average, macro otherwise), one-vs-rest
auc and loss (mean cross-entropy); per `slice` of the data block (a slice filters on row fields:
`label`, or a column of an image table); the confusion matrix and a few predictions in `extra`,
and for the base, extra["head"] when its head is not the base's own (vision_model.load_base).
Latency: one request is one image file decoded, preprocessed and classified, timed by latency.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftc.runtime import metrics
from ftc.runtime.api import EvalResult, TrainContext
from ftc.runtime.backends import vision_data as vd
from ftc.runtime.backends import vision_model as vm
from ftc.runtime.backends.latency import DEFAULT_REQUESTS, model_name, time_requests, warmup_of
from ftc.runtime.backends.loading import labels_of
from ftc.runtime.backends.text_eval import _slices, declared_metrics
from ftc.runtime.backends.vision_loop import predict, scores

SAMPLES = 5
EVAL_BATCH = 64


def evaluate_rows(ctx: TrainContext, model_dir: Path | None, rows: list[dict[str, Any]], root: Path,
                  name: str) -> EvalResult:
    """Every metric on `rows` (images relative to `root`), overall and per slice."""
    model, note = vm.load_trained(ctx, model_dir)
    labels = labels_of(ctx)
    found = vd.load_images(ctx, rows, root, labels)
    transform = vd.eval_transform(model)
    probs: Any = predict(model, transform, found.images, EVAL_BATCH) if found.images else None
    y = found.labels
    wanted = declared_metrics(ctx)

    def compute(idx: list[int]) -> dict[str, float]:
        return scores([y[i] for i in idx], probs[idx], wanted)

    pred = probs.argmax(axis=1).tolist() if probs is not None else []
    matrix = metrics.confusion_matrix(y, pred, len(labels)).tolist()
    samples = [{"input": found.names[i], "target": labels[y[i]], "prediction": labels[pred[i]]}
               for i in range(min(SAMPLES, len(y)))]
    extra: dict[str, Any] = {"confusion_matrix": {"labels": labels, "matrix": matrix}, "samples": samples,
                             "skipped": found.skipped}
    if note:
        extra["head"] = note
    return EvalResult(split=name, metrics=compute(list(range(len(y)))) if y else {},
                      slices=_slices(ctx, rows, found.kept, compute) if y else {}, n=len(y), extra=extra)


def evaluate(ctx: TrainContext, model_dir: Path | None, split: str) -> EvalResult:
    return evaluate_rows(ctx, model_dir, ctx.split_rows(split), vd.image_root(ctx, split), split)


def read_rows(ctx: TrainContext, dataset: str) -> tuple[list[dict[str, Any]], Path]:
    """The rows of an image folder or image table named in a gate (`on "data/general"`), relative
    to the file that wrote the gate, and the folder its image paths are relative to."""
    from ftc.compiler.data.contracts import apply_mapping
    from ftc.compiler.data.readers import read_table

    gates = ctx.spec.eval.gates if ctx.spec.eval is not None else ()
    where = next((g.span for g in gates if getattr(g, "dataset", None) == dataset), None)
    path = ctx.checked.resolve_path(dataset, where)
    data = ctx.spec.data
    root = (ctx.checked.resolve_path(data.image_root, data.at("image_root")).resolve()
            if data is not None and data.image_root else vd.root_of(path))
    fmt = None if path.is_dir() else ("image_table" if data is not None and data.format == "image_table" else None)
    table = read_table(path, dataset, fmt, image_root=root, image_field=ctx.spec.signal.input or "image")
    if not table.rows:
        why = "; ".join(p.message for p in table.problems[:3]) or "it holds no rows"
        raise ValueError(f"cannot evaluate on {dataset}: {why}")
    mapping = dict(data.fields.mapping) if data is not None and data.fields is not None else {}
    return (apply_mapping(table.rows, mapping) if mapping else list(table.rows)), root


def evaluate_file(ctx: TrainContext, model_dir: Path | None, dataset: str) -> EvalResult:
    rows, root = read_rows(ctx, dataset)
    return evaluate_rows(ctx, model_dir, rows, root, dataset)


def measure_latency(ctx: TrainContext, model_dir: Path | None, split: str = "test", warmup: int | None = None,
                    n: int = DEFAULT_REQUESTS) -> dict[str, Any]:
    """p50/p95/p99 seconds of single-image requests (decode the file, preprocess, classify) after
    `warmup` untimed ones (default: the spec's `latency_warmup`)."""
    model, _ = vm.load_trained(ctx, model_dir)
    if split not in ctx.parts:
        split = next(iter(ctx.parts))
    sig = ctx.spec.signal
    rows = [r for r in ctx.split_rows(split) if r.get(sig.input) is not None]
    if not rows:
        raise ValueError(f"no usable rows in `{split}` to time")
    root = vd.image_root(ctx, split)
    transform = vd.eval_transform(model)
    device = next(model.parameters()).device

    def request(i: int) -> None:
        image = vd.open_image(rows[i % len(rows)][sig.input], root)
        model(transform(image).unsqueeze(0).to(device))

    return time_requests(request, device, warmup=warmup_of(ctx, warmup), n=n, model=model_name(model),
                         request="one image: decode, preprocess, classify")
