"""The contrastive training loop: encoding, the InfoNCE loss, optimizer steps, checkpoints, resume.

Encoding: the encoder's last hidden state, mean-pooled over the attention mask, L2-normalised
(prompt tuning prepends virtual tokens to the hidden states: only the text's positions are
pooled). The loss is InfoNCE: for a batch of B anchors the candidates are the B positives (and,
with a `negative` field, the B hard negatives); each anchor's own positive is its target, every
other candidate a negative; logits are cosine similarities over the signal's temperature
(sentence-transformers' MultipleNegativesRankingLoss, written out rather than adding that package).

The loop itself (optimizer steps, checkpoints, resume, early stopping) is loop.py's; `Loop` here
fills in its hooks for text triples, and multimodal_train.ClipLoop refines this one for
image-caption pairs (the same in-batch negatives and batching).
"""

from __future__ import annotations

import math
from typing import Any

from ftc.runtime.api import TrainContext
from ftc.runtime.backends import hf, loop
from ftc.runtime.backends.loading import virtual_positions
from ftc.runtime.backends.loop import _optimizer, device_of, load_weights  # re-exported

__all__ = ["Loop", "_optimizer", "batch_loss", "batches", "device_of", "drop_long", "embed", "encode", "info_nce",
           "load_weights", "max_len", "mean_pool", "split_loss", "total_steps", "triples", "triples_of"]

Triple = tuple[str, str, str | None]


# ---------------------------------------------------------------------------------------------
# Encoding and the loss


def mean_pool(hidden: Any, mask: Any) -> Any:
    hidden = hidden[:, -mask.shape[1]:]  # prompt tuning: virtual tokens come first
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def embed(model: Any, tok: Any, texts: list[str], max_length: int) -> Any:
    """Normalised mean-pooled embeddings (with gradients when the model trains)."""
    import torch.nn.functional as F

    enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    enc = {k: v.to(device_of(model)) for k, v in enc.items()}
    return F.normalize(mean_pool(model(**enc).last_hidden_state, enc["attention_mask"]).float(), dim=-1)


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


def batch_loss(model: Any, tok: Any, batch: list[Triple], temperature: float, max_length: int) -> Any:
    a = embed(model, tok, [t[0] for t in batch], max_length)
    p = embed(model, tok, [t[1] for t in batch], max_length)
    n = embed(model, tok, [t[2] or "" for t in batch], max_length) if batch[0][2] is not None else None
    return info_nce(a, p, n, temperature)


def triples(ctx: TrainContext, split: str) -> list[Triple]:
    part = ctx.parts.get(split)
    return triples_of(ctx, part.rows if part is not None else [])


def triples_of(ctx: TrainContext, rows: list[dict[str, Any]]) -> list[Triple]:
    """(anchor, positive, negative or None) of the rows that have every field the signal names."""
    sig = ctx.spec.signal
    return [(str(r[sig.anchor]), str(r[sig.positive]), str(r[sig.negative]) if sig.negative else None)
            for r in rows if r.get(sig.anchor) is not None and r.get(sig.positive) is not None
            and (not sig.negative or r.get(sig.negative) is not None)]


def batches(items: list[Any], order: list[int], size: int) -> list[list[Any]]:
    out = [[items[i] for i in order[j:j + size]] for j in range(0, len(order), size)]
    return [b for b in out if len(b) > 1]  # a single row has no in-batch negative


def total_steps(ctx: TrainContext, n: int) -> int:
    """Optimizer steps: the spec's `steps`, else epochs × steps per epoch (batches of one row are
    skipped), capped by ctx.max_steps."""
    tr = hf.train_block(ctx)
    n_batches = n // tr.batch_size + (1 if n % tr.batch_size > 1 else 0)
    planned = tr.steps or max(1, math.ceil(n_batches / tr.grad_accum)) * (tr.epochs or 1)
    return min(planned, ctx.max_steps) if ctx.max_steps else planned


def max_len(ctx: TrainContext, model: Any) -> int:
    """Tokens per text: the spec's max_length, within the positions the method leaves free."""
    data = ctx.spec.data
    limit = int(getattr(model.config, "max_position_embeddings", None) or 512) - virtual_positions(ctx)
    return min(limit, data.max_length.tokens) if data is not None and data.max_length is not None else limit


def drop_long(ctx: TrainContext, tok: Any, items: list[Triple], limit: int, rec: hf.Recorder,
              split: str) -> list[Triple]:
    """`max_length N drop`: the triples whose every text fits in `limit` tokens (special tokens
    counted, as the encoder sees them), the rest left out and said; `truncate` (the default)
    keeps them all and cuts each text when it is encoded."""
    data = ctx.spec.data
    if data is None or data.max_length is None or data.max_length.policy != "drop":
        return items
    kept = [t for t in items if all(len(tok(x)["input_ids"]) <= limit for x in t if x is not None)]
    if len(kept) < len(items):
        rec.note(f"dropped {len(items) - len(kept)} {split} row(s) over {limit} tokens")
    return kept


