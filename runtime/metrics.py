"""Evaluation arithmetic: classification metrics, ranking AUC, percentiles, slice filters.

Pure Python and numpy (no torch, no sklearn), so that the numbers can be unit-tested against hand
computations and reused by every backend. Conventions follow scikit-learn where it has one:

- precision/recall/F1 average over the classes present in `y_true` or `y_pred` (sklearn's default
  `labels=None`); a class with no predicted (or no true) example scores 0 there (`zero_division=0`).
  `micro` pools the counts, `macro` is the unweighted mean, `weighted` weights by true support.
- AUC is one-vs-rest: for two classes the AUC of class 1's score; for more, the unweighted mean
  over the classes that have both positive and negative examples (NaN when none has).
- loss is the mean negative log-likelihood of the true class (natural log, probabilities clipped).

Decoded text (a greedy reply against its reference; generation and extraction):

- `exact_match`: equal after collapsing whitespace, or equal as JSON values after parsing both.
- generation `accuracy`: the share of replies equal to their reference after collapsing whitespace
  (case and punctuation count; unlike `exact_match`, no JSON equivalence).
- generation `f1`: SQuAD-style token F1 (bag of tokens): lowercased, split on whitespace, harmonic
  mean of token precision and recall, averaged over examples; both empty scores 1, one empty 0.
  Unlike SQuAD's script, punctuation and articles are kept.
- extraction `accuracy`: the share of replies that parse as JSON and hold exactly the reference's
  fields, each with an equal value (`json_fields`): the whole record is right.
- extraction `f1`: field-level F1, micro-averaged: matched, predicted and reference fields are
  pooled over the examples, F1 = 2 * matched / (predicted + reference). A field is a leaf of the
  JSON value, named by its path (`{"a": {"b": [1]}}` has one field, a.b[0] = 1); values match when
  equal after collapsing whitespace in strings (numbers as numbers: 1 == 1.0). A reply that does
  not parse predicts no field; a reference that is not JSON is one field, its whole text.

Metric names match the spec's gate syntax: `accuracy`, `f1.macro`, `precision.weighted`, `auc`, ...
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

AVERAGES = ("micro", "macro", "weighted")
EPS = 1e-12

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def softmax(logits: npt.ArrayLike) -> FloatArray:
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    out: FloatArray = e / e.sum(axis=-1, keepdims=True)
    return out


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> IntArray:
    """Rows: true class; columns: predicted class."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        m[int(t), int(p)] += 1
    return m


def _safe_div(a: FloatArray, b: FloatArray) -> FloatArray:
    out: FloatArray = np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)
    return out


def precision_recall_f1(y_true: Sequence[int], y_pred: Sequence[int], average: str,
                        n_classes: int | None = None) -> tuple[float, float, float]:
    """(precision, recall, f1) with sklearn's conventions (see the module docstring)."""
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, not {average!r}")
    t, p = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if t.size == 0:
        return 0.0, 0.0, 0.0
    k = n_classes if n_classes is not None else int(max(t.max(), p.max())) + 1
    m = confusion_matrix(t.tolist(), p.tolist(), k).astype(np.float64)
    tp, support, predicted = np.diag(m), m.sum(axis=1), m.sum(axis=0)
    if average == "micro":
        prec = float(tp.sum() / predicted.sum()) if predicted.sum() else 0.0
        rec = float(tp.sum() / support.sum()) if support.sum() else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        return prec, rec, f1
    present = np.union1d(np.unique(t), np.unique(p))
    prec_c = _safe_div(tp, predicted)[present]
    rec_c = _safe_div(tp, support)[present]
    f1_c = _safe_div(2 * prec_c * rec_c, prec_c + rec_c)
    if average == "macro":
        return float(prec_c.mean()), float(rec_c.mean()), float(f1_c.mean())
    w = support[present]
    if w.sum() == 0:
        return 0.0, 0.0, 0.0
    return float((prec_c * w).sum() / w.sum()), float((rec_c * w).sum() / w.sum()), float((f1_c * w).sum() / w.sum())


