"""Bounded, located reading of data files (issue 15): only regular files are read, symlink loops
and permissions are named, every bound of compiler/data/limits.py is a located problem naming the
limit and how to raise it, and a cell that is a list or an object is a located contract problem."""

from __future__ import annotations

import gzip
import json
import os
import socket
import threading
from pathlib import Path

import pytest
from ftc.compiler.data import limits
from ftc.compiler.data.cache import file_digest
from ftc.compiler.data.readers import read_table
from ftc.compiler.data.table import RowProblem, Table

from tests.unit.test_data_rules import codes, rows, run, the

ROW = {"text": "My invoice for May is wrong", "label": "billing"}


def read(path: Path, fmt: str | None = None) -> Table:
    """read_table in a thread that must finish: a reader that blocks (a FIFO) fails the test."""
    out: list[Table] = []
    worker = threading.Thread(target=lambda: out.append(read_table(path, path.name, fmt)), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), f"reading {path} did not finish"
    return out[0]


def only(table: Table) -> RowProblem:
    assert len(table.problems) == 1, table.problems
    return table.problems[0]


def jsonl(path: Path, n: int, row: dict[str, str] = ROW) -> Path:
    path.write_text("".join(json.dumps({**row, "i": i}) + "\n" for i in range(n)), encoding="utf-8")
    return path


# --- only regular files ------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_devices_are_refused(device: str) -> None:
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    for fmt in ("jsonl", "csv", "parquet"):
        p = only(read(Path(device), fmt))
        assert (p.kind, p.line) == ("not_regular", None)
        assert p.message == f"`{Path(device).name}` is a character device, not a regular file"


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "train.jsonl"
    os.mkfifo(fifo)
    p = only(read(fifo))
    assert p.kind == "not_regular" and "a FIFO (named pipe)" in p.message
    assert file_digest(fifo)  # the cache key does not block on it either


def test_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(path))
        p = only(read(path))
    finally:
        sock.close()
    assert p.kind == "not_regular" and "a socket" in p.message


