"""Data checks that stream (issue 15): a streamed training split gives the very diagnostics a held
one gives, memory does not grow with the rows read, the reader holds one batch at a time, and
the rows come back (read again) when the runtime asks for them."""

from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from ftc.compiler.check import CheckOptions, check_file
from ftc.compiler.data import near, readers, stream
from ftc.compiler.data.contracts import RowChecker, validate_rows
from ftc.compiler.data.readers import TableStream, read_table
from ftc.compiler.docs import compose_example

from tests.unit.test_data_rules import rows, write

LABEL_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "required": ["text", "label"],
    "properties": {"text": {"title": "sft input", "type": "string", "minLength": 1, "pattern": r"\S"},
                   "label": {"title": "label", "enum": ["billing", "bug", "account"]}}}


def diagnostics(result: Any) -> list[tuple[str, str, str, int, str]]:
    return [(d.code, d.message, d.span.path if d.span else "", d.span.line if d.span else 0, d.detail or "")
            for d in result.diagnostics]


def check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hold: int, spec: str) -> Any:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(stream, "HOLD_ROWS", hold)
    monkeypatch.setenv("FTC_NO_CACHE", "1")
    (tmp_path / "spec.ftspec").write_text(compose_example(spec), encoding="utf-8")
    return check_file(Path("spec.ftspec"), CheckOptions())


def faulty_train() -> list[dict[str, Any]]:
    """Training rows with something for most data rules to find."""
    train = rows(400, 1, created_at=lambda i: f"2024-03-{1 + i % 28:02d}T00:00:00Z",
                 customer_id=lambda i: f"c{i % 150}")
    train[10]["label"] = ["billing"]  # FT201, unhashable
    train[11]["text"] = ""  # FT201
    train[12] = dict(train[3])  # FT209
    train[13]["text"] += " write to jo@example.com or call +1 415 555 0100"  # FT214
    train[14]["text"] = "x " * 400  # FT215
    return train


def faulty_test() -> list[dict[str, Any]]:
    test = rows(60, 3, start=20_000, created_at="2024-06-01T00:00:00Z")
    test[0]["text"] = faulty_train()[5]["text"]  # FT205
    words = faulty_train()[6]["text"].split()
    test[1]["text"] = " ".join([*words, "again"])  # FT206
    test[2]["customer_id"] = "c7"  # FT207
    test[3]["created_at"] = "2024-01-01T00:00:00Z"  # FT208
    return test


PRESPLIT = ('data { train "data/train.jsonl"; val "data/val.jsonl"; test "data/test.jsonl"\n'
            'group "customer_id"; time "created_at"; max_length 64 drop\n'
            'slice fax where channel == "fax" }\n'
            "eval { metric f1 macro; gate f1 >= 0.85 on test; gate f1 >= 0.8 on test.fax }")


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_streamed_presplit_gives_the_held_diagnostics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      fmt: str) -> None:
    write(tmp_path / "data/val.jsonl", rows(60, 2, start=10_000, created_at="2024-05-01T00:00:00Z"))
    write(tmp_path / "data/test.jsonl", faulty_test())
    train = faulty_train()
    if fmt == "csv":
        import csv

        with open(tmp_path / "data/train.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(train[0]))
            w.writeheader()
            w.writerows({k: (json.dumps(v) if not isinstance(v, str) else v) for k, v in r.items()} for r in train)
    else:
        write(tmp_path / "data/train.jsonl", train)
    spec = PRESPLIT.replace("data/train.jsonl", f"data/train.{fmt}")
    held = check(tmp_path, monkeypatch, 10**9, spec)
    streamed = check(tmp_path, monkeypatch, 0, spec)
    assert streamed.checked is not None and not streamed.checked.data.parts["train"].held
    assert held.checked is not None and held.checked.data.parts["train"].held
    found = {d[0] for d in diagnostics(streamed)}
    assert {"FT201", "FT205", "FT206", "FT207", "FT208", "FT209", "FT214", "FT215", "FT218"} <= found
    assert diagnostics(streamed) == diagnostics(held)


@pytest.mark.parametrize("split", ["split 80/10/10; seed 3", "split 80/10/10 by group \"customer_id\"",
                                   "split 80/10/10 by time \"created_at\"", "split 80/10/10; stratify \"label\""])
def test_streamed_source_split_gives_the_held_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    split: str) -> None:
    data = faulty_train() + rows(200, 9, start=5000, created_at=lambda i: f"2024-04-{1 + i % 28:02d}T00:00:00Z")
    data[20]["customer_id"] = ""  # no group key: a problem for the group split
    write(tmp_path / "data/all.jsonl", data)
    spec = f'data {{ source "data/all.jsonl"; {split}; max_length 64 drop }}'
    held = check(tmp_path, monkeypatch, 10**9, spec)
    streamed = check(tmp_path, monkeypatch, 0, spec)
    assert diagnostics(streamed) == diagnostics(held)
    a, b = held.checked.data, streamed.checked.data
    assert a.sizes == b.sizes and a.hashes == b.hashes
    assert not b.parts["train"].held
    assert b.parts["train"].rows == a.parts["train"].rows  # read again, in order, when asked for
    assert list(b.parts["train"].locations) == list(a.parts["train"].locations)


