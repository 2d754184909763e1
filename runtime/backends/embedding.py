"""Text embeddings: contrastive training of a transformers encoder with in-batch negatives.

    train_contrastive(ctx)            anchor/positive[/negative] rows -> an encoder artifact
    fit_contrastive(ctx)              the same, keeping the trained encoder in memory (Fitted)
    recall_at_k(ctx, dir, split, k)   share of anchors whose own positive ranks in the top k
    evaluate(ctx, model_dir, split)   EvalResult: recall_at_k (the spec's k), accuracy, loss (None = the base)
    evaluate_file(ctx, dir, dataset)  the same on a data file named by a gate (regression on a general set)
    measure_latency(ctx, dir, split)  p50/p95/p99 seconds to embed one anchor text (tokenise + forward + pool)
    load_encoder(ctx, model_dir)      any artifact below (or the base), with its max_length

The model is AutoModel (no head), mean-pooled over the attention mask and L2-normalised; the loss,
the loop and its checkpoints are in embedding_loop.py. Every text method trains it: full (with
freeze/unfreeze), LoRA and QLoRA, prompt and prefix tuning (peft FEATURE_EXTRACTION models), and
ftc's bottleneck adapters.

Artifacts (run_dir/artifacts), safetensors only, each with ftc_artifact.json (pooling "mean",
normalize, max_length, how to load it without ftc):
    model/     the encoder (full, or LoRA merged): AutoModel.from_pretrained("model"); pooling in
               the sentence-transformers layout (modules.json, 1_Pooling/config.json,
               sentence_bert_config.json)
    adapter/   lora, qlora, prompt and prefix tuning: PeftModel.from_pretrained(AutoModel.from_pretrained(
               base), "adapter"); for lora also merged into model/; qlora is not merged (the base is
               quantised: `quantization` in ftc_artifact.json is its BitsAndBytesConfig)
    adapters/  ftc bottleneck adapters: bottleneck.load_adapters(AutoModel.from_pretrained(base), "adapters")
The TrainResult's model_dir is model/ when there is one, else the adapter folder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ftc.runtime import metrics
from ftc.runtime.api import EvalResult, TrainContext, TrainResult
from ftc.runtime.backends import bottleneck, hf, loading, text
from ftc.runtime.backends.artifacts import Fitted, publish, staging
from ftc.runtime.backends.embedding_loop import (
    Loop,
    device_of,
    embed,
    encode,
    info_nce,
    kept_rows,
    load_weights,
    max_len,
    mean_pool,
    recall_k,
    scores,
    split_loss,
    triples_of,
    usable_rows,
)
from ftc.runtime.backends.latency import DEFAULT_REQUESTS, model_name, time_requests, warmup_of

__all__ = ["embed", "encode", "evaluate", "evaluate_file", "evaluate_rows", "export_encoder", "fit_contrastive",
           "info_nce", "load_encoder", "mean_pool", "measure_latency", "recall_at_k", "train_contrastive"]

POOLING = {"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
           "pooling_mode_mean_sqrt_len_tokens": False}
POOL_NOTE = "mean-pool last_hidden_state over the attention mask (after any virtual tokens); L2-normalise"


def _load_base_encoder(ctx: TrainContext) -> tuple[Any, Any]:
    """(AutoModel of the base, BitsAndBytesConfig or None): quantised for qlora / `quantize`."""
    from transformers import AutoModel

    q = loading.quantization_config(ctx, None, "embedding")
    kwargs: dict[str, Any] = {"trust_remote_code": bool(ctx.spec.model.trust_remote_code)}
    if q is not None:
        kwargs.update(quantization_config=q,
                      device_map={"": 0} if hf.device_of(ctx).startswith("cuda") else {"": "cpu"})
    return AutoModel.from_pretrained(str(loading.base_dir(ctx)), **kwargs), q


def _attach(model: Any, ctx: TrainContext) -> Any:
    """The spec's method on an encoder (no head: nothing but the method trains)."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    m = ctx.spec.method
    if m.kind == "full":
        return text.attach_method(model, ctx)
    if m.kind == "adapters":
        bottleneck.prepare(model, m.bottleneck, m.placement, m.dropout, train_head=False)
        return model
    if loading.is_quantized(model):
        model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
            model, use_gradient_checkpointing=hf.train_block(ctx).gradient_checkpointing)
    config = text.peft_config(ctx, "generation")
    config.task_type = "FEATURE_EXTRACTION"
    return get_peft_model(model, config)