def test_folder_where_a_file_is_meant(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").mkdir()
    p = only(read(tmp_path / "train.jsonl"))
    assert p.kind == "format" and p.message == "`train.jsonl` is a folder; format jsonl reads a file"


def test_symlink_loop_is_named(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").symlink_to(tmp_path / "b.jsonl")
    (tmp_path / "b.jsonl").symlink_to(tmp_path / "a.jsonl")
    p = only(read(tmp_path / "a.jsonl"))
    assert p.kind == "loop" and "is a symlink loop" in p.message and "does not exist" not in p.message


def test_dangling_symlink_names_its_target(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").symlink_to(tmp_path / "gone.jsonl")
    p = only(read(tmp_path / "train.jsonl"))
    assert p.kind == "missing" and "is a symbolic link to" in p.message and "gone.jsonl" in p.message


def test_a_symlink_to_a_device_is_refused(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").symlink_to("/dev/zero")
    assert only(read(tmp_path / "train.jsonl")).kind == "not_regular"


def test_an_image_named_by_a_table_may_not_be_a_device(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text(json.dumps({"image": "/dev/zero", "caption": "zeros"}) + "\n")
    p = only(read(tmp_path / "t.jsonl", "image_table"))
    assert (p.kind, p.line) == ("image", 1) and "a character device" in p.message


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_a_problem_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = jsonl(tmp_path / "t.jsonl", 3)
    os.chmod(p, 0)
    try:
        prob = only(read(p))
        assert prob.kind == "permission" and "permission denied" in prob.message
        assert file_digest(p)  # today's exit 3 (PermissionError in cache.py)
        result = run(tmp_path, monkeypatch)
        os.chmod(tmp_path / "data/train.jsonl", 0)
        result = run(tmp_path, monkeypatch)
        assert "FT200" in codes(result) and "permission denied" in the(result, "FT200").message
    finally:
        os.chmod(p, 0o644)


# --- bounds ----------------------------------------------------------------------------------


def test_limits_table_is_documented() -> None:
    doc = limits.__doc__ or ""
    for lim in limits.LIMITS:
        assert f"`{lim.name}`" in doc and lim.env in doc


def test_data_file_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTC_MAX_DATA_FILE_BYTES", "200")
    p = only(read(jsonl(tmp_path / "t.jsonl", 20)))
    assert p.kind == "limit" and "`data_file_bytes` limit" in p.message
    assert "FTC_MAX_DATA_FILE_BYTES" in p.help and "raise" in p.help


def test_decompressed_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTC_MAX_DECOMPRESSED_BYTES", "5000")
    body = "".join(json.dumps({**ROW, "i": i}) + "\n" for i in range(1000)).encode()
    (tmp_path / "t.jsonl.gz").write_bytes(gzip.compress(body))
    t = read(tmp_path / "t.jsonl.gz")
    p = only(t)
    assert p.kind == "limit" and "expands to more than" in p.message and "FTC_MAX_DECOMPRESSED_BYTES" in p.help
    assert p.line is not None and 0 < len(t) < 1000  # the rows before the limit were read


def test_gzip_bomb_is_stopped_by_the_ratio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "RATIO_FLOOR", 1 << 16)
    body = (json.dumps({"text": "a" * 4000, "label": "billing"}) + "\n").encode() * 2000  # 8 MB of one row
    (tmp_path / "bomb.jsonl.gz").write_bytes(gzip.compress(body, 9))
    t = read(tmp_path / "bomb.jsonl.gz")
    p = only(t)
    assert p.kind == "limit" and "compression bomb" in p.message and "FTC_MAX_COMPRESSION_RATIO" in p.help
    assert 0 < len(t) < 2000  # stopped before the end (the ratio is judged on what gzip has read ahead)


def test_rows_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTC_MAX_ROWS_PER_FILE", "10")
    t = read(jsonl(tmp_path / "t.jsonl", 25))
    p = only(t)
    assert len(t) == 10 and t.locations[-1] == 10
    assert p.kind == "limit" and p.line == 10 and "more than 10 rows" in p.message
    assert "FTC_MAX_ROWS_PER_FILE" in p.help


def test_row_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTC_MAX_ROW_BYTES", "100")
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps(ROW) + "\n" + json.dumps({"text": "x" * 500, "label": "bug"}) + "\n")
    t = read(p)
    assert (len(t), only(t).kind, only(t).line) == (1, "too_large", 2)
    assert "FTC_MAX_ROW_BYTES" in only(t).help


def test_cell_bytes_in_parquet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([ROW, {"text": "y" * 300, "label": "bug"}]), tmp_path / "t.parquet")
    monkeypatch.setenv("FTC_MAX_CELL_BYTES", "100")
    p = only(read(tmp_path / "t.parquet"))
    assert (p.kind, p.line) == ("limit", 2) and "`text`" in p.message and "FTC_MAX_CELL_BYTES" in p.help


def test_json_document_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTC_MAX_JSON_DOCUMENT_BYTES", "50")
    (tmp_path / "t.json").write_text(json.dumps([ROW] * 5))
    p = only(read(tmp_path / "t.json"))
    assert p.kind == "limit" and "parsed whole" in p.message and "FTC_MAX_JSON_DOCUMENT_BYTES" in p.help


def test_image_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTC_MAX_IMAGE_BYTES", "10")
    images = Path(__file__).resolve().parents[1] / "data" / "good" / "images"
    t = read_table(images, "images", max_problems=50)
    assert not t.rows and t.problems and all("`image_bytes` limit" in p.message for p in t.problems)


def test_a_bad_value_keeps_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTC_MAX_ROWS_PER_FILE", "lots")
    assert limits.current().rows_per_file == 50_000_000
    monkeypatch.setenv("FTC_MAX_ROWS_PER_FILE", "1_000")
    assert limits.current().rows_per_file == 1000


# --- cells that are not scalars ----------------------------------------------------------------


def test_a_list_label_is_a_located_contract_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = rows(300, 1)
    train[4]["label"] = ["billing"]
    train[7]["label"] = {"name": "bug"}
    result = run(tmp_path, monkeypatch, train=train)
    assert result.checked is not None and "FT201" in codes(result)
    found = [d for d in result.diagnostics if d.code == "FT201"]
    assert [(d.span.line, d.message) for d in found] == [
        (5, '`label` is ["billing"] (a list), not one of the model\'s labels'),
        (8, '`label` is {"name": "bug"} (an object), not one of the model\'s labels')]


def test_list_cells_everywhere_a_rule_compares_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Group keys, times, slices and text fields holding lists or objects: no internal error."""
    odd = [["a"], {"k": 1}, [1, [2]], None]
    train = rows(300, 1, customer_id=lambda i: odd[i % 4], created_at=lambda i: odd[(i + 1) % 4],
                 channel=lambda i: odd[(i + 2) % 4])
    test = rows(60, 3, start=20_000, customer_id=lambda i: odd[i % 4], channel=lambda i: odd[i % 4])
    snippet = ('data { train "data/train.jsonl"; val "data/val.jsonl"; test "data/test.jsonl"\n'
               'group "customer_id"; time "created_at"; slice email where channel == "email" }\n'
               "eval { metric f1 macro; gate f1 >= 0.85 on test; gate f1 >= 0.8 on test.email }")
    result = run(tmp_path, monkeypatch, snippet, train=train, test=test)
    assert result.checked is not None
    assert all(d.code != "FT000" and "internal error" not in d.message for d in result.diagnostics)
