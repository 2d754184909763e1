"""Evaluation and latency for the text backend (public through text.py).

classification: accuracy, precision/recall/F1 (micro, macro, weighted), one-vs-rest AUC and loss
    (mean cross-entropy), plus the bare names `precision`, `recall` and `f1`: the average the spec
    declared (`metric f1 weighted` -> `f1` = `f1.weighted`), macro otherwise (the language's
    default); the confusion matrix goes to `extra`.
generation / extraction: loss and perplexity on the target tokens only (the prompt is masked, as
    in training); of a greedy decode against the target: exact_match, accuracy and f1, and for
    extraction (or when a spec declares it) format_validity: the decode parses as JSON and
    satisfies `output_schema`. accuracy and f1 depend on the task (definitions in metrics.py):
    generation: accuracy = equal after collapsing whitespace, f1 = SQuAD-style token F1 (lowercased
    whitespace tokens, averaged over examples); extraction: accuracy = the parsed reply holds
    exactly the reference's fields and values, f1 = field-level F1 over the JSON leaves, pooled
    over the examples (micro).
Every metric is also computed on each `slice` of the data block that has rows in the split.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.runtime import metrics
from ftc.runtime.api import EvalResult, TrainContext
from ftc.runtime.backends import artifacts, hf, text

SAMPLES = 5


def declared_metrics(ctx: TrainContext) -> list[tuple[str, str | None]]:
    return [(m.name, m.average) for m in ctx.spec.eval.metrics] if ctx.spec.eval else []


def _slices(ctx: TrainContext, rows: list[dict[str, Any]], kept: list[int],
            compute: Any) -> dict[str, dict[str, float]]:
    """Metrics per slice; `kept` maps evaluated examples to their row index."""
    out: dict[str, dict[str, float]] = {}
    data = ctx.spec.data
    position = {row_index: i for i, row_index in enumerate(kept)}
    for slc in data.slices if data is not None else ():
        chosen = [position[r] for r in metrics.slice_indices(rows, slc.conditions) if r in position]
        out[slc.name] = {**compute(chosen), "n": float(len(chosen))} if chosen else {"n": 0.0}
    return out


# ---------------------------------------------------------------------------------------------
# Classification


def _classify(model: Any, tok: Any, texts: list[str], limit: int, batch: int, device: str) -> Any:
    import numpy as np
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i: i + batch], truncation=True, max_length=limit, padding=True, return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items()}
            out.append(model(**enc).logits.float().cpu().numpy())
    return metrics.softmax(np.concatenate(out)) if out else np.zeros((0, 0))


def _evaluate_classification(ctx: TrainContext, model: Any, tok: Any, split: str,
                             rows: list[dict[str, Any]]) -> EvalResult:
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    label2id = {name: i for i, name in enumerate(labels)}
    sig = ctx.spec.signal
    kept = [i for i, r in enumerate(rows) if r.get(sig.input) is not None and str(r.get(sig.target)) in label2id]
    texts = [str(rows[i][sig.input]) for i in kept]
    y = [label2id[str(rows[i][sig.target])] for i in kept]
    limit, _ = text.max_length(ctx, tok, model)
    probs = _classify(model, tok, texts, limit, hf.train_block(ctx).batch_size, _device(model))
    declared = declared_metrics(ctx)

    def compute(idx: list[int]) -> dict[str, float]:
        m = metrics.classification_metrics([y[i] for i in idx], probs[idx])
        m.pop("n", None)
        m = metrics.with_declared_averages(m, declared)
        for name in ("precision", "recall", "f1"):  # undeclared: the language's default average
            m.setdefault(name, m[f"{name}.macro"])
        return m

    every = list(range(len(kept)))
    pred = probs.argmax(axis=1).tolist() if len(kept) else []
    matrix = metrics.confusion_matrix(y, pred, len(labels)).tolist()
    samples = [{"input": texts[i][:200], "target": labels[y[i]], "prediction": labels[pred[i]]}
               for i in range(min(SAMPLES, len(kept)))]
    return EvalResult(split=split, metrics=compute(every) if kept else {}, slices=_slices(ctx, rows, kept, compute),
                      n=len(kept), extra={"confusion_matrix": {"labels": labels, "matrix": matrix},
                                          "samples": samples, "skipped": len(rows) - len(kept)})


# ---------------------------------------------------------------------------------------------
# Generation and extraction


@dataclass
class Example:
    prompt_ids: list[int]
    full_ids: list[int]  # prompt + target + eos, as TRL builds it
    start: int  # first target token in full_ids
    target: str


def examples(ctx: TrainContext, tok: Any, rows: list[dict[str, Any]], limit: int) -> tuple[list[int], list[Example]]:
    """(kept row indices, examples) tokenised the way TRL's SFTTrainer tokenises them."""
    sig = ctx.spec.signal
    kept: list[int] = []
    out: list[Example] = []
    if sig.messages:
        text.ensure_chat_template(tok)
    for i, row in enumerate(rows):
        if sig.messages:
            msgs = row.get(sig.messages)
            if not msgs or msgs[-1].get("role") != "assistant":
                continue
            prompt_ids = list(tok.apply_chat_template(msgs[:-1], tokenize=True, add_generation_prompt=True,
                                                      return_dict=True)["input_ids"])
            full_ids = list(tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"])
            target = str(msgs[-1].get("content", ""))
        else:
            if row.get(sig.input) is None or row.get(sig.target) is None:
                continue
            prompt, target = str(row[sig.input]), text.target_text(row[sig.target])
            prompt_ids = list(tok(prompt)["input_ids"])
            full_ids = list(tok(prompt + target + (tok.eos_token or ""))["input_ids"])
        start = 0
        while start < min(len(prompt_ids), len(full_ids)) and prompt_ids[start] == full_ids[start]:
            start += 1
        if start >= min(len(full_ids), limit):
            continue  # nothing of the target fits
        kept.append(i)
        out.append(Example(prompt_ids[:limit], full_ids[:limit], start, target))
    return kept, out


def _device(model: Any) -> Any:
    return next(model.parameters()).device


def _nll(model: Any, batch: list[Example], pad_id: int) -> list[tuple[float, int]]:
    """(sum of negative log-likelihood, token count) of each example's target tokens."""
    import torch

    width = max(len(e.full_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for r, e in enumerate(batch):
        n = len(e.full_ids)
        ids[r, :n] = torch.tensor(e.full_ids)
        mask[r, :n] = 1
        labels[r, e.start:n] = torch.tensor(e.full_ids[e.start:])
    dev = _device(model)
    logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits.float()
    logits = logits[:, -width:]  # prompt tuning prepends virtual-token positions
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    gold = labels[:, 1:].to(dev)
    picked = logp.gather(-1, gold.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    valid = gold != -100
    sums = (-(picked * valid)).sum(dim=1).tolist()
    counts = valid.sum(dim=1).tolist()
    return [(float(a), int(b)) for a, b in zip(sums, counts, strict=True)]


def _generate(model: Any, tok: Any, e: Example) -> str:
    import torch

    dev = _device(model)
    ids = torch.tensor([e.prompt_ids], device=dev)
    new = len(e.full_ids) - e.start + 8
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, do_sample=False,
                         num_beams=1, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return str(tok.decode(out[0, len(e.prompt_ids):], skip_special_tokens=True)).strip()


def output_schema(ctx: TrainContext) -> dict[str, Any] | None:
    model = ctx.spec.model
    if not model.output_schema:
        return None
    path = ctx.checked.resolve_path(model.output_schema, model.at("output_schema"))
    loaded: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    return loaded


def _evaluate_generation(ctx: TrainContext, model: Any, tok: Any, split: str,
                         rows: list[dict[str, Any]]) -> EvalResult:
    import torch

    limit, _ = text.max_length(ctx, tok, model)
    kept, exs = examples(ctx, tok, rows, limit)
    batch = hf.train_block(ctx).batch_size
    nll: list[tuple[float, int]] = []
    preds: list[str] = []
    with torch.inference_mode():
        for i in range(0, len(exs), batch):
            nll.extend(_nll(model, exs[i: i + batch], tok.pad_token_id))
        preds = [_generate(model, tok, e) for e in exs]
    extraction = ctx.spec.model.task == "extraction"
    wants_format = extraction or any(n == "format_validity" for n, _ in declared_metrics(ctx))
    schema = output_schema(ctx) if wants_format else None
    pairs = [(p, e.target) for p, e in zip(preds, exs, strict=True)]
    exact = [float(metrics.exact_match(p, t)) for p, t in pairs]
    if extraction:
        right = [float(metrics.record_match(p, t)) for p, t in pairs]
        fields = [metrics.field_counts(p, t) for p, t in pairs]
    else:
        right = [float(metrics.text_accuracy(p, t)) for p, t in pairs]
        token_f1 = [metrics.token_f1(p, t) for p, t in pairs]

    def compute(idx: list[int]) -> dict[str, float]:
        tokens = sum(nll[i][1] for i in idx)
        loss = sum(nll[i][0] for i in idx) / tokens if tokens else math.nan
        out = {"loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf,
               "exact_match": sum(exact[i] for i in idx) / len(idx),
               "accuracy": sum(right[i] for i in idx) / len(idx),
               "f1": (metrics.field_f1(fields[i] for i in idx) if extraction
                      else sum(token_f1[i] for i in idx) / len(idx))}
        if wants_format:
            out["format_validity"] = sum(metrics.format_valid(preds[i], schema) for i in idx) / len(idx)
        return out

    samples = [{"prompt": tok.decode(e.prompt_ids)[-200:], "target": e.target[:200], "prediction": p[:200]}
               for e, p in list(zip(exs, preds, strict=True))[:SAMPLES]]
    return EvalResult(split=split, metrics=compute(list(range(len(exs)))) if exs else {},
                      slices=_slices(ctx, rows, kept, compute), n=len(exs),
                      extra={"samples": samples, "skipped": len(rows) - len(exs)})


def evaluate_rows(ctx: TrainContext, model_dir: Path | None, rows: list[dict[str, Any]], name: str) -> EvalResult:
    """Every metric of the task on `rows` (named `name` in the result), overall and per slice."""
    model, tok = artifacts.load_trained(ctx, model_dir)
    if hf.is_classification(ctx.spec.model.task):
        return _evaluate_classification(ctx, model, tok, name, rows)
    return _evaluate_generation(ctx, model, tok, name, rows)


def evaluate(ctx: TrainContext, model_dir: Path | None, split: str) -> EvalResult:
    return evaluate_rows(ctx, model_dir, ctx.split_rows(split), split)


def read_rows(ctx: TrainContext, dataset: str) -> list[dict[str, Any]]:
    """The rows of a data file named in a gate (`on "data/general.jsonl"`), relative to the file
    that wrote the gate (as `ftc check` reads it: a gate inherited through `extends` names a file
    beside its own file), read like the spec's own data (format inferred, `fields` applied)."""
    from ftc.compiler.data.contracts import apply_mapping
    from ftc.compiler.data.readers import read_table

    gates = ctx.spec.eval.gates if ctx.spec.eval is not None else ()
    where = next((g.span for g in gates if getattr(g, "dataset", None) == dataset), None)
    path = ctx.checked.resolve_path(dataset, where)
    data = ctx.spec.data
    table = read_table(path, dataset)
    if not table.rows:
        why = "; ".join(p.message for p in table.problems[:3]) or "it holds no rows"
        raise ValueError(f"cannot evaluate on {dataset}: {why}")
    mapping = dict(data.fields.mapping) if data is not None and data.fields is not None else {}
    return apply_mapping(table.rows, mapping) if mapping else list(table.rows)


def evaluate_file(ctx: TrainContext, model_dir: Path | None, dataset: str) -> EvalResult:
    """Metrics on a data file that is not one of the spec's splits (general-capability regression)."""
    return evaluate_rows(ctx, model_dir, read_rows(ctx, dataset), dataset)


# ---------------------------------------------------------------------------------------------
# Latency


def measure_latency(ctx: TrainContext, model_dir: Path | None, split: str = "test", warmup: int | None = None,
                    n: int = 50) -> dict[str, Any]:
    """Wall-clock seconds of single requests (tokenise + forward, or + greedy decode for
    generation), after `warmup` untimed ones (default: the spec's `latency_warmup`)."""
    import torch

    if warmup is None:
        warmup = ctx.spec.eval.latency_warmup if ctx.spec.eval is not None else 5
    model, tok = artifacts.load_trained(ctx, model_dir)
    rows = ctx.split_rows(split) if split in ctx.parts else next(iter(ctx.parts.values())).rows
    limit, _ = text.max_length(ctx, tok, model)
    dev = _device(model)
    cuda = dev.type == "cuda"
    if hf.is_classification(ctx.spec.model.task):
        inputs = [str(r[ctx.spec.signal.input]) for r in rows if r.get(ctx.spec.signal.input) is not None]

        def request(i: int) -> None:
            enc = tok(inputs[i % len(inputs)], truncation=True, max_length=limit, return_tensors="pt")
            model(**{k: v.to(dev) for k, v in enc.items()})
    else:
        _, exs = examples(ctx, tok, rows, limit)
        inputs = [e.target for e in exs]
        new = max(1, min(64, int(statistics.median([len(e.full_ids) - e.start for e in exs])))) if exs else 1

        def request(i: int) -> None:
            e = exs[i % len(exs)]
            ids = torch.tensor([e.prompt_ids], device=dev)
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                           min_new_tokens=new, do_sample=False, num_beams=1, pad_token_id=tok.pad_token_id)
    if not inputs:
        raise ValueError(f"no usable rows in `{split}` to time")
    times: list[float] = []
    with torch.inference_mode():
        for i in range(warmup + n):
            start = time.perf_counter()
            request(i)
            if cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return {**metrics.percentiles(times), "mean": sum(times) / len(times), "n": n, "warmup": warmup,
            "device": str(dev), "unit": "s", "samples": [round(t, 7) for t in times]}
