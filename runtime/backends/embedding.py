"""Text embeddings: contrastive training of a transformers encoder with in-batch negatives.

    train_contrastive(ctx)            anchor/positive[/negative] rows -> an encoder folder
    recall_at_k(ctx, dir, split, k)   share of anchors whose own positive ranks in the top k
    evaluate(ctx, model_dir, split)   EvalResult: recall_at_k (the spec's k), loss (None = the base)

The model is AutoModel (no head), mean-pooled over the attention mask and L2-normalised. The loss
is InfoNCE: for a batch of B anchors the candidates are the B positives (and, with a `negative`
field, the B hard negatives); each anchor's own positive is its target, every other candidate a
negative; logits are cosine similarities over the signal's temperature. This is
sentence-transformers' MultipleNegativesRankingLoss, written out in a few lines rather than
adding that package (not a dependency of ftc).

Artifacts (run_dir/artifacts), safetensors only:
    model/     the encoder, LoRA merged: AutoModel.from_pretrained("model") without ftc; pooling
               in the sentence-transformers layout (modules.json, 1_Pooling/config.json,
               sentence_bert_config.json) and ftc_artifact.json
    adapter/   with LoRA, the adapter alone: PeftModel.from_pretrained(AutoModel.from_pretrained(base), "adapter")

Checkpoints (run_dir/checkpoints/checkpoint-N) hold the trainable weights (safetensors),
optimizer and scheduler state and state.json; each is written under .staging and moved into place
with its COMPLETE marker (runtime/checkpoints.py), so resume never reads a half-written one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftc.compiler import schema as s
from ftc.runtime import checkpoints, metrics
from ftc.runtime.api import EvalResult, TrainContext, TrainResult
from ftc.runtime.backends import text
from ftc.runtime.backends.artifacts import publish, staging

POOLING = {"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
           "pooling_mode_mean_sqrt_len_tokens": False}
Triple = tuple[str, str, str | None]


# ---------------------------------------------------------------------------------------------
# Encoding and the loss


def mean_pool(hidden: Any, mask: Any) -> Any:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def embed(model: Any, tok: Any, texts: list[str], max_length: int) -> Any:
    """Normalised mean-pooled embeddings (with gradients when the model trains)."""
    import torch.nn.functional as F

    enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    enc = {k: v.to(_device(model)) for k, v in enc.items()}
    return F.normalize(mean_pool(model(**enc).last_hidden_state, enc["attention_mask"]), dim=-1)


def encode(model: Any, tok: Any, texts: list[str], max_length: int, batch: int = 64) -> Any:
    import torch

    with torch.inference_mode():
        return torch.cat([embed(model, tok, texts[i:i + batch], max_length) for i in range(0, len(texts), batch)])


def info_nce(anchors: Any, positives: Any, negatives: Any | None, temperature: float) -> Any:
    import torch
    import torch.nn.functional as F

    candidates = positives if negatives is None else torch.cat([positives, negatives], 0)
    logits = anchors @ candidates.T / temperature
    return F.cross_entropy(logits, torch.arange(anchors.shape[0], device=anchors.device))


def _device(model: Any) -> Any:
    return next(model.parameters()).device


def _batch_loss(model: Any, tok: Any, batch: list[Triple], temperature: float, max_length: int) -> Any:
    a = embed(model, tok, [t[0] for t in batch], max_length)
    p = embed(model, tok, [t[1] for t in batch], max_length)
    n = embed(model, tok, [t[2] or "" for t in batch], max_length) if batch[0][2] is not None else None
    return info_nce(a, p, n, temperature)


def _triples(ctx: TrainContext, split: str) -> list[Triple]:
    sig = ctx.spec.signal
    part = ctx.parts.get(split)
    rows = part.rows if part is not None else []
    return [(str(r[sig.anchor]), str(r[sig.positive]), str(r[sig.negative]) if sig.negative else None)
            for r in rows if r.get(sig.anchor) is not None and r.get(sig.positive) is not None
            and (not sig.negative or r.get(sig.negative) is not None)]


def _batches(items: list[Any], order: list[int], size: int) -> list[list[Any]]:
    out = [[items[i] for i in order[j:j + size]] for j in range(0, len(order), size)]
    return [b for b in out if len(b) > 1]  # a single row has no in-batch negative


def _total_steps(ctx: TrainContext, n: int) -> int:
    """Optimizer steps: the spec's `steps`, else epochs × steps per epoch (batches of one row are
    skipped), capped by ctx.max_steps."""
    tr = text.train_block(ctx)
    batches = n // tr.batch_size + (1 if n % tr.batch_size > 1 else 0)
    planned = tr.steps or max(1, math.ceil(batches / tr.grad_accum)) * (tr.epochs or 1)
    return min(planned, ctx.max_steps) if ctx.max_steps else planned


def _max_len(ctx: TrainContext, model: Any) -> int:
    data = ctx.spec.data
    limit = int(getattr(model.config, "max_position_embeddings", None) or 512)
    return min(limit, data.max_length.tokens) if data is not None and data.max_length is not None else limit


def _split_loss(model: Any, tok: Any, items: list[Triple], batch: int, temperature: float,
                max_length: int) -> float:
    import torch

    batches = _batches(items, list(range(len(items))), batch)
    if not batches:
        return math.nan
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        losses = [float(_batch_loss(model, tok, b, temperature, max_length)) for b in batches]
    model.train(was_training)
    return sum(losses) / len(losses)


# ---------------------------------------------------------------------------------------------
# Checkpoints


@dataclass
class _State:
    step: int = 0
    epoch: int = 0
    micro: int = 0  # micro-batches of `epoch` consumed
    best: float | None = None
    bad_evals: int = 0
    best_checkpoint: str | None = None
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def _save_checkpoint(folder: Path, model: Any, optimizer: Any, scheduler: Any, state: _State,
                     keep: int | None) -> Path:
    import torch
    from safetensors.torch import save_file

    name = f"checkpoint-{state.step}"
    staging = folder / checkpoints.STAGING
    shutil.rmtree(staging, ignore_errors=True)
    tmp = staging / name
    tmp.mkdir(parents=True)
    weights = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
    save_file(weights, str(tmp / "trainable.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(asdict(state), default=str), encoding="utf-8")
    (tmp / checkpoints.COMPLETE).write_text(json.dumps({"step": state.step}) + "\n", encoding="utf-8")
    final = folder / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    shutil.rmtree(staging, ignore_errors=True)
    checkpoints.rotate(folder, keep if keep is not None else 1, state.best_checkpoint)
    return final


def _load_weights(model: Any, checkpoint: Path) -> None:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(checkpoint / "trainable.safetensors")), strict=False)


def _resume(last: Path, model: Any, optimizer: Any, scheduler: Any) -> _State:
    import torch

    _load_weights(model, last)
    saved = torch.load(last / "optimizer.pt", map_location=_device(model), weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    return _State(**json.loads((last / "state.json").read_text(encoding="utf-8")))


# ---------------------------------------------------------------------------------------------
# Training


def _optimizer(params: list[Any], tr: s.Train) -> Any:
    import torch

    if tr.optimizer == "sgd":
        return torch.optim.SGD(params, lr=tr.learning_rate, momentum=0.9, weight_decay=tr.weight_decay)
    return torch.optim.AdamW(params, lr=tr.learning_rate, weight_decay=tr.weight_decay)


def _scheduler(optimizer: Any, tr: s.Train, total: int) -> Any:
    from transformers import get_scheduler

    name = ("constant_with_warmup" if tr.warmup else "constant") if tr.schedule == "constant" else tr.schedule
    return get_scheduler(name, optimizer, num_warmup_steps=math.ceil(total * tr.warmup), num_training_steps=total)


class _Loop:
    """Optimizer steps over shuffled micro-batches; at each epoch end (or every `checkpoints every
    N steps`): validation loss (with early stopping) and a checkpoint."""

    def __init__(self, ctx: TrainContext, model: Any, tok: Any, rec: text.Recorder) -> None:
        import torch

        self.ctx, self.model, self.tok, self.rec = ctx, model, tok, rec
        self.tr = tr = text.train_block(ctx)
        self.temperature = float(ctx.spec.signal.temperature)
        self.items, self.val = _triples(ctx, "train"), _triples(ctx, "val")
        self.max_length = _max_len(ctx, model)
        self.total = _total_steps(ctx, len(self.items))
        self.optimizer = _optimizer([p for p in model.parameters() if p.requires_grad], tr)
        self.scheduler = _scheduler(self.optimizer, tr, self.total)
        self.folder = ctx.run_dir / "checkpoints"
        self.every = tr.checkpoints.every if tr.checkpoints is not None else None
        self.keep = tr.checkpoints.keep if tr.checkpoints is not None else None
        precision = text.resolve_precision(ctx, rec)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        self.state = _State()
        self.saved_at = -1

    def run(self) -> _State:
        last = text.resume_checkpoint(self.ctx, self.rec)
        if last is not None:
            self.state = _resume(Path(last), self.model, self.optimizer, self.scheduler)
            self.rec.history[:0] = self.state.history  # the events before the resume, then ours
            self.state.history = self.rec.history
            self.saved_at = self.state.step
        self.state.history = self.rec.history
        self.model.train()
        while self.state.step < self.total and not self.state.stopped_early:
            order = [int(i) for i in _permutation(len(self.items), self.tr.seed, self.state.epoch)]
            batches = _batches(self.items, order, self.tr.batch_size)
            if not batches:
                raise ValueError(f"in-batch negatives need batches of 2 rows or more: {len(self.items)} "
                                 f"training rows, batch_size {self.tr.batch_size}")
            self._epoch(batches)
            if self.state.step >= self.total or self.state.stopped_early:
                break
            self.state.epoch, self.state.micro = self.state.epoch + 1, 0
            if self.every is None:
                self._checkpoint()
        if self.saved_at != self.state.step:
            self._checkpoint()
        return self.state

    def _epoch(self, batches: list[list[Triple]]) -> None:
        accum = self.tr.grad_accum
        for i in range(self.state.micro, len(batches), accum):
            start = time.perf_counter()
            group = batches[i:i + accum]
            loss = self._step(group)
            self.state.step += 1
            self.state.micro = i + len(group)
            seconds = max(time.perf_counter() - start, 1e-9)
            self._log(loss, sum(len(b) for b in group) / seconds)
            if self.every is not None and self.state.step % self.every == 0:
                self._checkpoint()
            if self.state.step >= self.total or self.state.stopped_early:
                return

    def _step(self, group: list[list[Triple]]) -> float:
        import contextlib

        import torch

        total = 0.0
        for batch in group:
            cast = (torch.autocast("cuda", dtype=self.dtype) if self.dtype is not None
                    else contextlib.nullcontext())
            with cast:
                loss = _batch_loss(self.model, self.tok, batch, self.temperature, self.max_length) / len(group)
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            total += float(loss.detach())
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.requires_grad]
        clip = self.tr.max_grad_norm if self.tr.max_grad_norm > 0 else math.inf
        self.grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total

    def _log(self, loss: float, samples_per_s: float) -> None:
        from ftc.runtime.backends.monitor import gpu_mb, rss_mb

        event: dict[str, Any] = {"event": "step", "step": self.state.step, "epoch": self.state.epoch,
                                 "loss": loss, "lr": float(self.scheduler.get_last_lr()[0]),
                                 "grad_norm": self.grad_norm, "samples_per_s": samples_per_s,
                                 "rss_mb": round(rss_mb(), 1)}
        gpu = gpu_mb()
        if gpu is not None:
            event["gpu_mb"] = round(gpu, 1)
        self.rec(event)

    def _checkpoint(self) -> None:
        es = self.tr.early_stopping
        if self.val:
            loss = _split_loss(self.model, self.tok, self.val, self.tr.batch_size, self.temperature, self.max_length)
            self.rec({"event": "eval", "step": self.state.step, "split": "val", "loss": loss})
            if es is not None and not math.isnan(loss):
                if self.state.best is None or loss < self.state.best - es.min_delta:
                    self.state.best, self.state.bad_evals = loss, 0
                    self.state.best_checkpoint = str(self.folder / f"checkpoint-{self.state.step}")
                else:
                    self.state.bad_evals += 1
                    self.state.stopped_early = self.state.bad_evals >= es.patience
        _save_checkpoint(self.folder, self.model, self.optimizer, self.scheduler, self.state, self.keep)
        self.saved_at = self.state.step


def _permutation(n: int, seed: int, epoch: int) -> Any:
    import torch

    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))


def _attach(model: Any, ctx: TrainContext) -> Any:
    """The spec's method on an encoder: LoRA as a FEATURE_EXTRACTION peft model, full via text.py."""
    from peft import get_peft_model

    kind = ctx.spec.method.kind
    if kind not in ("full", "lora", "qlora"):
        raise ValueError(f"contrastive training supports `method full` and `lora`/`qlora` (merged into the "
                         f"exported encoder), not `{kind}`: pooling needs one hidden state per input token")
    if kind == "full":
        return text.attach_method(model, ctx)
    config = text.peft_config(ctx, "generation")
    config.task_type = "FEATURE_EXTRACTION"
    return get_peft_model(model, config)


