"""Multimodal backend: image-text contrastive fine-tuning of open_clip (CLIP-style) models.

    train(ctx) -> TrainResult                  fit(ctx) -> Fitted (the same, keeping the model)
    evaluate(ctx, model_dir, split) -> EvalResult           (model_dir None: the base)
    evaluate_file(ctx, model_dir, dataset) -> EvalResult    a gate's own image table
    evaluate_rows(ctx, model_dir, rows, name, root) -> EvalResult
    measure_latency(ctx, model_dir, split, warmup) -> dict  p50/p95/p99 seconds per search request
    load_trained(ctx, model_dir) -> (model, tokenizer, preprocess)

Training (multimodal_train.py): symmetric InfoNCE over in-batch negatives at the spec's
temperature (the model's logit scale is frozen at 1/temperature: the language has no learnable
temperature), `full` or peft `lora` on both towers, in embedding_loop's loop: seeded, gradient
accumulation, early stopping on the spec's metric (`val.loss`, `val.recall_at_k`, ...), atomic
checkpoints with retention, `--resume` bit-identical to an uninterrupted run (fp32).

The base is a local open_clip folder, hub ids are refused (multimodal_model.py). Artifacts
(run_dir/artifacts), safetensors only, each with ftc_artifact.json (how to load it without ftc):
    model/    full fine-tune: an open_clip folder (open_clip_config.json, open_clip_model.safetensors,
              the base's tokenizer files): open_clip.create_model_and_transforms("local-dir:model")
    adapter/  lora: PeftModel.from_pretrained(open_clip.create_model_and_transforms(
              "local-dir:" + base)[0], "adapter"); the base folder is adapter_config.json's
              base_model_name_or_path
    merged/   lora with `merge true`: the update merged into an open_clip folder, as model/
Images and captions are embedded with `encode_image` / `encode_text` and L2-normalised; the
evaluation preprocessing is the folder's own (open_clip_config.json's preprocess_cfg).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftc.runtime import metrics
from ftc.runtime.api import EvalResult, TrainContext, TrainResult
from ftc.runtime.backends import hf
from ftc.runtime.backends import multimodal_data as D
from ftc.runtime.backends.artifacts import Fitted
from ftc.runtime.backends.embedding_loop import recall_k
from ftc.runtime.backends.latency import DEFAULT_REQUESTS, model_name, time_requests, warmup_of
from ftc.runtime.backends.multimodal_model import base_dir, load_trained
from ftc.runtime.backends.multimodal_train import fit

__all__ = ["base_dir", "evaluate", "evaluate_file", "evaluate_rows", "fit", "load_trained", "measure_latency",
           "train"]


def train(ctx: TrainContext) -> TrainResult:
    """Contrastive fine-tuning of the spec's open_clip base on its image-caption pairs."""
    fitted: Fitted = fit(ctx)
    return fitted.result


def evaluate_rows(ctx: TrainContext, model_dir: Path | None, rows: list[dict[str, Any]], name: str,
                  root: Path) -> EvalResult:
    """Every metric the language allows for `image_text_contrastive`, on `rows` (image paths
    relative to `root`), overall and per slice. Each row's image and caption are a pair; the
    candidates are the rows' own images and captions (retrieval within the evaluated set):

    recall_at_k                text->image: the share of captions whose own image ranks in the top
                               k of the rows' images (k of `metric recall_at_k K`, else 5; also as
                               recall_at_K; recall_at_1 the same at k 1). This is the query
                               direction of the text embedding backend's convention (the anchor,
                               here the caption, queries; the positive, here the image, is found):
                               searching an image library by description. A gate on `recall_at_k`
                               reads this one.
    image_to_text_recall_at_k  the other direction: each image's own caption in the top k of the
                               rows' captions (text_to_image_recall_at_k repeats recall_at_k);
                               image_to_text_recall_at_1 likewise.
    zero_shot_accuracy         each image classified among the distinct captions of the rows, used
                               as the class prompts (CLIP's zero-shot protocol with the set's own
                               captions as classes): right when the highest-scoring distinct
                               caption is its own. Where captions are unique this equals
                               image_to_text_recall_at_1; where many images share a caption (class
                               prompts such as "a photo of a cat") it is zero-shot classification.
    loss                       the training loss (symmetric InfoNCE at the spec's temperature) in
                               batches of `batch_size` in row order; NaN when fewer than 2 rows.
    Per slice, rows are still ranked among all the rows (the loss batches only the slice's rows).
    """
    pairs = D.pairs_of(ctx, rows, root)
    if not len(pairs):
        return EvalResult(split=name, metrics={}, n=0, extra={"skipped": len(rows)})
    model, tok, preprocess = load_trained(ctx, model_dir)
    images, texts = D.encode(model, tok, D.load_pixels(pairs.images, preprocess), pairs.captions)
    sc = D.scores(images, texts, pairs.captions)
    k, batch, temperature = recall_k(ctx), hf.train_block(ctx).batch_size, float(ctx.spec.signal.temperature)

    def compute(idx: list[int]) -> dict[str, float]:
        return D.metrics_of(sc, idx, k, D.split_loss(images, texts, idx, batch, temperature))

    out = compute(list(range(len(pairs))))
    slices: dict[str, dict[str, float]] = {}
    position = {row: i for i, row in enumerate(pairs.kept)}
    for slc in ctx.spec.data.slices if ctx.spec.data is not None else ():
        idx = [position[r] for r in metrics.slice_indices(rows, slc.conditions) if r in position]
        slices[slc.name] = {**compute(idx), "n": float(len(idx))} if idx else {"n": 0.0}
    return EvalResult(split=name, metrics=out, slices=slices, n=len(pairs),
                      extra={"k": k, "recall_at_k": "text-to-image", "zero_shot_classes": len(set(pairs.captions)),
                             "skipped": len(rows) - len(pairs)})


