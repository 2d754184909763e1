"""Gate evaluation: compare measured metrics with the spec's thresholds. Pure Python.

A gate reads the tuned model's metric on its split (or slice); `latency.pNN` reads the latency
measurement of the final model ("latency"), with the base model's ("base:latency") as `before`;
`regression` compares the tuned model with the base on the gate's split or data set:
for loss it is the relative increase (tuned - base) / base, for a higher-is-better metric the drop
base - tuned. Any other gate written `vs base` reads the difference tuned - base (for latency, in
seconds), so that `gate reward >= 0.1 vs base` asks for an improvement over the base of at least 0.1;
its `before` is 0, the base's own difference. A gate whose value cannot be found fails, with the
reason: it never passes silently.
"""

from __future__ import annotations

import operator
from typing import Any

from ftc.compiler import schema as s
from ftc.runtime.runrecord import GateRecord

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq,
       "!=": operator.ne}
HIGHER_IS_BETTER = s.HIGHER_IS_BETTER  # the rates (compiler/schema.py): one table for check and run


GateResult = GateRecord  # one type: what the gates give is what the run record holds


def metric_value(metrics: dict[str, float], name: str, qualifier: str | None) -> float | None:
    """Look a metric up by the names backends use: f1_macro, f1.macro, or f1."""
    keys = [f"{name}_{qualifier}", f"{name}.{qualifier}"] if qualifier else []
    keys.append(name)
    for key in keys:
        if key in metrics and metrics[key] is not None:
            return float(metrics[key])
    return None


def describe(g: dict[str, Any]) -> str:
    metric = g["metric"] + (f".{g['qualifier']}" if g.get("qualifier") else "")
    where = ""
    if g.get("dataset"):
        where = f' on "{g["dataset"]}"'
    elif g.get("split"):
        where = f" on {g['split']}" + (f".{g['slice']}" if g.get("slice") else "")
    versus = f" vs {g['versus']}" if g.get("versus") else ""
    return f"{metric} {g['op']} {g['text']}{versus}{where}"


def _scores(results: dict[str, Any], who: str, g: dict[str, Any]) -> dict[str, float] | None:
    key = f"{who}:{g['dataset']}" if g.get("dataset") else f"{who}:{g.get('split') or 'test'}"
    res = results.get(key)
    if res is None:
        return None
    if g.get("slice"):
        found: dict[str, float] | None = res.slices.get(g["slice"])
        return found
    return dict(res.metrics)


def evaluate(gates: list[dict[str, Any]], results: dict[str, Any]) -> list[GateResult]:
    out: list[GateResult] = []
    for g in gates:
        text = describe(g)
        op = OPS[g["op"]]
        if g["metric"] == "latency":
            pct = g.get("qualifier") or "p95"
            value, before = _seconds(results.get("latency"), pct), _seconds(results.get("base:latency"), pct)
            if g.get("versus") == "base":
                out.append(_versus_base(text, op, g["threshold"], value, before, f"latency.{pct}"))
                continue
            out.append(GateResult(text, value, before, value is not None and op(value, g["threshold"]),
                                  "" if value is not None else "latency was not measured"))
            continue
        if g["metric"] == "regression":
            out.append(_regression(g, text, results))
            continue
        tuned, base = _scores(results, "tuned", g), _scores(results, "base", g)
        value = metric_value(tuned, g["metric"], g.get("qualifier")) if tuned is not None else None
        before = metric_value(base, g["metric"], g.get("qualifier")) if base is not None else None
        if g.get("versus") == "base":
            out.append(_versus_base(text, op, g["threshold"], value, before, g["metric"]))
            continue
        passed = value is not None and op(value, g["threshold"])
        out.append(GateResult(text, value, before, passed, "" if value is not None else "metric not measured"))
    return out


def _versus_base(text: str, op: Any, threshold: float, tuned: float | None, base: float | None,
                 name: str) -> GateResult:
    """A gate on the difference tuned - base."""
    if tuned is None or base is None:
        return GateResult(text, None, None, False, f"{name} of the base or tuned model was not measured")
    value = tuned - base
    return GateResult(text, value, 0.0, bool(op(value, threshold)), f"{name}: base {base:.4g}, tuned {tuned:.4g}")


def _seconds(measured: Any, pct: str) -> float | None:
    """A percentile of a latency measurement (seconds), or None when it was not measured."""
    value = measured.get(pct) if isinstance(measured, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _regression(g: dict[str, Any], text: str, results: dict[str, Any]) -> GateResult:
    name = g.get("qualifier") or "loss"
    tuned, base = _scores(results, "tuned", g), _scores(results, "base", g)
    t = metric_value(tuned, name, None) if tuned is not None else None
    b = metric_value(base, name, None) if base is not None else None
    if t is None or b is None:
        return GateResult(text, None, b, False, f"{name} of the base or tuned model was not measured")
    value = (b - t) if name in HIGHER_IS_BETTER else ((t - b) / abs(b) if b else t - b)
    return GateResult(text, value, 0.0, OPS[g["op"]](value, g["threshold"]), f"{name}: base {b:.4g}, tuned {t:.4g}")