def fit_contrastive(ctx: TrainContext) -> Fitted:
    """In-batch-negatives training of a text encoder; keeps the trained encoder in memory."""
    sig = ctx.spec.signal
    if sig.anchor is None or sig.positive is None:
        raise ValueError("text contrastive training needs `anchor` and `positive` (image-text pairs belong to "
                         "the multimodal backend)")
    rec = hf.Recorder(ctx)
    tr = hf.train_block(ctx)
    loading.set_seed(tr.seed)
    tok = loading.load_tokenizer(loading.base_dir(ctx), bool(ctx.spec.model.trust_remote_code))
    base, quantization = _load_base_encoder(ctx)
    model = _attach(base, ctx)
    if quantization is None:
        model.to(hf.device_of(ctx))
    if tr.gradient_checkpointing:
        model.enable_input_require_grads()
        model.gradient_checkpointing_enable()
    loop = Loop(ctx, model, tok, rec)
    rec({"event": "start", "stage": "contrastive", "method": ctx.spec.method.kind, "max_steps": loop.total,
         "device": ctx.device, "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
         "total_params": sum(p.numel() for p in model.parameters())})
    state = loop.run()
    if state.stopped_early and state.best_checkpoint and Path(state.best_checkpoint).is_dir():
        load_weights(model, Path(state.best_checkpoint))  # the best evaluation, as load_best_model_at_end
        rec.note(f"early stopping at step {state.step}; the encoder of {Path(state.best_checkpoint).name} is kept")
    model.eval()
    out, model = export_encoder(ctx, model, tok, loop.max_length, quantization, rec)
    rec({"event": "end", "step": state.step, "stopped_early": state.stopped_early, "artifact": str(out),
         "best_checkpoint": state.best_checkpoint})
    result = TrainResult(out, "embedding", history=rec.history, steps=state.step, stopped_early=state.stopped_early,
                         best_checkpoint=Path(state.best_checkpoint) if state.best_checkpoint else None)
    return Fitted(result, model, tok, rec.history)


def train_contrastive(ctx: TrainContext) -> TrainResult:
    """In-batch-negatives training of a text encoder on anchor/positive[/negative] rows."""
    return fit_contrastive(ctx).result


# ---------------------------------------------------------------------------------------------
# Export and loading