def train_contrastive(ctx: TrainContext) -> TrainResult:
    """In-batch-negatives training of a text encoder on anchor/positive[/negative] rows."""
    from transformers import AutoModel

    sig = ctx.spec.signal
    if sig.anchor is None or sig.positive is None:
        raise ValueError("text contrastive training needs `anchor` and `positive` (image-text pairs belong to "
                         "the multimodal backend)")
    rec = text.Recorder(ctx)
    tr = text.train_block(ctx)
    text.set_seed(tr.seed)
    path = text.base_dir(ctx)
    trust = bool(ctx.spec.model.trust_remote_code)
    tok = text.load_tokenizer(path, trust)
    model = _attach(AutoModel.from_pretrained(str(path), trust_remote_code=trust), ctx)
    model.to(text.device_of(ctx))
    if tr.gradient_checkpointing:
        model.enable_input_require_grads()
        model.gradient_checkpointing_enable()
    loop = _Loop(ctx, model, tok, rec)
    rec({"event": "start", "stage": "contrastive", "method": ctx.spec.method.kind, "max_steps": loop.total,
         "device": ctx.device, "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
         "total_params": sum(p.numel() for p in model.parameters())})
    state = loop.run()
    if state.stopped_early and state.best_checkpoint and Path(state.best_checkpoint).is_dir():
        _load_weights(model, Path(state.best_checkpoint))  # the best evaluation, as load_best_model_at_end
        rec.note(f"early stopping at step {state.step}; the encoder of {Path(state.best_checkpoint).name} is kept")
    out = export_encoder(ctx, model, tok, loop.max_length)
    rec({"event": "end", "step": state.step, "stopped_early": state.stopped_early, "artifact": str(out),
         "best_checkpoint": state.best_checkpoint})
    return TrainResult(out, "embedding", history=rec.history, steps=state.step, stopped_early=state.stopped_early,
                       best_checkpoint=Path(state.best_checkpoint) if state.best_checkpoint else None)


