"""runtime/metrics.py against hand-computed values (and scikit-learn where it is installed)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from ftc.compiler import schema as s
from ftc.compiler.data.stats import matches as _matches
from ftc.compiler.source import Span
from ftc.runtime import metrics

# y_true / y_pred over 3 classes, worked out by hand below.
Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 0, 1, 1, 2, 2]
# per class:   tp  fp  fn  support  precision  recall  f1
#   0          2   0   1   3        1          2/3     0.8
#   1          1   1   1   2        1/2        1/2     1/2
#   2          1   1   0   1        1/2        1       2/3


def test_confusion_matrix() -> None:
    assert metrics.confusion_matrix(Y_TRUE, Y_PRED, 3).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_precision_recall_f1_by_hand() -> None:
    p, r, f = metrics.precision_recall_f1(Y_TRUE, Y_PRED, "micro")
    assert p == pytest.approx(4 / 6) and r == pytest.approx(4 / 6) and f == pytest.approx(4 / 6)
    p, r, f = metrics.precision_recall_f1(Y_TRUE, Y_PRED, "macro")
    assert p == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert r == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert f == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    p, r, f = metrics.precision_recall_f1(Y_TRUE, Y_PRED, "weighted")
    assert p == pytest.approx((3 * 1 + 2 * 0.5 + 1 * 0.5) / 6)
    assert r == pytest.approx((3 * 2 / 3 + 2 * 0.5 + 1 * 1) / 6)
    assert f == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)


def test_absent_classes_are_left_out_and_zero_division_is_zero() -> None:
    # class 2 never appears (4 declared classes): macro averages over classes 0, 1, 3 only
    p, r, f = metrics.precision_recall_f1([0, 1, 3], [0, 0, 3], "macro", n_classes=4)
    assert p == pytest.approx((0.5 + 0 + 1) / 3) and r == pytest.approx((1 + 0 + 1) / 3)
    assert f == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert metrics.precision_recall_f1([], [], "macro") == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        metrics.precision_recall_f1([0], [0], "samples")


def test_auc_by_hand() -> None:
    # positives score 0.8, 0.4; negatives 0.5, 0.1: 3 of 4 pairs ordered right
    assert metrics.binary_auc([True, True, False, False], [0.8, 0.4, 0.5, 0.1]) == pytest.approx(0.75)
    # a tie between a positive and a negative counts half
    assert metrics.binary_auc([True, False], [0.5, 0.5]) == pytest.approx(0.5)
    assert math.isnan(metrics.binary_auc([True, True], [0.1, 0.2]))
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5], [0.9, 0.1]])
    assert metrics.roc_auc_ovr([1, 1, 0, 0], probs) == pytest.approx(0.75)


def test_auc_one_vs_rest_skips_classes_without_both_outcomes() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    # class 0: pos {0.7, 0.6} vs neg {0.2} -> 1; class 1: pos {0.7} vs neg {0.2, 0.3} -> 1; class 2 absent
    assert metrics.roc_auc_ovr([0, 1, 0], probs) == pytest.approx(1.0)


def test_log_loss_and_softmax() -> None:
    probs = metrics.softmax([[0.0, 0.0], [math.log(3), 0.0]])
    assert np.allclose(probs, [[0.5, 0.5], [0.75, 0.25]])
    assert metrics.log_loss([0, 1], probs) == pytest.approx(-(math.log(0.5) + math.log(0.25)) / 2)


def test_classification_metrics_and_declared_names() -> None:
    probs = np.eye(3)[Y_PRED] * 0.7 + 0.1
    m = metrics.classification_metrics(Y_TRUE, probs)
    assert m["accuracy"] == pytest.approx(4 / 6) and m["n"] == 6
    assert m["f1.macro"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert set(m) >= {"precision.micro", "recall.weighted", "auc", "loss"}
    named = metrics.with_declared_averages(m, [("f1", "weighted"), ("accuracy", None)])
    assert named["f1"] == m["f1.weighted"]


def test_against_sklearn_when_installed() -> None:
    skm = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    y = [rng.randrange(4) for _ in range(200)]
    probs = metrics.softmax(np.array([[rng.gauss(0, 1) + (2 if c == t else 0) for c in range(4)] for t in y]))
    pred = probs.argmax(axis=1).tolist()
    for avg in metrics.AVERAGES:
        ours = metrics.precision_recall_f1(y, pred, avg)
        theirs = skm.precision_recall_fscore_support(y, pred, average=avg, zero_division=0)[:3]
        assert ours == pytest.approx(theirs)
    assert metrics.roc_auc_ovr(y, probs) == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"))
    assert metrics.log_loss(y, probs) == pytest.approx(skm.log_loss(y, probs))


def test_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    p = metrics.percentiles(values)
    assert p == pytest.approx({"p50": 50.5, "p95": 95.05, "p99": 99.01})
    assert all(math.isnan(v) for v in metrics.percentiles([]).values())


def test_exact_match_and_format_validity() -> None:
    assert metrics.exact_match(" hello  world\n", "hello world")
    assert metrics.exact_match('{"b": 1, "a": 2}', '{"a": 2, "b": 1}')
    assert not metrics.exact_match("hello", "hello!")
    schema = {"type": "object", "required": ["total"], "properties": {"total": {"type": "number"}}}
    assert metrics.format_valid('{"total": 3}', schema)
    assert not metrics.format_valid('{"total": "3"}', schema)
    assert not metrics.format_valid("{total: 3}", schema)
    assert metrics.format_valid("[1]", None)


SPAN = Span("x", 0, 0, 1, 1, 1, 1)
ROWS = [{"channel": "email", "n": 3, "vip": True}, {"channel": "chat", "n": "7"}, {"channel": None},
        {"n": "x"}, {"channel": "Email", "vip": "TRUE"}]
CONDITIONS = [("channel", "==", "email"), ("channel", "!=", "email"), ("n", ">=", 3.0), ("n", "<", 5.0),
              ("vip", "==", "true"), ("vip", "!=", "false"), ("n", ">", "5")]


@pytest.mark.parametrize(("field", "op", "value"), CONDITIONS)
def test_slice_conditions_match_the_data_rules(field: str, op: str, value: str | float) -> None:
    cond = s.Condition(field, op, value, SPAN)
    assert [metrics.condition_matches(r, field, op, value) for r in ROWS] == [_matches(r, cond) for r in ROWS]


def test_slice_indices_and_all_conditions() -> None:
    conds = [s.Condition("channel", "==", "email", SPAN), s.Condition("n", ">=", 3.0, SPAN)]
    assert metrics.slice_indices(ROWS, conds) == [0]
    assert metrics.slice_indices(ROWS, []) == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------
# Decoded text: token F1 (generation), record accuracy and field F1 (extraction)


@pytest.mark.parametrize(("prediction", "reference", "expected"), [
    ("", "", 1.0),  # both empty
    ("   \n", "", 1.0),  # whitespace only is empty
    ("", "the cat", 0.0),
    ("the cat", "", 0.0),
    ("The  Cat\nsat", "the cat sat", 1.0),  # lowercased, whitespace tokens
    ("a b c d", "e f", 0.0),
    ("the cat sat", "the cat", 0.8),  # precision 2/3, recall 1: 2 * (2/3) / (5/3)
    ("a a b", "a b b", 2 / 3),  # bags: common = min counts = 1 + 1
    ("cat.", "cat", 0.0),  # punctuation is part of the token
])
def test_token_f1(prediction: str, reference: str, expected: float) -> None:
    assert metrics.token_f1(prediction, reference) == pytest.approx(expected)
    assert metrics.token_f1(reference, prediction) == pytest.approx(expected)  # symmetric


def test_text_accuracy_collapses_whitespace_only() -> None:
    assert metrics.text_accuracy(" hello \n world ", "hello world")
    assert not metrics.text_accuracy("Hello world", "hello world")
    assert not metrics.text_accuracy('{"a": 1, "b": 2}', '{"b": 2, "a": 1}')  # text, unlike exact_match
    assert metrics.text_accuracy("", "  ")


def test_json_fields_flatten_leaves_by_path() -> None:
    fields = metrics.json_fields('{"a": {"b": [1, "x  y"]}, "c": null, "d": [], "e": true}')
    assert fields == {("a", "b", 0): ("num", 1.0), ("a", "b", 1): ("str", "x y"), ("c",): ("const", None),
                      ("d",): ("empty", "[]"), ("e",): ("const", True)}
    assert metrics.json_fields("{}") == {} and metrics.json_fields("3") == {(): ("num", 3.0)}
    assert metrics.json_fields("{name: 1}") is None and metrics.json_fields("") is None
    assert metrics.json_fields("1") != metrics.json_fields("true")  # True == 1 in Python, not here


def test_field_counts_and_micro_f1_by_hand() -> None:
    ref = '{"name": "alice", "ok": true, "total": 3}'
    assert metrics.field_counts('{"ok": true, "total": 3.0, "name": " alice"}', ref) == (3, 3, 3)
    assert metrics.field_counts('{"name": "alice", "ok": false, "extra": 1}', ref) == (1, 3, 3)
    assert metrics.field_counts("not json", ref) == (0, 0, 3)
    assert metrics.field_counts("{}", "{}") == (0, 0, 0)
    assert metrics.field_counts("alice ", "alice") == (1, 1, 1)  # a non-JSON reference is one field
    assert metrics.field_counts("", "alice") == (0, 0, 1)
    # pooled: matched 3 + 1 + 0, predicted 3 + 3 + 0, reference 3 + 3 + 3 -> 2 * 4 / (6 + 9)
    counts = [(3, 3, 3), (1, 3, 3), (0, 0, 3)]
    assert metrics.field_f1(counts) == pytest.approx(8 / 15)
    assert metrics.field_f1([(0, 0, 0)]) == 1.0 and metrics.field_f1([]) == 1.0
    assert metrics.field_f1([(0, 2, 0)]) == 0.0


def test_record_match_needs_every_field_and_no_extra() -> None:
    ref = '{"name": "alice", "ok": true}'
    assert metrics.record_match('{"ok": true,  "name": "alice"}', ref)
    assert not metrics.record_match('{"name": "alice"}', ref)
    assert not metrics.record_match('{"name": "alice", "ok": true, "x": 1}', ref)
    assert not metrics.record_match('{"name": "alice", "ok": 1}', ref)
    assert not metrics.record_match("", "{}") and metrics.record_match("{ }", "{}")
    assert metrics.record_match("alice  smith", "alice smith")  # a non-JSON reference compares as text