def _write_info(folder: Path, info: dict[str, Any]) -> None:
    (folder / "ftc_artifact.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def _export_full(folder: Path, model: Any, tok: Any, max_length: int, info: dict[str, Any]) -> Path:
    tmp = staging(folder)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    hidden = int(model.config.hidden_size)
    (tmp / "1_Pooling").mkdir()
    (tmp / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": hidden, **POOLING},
                                                              indent=2) + "\n")
    (tmp / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_length,
                                                                "do_lower_case": False}, indent=2) + "\n")
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (tmp / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    _write_info(tmp, {**info, "kind": "embedding", "load": f"AutoModel.from_pretrained(this_folder); {POOL_NOTE}"})
    return publish(tmp, folder)


def export_encoder(ctx: TrainContext, model: Any, tok: Any, max_length: int, quantization: Any = None,
                   rec: hf.Recorder | None = None) -> tuple[Path, Any]:
    """Write the artifacts the module docstring lists; returns the TrainResult's model_dir and
    the model it holds (LoRA is merged in place: the returned encoder replaces `model`)."""
    root = ctx.run_dir / "artifacts"
    base = str(loading.base_dir(ctx))
    q = quantization.to_dict() if quantization is not None else None
    info: dict[str, Any] = {"format": "ftc-artifact", "version": 1, "method": ctx.spec.method.kind,
                            "task": "embedding", "base_model": base, "pooling": "mean", "normalize": True,
                            "max_length": max_length}
    if getattr(model, "ftc_adapters", None) is not None:
        tmp = staging(root / "adapters")
        bottleneck.save_adapters(model, tmp, base)
        tok.save_pretrained(str(tmp))
        load = f"bottleneck.load_adapters(AutoModel.from_pretrained(base_model), this_folder); {POOL_NOTE}"
        _write_info(tmp, {**info, "kind": "adapters", "load": load})
        return publish(tmp, root / "adapters"), model
    if not hasattr(model, "peft_config"):
        return _export_full(root / "model", model, tok, max_length, info), model
    tmp = staging(root / "adapter")
    for cfg in model.peft_config.values():
        cfg.base_model_name_or_path = base
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    kwargs = ", quantization_config=BitsAndBytesConfig.from_dict(quantization)" if q else ""
    load = f"PeftModel.from_pretrained(AutoModel.from_pretrained(base_model{kwargs}), this_folder); {POOL_NOTE}"
    _write_info(tmp, {**info, "kind": "adapter", "quantization": q, "load": load})
    adapter = publish(tmp, root / "adapter")
    if ctx.spec.method.kind != "lora" or q is not None:
        if rec is not None and ctx.spec.method.kind in ("lora", "qlora"):
            rec.note("the LoRA update is not merged into an encoder: the base is quantised")
        return adapter, model
    merged = model.merge_and_unload()
    return _export_full(root / "model", merged, tok, max_length, info), merged


def _load_peft_encoder(folder: Path, base: str, quantization: dict[str, Any] | None, device: str) -> Any:
    from peft import PeftModel
    from transformers import AutoModel, BitsAndBytesConfig

    kwargs: dict[str, Any] = {}
    if quantization:
        kwargs.update(quantization_config=BitsAndBytesConfig.from_dict(quantization),  # type: ignore[no-untyped-call]
                      device_map={"": 0} if device.startswith("cuda") else {"": "cpu"})
    return PeftModel.from_pretrained(AutoModel.from_pretrained(base, **kwargs), str(folder))


def load_encoder(ctx: TrainContext, model_dir: Path | None) -> tuple[Any, Any, int]:
    """(encoder, tokenizer, max_length) of any artifact of this backend, or of the base when None."""
    from transformers import AutoModel

    folder = model_dir if model_dir is not None else loading.base_dir(ctx)
    trust = bool(ctx.spec.model.trust_remote_code)
    tok = loading.load_tokenizer(folder, trust)
    info_path = folder / "ftc_artifact.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    device = hf.device_of(ctx)
    if (folder / "adapter_config.json").is_file():
        model = _load_peft_encoder(folder, info["base_model"], info.get("quantization"), device)
    elif bottleneck.is_adapter_folder(folder):
        model = bottleneck.load_adapters(AutoModel.from_pretrained(info["base_model"], trust_remote_code=trust),
                                         folder)
    else:
        model = AutoModel.from_pretrained(str(folder), trust_remote_code=trust)
    if not info.get("quantization"):
        model.to(device)
    max_length = info.get("max_length") or max_len(ctx, model)
    return model.eval(), tok, int(max_length)


# ---------------------------------------------------------------------------------------------
# Evaluation and latency


def _ranks(model: Any, tok: Any, rows: list[dict[str, Any]], ctx: TrainContext, max_length: int) -> list[int]:
    """For each row: how many of the rows' positives score strictly above its own."""
    return scores(model, tok, rows, ctx, max_length)[0]


def recall_at_k(ctx: TrainContext, model_dir: Path | None, split: str, k: int) -> float:
    """Share of the split's anchors whose own positive ranks in the top k of all its positives."""
    rows = usable_rows(ctx, split)
    if not rows:
        return math.nan
    model, tok, max_length = load_encoder(ctx, model_dir)
    return sum(r < k for r in _ranks(model, tok, rows, ctx, max_length)) / len(rows)


def evaluate_rows(ctx: TrainContext, model_dir: Path | None, rows: list[dict[str, Any]], name: str) -> EvalResult:
    """Every metric the language allows for `embedding`, on `rows` (named `name`), overall and per slice:

    recall_at_k      share of anchors whose own positive ranks in the top k of all the rows'
                     positives (k from `metric recall_at_k K`, else 5; also as recall_at_K), and
                     recall_at_1;
    accuracy         with a `negative` field, triplet accuracy: the anchor is closer to its positive
                     than to its hard negative (sentence-transformers' TripletEvaluator); without
                     one, top-1 retrieval accuracy (= recall_at_1);
    loss             the in-batch InfoNCE loss of training, in batches of `batch_size` (NaN for
                     a slice of one row: it has no in-batch negative).
    Per slice, rows are still ranked among all the rows (the loss batches only the slice's rows)."""
    kept = kept_rows(ctx, rows)
    if not kept:
        return EvalResult(split=name, metrics={}, n=0, extra={"skipped": len(rows)})
    usable = [rows[i] for i in kept]
    model, tok, max_length = load_encoder(ctx, model_dir)
    k = recall_k(ctx)
    ranks, wins = scores(model, tok, usable, ctx, max_length)

    def compute(idx: list[int]) -> dict[str, float]:
        r_k = sum(ranks[i] < k for i in idx) / len(idx)
        out = {"recall_at_k": r_k, f"recall_at_{k}": r_k, "recall_at_1": sum(ranks[i] < 1 for i in idx) / len(idx)}
        judged = [bool(wins[i]) for i in idx if wins[i] is not None]
        out["accuracy"] = sum(judged) / len(judged) if judged else out["recall_at_1"]
        out["loss"] = split_loss(model, tok, triples_of(ctx, [usable[i] for i in idx]), batch, temperature,
                                 max_length)
        return out

    batch, temperature = hf.train_block(ctx).batch_size, float(ctx.spec.signal.temperature)
    out = compute(list(range(len(usable))))
    slices: dict[str, dict[str, float]] = {}
    position = {row: i for i, row in enumerate(kept)}
    for slc in ctx.spec.data.slices if ctx.spec.data is not None else ():
        idx = [position[r] for r in metrics.slice_indices(rows, slc.conditions) if r in position]
        slices[slc.name] = {**compute(idx), "n": float(len(idx))} if idx else {"n": 0.0}
    accuracy = "triplet" if any(w is not None for w in wins) else "top-1 retrieval"
    return EvalResult(split=name, metrics=out, slices=slices, n=len(usable),
                      extra={"k": k, "accuracy": accuracy, "skipped": len(rows) - len(kept)})


def evaluate(ctx: TrainContext, model_dir: Path | None, split: str) -> EvalResult:
    """evaluate_rows on the spec's `split` (`model_dir` None: the base encoder)."""
    return evaluate_rows(ctx, model_dir, ctx.split_rows(split), split)


def evaluate_file(ctx: TrainContext, model_dir: Path | None, dataset: str) -> EvalResult:
    """evaluate_rows on a data file named by a gate (`gate regression <= 0.02 vs base on
    "data/general.jsonl"`): relative to the spec's folder, read like the spec's data (`fields`
    applied); it must hold anchor/positive rows."""
    from ftc.runtime.backends.text_eval import read_rows

    rows = read_rows(ctx, dataset)
    if not kept_rows(ctx, rows):
        sig = ctx.spec.signal
        raise ValueError(f"cannot evaluate the encoder on {dataset}: no row has both `{sig.anchor}` and "
                         f"`{sig.positive}` (after the spec's `fields` mapping; columns: "
                         f"{', '.join(sorted(rows[0])) if rows else 'none'})")
    return evaluate_rows(ctx, model_dir, rows, dataset)


def measure_latency(ctx: TrainContext, model_dir: Path | None, split: str = "test", warmup: int | None = None,
                    n: int = DEFAULT_REQUESTS) -> dict[str, Any]:
    """Seconds per request of the encoder: one anchor text of `split`, tokenised, encoded and
    mean-pooled into its normalised embedding (what a retrieval service does per query)."""
    sig = ctx.spec.signal
    rows = ctx.parts[split].rows if split in ctx.parts else next(iter(ctx.parts.values())).rows
    texts = [str(r[sig.anchor]) for r in rows if r.get(sig.anchor) is not None]
    if not texts:
        raise ValueError(f"no `{sig.anchor}` texts in `{split}` to time")
    model, tok, max_length = load_encoder(ctx, model_dir)

    def request(i: int) -> None:
        embed(model, tok, [texts[i % len(texts)]], max_length)

    return time_requests(request, device_of(model), warmup=warmup_of(ctx, warmup), n=n, request="embed",
                         model=model_name(model), field=sig.anchor, split=split)