def evaluate(ctx: TrainContext, model_dir: Path | None, split: str) -> EvalResult:
    """evaluate_rows on the spec's `split` (`model_dir` None: the base)."""
    return evaluate_rows(ctx, model_dir, ctx.split_rows(split), split, D.image_root(ctx, split))


def evaluate_file(ctx: TrainContext, model_dir: Path | None, dataset: str) -> EvalResult:
    """evaluate_rows on an image table named by a gate (`gate regression <= 0.02 vs base on
    "data/general.jsonl"`): relative to the file that wrote the gate, its image paths relative
    to the spec's `image_root` when it has one, else to the table's folder; `fields` applied."""
    from ftc.compiler.data.contracts import apply_mapping
    from ftc.compiler.data.readers import read_table

    gates = ctx.spec.eval.gates if ctx.spec.eval is not None else ()
    where = next((g.span for g in gates if getattr(g, "dataset", None) == dataset), None)
    path = ctx.checked.resolve_path(dataset, where)
    root = D.image_root(ctx, table=path)
    data = ctx.spec.data
    mapping = dict(data.fields.mapping) if data is not None and data.fields is not None else {}
    image_field = mapping.get(ctx.spec.signal.image, ctx.spec.signal.image)  # the file's column
    table = read_table(path, dataset, "image_table", image_root=root, image_field=image_field)
    if table.problems:  # a missing image drops its row: say so rather than score fewer rows
        raise ValueError(f"cannot evaluate on {dataset}: " + "; ".join(
            p.message + (f" (line {p.line})" if p.line else "") for p in table.problems[:3]))
    rows = apply_mapping(table.rows, mapping) if mapping else list(table.rows)
    if not len(D.pairs_of(ctx, rows, root)):
        sig = ctx.spec.signal
        raise ValueError(f"cannot evaluate on {dataset}: no row has both `{sig.image}` and `{sig.caption}`")
    return evaluate_rows(ctx, model_dir, rows, dataset, root)


def measure_latency(ctx: TrainContext, model_dir: Path | None, split: str = "test", warmup: int | None = None,
                    n: int = DEFAULT_REQUESTS) -> dict[str, Any]:
    """Seconds per search request: one caption of `split` tokenised, embedded and scored against
    the split's image embeddings (computed once beforehand, as a search service holds its index),
    returning the top k: the query direction of `recall_at_k`."""
    import torch

    name = split if split in ctx.parts else next(iter(ctx.parts))
    pairs = D.pairs_of(ctx, ctx.parts[name].rows, D.image_root(ctx, name))
    if not len(pairs):
        raise ValueError(f"no image-caption pairs in `{name}` to time")
    model, tok, preprocess = load_trained(ctx, model_dir)
    gallery = D.embed_gallery(model, D.load_pixels(pairs.images, preprocess))
    k = min(recall_k(ctx), len(pairs))

    def request(i: int) -> None:
        query = D.embed_texts(model, tok, [pairs.captions[i % len(pairs)]])
        torch.topk(query @ gallery.T, k, dim=-1)

    return time_requests(request, gallery.device, warmup=warmup_of(ctx, warmup), n=n,
                         request="text-to-image search (embed one caption, rank the images)", gallery=len(pairs),
                         model=model_name(model), field=ctx.spec.signal.caption, split=name, k=k)
