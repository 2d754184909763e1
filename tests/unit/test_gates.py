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


def test_versus_base_reads_the_difference_from_the_base() -> None:
    results = {**RESULTS, "tuned:test": EvalResult("test", {"reward": 0.25, "loss": 0.5}),
               "base:test": EvalResult("test", {"reward": -0.5, "loss": 1.0})}
    [up, small, loss] = evaluate([gate("reward", ">=", 0.5, versus="base"),
                                  gate("reward", ">=", 1.0, versus="base"),
                                  gate("loss", "<=", -0.4, versus="base")], results)
    assert up.passed and up.value == 0.75 and up.before == 0.0 and "base -0.5, tuned 0.25" in up.note
    assert not small.passed and small.value == 0.75  # a tuned reward of 0.25 would pass `>= 0.2`: not this gate
    assert loss.passed and loss.value == -0.5


def test_versus_base_on_latency_reads_the_slowdown() -> None:
    results = {**RESULTS, "base:latency": {"p50": 0.008, "p95": 0.03, "p99": 0.05}}
    [ok, tight] = evaluate([gate("latency", "<=", 0.015, qualifier="p95", split=None, versus="base"),
                            gate("latency", "<=", 0.005, qualifier="p95", split=None, versus="base")], results)
    assert ok.passed and abs((ok.value or 0) - 0.01) < 1e-12
    assert not tight.passed


def test_versus_base_without_a_base_measurement_fails_with_reason() -> None:
    [g] = evaluate([gate("reward", ">=", 0.1, versus="base")],
                   {"tuned:test": EvalResult("test", {"reward": 3.0})})
    assert not g.passed and g.value is None and "not measured" in g.note
