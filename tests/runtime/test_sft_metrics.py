"""Every metric the language allows for an SFT text task is computed, overall and per slice, so
that a gate on it is decided (never "metric not measured"); and accuracy/f1 of generation and
extraction follow their definitions (runtime/metrics.py) on hand-picked replies.

The allowed (task, metric) pairs come from the compiler (compiler/rules/compat.py), as in
test_eval_dispatch.py: a metric the language adds for a task fails here until it is computed.
Models are untrained tiny ones (the evaluation, not the training, is under test).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

pytest.importorskip("torch")

from ftc.compiler.plan import build_plan
from ftc.compiler.rules.compat import TASKS_BY_MODALITY, TASKS_BY_SIGNAL, metrics_for
from ftc.runtime import executor as ex
from ftc.runtime import gates
from ftc.runtime.api import EvalResult, TrainContext
from ftc.runtime.backends import text_eval

from tests.runtime.conftest import MakeCtx

TEXT_SFT_TASKS = sorted(set(TASKS_BY_SIGNAL["sft"]) & set(TASKS_BY_MODALITY["text"]))
PAIRS = [(task, metric) for task in TEXT_SFT_TASKS for metric in metrics_for(task, "sft")]


def test_the_pairs_come_from_the_compiler() -> None:
    """The issue's pairs: accuracy and f1 for generation and extraction are among them."""
    assert TEXT_SFT_TASKS == ["classification", "extraction", "generation"]
    assert {("generation", "accuracy"), ("generation", "f1"), ("extraction", "accuracy"),
            ("extraction", "f1")} <= set(PAIRS)


def _eval_block(task: str) -> str:
    """Every metric the language allows for `task`, each gated on the test split and its slice."""
    lines = [f"metric {m}" for m in metrics_for(task, "sft")]
    for m in metrics_for(task, "sft"):
        op, threshold = ("<=", "1000000") if m in ("loss", "perplexity") else (">=", "0.0")
        lines += [f"gate {m} {op} {threshold} on test", f"gate {m} {op} {threshold} on test.email"]
    return "; ".join(lines)


def _evaluate(ctx: TrainContext) -> EvalResult:
    """The test split of the base model, dispatched as `ftc run` dispatches it (by the signal)."""
    state = ex.RunState(plan=None, checked=ctx.checked, run_dir=ctx.run_dir, log=lambda e: None)  # type: ignore
    state.parts = dict(ctx.parts)
    return ex._backend_evaluate(state, None, {"split": "test", "model": "base"})


@pytest.mark.parametrize("task", TEXT_SFT_TASKS)
def test_every_metric_the_language_allows_is_computed(task: str, make_ctx: MakeCtx) -> None:
    ctx = make_ctx(task, "lora { rank 4; alpha 8 }", eval_=_eval_block(task))
    result = _evaluate(ctx)
    allowed = set(metrics_for(task, "sft"))
    n_test = len(ctx.parts["test"].rows)
    assert result.n == n_test
    for where, scores in (("test", result.metrics), ("test.email", result.slices["email"])):
        assert allowed <= set(scores), (where, sorted(allowed - set(scores)))
        bad = {m: scores[m] for m in allowed if not (isinstance(scores[m], float) and math.isfinite(scores[m]))}
        assert not bad, (where, bad)
    assert 0 < result.slices["email"]["n"] < n_test
    for m in allowed - {"loss", "perplexity"}:
        assert 0.0 <= result.metrics[m] <= 1.0, (m, result.metrics[m])
    # every gate the spec can write on these metrics is decided, overall and on the slice
    [node] = [n for n in build_plan(ctx.checked).nodes if n.id == "gates"]
    decided = gates.evaluate(node.params["gates"], {"tuned:test": result})
    assert len(decided) == 2 * len(allowed)
    undecided = [g.gate for g in decided if g.value is None or not g.passed]
    assert not undecided, (undecided, [g.note for g in decided if g.value is None])