# ---------------------------------------------------------------------------------------------
# Export, loading, evaluation


def export_encoder(ctx: TrainContext, model: Any, tok: Any, max_length: int) -> Path:
    """artifacts/model (the encoder, LoRA merged, with its pooling) and, with peft, artifacts/adapter."""
    root = ctx.run_dir / "artifacts"
    base = str(text.base_dir(ctx))
    info = {"format": "ftc-artifact", "version": 1, "method": ctx.spec.method.kind, "task": "embedding",
            "base_model": base, "pooling": "mean", "normalize": True, "max_length": max_length}
    if hasattr(model, "peft_config"):
        tmp = staging(root / "adapter")
        for cfg in model.peft_config.values():
            cfg.base_model_name_or_path = base
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        load = "PeftModel.from_pretrained(AutoModel.from_pretrained(base_model), this_folder); mean pooling"
        (tmp / "ftc_artifact.json").write_text(json.dumps({**info, "kind": "adapter", "load": load}, indent=2) + "\n")
        publish(tmp, root / "adapter")
        model = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model.get_base_model()
    tmp = staging(root / "model")
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
    load = "AutoModel.from_pretrained(this_folder); mean-pool last_hidden_state over the attention mask; L2-normalise"
    (tmp / "ftc_artifact.json").write_text(json.dumps({**info, "kind": "embedding", "load": load}, indent=2) + "\n")
    return publish(tmp, root / "model")


