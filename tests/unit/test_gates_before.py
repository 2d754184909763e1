"""Gate evaluation finds each gate's own results: a latency gate's `before` is the base model's
timing ("base:latency"), and each regression set's gate reads the results of its own file."""

from __future__ import annotations

from ftc.runtime.api import EvalResult
from ftc.runtime.gates import evaluate

from tests.unit.test_gates import gate


def test_a_latency_gate_reads_the_base_models_timing_as_before() -> None:
    results = {"latency": {"p50": 0.01, "p95": 0.04, "p99": 0.09, "unit": "s"},
               "base:latency": {"p50": 0.02, "p95": 0.06, "p99": 0.2, "unit": "s"}}
    p95, p99 = evaluate([gate("latency", "<=", 0.05, qualifier="p95", split=None),
                         gate("latency", "<=", 0.05, split=None, qualifier="p99")], results)
    assert (p95.value, p95.before, p95.passed) == (0.04, 0.06, True)
    assert (p99.value, p99.before, p99.passed) == (0.09, 0.2, False)
    [default] = evaluate([gate("latency", "<=", 0.05, split=None)], results)  # no percentile: p95
    assert (default.value, default.before) == (0.04, 0.06)


def test_a_latency_gate_without_a_base_timing_has_no_before() -> None:
    [only_after] = evaluate([gate("latency", "<=", 0.05, qualifier="p95", split=None)],
                            {"latency": {"p95": 0.04}, "base:latency": {"p95": None}})
    assert only_after.passed and only_after.before is None
    [nothing] = evaluate([gate("latency", "<=", 0.05, qualifier="p95", split=None)], {})
    assert not nothing.passed and nothing.value is None and nothing.before is None
    assert nothing.note == "latency was not measured"


def test_each_regression_gate_reads_its_own_files_results() -> None:
    results = {f"{who}:{name}": EvalResult(name, {"loss": loss})
               for who, name, loss in (("base", "a/general.jsonl", 2.0), ("tuned", "a/general.jsonl", 2.02),
                                       ("base", "b/general.jsonl", 4.0), ("tuned", "b/general.jsonl", 3.0))}
    a, b, missing = evaluate([gate("regression", "<=", 0.02, versus="base", split=None, dataset=name)
                              for name in ("a/general.jsonl", "b/general.jsonl", "safety.jsonl")], results)
    assert a.value is not None and abs(a.value - 0.01) < 1e-12 and a.passed
    assert b.value == -0.25 and b.passed and b.note == "loss: base 4, tuned 3"
    assert not missing.passed and missing.value is None and "not measured" in missing.note


def test_the_verdict_table_shows_latency_in_ms_like_its_threshold() -> None:
    from types import SimpleNamespace

    from ftc.runtime.gates import GateResult
    from ftc.runtime.run import _verdict_table

    state = SimpleNamespace(gates=[GateResult("latency.p95 <= 50ms on test", 0.0032, 0.0041, True),
                                   GateResult("f1 >= 0.85 on test", 0.9, None, True)])
    lines = _verdict_table(state).splitlines()
    assert "4.1 ms" in lines[1] and "3.2 ms" in lines[1]
    assert "0.9" in lines[2] and "ms" not in lines[2] and "—" in lines[2]
