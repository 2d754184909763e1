"""Gate evaluation against measured metrics (pure Python)."""

from __future__ import annotations

from ftc.runtime.api import EvalResult
from ftc.runtime.gates import evaluate


def gate(metric: str, op: str, threshold: float, **kw: object) -> dict[str, object]:
    return {"metric": metric, "qualifier": kw.get("qualifier"), "op": op, "threshold": threshold,
            "split": kw.get("split", "test"), "slice": kw.get("slice"), "dataset": kw.get("dataset"),
            "versus": kw.get("versus"), "text": str(threshold)}


RESULTS = {
    "tuned:test": EvalResult("test", {"f1_macro": 0.9, "accuracy": 0.95, "loss": 0.5}, {"email": {"f1_macro": 0.7}}),
    "base:test": EvalResult("test", {"f1_macro": 0.3, "accuracy": 0.4, "loss": 1.0}),
    "latency": {"p50": 0.01, "p95": 0.04, "p99": 0.09},
}


def test_pass_and_fail_with_before_and_after() -> None:
    [ok, bad] = evaluate([gate("f1", ">=", 0.85, qualifier="macro"), gate("accuracy", ">=", 0.99)], RESULTS)
    assert ok.passed and ok.value == 0.9 and ok.before == 0.3
    assert not bad.passed and bad.value == 0.95


def test_slice_and_latency() -> None:
    [sl, lat] = evaluate([gate("f1", ">=", 0.8, qualifier="macro", slice="email"),
                          gate("latency", "<=", 0.05, qualifier="p95", split=None)], RESULTS)
    assert not sl.passed and sl.value == 0.7
    assert lat.passed and lat.value == 0.04


def test_regression_on_loss_is_relative_increase() -> None:
    [reg] = evaluate([gate("regression", "<=", 0.02, versus="base")], RESULTS)
    assert reg.value == -0.5 and reg.passed


def test_unmeasured_metric_fails_with_reason() -> None:
    [g] = evaluate([gate("auc", ">=", 0.5)], RESULTS)
    assert not g.passed and g.value is None and "not measured" in g.note
