"""Readers: every format reads its good files, and every bad file in tests/data/bad becomes located
problems (path, line, field, message), never an exception."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from ftc.compiler.data.readers import FORMATS, MAX_LINE, infer_format, read_table
from ftc.compiler.data.table import RowProblem, Table

DATA = Path(__file__).resolve().parents[1] / "data"
GOOD, BAD = DATA / "good", DATA / "bad"
TICKETS = [
    {"text": "My invoice for May is wrong", "label": "billing", "channel": "email"},
    {"text": "The app crashes when I upload a photo", "label": "bug", "channel": "chat"},
    {"text": "Please reset my password", "label": "account", "channel": "web"},
]


def read(path: Path, fmt: str | None = None, **kw: object) -> Table:
    return read_table(path, path.name, fmt, **kw)  # type: ignore[arg-type]


def only(table: Table) -> RowProblem:
    assert len(table.problems) == 1, table.problems
    return table.problems[0]


def lines(table: Table) -> list[int | None]:
    return [p.line for p in table.problems]


# ---------------------------------------------------------------------------------------------
# Format inference


@pytest.mark.parametrize(("name", "fmt"), [
    ("a.jsonl", "jsonl"), ("a.JSONL", "jsonl"), ("a.json", "jsonl"), ("a.jsonl.gz", "jsonl"),
    ("a.ndjson", "jsonl"), ("a.csv", "csv"), ("a.csv.gz", "csv"), ("a.tsv", "csv"), ("a.parquet", "parquet"),
    ("a.txt", None), ("noext", None),
])
def test_infer_format_from_name(name: str, fmt: str | None) -> None:
    assert infer_format(Path("/nonexistent") / name) == fmt


def test_infer_format_of_folders(tmp_path: Path) -> None:
    assert infer_format(GOOD / "images") == "image_folder"
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "state.json").write_text("{}")
    assert infer_format(tmp_path / "ds") == "hf_dataset"
    (tmp_path / "other").mkdir()
    assert infer_format(tmp_path / "other") is None
    assert set(FORMATS) == {"jsonl", "csv", "parquet", "hf_dataset", "image_folder", "image_table"}


# ---------------------------------------------------------------------------------------------
# Good files


def test_jsonl_good() -> None:
    t = read(GOOD / "tickets.jsonl")
    assert (t.fmt, len(t), t.bad_rows, t.problems) == ("jsonl", 4, 0, [])
    assert t.locations == [1, 2, 3, 4] and t.location_kind == "line"
    assert t.columns == ("text", "label", "channel")
    assert t.rows[3]["text"].startswith("Café")
    assert len(t.sha256) == 64


def test_jsonl_bom_is_accepted_and_hash_is_of_bytes() -> None:
    plain, bom = read(GOOD / "tickets.jsonl"), read(GOOD / "tickets-bom.jsonl")
    assert bom.problems == [] and bom.rows == plain.rows
    assert bom.sha256 != plain.sha256  # the bytes differ


def test_json_array_file() -> None:
    t = read(GOOD / "tickets.json")
    assert (len(t), t.location_kind, t.problems) == (2, "row", [])


def test_jsonl_gz_and_blank_lines(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl.gz"
    with gzip.open(p, "wt", encoding="utf-8") as f:
        f.write(json.dumps(TICKETS[0]) + "\n\n" + json.dumps(TICKETS[1]) + "\n")
    t = read(p)
    assert (len(t), t.locations, t.problems) == (2, [1, 3], [])


def test_csv_good_with_quoted_newline() -> None:
    t = read(GOOD / "tickets.csv")
    assert (len(t), t.problems, t.columns) == (3, [], ("text", "label", "channel"))
    assert t.rows[0]["text"] == "My invoice, for May, is wrong"
    assert t.rows[1]["text"] == "The app crashes\nwhen I upload a photo"
    assert t.locations == [2, 3, 5]  # a row's first line


def test_parquet_good(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(TICKETS), tmp_path / "t.parquet")
    t = read(tmp_path / "t.parquet")
    assert (t.fmt, len(t), t.location_kind, t.locations, t.problems) == ("parquet", 3, "row", [1, 2, 3], [])
    assert t.rows == TICKETS and t.columns == ("text", "label", "channel")


def _save_to_disk(folder: Path, rows: list[dict[str, object]], features: dict[str, object]) -> None:
    """The layout `datasets.Dataset.save_to_disk` writes, made with pyarrow alone."""
    import pyarrow as pa

    folder.mkdir(parents=True)
    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink, \
            pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=2)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}],
                                                   "_fingerprint": "0", "_split": None}))
    (folder / "dataset_info.json").write_text(json.dumps({"features": features}))


def test_hf_dataset_with_class_labels(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    rows = [{"text": r["text"], "label": i % 2} for i, r in enumerate(TICKETS)]
    _save_to_disk(tmp_path / "ds", rows, {"text": {"dtype": "string", "_type": "Value"},
                                          "label": {"names": ["neg", "pos"], "_type": "ClassLabel"}})
    t = read(tmp_path / "ds")
    assert (t.fmt, len(t), t.location_kind, t.problems) == ("hf_dataset", 3, "row", [])
    assert [r["label"] for r in t.rows] == ["neg", "pos", "neg"] and t.locations == [1, 2, 3]


def test_hf_dataset_with_embedded_images(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    png = (GOOD / "images" / "cat" / "cat1.png").read_bytes()
    rows = [{"image": {"bytes": png, "path": "a.png"}, "label": 0},
            {"image": {"bytes": png[:40], "path": "b.png"}, "label": 1}]
    _save_to_disk(tmp_path / "ds", rows, {"image": {"_type": "Image"},
                                          "label": {"names": ["cat", "dog"], "_type": "ClassLabel"}})
    t = read(tmp_path / "ds")
    assert (len(t), t.locations, t.bad_rows) == (1, [1], 1)
    assert (t.rows[0]["width"], t.rows[0]["height"], t.rows[0]["label"]) == (8, 6, "cat")
    p = only(t)
    assert (p.line, p.field, p.kind) == (2, "image", "image") and "cannot be decoded" in p.message


def test_hf_dataset_dict_folder_names_its_splits(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    _save_to_disk(tmp_path / "dd" / "train", [{"text": "a"}], {})
    (tmp_path / "dd" / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
    p = only(read(tmp_path / "dd"))
    assert p.kind == "format" and "DatasetDict" in p.message and "dd/train" in p.help
    assert read(tmp_path / "dd" / "train").rows == [{"text": "a"}]


def test_hf_dataset_written_by_datasets(tmp_path: Path) -> None:
    """The real thing, where `datasets` is installed (tests may import it; ftc never does)."""
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["billing", "bug", "account"])})
    ds = datasets.Dataset.from_dict({"text": [r["text"] for r in TICKETS], "label": [0, 1, 2]}, features=features)
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dd"))
    t = read(tmp_path / "dd" / "train")
    assert t.problems == [] and [r["label"] for r in t.rows] == ["billing", "bug", "account"]
    assert only(read(tmp_path / "dd")).kind == "format"


def test_image_folder_good() -> None:
    t = read(GOOD / "images")
    assert (t.fmt, len(t), t.problems, t.location_kind) == ("image_folder", 4, [], "row")
    assert t.rows[0] == {"image": "cat/cat1.png", "label": "cat", "width": 8, "height": 6, "mode": "RGB"}
    assert t.image_sha256["cat/cat1.png"] == hashlib.sha256((GOOD / "images/cat/cat1.png").read_bytes()).hexdigest()
    assert sorted(t.image_sha256) == sorted(r["image"] for r in t.rows)
    assert {r["label"] for r in t.rows} == {"cat", "dog"} and t.rows[3]["mode"] == "L"


def test_image_folder_hash_sees_renames(tmp_path: Path) -> None:
    shutil.copytree(GOOD / "images", tmp_path / "images")
    before = read(tmp_path / "images").sha256
    (tmp_path / "images" / "cat" / "cat1.png").rename(tmp_path / "images" / "dog" / "cat1.png")
    assert read(tmp_path / "images").sha256 != before


def test_image_table_good() -> None:
    t = read(GOOD / "captions.jsonl", "image_table")
    assert (len(t), t.problems) == (2, [])
    assert t.rows[0] == {"image": "images/cat/cat1.png", "caption": "an orange cat", "width": 8, "height": 6,
                         "mode": "RGB"}
    assert t.columns == ("image", "caption", "width", "height", "mode")
    digest = hashlib.sha256((GOOD / "images/cat/cat1.png").read_bytes()).hexdigest()
    assert t.image_sha256["images/cat/cat1.png"] == digest


def test_image_table_with_image_root(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("picture,caption\ncat/cat1.png,a cat\n")
    t = read(tmp_path / "t.csv", "image_table", image_root=GOOD / "images", image_field="picture")
    assert (len(t), t.problems, t.rows[0]["width"]) == (1, [], 8)


# ---------------------------------------------------------------------------------------------
# The bad corpus: each file, its located problems


def test_missing_file_and_folder(tmp_path: Path) -> None:
    p = only(read(tmp_path / "nope.jsonl"))
    assert (p.path, p.line, p.kind, p.message) == ("nope.jsonl", None, "missing", "no such file: `nope.jsonl`")
    assert only(read(tmp_path / "nope", "image_folder")).message == "no such folder: `nope`"


@pytest.mark.parametrize("name", ["empty.jsonl", "blank-lines.jsonl", "empty.csv"])
def test_empty(name: str) -> None:
    t = read(BAD / name)
    p = only(t)
    assert (len(t), p.kind, p.line) == (0, "empty", None) and p.message.startswith("empty")


def test_header_only_csv() -> None:
    p = only(read(BAD / "header-only.csv"))
    assert (p.kind, p.line, p.message) == ("empty", 1, "empty: a header but no rows")


def test_binary_garbage() -> None:
    t = read(BAD / "garbage.jsonl")
    p = only(t)
    assert (len(t), p.kind, p.line, p.path) == (0, "binary", 1, "garbage.jsonl")
    assert "NUL byte at offset 3" in p.message


def test_latin1_names_offset_and_line() -> None:
    t = read(BAD / "latin1.jsonl")
    p = only(t)
    assert (len(t), t.bad_rows, p.kind, p.line, p.column) == (2, 1, "encoding", 3, 14)
    assert "byte 0xe9 at offset 78 (line 3, column 14)" in p.message and "UTF-8" in p.help


def test_utf16() -> None:
    p = only(read(BAD / "utf16.jsonl"))
    assert (p.kind, p.line) == ("encoding", 1) and "UTF-16" in p.message


def test_not_objects() -> None:
    t = read(BAD / "not-objects.jsonl")
    assert (len(t), t.bad_rows, t.locations) == (2, 4, [1, 6])
    assert lines(t) == [2, 3, 4, 5] and {p.kind for p in t.problems} == {"shape"}
    assert t.problems[0].message == 'line 2 holds an array, not a JSON object: `["text", "label"]`'
    assert "holds null" in t.problems[3].message


def test_truncated_json() -> None:
    t = read(BAD / "truncated.jsonl")
    p = only(t)
    assert (len(t), t.bad_rows, p.line, p.kind, p.column) == (2, 1, 3, "syntax", 10)
    assert "unterminated string" in p.message and "truncated" in p.help


def test_bad_json_lines_with_columns() -> None:
    t = read(BAD / "bad-json.jsonl")
    assert (len(t), t.bad_rows, lines(t)) == (1, 3, [2, 3, 4])
    assert t.problems[0].message.startswith("line 2 is not valid JSON: expecting ',' delimiter at column 16")


def test_max_problems_counts_all() -> None:
    t = read_table(BAD / "not-objects.jsonl", "x.jsonl", max_problems=2)
    assert (t.bad_rows, lines(t)) == (4, [2, 3])


def test_ragged_csv() -> None:
    t = read(BAD / "ragged.csv")
    assert (len(t), t.bad_rows, t.locations, lines(t)) == (2, 2, [2, 6], [4, 5])
    assert t.problems[0].message == "row at line 4 has 3 cells, the header has 2"
    assert t.problems[1].message == "row at line 5 has 1 cell, the header has 2"


def test_duplicate_csv_header() -> None:
    p = only(read(BAD / "duplicate-header.csv"))
    assert (p.line, p.field, p.kind) == (1, "text", "shape")


def test_corrupt_parquet() -> None:
    pytest.importorskip("pyarrow")
    p = only(read(BAD / "corrupt.parquet"))
    assert (p.kind, p.line, p.path) == ("unreadable", None, "corrupt.parquet")
    assert p.message.startswith("not a readable parquet file")


def test_truncated_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(TICKETS), tmp_path / "t.parquet")
    data = (tmp_path / "t.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    assert only(read(tmp_path / "cut.parquet")).kind == "unreadable"
    (tmp_path / "text.parquet").write_text('{"text": "a jsonl file named .parquet"}\n')
    assert only(read(tmp_path / "text.parquet")).kind == "unreadable"


def test_corrupt_gzip(tmp_path: Path) -> None:
    data = gzip.compress(("\n".join(json.dumps(r) for r in TICKETS * 50) + "\n").encode())
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    t = read(tmp_path / "cut.jsonl.gz")
    assert [p.kind for p in t.problems] == ["unreadable"] and "corrupt or truncated" in t.problems[0].message


def test_enormous_line_is_a_problem_not_a_memory_blowup(tmp_path: Path) -> None:
    p = tmp_path / "huge.jsonl"
    with open(p, "w", encoding="utf-8") as f:
        f.write(json.dumps(TICKETS[0]) + "\n")
        f.write('{"text": "' + "x" * (2 * MAX_LINE + 5) + '"}\n')
        f.write(json.dumps(TICKETS[1]) + "\n")
    tracemalloc.start()
    t = read(p)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    prob = only(t)
    assert (len(t), t.locations, t.bad_rows, prob.line, prob.kind) == (2, [1, 3], 1, 2, "too_large")
    assert "20.0 MB long" in prob.message
    assert peak < 3 * MAX_LINE  # the 20 MB line was never held whole


def test_enormous_csv_field(tmp_path: Path) -> None:
    p = tmp_path / "huge.csv"
    p.write_text("text,label\n" + "y" * (MAX_LINE + 10) + ",a\nok,b\n")
    t = read(p)
    assert (len(t), t.locations, only(t).kind, only(t).line) == (1, [3], "too_large", 2)


def test_wrong_format_for_path(tmp_path: Path) -> None:
    assert only(read(GOOD / "images", "jsonl")).kind == "format"
    assert only(read(GOOD / "tickets.jsonl", "image_folder")).kind == "format"
    (tmp_path / "data.txt").write_text("hello\n")
    p = only(read(tmp_path / "data.txt"))
    assert p.kind == "format" and "cannot tell the format" in p.message


def test_bad_image_folder() -> None:
    t = read_table(BAD / "images", "bad/images", max_problems=10)
    assert sorted(r["image"] for r in t.rows) == ["cat/ok.png", "dog/ok.png"]
    by_path = {p.path: p for p in t.problems}
    assert set(by_path) == {"bad/images/stray.png", "bad/images/bird", "bad/images/cat/not-an-image.png",
                            "bad/images/cat/notes.txt", "bad/images/cat/truncated.png", "bad/images/dog/bad-crc.png"}
    assert t.bad_rows == 5  # the empty class folder is a problem, not a bad row
    assert by_path["bad/images/bird"].message == "class folder `bird` holds no images"
    assert by_path["bad/images/bird"].field == "label"
    assert "not an image in a known format" in by_path["bad/images/cat/not-an-image.png"].message
    assert "cannot be decoded" in by_path["bad/images/cat/truncated.png"].message
    assert "bad header checksum" in by_path["bad/images/dog/bad-crc.png"].message
    assert all(p.line is None for p in t.problems)


def test_bad_image_table() -> None:
    t = read_table(BAD / "image-table.jsonl", "bad/image-table.jsonl", "image_table")
    assert (len(t), t.bad_rows, t.locations, lines(t)) == (2, 4, [1, 6], [2, 3, 4, 5])
    assert all(p.field == "image" and p.kind == "image" for p in t.problems)
    missing, truncated, absent, number = t.problems
    assert missing.message == "image `images/cat/missing.png` does not exist"
    assert "relative to the table's folder (`bad`)" in missing.help
    assert truncated.message.startswith("image `images/cat/truncated.png` cannot be decoded")
    assert absent.message == "`image` is missing" and number.message == "`image` is not a path (`42`)"
    assert t.rows[1] == {"image": "images/dog/ok.png", "caption": "another square", "width": 5, "height": 5,
                         "mode": "RGB"}
    assert sorted(t.image_sha256) == ["images/cat/ok.png", "images/dog/ok.png"]


def test_image_table_without_image_column(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text('{"caption": "a"}\n')
    p = only(read(tmp_path / "t.jsonl", "image_table"))
    assert (p.field, p.kind) == ("image", "image") and "no `image` column" in p.message


def test_hf_dataset_problems(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    _save_to_disk(tmp_path / "ds", [{"text": "a"}, {"text": "b"}], {})
    (tmp_path / "ds" / "data-00000-of-00001.arrow").write_bytes(b"garbage, not arrow")
    assert only(read(tmp_path / "ds")).kind == "unreadable"
    (tmp_path / "ds" / "data-00000-of-00001.arrow").unlink()
    assert only(read(tmp_path / "ds")).kind == "missing"
    (tmp_path / "ds" / "state.json").write_text("{not json")
    assert only(read(tmp_path / "ds")).kind == "unreadable"


def test_whole_bad_corpus_never_raises() -> None:
    for path in sorted(BAD.rglob("*")):
        for fmt in (None, *FORMATS):
            t = read_table(path, path.name, fmt)
            assert t.problems or t.rows or t.bad_rows == 0, (path, fmt)


# ---------------------------------------------------------------------------------------------
# Speed and import cost


def test_reads_100k_jsonl_rows_fast(tmp_path: Path) -> None:
    import time

    p = tmp_path / "big.jsonl"
    line = json.dumps({"text": "hello there, my invoice number 12345 is wrong and I need help", "label": "billing"})
    p.write_text((line + "\n") * 100_000)
    start = time.perf_counter()
    t = read(p)
    elapsed = time.perf_counter() - start
    assert len(t) == 100_000
    assert elapsed < 3.0  # about 0.3 s on a developer machine; generous for slow CI


def test_importing_readers_is_cheap() -> None:
    code = ("import sys, ftc.compiler.data.readers, ftc.compiler.data.contracts; "
            "print(sorted(m for m in ('pyarrow', 'PIL', 'numpy', 'jsonschema', 'datasets', 'torch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