def _ranks(x: FloatArray) -> FloatArray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i: j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def binary_auc(positive: Sequence[bool] | npt.NDArray[np.bool_], score: npt.ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U); NaN without both classes."""
    pos = np.asarray(positive, dtype=bool)
    s = np.asarray(score, dtype=np.float64)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    r = _ranks(s)
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc_ovr(y_true: Sequence[int], probs: npt.ArrayLike) -> float:
    t = np.asarray(y_true, dtype=np.int64)
    pr = np.asarray(probs, dtype=np.float64)
    if pr.ndim != 2 or t.size == 0:
        return math.nan
    if pr.shape[1] == 2:
        return binary_auc(t == 1, pr[:, 1])
    scores = [binary_auc(t == c, pr[:, c]) for c in range(pr.shape[1])]
    valid = [s for s in scores if not math.isnan(s)]
    return float(np.mean(valid)) if valid else math.nan


def log_loss(y_true: Sequence[int], probs: npt.ArrayLike) -> float:
    t = np.asarray(y_true, dtype=np.int64)
    pr = np.asarray(probs, dtype=np.float64)
    if t.size == 0:
        return math.nan
    p = np.clip(pr[np.arange(len(t)), t], EPS, 1.0)
    return float(-np.log(p).mean())


def classification_metrics(y_true: Sequence[int], probs: npt.ArrayLike) -> dict[str, float]:
    """Every classification metric ftc knows, from true class ids and class probabilities."""
    pr = np.asarray(probs, dtype=np.float64)
    t = np.asarray(y_true, dtype=np.int64)
    if t.size == 0:
        return {"n": 0.0}
    pred = pr.argmax(axis=1)
    out: dict[str, float] = {"accuracy": float((pred == t).mean()), "n": float(t.size)}
    for avg in AVERAGES:
        p, r, f = precision_recall_f1(t.tolist(), pred.tolist(), avg, n_classes=pr.shape[1])
        out[f"precision.{avg}"], out[f"recall.{avg}"], out[f"f1.{avg}"] = p, r, f
    out["auc"] = roc_auc_ovr(t.tolist(), pr)
    out["loss"] = log_loss(t.tolist(), pr)
    return out


def with_declared_averages(metrics: dict[str, float], declared: Iterable[tuple[str, str | None]]) -> dict[str, float]:
    """Add the bare names the spec declared (`metric f1 macro` -> `f1` = `f1.macro`)."""
    out = dict(metrics)
    for name, average in declared:
        if average and f"{name}.{average}" in metrics:
            out[name] = metrics[f"{name}.{average}"]
    return out


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """{"p50": ..., "p95": ..., "p99": ...} by linear interpolation (numpy's default)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {f"p{int(q)}": math.nan for q in qs}
    return {f"p{int(q)}": float(np.percentile(arr, q)) for q in qs}


def normalize_text(text: str) -> str:
    return " ".join(text.split())


def exact_match(prediction: str, target: str) -> bool:
    """Equal after collapsing whitespace (and, for JSON, after parsing both sides)."""
    if normalize_text(prediction) == normalize_text(target):
        return True
    try:
        return bool(json.loads(prediction) == json.loads(target))
    except (ValueError, TypeError):
        return False


def text_accuracy(prediction: str, reference: str) -> bool:
    """Generation `accuracy`: equal after collapsing whitespace (case and punctuation count)."""
    return normalize_text(prediction) == normalize_text(reference)


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1: the harmonic mean of token precision and recall over the bags of
    lowercased whitespace tokens; both empty scores 1, one empty 0."""
    from collections import Counter

    pred, ref = prediction.lower().split(), reference.lower().split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


FieldPath = tuple[str | int, ...]


def _leaf(value: Any) -> tuple[str, Any]:
    if isinstance(value, str):
        return ("str", normalize_text(value))
    if isinstance(value, bool) or value is None:
        return ("const", value)
    if isinstance(value, int | float):
        return ("num", float(value))
    return ("empty", "{}" if isinstance(value, dict) else "[]")


def _flatten(value: Any, path: FieldPath, out: dict[FieldPath, tuple[str, Any]]) -> None:
    items: list[tuple[str | int, Any]] = []
    if isinstance(value, dict):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        items = list(enumerate(value))
    if items:
        for key, child in items:
            _flatten(child, (*path, key), out)
    elif path or not isinstance(value, dict | list):  # a nested empty container is a field; the top one is not
        out[path] = _leaf(value)


def json_fields(text: str) -> dict[FieldPath, tuple[str, Any]] | None:
    """The leaves of a JSON value by path (`{"a": {"b": [1]}}` -> {("a", "b", 0): 1.0}), strings
    whitespace-collapsed and numbers as floats; None when `text` is not JSON."""
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return None
    out: dict[FieldPath, tuple[str, Any]] = {}
    _flatten(value, (), out)
    return out


def _field_pair(prediction: str, reference: str) -> tuple[dict[FieldPath, Any] | None, dict[FieldPath, Any]]:
    ref = json_fields(reference)
    if ref is None:  # not JSON: the whole text is one field
        whole: dict[FieldPath, Any] = {(): ("str", normalize_text(prediction))} if prediction.strip() else {}
        return whole, {(): ("str", normalize_text(reference))}
    return json_fields(prediction), ref


def field_counts(prediction: str, reference: str) -> tuple[int, int, int]:
    """(matched, predicted, reference) fields of an extraction reply (see `json_fields`)."""
    pred, ref = _field_pair(prediction, reference)
    pred = pred or {}
    matched = sum(1 for path, value in pred.items() if ref.get(path) == value)
    return matched, len(pred), len(ref)


def field_f1(counts: Iterable[tuple[int, int, int]]) -> float:
    """Micro-averaged field F1 over (matched, predicted, reference) counts: 2m / (p + r); 1 when
    no example has a field on either side."""
    matched = predicted = reference = 0
    for m, p, r in counts:
        matched, predicted, reference = matched + m, predicted + p, reference + r
    return 2 * matched / (predicted + reference) if predicted + reference else 1.0


def record_match(prediction: str, reference: str) -> bool:
    """Extraction `accuracy`: the reply parses and holds exactly the reference's fields and values."""
    if json_fields(reference) is None:
        return text_accuracy(prediction, reference)
    pred, ref = _field_pair(prediction, reference)
    return pred is not None and pred == ref


def format_valid(text: str, schema: dict[str, Any] | None) -> bool:
    """The output parses as JSON and, when a schema is given, validates against it."""
    try:
        value = json.loads(text)
    except ValueError:
        return False
    if schema is None:
        return True
    import jsonschema  # pure Python

    return bool(jsonschema.Draft202012Validator(schema).is_valid(value))


# ---------------------------------------------------------------------------------------------
# Slices: the same semantics as the data rules (compiler/rules/data.py::_matches)

_OPS = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, ">=": lambda a, b: a >= b,
        "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b}


def condition_matches(row: dict[str, Any], field: str, op: str, value: str | float) -> bool:
    """`field op value` on one row: numbers compare as numbers, `true`/`false` case-insensitively,
    everything else as strings; a missing field never matches."""
    have = row.get(field)
    if have is None:
        return False
    other: Any = value
    if isinstance(other, float) and not isinstance(have, bool):
        try:
            have = float(have)
        except (TypeError, ValueError):
            return False
    else:
        have = str(have).lower() if other in ("true", "false") else str(have)
    try:
        return bool(_OPS[op](have, other))
    except TypeError:
        return False


def slice_indices(rows: Sequence[dict[str, Any]], conditions: Iterable[Any]) -> list[int]:
    """Indices of the rows matching every condition (objects with field, op, value)."""
    conds = list(conditions)
    return [i for i, row in enumerate(rows) if all(condition_matches(row, c.field, c.op, c.value) for c in conds)]
