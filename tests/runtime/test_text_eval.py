"""evaluate() and measure_latency() on trained and base models: classification metrics with
slices and a confusion matrix; generation loss/perplexity/exact match; extraction format validity."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("torch")

from ftc.runtime.backends import text_eval
from ftc.runtime.backends import text

from tests.runtime.conftest import MakeCtx, ticket_rows, write_jsonl


def test_classification_evaluation_with_slices(make_ctx: MakeCtx) -> None:
    ctx = make_ctx("classification", "full {}",
                   train="steps 30; learning_rate 3e-3; batch_size 16; precision fp32; seed 1; schedule constant")
    result = text.train_sft(ctx)
    ev = text_eval.evaluate(ctx, result.model_dir, "test")
    assert ev.split == "test" and ev.n == 30
    for name in ("accuracy", "f1.macro", "f1.micro", "f1.weighted", "precision.macro", "recall.weighted", "auc",
                 "loss", "f1"):
        assert name in ev.metrics, name
    assert ev.metrics["f1"] == ev.metrics["f1.macro"]  # `metric f1 macro`
    assert ev.metrics["accuracy"] == ev.metrics["f1.micro"]  # single-label: micro F1 is accuracy
    emails = sum(r["channel"] == "email" for r in ctx.parts["test"].rows)
    assert ev.slices["email"]["n"] == emails > 0
    matrix = ev.extra["confusion_matrix"]["matrix"]
    assert sum(map(sum, matrix)) == 30 and ev.extra["confusion_matrix"]["labels"] == ["billing", "bug", "account"]
    assert ev.metrics["accuracy"] >= 0.6, ev.metrics  # keywords decide the class: learnable in 30 steps
    base = text_eval.evaluate(ctx, None, "test")
    assert base.metrics["accuracy"] < ev.metrics["accuracy"]
    assert base.metrics["loss"] > ev.metrics["loss"]


@pytest.mark.parametrize("task", ["extraction", "generation"])
def test_generation_metrics_after_learning_a_constant_answer(make_ctx: MakeCtx, task: str) -> None:
    ctx = make_ctx(task, "full {}", constant_target=True,
                   train="steps 50; learning_rate 5e-3; batch_size 8; precision fp32; seed 1; schedule constant")
    result = text.train_sft(ctx)
    ev = text_eval.evaluate(ctx, result.model_dir, "test")
    assert ev.n == 30
    assert ev.metrics["exact_match"] == 1.0, ev.extra["samples"]
    assert ev.metrics["loss"] < 0.2 and math.isclose(ev.metrics["perplexity"], math.exp(ev.metrics["loss"]))
    assert ("format_validity" in ev.metrics) == (task == "extraction")
    if task == "extraction":
        assert ev.metrics["format_validity"] == 1.0
    assert ev.slices["email"]["n"] == 15
    base = text_eval.evaluate(ctx, None, "test")
    assert base.metrics["exact_match"] == 0.0 and base.metrics["loss"] > 3


def test_latency_percentiles(make_ctx: MakeCtx) -> None:
    ctx = make_ctx("classification", "lora { rank 4 }")
    lat = text_eval.measure_latency(ctx, None, n=12, warmup=2)
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
    assert lat["n"] == 12 and lat["warmup"] == 2 and lat["unit"] == "s"
    gen = make_ctx("generation", "lora { rank 4 }")
    lat = text_eval.measure_latency(gen, None, n=5)
    assert lat["warmup"] == 5 and lat["p50"] > 0  # the spec's latency_warmup (default 5)


def test_evaluate_file_named_by_a_gate(make_ctx: MakeCtx) -> None:
    ctx = make_ctx("classification", "lora { rank 4 }")
    rows = ticket_rows(12, 9)
    write_jsonl(ctx.checked.base_dir / "general.jsonl", rows)
    ev = text_eval.evaluate_file(ctx, None, "general.jsonl")
    assert ev.split == "general.jsonl" and ev.n == 12 and "f1.macro" in ev.metrics
    assert ev.slices["email"]["n"] == sum(r["channel"] == "email" for r in rows)
    with pytest.raises(ValueError, match="cannot evaluate on missing.jsonl"):
        text_eval.evaluate_file(ctx, None, "missing.jsonl")