def load_encoder(ctx: TrainContext, model_dir: Path | None) -> tuple[Any, Any, int]:
    """(encoder, tokenizer, max_length) of an exported encoder, or of the base when None."""
    from transformers import AutoModel

    folder = model_dir if model_dir is not None else text.base_dir(ctx)
    trust = bool(ctx.spec.model.trust_remote_code)
    tok = text.load_tokenizer(folder, trust)
    model = AutoModel.from_pretrained(str(folder), trust_remote_code=trust).to(text.device_of(ctx)).eval()
    cfg = folder / "sentence_bert_config.json"
    max_length = json.loads(cfg.read_text())["max_seq_length"] if cfg.is_file() else _max_len(ctx, model)
    return model, tok, int(max_length)


def _ranks(model: Any, tok: Any, rows: list[dict[str, Any]], ctx: TrainContext, max_length: int) -> list[int]:
    """For each row: how many of the split's positives score strictly above its own."""
    sig = ctx.spec.signal
    anchors = encode(model, tok, [str(r[sig.anchor]) for r in rows], max_length)
    positives = encode(model, tok, [str(r[sig.positive]) for r in rows], max_length)
    sims = anchors @ positives.T
    return [int(x) for x in (sims > sims.diagonal().unsqueeze(1)).sum(1)]