def split_loss(model: Any, tok: Any, items: list[Triple], batch: int, temperature: float, max_length: int) -> float:
    import torch

    groups = batches(items, list(range(len(items))), batch)
    if not groups:
        return math.nan
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        losses = [float(batch_loss(model, tok, b, temperature, max_length)) for b in groups]
    model.train(was_training)
    return sum(losses) / len(losses)


class Loop(loop.Loop):
    """The text contrastive loop: triples of (anchor, positive, negative?) texts, InfoNCE over
    in-batch negatives; the multimodal ClipLoop refines it for image-caption pairs."""

    def setup(self) -> None:
        """Fill `items` (training examples) and `val` (validation examples): text triples here,
        without those `max_length N drop` leaves out."""
        self.max_length = max_len(self.ctx, self.model)
        self.items = drop_long(self.ctx, self.tok, triples(self.ctx, "train"), self.max_length, self.rec, "train")
        self.val = drop_long(self.ctx, self.tok, triples(self.ctx, "val"), self.max_length, self.rec, "val")

    def planned_steps(self) -> int:
        return total_steps(self.ctx, len(self.items))

    def groups(self, order: list[int]) -> list[list[Any]]:
        """One epoch's micro-batches of `items` in `order` (a seeded permutation)."""
        groups = batches(self.items, order, self.tr.batch_size)
        if not groups:
            raise ValueError(f"in-batch negatives need batches of 2 rows or more: {len(self.items)} "
                             f"training rows, batch_size {self.tr.batch_size}")
        return groups

    def loss(self, batch: list[Any], index: int) -> Any:
        """The loss of one micro-batch (the `index`-th of its epoch): a scalar tensor with gradients."""
        return batch_loss(self.model, self.tok, batch, self.temperature, self.max_length)

    def validate(self) -> dict[str, float]:
        """Metrics on `val` at a checkpoint (early stopping watches the spec's one): the loss, and
        recall_at_k, recall_at_1 and accuracy when early stopping watches one of those."""
        out = {"loss": split_loss(self.model, self.tok, self.val, self.tr.batch_size, self.temperature,
                                  self.max_length)}
        if self.es is not None and self.es[0] != "loss":
            out.update(validation_scores(self.ctx, self.model, self.tok, self.max_length))
        return out


# ---------------------------------------------------------------------------------------------
# Scores of anchors against positives: the evaluation (embedding.py) and early stopping share them


def kept_rows(ctx: TrainContext, rows: list[dict[str, Any]]) -> list[int]:
    sig = ctx.spec.signal
    return [i for i, r in enumerate(rows) if r.get(sig.anchor) is not None and r.get(sig.positive) is not None]


def scores(model: Any, tok: Any, rows: list[dict[str, Any]], ctx: TrainContext,
            max_length: int) -> tuple[list[int], list[bool | None]]:
    """(rank of each row's own positive among all the rows' positives, whether the anchor is
    closer to its positive than to its hard negative: None for a row without one)."""
    sig = ctx.spec.signal
    anchors = encode(model, tok, [str(r[sig.anchor]) for r in rows], max_length)
    positives = encode(model, tok, [str(r[sig.positive]) for r in rows], max_length)
    sims = anchors @ positives.T
    own = sims.diagonal()
    ranks = [int(x) for x in (sims > own.unsqueeze(1)).sum(1)]
    wins: list[bool | None] = [None] * len(rows)
    with_negative = [i for i, r in enumerate(rows) if sig.negative and r.get(sig.negative) is not None]
    if with_negative:
        negatives = encode(model, tok, [str(rows[i][sig.negative]) for i in with_negative], max_length)
        closer = (anchors[with_negative] * negatives).sum(-1) < own[with_negative]
        for i, won in zip(with_negative, closer.tolist(), strict=True):
            wins[i] = bool(won)
    return ranks, wins


def usable_rows(ctx: TrainContext, split: str) -> list[dict[str, Any]]:
    rows = ctx.split_rows(split)
    return [rows[i] for i in kept_rows(ctx, rows)]


def validation_scores(ctx: TrainContext, model: Any, tok: Any, max_length: int) -> dict[str, float]:
    """recall_at_k and accuracy (as evaluate_rows defines them) of the in-memory model on the val
    split: what early stopping on `val.recall_at_k` or `val.accuracy` watches while training."""
    import torch

    rows = usable_rows(ctx, "val")
    if not rows:
        return {}
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        ranks, wins = scores(model, tok, rows, ctx, max_length)
    model.train(was_training)
    k = recall_k(ctx)
    recall_1 = sum(r < 1 for r in ranks) / len(rows)
    judged = [bool(w) for w in wins if w is not None]
    return {"recall_at_k": sum(r < k for r in ranks) / len(rows), "recall_at_1": recall_1,
            "accuracy": sum(judged) / len(judged) if judged else recall_1}


def recall_k(ctx: TrainContext) -> int:
    """k of `metric recall_at_k K` (5 when the spec declares none)."""
    declared = [m.k for m in ctx.spec.eval.metrics if m.name == "recall_at_k" and m.k] if ctx.spec.eval else []
    return int(declared[0]) if declared else 5