def _fake_replies(monkeypatch: pytest.MonkeyPatch, reply: Any) -> None:
    """Greedy decodes replaced by `reply(index, target)`, in the order of the split's rows."""
    calls = iter(range(10_000))
    monkeypatch.setattr(text_eval, "_generate", lambda model, tok, e: reply(next(calls), e.target))


def test_generation_accuracy_and_token_f1_by_hand(make_ctx: MakeCtx, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even rows (channel email) get their target with doubled spaces: right, F1 1. Odd rows get
    it upper-cased without its last token: wrong, and F1 6/7 (3 of 4 tokens, case ignored)."""
    def reply(i: int, target: str) -> str:
        return target.replace(" ", "  ") if i % 2 == 0 else " ".join(target.upper().split()[:-1])

    _fake_replies(monkeypatch, reply)
    ctx = make_ctx("generation", "lora { rank 4 }", eval_="metric accuracy; metric f1; gate f1 >= 0.9 on test")
    assert all(len(r["answer"].split()) == 4 for r in ctx.parts["test"].rows)  # {"name": "x", "ok": true}
    result = text_eval.evaluate(ctx, None, "test")
    assert result.n == 30
    assert result.metrics["accuracy"] == pytest.approx(0.5)
    assert result.metrics["exact_match"] == pytest.approx(0.5)
    assert result.metrics["f1"] == pytest.approx((1 + 6 / 7) / 2)
    email = result.slices["email"]
    assert email["n"] == 15 and email["accuracy"] == 1.0 and email["f1"] == 1.0


def test_extraction_accuracy_and_field_f1_by_hand(make_ctx: MakeCtx, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even rows (email) get their record with its keys reordered: right, 2 of 2 fields. Odd rows
    get `ok` flipped and an extra field: wrong, 1 field matched of 3 predicted and 2 expected."""
    def reply(i: int, target: str) -> str:
        record = json.loads(target)
        if i % 2 == 0:
            return json.dumps(dict(reversed(record.items())))
        return json.dumps({**record, "ok": not record["ok"], "note": "x"})

    _fake_replies(monkeypatch, reply)
    ctx = make_ctx("extraction", "lora { rank 4 }", eval_="metric accuracy; metric f1; gate f1 >= 0.9 on test")
    result = text_eval.evaluate(ctx, None, "test")
    assert result.n == 30
    assert result.metrics["accuracy"] == pytest.approx(0.5)
    # pooled: matched 15*2 + 15*1 = 45, predicted 15*2 + 15*3 = 75, reference 60 -> 90 / 135
    assert result.metrics["f1"] == pytest.approx(2 * 45 / (75 + 60))
    assert result.metrics["format_validity"] == 1.0  # both kinds of reply satisfy the schema
    email = result.slices["email"]
    assert email["n"] == 15 and email["accuracy"] == 1.0 and email["f1"] == 1.0 and email["exact_match"] == 1.0


def test_unparseable_extraction_replies_score_zero(make_ctx: MakeCtx, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_replies(monkeypatch, lambda i, target: target[:-1])  # truncated JSON
    ctx = make_ctx("extraction", "lora { rank 4 }", eval_="metric accuracy; metric f1; gate f1 >= 0.9 on test")
    result = text_eval.evaluate(ctx, None, "test")
    scores = {m: result.metrics[m] for m in ("accuracy", "f1", "exact_match", "format_validity")}
    assert scores == {"accuracy": 0.0, "f1": 0.0, "exact_match": 0.0, "format_validity": 0.0}


def test_classification_bare_names_default_to_macro(make_ctx: MakeCtx) -> None:
    """`metric precision` (no average) is macro in the language; undeclared bare names are too,
    and a declared average wins."""
    ctx = make_ctx("classification", "lora { rank 4 }",
                   eval_="metric f1 weighted; metric precision; gate f1 >= 0.0 on test")
    result = text_eval.evaluate(ctx, None, "test")
    m = result.metrics
    assert m["f1"] == m["f1.weighted"] and m["precision"] == m["precision.macro"] and m["recall"] == m["recall.macro"]
    assert result.slices["email"]["recall"] == result.slices["email"]["recall.macro"]