def _usable(ctx: TrainContext, split: str) -> list[dict[str, Any]]:
    sig = ctx.spec.signal
    part = ctx.parts.get(split)
    if part is None:
        raise ValueError(f"no `{split}` split to evaluate on (splits: {', '.join(sorted(ctx.parts)) or 'none'})")
    return [r for r in part.rows if r.get(sig.anchor) is not None and r.get(sig.positive) is not None]


def recall_at_k(ctx: TrainContext, model_dir: Path | None, split: str, k: int) -> float:
    """Share of the split's anchors whose own positive ranks in the top k of all its positives."""
    rows = _usable(ctx, split)
    if not rows:
        return math.nan
    model, tok, max_length = load_encoder(ctx, model_dir)
    return sum(r < k for r in _ranks(model, tok, rows, ctx, max_length)) / len(rows)


def _k(ctx: TrainContext) -> int:
    declared = [m.k for m in ctx.spec.eval.metrics if m.name == "recall_at_k" and m.k] if ctx.spec.eval else []
    return int(declared[0]) if declared else 5


def evaluate(ctx: TrainContext, model_dir: Path | None, split: str) -> EvalResult:
    """recall_at_k (k from `metric recall_at_k K`, else 5; also as recall_at_K), recall_at_1 and
    the in-batch InfoNCE loss on `split`; recall per slice (ranked among the whole split)."""
    rows = _usable(ctx, split)
    if not rows:
        return EvalResult(split=split, metrics={}, n=0)
    model, tok, max_length = load_encoder(ctx, model_dir)
    k = _k(ctx)
    ranks = _ranks(model, tok, rows, ctx, max_length)

    def compute(idx: list[int]) -> dict[str, float]:
        r_k = sum(ranks[i] < k for i in idx) / len(idx)
        return {"recall_at_k": r_k, f"recall_at_{k}": r_k, "recall_at_1": sum(ranks[i] < 1 for i in idx) / len(idx)}

    out = compute(list(range(len(rows))))
    part = ctx.parts[split]
    out["loss"] = _split_loss(model, tok, _triples(ctx, split), text.train_block(ctx).batch_size,
                              float(ctx.spec.signal.temperature), max_length)
    slices: dict[str, dict[str, float]] = {}
    position = {id(r): i for i, r in enumerate(rows)}
    for slc in ctx.spec.data.slices if ctx.spec.data is not None else ():
        idx = [position[id(part.rows[j])] for j in metrics.slice_indices(part.rows, slc.conditions)
               if id(part.rows[j]) in position]
        slices[slc.name] = {**compute(idx), "n": float(len(idx))} if idx else {"n": 0.0}
    return EvalResult(split=split, metrics=out, slices=slices, n=len(rows), extra={"k": k})