def test_streamed_rows_refuse_a_changed_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "data/train.jsonl", rows(300, 1))
    write(tmp_path / "data/val.jsonl", rows(60, 2, start=10_000))
    write(tmp_path / "data/test.jsonl", rows(60, 3, start=20_000))
    result = check(tmp_path, monkeypatch, 0, 'data { train "data/train.jsonl"; val "data/val.jsonl"; '
                                               'test "data/test.jsonl" }')
    train = result.checked.data.parts["train"]
    assert len(train) == 300 and not train.held
    write(tmp_path / "data/train.jsonl", rows(301, 1))
    with pytest.raises(stream.DataChanged, match="changed since it was checked"):
        train.rows  # noqa: B018


# --- memory --------------------------------------------------------------------------------


def _peak_of_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int, hold: int) -> int:
    folder = tmp_path / f"{n}-{hold}"
    folder.mkdir()
    write(folder / "data/train.jsonl", rows(n, 1))
    write(folder / "data/val.jsonl", rows(60, 2, start=10**7))
    write(folder / "data/test.jsonl", rows(60, 3, start=2 * 10**7))
    spec = 'data { train "data/train.jsonl"; val "data/val.jsonl"; test "data/test.jsonl" }'
    check(folder, monkeypatch, hold, spec)  # warm imports and compiled schemas
    tracemalloc.start()
    result = check(folder, monkeypatch, hold, spec)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(result.checked.data.parts["train"]) == n
    return peak


def test_memory_does_not_grow_with_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "_BATCH", 1000)
    small = _peak_of_check(tmp_path, monkeypatch, 4000, 0)
    large = _peak_of_check(tmp_path, monkeypatch, 16000, 0)
    held = _peak_of_check(tmp_path, monkeypatch, 16000, 10**9)
    per_row = (large - small) / 12000
    assert per_row < 150, per_row  # bytes kept a row (hashes, a location), against ~1 KB a held row
    assert large < held / 3, (large, held)


def test_the_reader_holds_one_batch(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    write(p, rows(20000, 1))
    tracemalloc.start()
    sizes = [len(batch) for batch, _ in TableStream(p, "t.jsonl", batch_rows=500)]
    streamed = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    tracemalloc.start()
    whole = read_table(p, "t.jsonl")
    held = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sizes == [500] * 40 and len(whole) == 20000
    assert streamed < held / 5, (streamed, held)  # one batch (and 1 MB hashing buffers), not 20,000 rows


# --- the streaming forms equal the whole-list forms ---------------------------------------------


def test_near_scan_equals_near_matches_whatever_the_blocks() -> None:
    rng = random.Random(5)
    ref = [" ".join(rng.choice("abcdefghij") * rng.randint(1, 3) for _ in range(12)) for _ in range(3000)]
    query = [t if i % 3 else t + " extra" for i, t in enumerate(ref[::37])]
    query += [" ".join(ref[i].split()[:-1]) for i in range(5, 400, 41)]
    ref += ref[:50]  # repeats: ties go to the first
    want = near.near_matches(ref, query, 0.8)
    scan = near.NearScan(query, 0.8)
    at = 0
    while at < len(ref):
        step = rng.randint(1, 700)
        scan.feed(ref[at:at + step])
        at += step
    assert want and scan.finish() == want


def test_hashed_exact_forms_equal_the_text_forms() -> None:
    ref = ["Hello, World!", "another row", "hello world", "Third", "another  ROW."]
    query = ["third", "nothing", "ANOTHER ROW"]
    h1, h2 = near.sequence_hashes(ref)
    assert near.exact_matches_hashed(h1, h2, query) == near.exact_matches(ref, query)
    assert near.duplicates_hashed(h1, h2) == near.duplicates_within(ref) == [(2, 0), (4, 1)]


@pytest.mark.parametrize("absent", [False, True])
def test_row_checker_in_batches_equals_validate_rows(tmp_path: Path, absent: bool) -> None:
    data = rows(300, 1)
    for i in (3, 50, 51, 120, 299):
        data[i]["label"] = "nope" if i % 2 else ["bug"]
    data[7]["text"] = " "
    if absent:
        data = [{k: v for k, v in r.items() if k != "label"} for r in data]
    write(tmp_path / "t.jsonl", data)
    table = read_table(tmp_path / "t.jsonl", "t.jsonl")
    checker = RowChecker("t.jsonl", LABEL_SCHEMA)
    for a in range(0, len(table.rows), 7):
        checker.feed(table.rows[a:a + 7], table.locations[a:a + 7])
    got = checker.finish(table.columns, lambda: iter([(table.rows, table.locations)]))
    assert got == validate_rows(table, LABEL_SCHEMA)
    assert got[1] == (300 if absent else 6)
