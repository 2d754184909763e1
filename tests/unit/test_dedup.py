"""Deduplication of the training split (compiler/data/dedup.py): what the spec's `dedup` removes,
computed from the rows `ftc check` read, is exactly what `ftc run`'s dedup node removes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ftc.compiler.check import CheckOptions, check_file
from ftc.compiler.data.dedup import deduplicated_train, duplicate_rows
from tests.unit.test_data_rules import rows, run

EXACT = {50: 10, 51: 10, 120: 33}  # copy -> original, the copies changed in case and punctuation
NEAR = {200: 60, 201: 61}  # the last of 14 words changed: Jaccard 11/13 of word 3-shingles


def _train() -> list[dict[str, Any]]:
    train = rows(300, 1)
    for copy, original in EXACT.items():
        train[copy] = dict(train[original], text=train[original]["text"].upper() + " !!")
    for copy, original in NEAR.items():
        words = train[original]["text"].split()
        train[copy] = dict(train[original], text=" ".join([*words[:-1], "changed"]))
    return train


def _spec(dedup: str) -> str:
    return f'data {{ train "data/train.jsonl"; val "data/val.jsonl"; test "data/test.jsonl"; dedup {dedup} }}'


def _removed(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> set[int]:
    kept = {id(r) for r in after}
    return {i for i, r in enumerate(before) if id(r) not in kept}


@pytest.mark.parametrize(("dedup", "removed"), [("exact", set(EXACT)), ("near 0.7", set(EXACT) | set(NEAR))])
def test_dedup_removes_the_duplicates_and_keeps_first_occurrences(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dedup: str, removed: set[int]) -> None:
    result = run(tmp_path, monkeypatch, _spec(dedup), train=_train())
    assert result.checked is not None and result.checked.data is not None
    train = result.checked.data.parts["train"]
    kept = deduplicated_train(result.checked)
    assert kept is not None and _removed(train.rows, kept.rows) == removed
    assert len(kept) == 300 - len(removed) and kept.sha256 != train.sha256
    assert kept.locations == [i + 1 for i in range(300) if i not in removed]  # file lines, in order


def test_what_the_plan_counts_is_what_the_run_removes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan's `dedup` node, executed by ftc run's LocalExecutor, keeps the very rows that
    deduplicated_train returns."""
    from ftc.compiler.plan import build_plan
    from ftc.runtime.executor import LocalExecutor

    result = run(tmp_path, monkeypatch, _spec("near 0.7"), train=_train())
    checked = result.checked
    assert checked is not None and checked.data is not None
    expected = deduplicated_train(checked)
    [node] = [n for n in build_plan(checked).nodes if n.kind == "dedup"]
    events: list[dict[str, Any]] = []
    state = SimpleNamespace(checked=checked, parts=dict(checked.data.parts), stage_parts={}, log=events.append)
    LocalExecutor()._dedup(node, state)  # type: ignore[arg-type]
    assert expected is not None and state.parts["train"].rows == expected.rows
    assert state.parts["train"].sha256 == expected.sha256
    assert f"dedup near: removed {len(EXACT) + len(NEAR)} " in events[-1]["message"]


def test_a_cached_check_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = run(tmp_path, monkeypatch, _spec("exact"), train=_train())
    again = check_file(Path("spec.ftspec"), CheckOptions())  # a cache hit: sizes and hashes, no rows
    assert again.checked is not None and again.checked.data is not None and not again.checked.data.parts
    assert first.checked is not None
    kept, expected = deduplicated_train(again.checked), deduplicated_train(first.checked)
    assert kept is not None and expected is not None and kept.rows == expected.rows and len(kept) == 297


def test_no_dedup_keeps_the_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(tmp_path, monkeypatch, train=_train())
    assert result.checked is not None and result.checked.data is not None
    assert deduplicated_train(result.checked) is result.checked.data.parts["train"]


def test_duplicate_rows_of_texts() -> None:
    texts = ["a b c d", "A b, c d!", "x y z w", "a b c e", ""]
    assert duplicate_rows(texts, "exact", None) == {1}
    assert duplicate_rows(texts, "near", 0.3) == {1, 3}  # {abc} of {abc, bcd, bce}: 1/3
    assert duplicate_rows(texts, "none", None) == set()
