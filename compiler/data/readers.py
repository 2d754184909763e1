"""Read a data source into a Table: rows with their locations, and every problem met on the way.

Bad input never raises: a missing file, a binary file, a wrong encoding, a line that is not JSON, a
ragged CSV row, a corrupt parquet file or an undecodable image each become a located RowProblem.
At most `max_problems` row problems are described per source; `Table.bad_rows` counts them all.

pyarrow (parquet, saved `datasets`) and Pillow (images) are imported inside the functions that
need them, so importing this module costs only the standard library. `datasets` itself is never
imported: a folder written by `Dataset.save_to_disk` is read with pyarrow (Arrow IPC stream files
listed in state.json `_data_files`; ClassLabel names from dataset_info.json `features`).
"""

from __future__ import annotations

import codecs
import csv
import errno
import gzip
import hashlib
import io
import json
import os
import posixpath
import warnings
import zlib
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import IO, Any, Self

from ftc.compiler.data import limits as L
from ftc.compiler.data.access import NotRegular, open_regular, problem, read_regular
from ftc.compiler.data.limits import LimitExceeded, Limits, raise_help, show
from ftc.compiler.data.table import RowProblem, Table

Batch = tuple[list[dict[str, Any]], list[int]]  # rows and their locations

FORMATS = ("jsonl", "csv", "parquet", "hf_dataset", "image_folder", "image_table")
TABLE_FORMATS = ("jsonl", "csv", "parquet")  # what an image_table's table may be
IMAGE_SUFFIXES = frozenset((".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"))
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")  # Pillow plugins tried
IMAGE_COLUMNS = ("width", "height", "mode")  # added to each row with an image
MAX_LINE = L.BY_NAME["row_bytes"].default  # bytes: a longer line is a problem, skipped without loading it
MAX_JSON_DOCUMENT = L.BY_NAME["json_document_bytes"].default  # a `.json` array is parsed whole up to this
_SKIP_CHUNK = 1024 * 1024
_BATCH = 65536
_HF_MARKERS = ("state.json", "dataset_info.json", "dataset_dict.json")
_FOLDER_FORMATS = ("hf_dataset", "image_folder")


# ---------------------------------------------------------------------------------------------
# Format inference


def _suffix_format(name: str) -> str | None:
    name = name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith((".csv", ".tsv")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    return None


def infer_format(path: Path) -> str | None:
    """The format a path's name or a folder's contents implies, or None when it does not tell.

    `image_table` is never inferred: a table of image paths reads as jsonl or csv unless the spec
    says `format image_table`.
    """
    try:
        if path.is_dir():
            if any((path / m).is_file() for m in _HF_MARKERS):
                return "hf_dataset"
            for sub in sorted(path.iterdir()):
                if (sub.is_dir() and not sub.name.startswith(".")
                        and any(p.suffix.lower() in IMAGE_SUFFIXES for p in sub.rglob("*"))):
                    return "image_folder"
            return None
    except OSError:
        return None
    return _suffix_format(path.name)


# ---------------------------------------------------------------------------------------------
# Problems


class _Problems:
    """Collects a source's problems: every file-level one, the first `limit` row problems."""

    def __init__(self, display: str, limit: int) -> None:
        self.display, self.limit = display, limit
        self.items: list[RowProblem] = []
        self.bad_rows = 0
        self._rows_described = 0

    def file(self, message: str, help: str, *, kind: str, line: int | None = None,
             field: str | None = None, column: int = 1, path: str | None = None) -> None:
        self.items.append(RowProblem(path or self.display, line, field, message, help, column, kind))

    def row(self, line: int | None, message: str, help: str, *, kind: str, field: str | None = None,
            column: int = 1, path: str | None = None) -> None:
        self.bad_rows += 1
        if self._rows_described < self.limit:
            self._rows_described += 1
            self.items.append(RowProblem(path or self.display, line, field, message, help, column, kind))


def _excerpt(text: str, width: int = 60) -> str:
    text = text.strip()
    return text if len(text) <= width else text[: width - 1] + "…"


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def _sha256_files(paths: list[Path]) -> str:
    if not paths:
        return ""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _sha256_tree(digests: dict[str, bytes]) -> str:
    """A folder's hash: sha256 over (relative path, NUL, sha256 of the file's bytes), sorted by path."""
    h = hashlib.sha256()
    for rel in sorted(digests):
        h.update(rel.encode("utf-8") + b"\0" + digests[rel])
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Text lines: size limit, NUL bytes, UTF-8


class _Budget:
    """Byte bounds of one text stream: the file's expanded size and, for a compressed file, the
    ratio of expanded to compressed bytes. The loops call `check(offset)` only when `offset`
    passes `next_at` (one integer comparison a line)."""

    def __init__(self, lim: Limits, raw: IO[bytes] | None) -> None:
        self.lim, self.raw = lim, raw  # raw: the compressed file under a gzip stream, else None
        self.max = lim.decompressed_bytes if raw is not None else lim.data_file_bytes
        self.name = "decompressed_bytes" if raw is not None else "data_file_bytes"
        self.next_at = min(self.max + 1, L.RATIO_FLOOR) if raw is not None else self.max + 1

    def check(self, offset: int, line: int) -> None:
        if offset > self.max:
            what = "expands to more than" if self.raw is not None else "is larger than"
            raise LimitExceeded(self.name, self.max, f"the file {what} {show(self.name, self.max)} (the "
                                f"`{self.name}` limit); stopped reading at line {line}", line)
        if self.raw is not None:
            packed = max(1, self.raw.tell())
            ratio = self.lim.compression_ratio
            if offset / packed > ratio:
                raise LimitExceeded("compression_ratio", ratio, f"the compressed file expands more than {ratio}x "
                                    f"({_mb(packed)} gave {_mb(offset)} by line {line}): it looks like a "
                                    "compression bomb", line)
            self.next_at = min(self.max + 1, offset + (1 << 20))


class _Lines:
    """Decoded lines of a text file, as (line number, text); a line that cannot be used yields None.

    Lines over the `row_bytes` limit are skipped in chunks (never held whole); a NUL byte marks the
    file as binary and stops reading; the first line that is not UTF-8 is reported with its byte
    offset, later ones are counted. A UTF-8 byte order mark is dropped. The jsonl reader runs its
    own copy of the loop in `__iter__` (for speed) and calls the same methods for the rare cases.
    """

    def __init__(self, f: IO[bytes], probs: _Problems, what: str, budget: _Budget) -> None:
        self.f, self.probs, self.what, self.budget = f, probs, what, budget
        self.max_line = budget.lim.row_bytes
        self.lineno = 0
        self.stopped = False
        self.bad_encoding = 0
        self._first_bad: tuple[int, int, int, int] | None = None  # byte, offset, line, column

    def __iter__(self) -> Iterator[tuple[int, str | None]]:
        readline, offset, max_line, budget = self.f.readline, 0, self.max_line, self.budget
        while True:
            raw = readline(max_line + 1)
            if not raw:
                break
            self.lineno += 1
            start = offset
            offset += len(raw)
            if offset >= budget.next_at:
                budget.check(offset, self.lineno)
            if len(raw) > max_line and not raw.endswith(b"\n"):
                offset = self.long_line(raw, start)
                yield self.lineno, None
                continue
            if self.lineno == 1:
                raw = self.first_line(raw)
                if self.stopped:
                    return
            if b"\0" in raw:
                self.nul(raw, start)
                return
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.bad_utf8(raw, start)
                yield self.lineno, None
                continue
            yield self.lineno, text

    def long_line(self, raw: bytes, start: int) -> int:
        """Skip the rest of an over-long line; report it; return the offset after it."""
        offset = start + len(raw)
        while raw and not raw.endswith(b"\n"):
            raw = self.f.readline(_SKIP_CHUNK)
            offset += len(raw)
            if offset >= self.budget.next_at:
                self.budget.check(offset, self.lineno)
        self.probs.row(self.lineno, f"line {self.lineno} is {_mb(offset - start)} long, over the "
                       f"{_mb(self.max_line)} limit for one row", "split the record, or keep large payloads "
                       "(documents, images) in files that the row names by path; or raise the `row_bytes` "
                       f"limit ({L.BY_NAME['row_bytes'].env}, see compiler/data/limits.py)", kind="too_large")
        return offset

    def first_line(self, raw: bytes) -> bytes:
        if raw.startswith(codecs.BOM_UTF8):
            return raw[3:]
        if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            self.probs.file(f"the file is UTF-16 encoded; {self.what} must be UTF-8",
                            "re-save it as UTF-8 (for example `iconv -f utf-16 -t utf-8 in > out`)",
                            kind="encoding", line=1)
            self.stopped = True
        return raw

    def nul(self, raw: bytes, start: int) -> None:
        at = start + raw.index(b"\0")
        self.probs.file(f"binary data: a NUL byte at offset {at} (line {self.lineno}); this is not "
                        f"{self.what}", "check that the path names the data file, and that the file was "
                        "not truncated or written in a binary format", kind="binary", line=self.lineno)
        self.stopped = True

    def bad_utf8(self, raw: bytes, start: int) -> None:
        self.bad_encoding += 1
        self.probs.bad_rows += 1
        if self._first_bad is None:
            try:
                raw.decode("utf-8")
                return
            except UnicodeDecodeError as err:
                e = err
            column = len(raw[: e.start].decode("utf-8", "replace")) + 1
            self._first_bad = (raw[e.start], start + e.start, self.lineno, column)

    def finish(self) -> None:
        """Report the encoding problem once, with the count of lines it spoils."""
        if self._first_bad is None:
            return
        byte, offset, line, column = self._first_bad
        more = f"; {self.bad_encoding} lines in all are not UTF-8" if self.bad_encoding > 1 else ""
        self.probs.file(f"the file is not UTF-8: byte 0x{byte:02x} at offset {offset} (line {line}, "
                        f"column {column}) cannot be decoded{more}",
                        "re-save the file as UTF-8 (for example `iconv -f latin1 -t utf-8 in > out`)",
                        kind="encoding", line=line, column=column)


class _Opened:
    """A data file opened for reading: the (decompressed) stream and its byte budget."""

    def __init__(self, path: Path, lim: Limits) -> None:
        self.raw = open_regular(path)
        try:
            size = os.fstat(self.raw.fileno()).st_size
            if size > lim.data_file_bytes:
                raise LimitExceeded("data_file_bytes", lim.data_file_bytes, f"the file is {_mb(size)}, over the "
                                    f"{show('data_file_bytes', lim.data_file_bytes)} `data_file_bytes` limit")
            packed = path.name.lower().endswith(".gz")
            self.f: IO[bytes] = gzip.GzipFile(fileobj=self.raw, mode="rb") if packed else self.raw  # type: ignore[assignment]
            self.budget = _Budget(lim, self.raw if packed else None)
        except BaseException:
            self.raw.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.f is not self.raw:
            self.f.close()
        self.raw.close()


# ---------------------------------------------------------------------------------------------
# jsonl


_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true/false",
          type(None): "null"}


def _read_jsonl(path: Path, table: Table, probs: _Problems, lim: Limits, size: int) -> Iterator[Batch]:
    with _Opened(path, lim) as opened:
        f = opened.f
        if path.name.lower().endswith((".json", ".json.gz")) and _starts_with_bracket(f):
            yield from _read_json_array(f, table, probs, lim, size)
            return
        f.seek(0)
        lines = _Lines(f, probs, "a JSON lines file", opened.budget)
        yield from _jsonl_loop(f, lines, table, probs, size)
        lines.finish()


def _jsonl_loop(f: IO[bytes], lines: _Lines, table: Table, probs: _Problems, size: int) -> Iterator[Batch]:
    """The hot loop: about 2 µs a row. The C scanner parses; errors are re-parsed by json.loads
    for its message. Rows are yielded `size` at a time; the columns seen so far are kept in
    `table.columns` after each batch."""
    scan = _scanner()
    rows: list[dict[str, Any]] = []
    locations: list[int] = []
    readline, max_line, budget = f.readline, lines.max_line, lines.budget
    columns: dict[str, None] = {}
    last_keys: Any = None
    lineno = offset = 0
    while True:
        raw = readline(max_line + 1)
        if not raw:
            break
        lineno += 1
        start = offset
        offset += len(raw)
        lines.lineno = lineno
        if offset >= budget.next_at:
            try:
                budget.check(offset, lineno)
            except LimitExceeded:
                yield rows, locations  # the rows before the overrun are read
                raise
        if len(raw) > max_line and not raw.endswith(b"\n"):
            offset = lines.long_line(raw, start)
            continue
        if lineno == 1:
            raw = lines.first_line(raw)
            if lines.stopped:
                break
        if b"\0" in raw:
            lines.nul(raw, start)
            break
        stripped = raw.strip()
        if not stripped:
            continue
        try:
            text = stripped.decode("utf-8")
        except UnicodeDecodeError:
            lines.bad_utf8(raw, start)
            continue
        try:
            obj, end = scan(text, 0)
        except (StopIteration, ValueError, RecursionError):
            end = -1
        if end != len(text):
            _bad_json(lineno, text, probs)
            continue
        if type(obj) is not dict:
            what = _KINDS.get(type(obj), type(obj).__name__)
            probs.row(lineno, f"line {lineno} holds {what}, not a JSON object: `{_excerpt(text)}`",
                      'each line must be one object, such as {"text": "...", "label": "..."}', kind="shape")
            continue
        keys = obj.keys()
        if keys != last_keys:
            for k in keys:
                columns.setdefault(k)
            last_keys = keys
        rows.append(obj)
        locations.append(lineno)
        if len(rows) >= size:
            table.columns = tuple(columns)
            yield rows, locations
            rows, locations = [], []
    table.columns = tuple(columns)
    if rows:
        yield rows, locations


def _scanner() -> Any:
    import json.scanner

    return json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def _bad_json(lineno: int, text: str, probs: _Problems) -> None:
    try:
        json.loads(text)
        msg, column, pos = "not one JSON value", 1, 0
    except json.JSONDecodeError as e:
        msg, column, pos = e.msg, e.colno, e.pos
    except (ValueError, RecursionError) as e:  # nesting too deep and the like
        msg, column, pos = str(e), 1, 0
    if pos >= len(text) or msg.startswith("Unterminated"):
        help = "the line ends before the JSON object does: was the file truncated or a record split over lines?"
    else:
        help = 'each line must be one complete JSON object, such as {"text": "...", "label": "..."}'
    msg = msg[:1].lower() + msg[1:] + ("" if msg.endswith(" at") else " at")
    probs.row(lineno, f"line {lineno} is not valid JSON: {msg} column {column}: `{_excerpt(text)}`",
              help, kind="syntax", column=column)


def _starts_with_bracket(f: IO[bytes]) -> bool:
    head = f.read(4096).lstrip(codecs.BOM_UTF8 + b" \t\r\n")
    return head.startswith(b"[")


def _read_json_array(f: IO[bytes], table: Table, probs: _Problems, lim: Limits, size: int) -> Iterator[Batch]:
    """A `.json` file holding one array of objects; rows are located by their index (1-based).
    The document is parsed whole, so it is bounded by the `json_document_bytes` limit."""
    f.seek(0)
    most = lim.json_document_bytes
    data = f.read(most + 1)
    table.location_kind = "row"
    if len(data) > most:
        probs.file(f"the JSON array is over {_mb(most)} (the `json_document_bytes` limit: a `.json` file is "
                   "parsed whole)", "write one object per line (jsonl), which is read in batches; or "
                   + raise_help("json_document_bytes", most), kind="limit")
        return
    try:
        items = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        probs.file(f"the file is not UTF-8: byte 0x{data[e.start]:02x} at offset {e.start} cannot be decoded",
                   "re-save the file as UTF-8", kind="encoding")
        return
    except json.JSONDecodeError as e:
        probs.file(f"the file is not valid JSON ({e.msg.lower()})", "fix the JSON, or write one object per line",
                   kind="syntax", line=e.lineno, column=e.colno)
        return
    except (ValueError, RecursionError) as e:
        probs.file(f"the file is not valid JSON ({_excerpt(str(e), 80)})", "fix the JSON, or write one object per line",
                   kind="syntax")
        return
    del data
    if not isinstance(items, list):
        items = [items]
    columns: dict[str, None] = {}
    rows: list[dict[str, Any]] = []
    locations: list[int] = []
    for i, obj in enumerate(items, 1):
        if type(obj) is not dict:
            probs.row(i, f"item {i} of the array is {_KINDS.get(type(obj), type(obj).__name__)}, not an object",
                      "each item must be an object, such as {\"text\": \"...\"}", kind="shape")
            continue
        columns.update(dict.fromkeys(obj))
        rows.append(obj)
        locations.append(i)
        if len(rows) >= size:
            table.columns = tuple(columns)
            yield rows, locations
            rows, locations = [], []
    table.columns = tuple(columns)
    if rows:
        yield rows, locations


# ---------------------------------------------------------------------------------------------
# csv


def _read_csv(path: Path, table: Table, probs: _Problems, lim: Limits, size: int) -> Iterator[Batch]:
    name = path.name.lower().removesuffix(".gz")
    delimiter = "\t" if name.endswith(".tsv") else ","
    if csv.field_size_limit() < lim.row_bytes:
        csv.field_size_limit(lim.row_bytes)
    count = 0
    with _Opened(path, lim) as opened:
        lines = _Lines(opened.f, probs, "a CSV file", opened.budget)
        header: list[str] | None = None
        rows: list[dict[str, Any]] = []
        locations: list[int] = []
        for start, cells in _csv_records(lines, delimiter, probs):
            if start < 0:
                if rows:
                    yield rows, locations
                    rows, locations = [], []
                continue
            if header is None:
                header = _header(cells, start, probs)
                table.columns = tuple(header)
                continue
            if len(cells) != len(header):
                n = len(cells)
                probs.row(start, f"row at line {start} has {n} cell{'s' if n != 1 else ''}, the header has "
                          f"{len(header)}",
                          "quote cells that contain the delimiter or line breaks, and give every row "
                          "one cell per column", kind="shape")
                continue
            rows.append(dict(zip(header, cells)))
            locations.append(start)
            if len(rows) >= size:
                count += len(rows)
                yield rows, locations
                rows, locations = [], []
        count += len(rows)
        if rows:
            yield rows, locations
        lines.finish()
        if lines.stopped:
            return
        if header is None:
            if not probs.items and probs.bad_rows == 0:
                probs.file("empty: no header and no rows", "a CSV file starts with a header row naming "
                           "its columns", kind="empty")
            return
        if not count and probs.bad_rows == 0:
            probs.file("empty: a header but no rows", "add data rows below the header", kind="empty", line=1)


def _csv_records(lines: _Lines, delimiter: str, probs: _Problems) -> Iterator[tuple[int, list[str]]]:
    """(first line, cells) of each CSV record whose lines all decoded; bad quoting is a problem.
    On an overrun a record at line -1 comes first, so that the caller hands out its rows."""
    spoiled: set[int] = set()

    def texts() -> Iterator[str]:
        for lineno, text in lines:
            if text is None:
                spoiled.add(lineno)
                yield "\n"
            else:
                yield text

    reader = csv.reader(texts(), delimiter=delimiter)
    end = 0
    while True:
        start = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except LimitExceeded:
            yield -1, []  # flush the rows gathered so far, then stop
            raise
        except csv.Error as e:
            end = lines.lineno
            probs.row(start, f"row at line {start} cannot be parsed: {e}", "check the quoting of this row",
                      kind="syntax")
            continue
        end = lines.lineno
        if not cells or any(n in spoiled for n in range(start, end + 1)):
            spoiled.difference_update(range(start, end + 1))
            continue
        yield start, cells


def _header(cells: list[str], line: int, probs: _Problems) -> list[str]:
    seen: set[str] = set()
    for name in cells:
        if name in seen:
            probs.file(f"column `{name}` appears twice in the header", "give each column a distinct name",
                       kind="shape", line=line, field=name)
        seen.add(name)
    return cells


# ---------------------------------------------------------------------------------------------
# parquet and saved `datasets`


def _arrow_error(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return _excerpt(text[0] if text else type(e).__name__, 120)


def _read_parquet(path: Path, table: Table, probs: _Problems, lim: Limits, size: int) -> Iterator[Batch]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table.location_kind = "row"
    with open_regular(path) as raw:
        try:
            pf = pq.ParquetFile(raw)
            table.columns = tuple(pf.schema_arrow.names)
        except (pa.ArrowException, OSError, ValueError) as e:
            probs.file(f"not a readable parquet file: {_arrow_error(e)}",
                       "check that the file is parquet and was written completely", kind="unreadable")
            return
        count = 0
        try:
            for batch in pf.iter_batches(batch_size=min(size, _BATCH)):
                _check_cells(batch, count, lim)
                rows = batch.to_pylist()
                yield rows, list(range(count + 1, count + 1 + len(rows)))
                count += len(rows)
        except (pa.ArrowException, OSError, ValueError) as e:
            probs.file(f"parquet data unreadable after row {count}: {_arrow_error(e)}",
                       "the file is corrupt or truncated: write it again", kind="unreadable", line=count + 1)


def _check_cells(batch: Any, count: int, lim: Limits) -> None:
    """LimitExceeded when a string or binary value of an Arrow batch is over `cell_bytes`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for name, column in zip(batch.schema.names, batch.columns):
        kind = column.type
        if not (pa.types.is_string(kind) or pa.types.is_binary(kind) or pa.types.is_large_string(kind)
                or pa.types.is_large_binary(kind)):
            continue
        sizes = pc.binary_length(column)
        biggest = pc.max(sizes).as_py()
        if biggest is not None and biggest > lim.cell_bytes:
            at = count + 1 + int(pc.index(sizes, biggest).as_py())
            raise LimitExceeded("cell_bytes", lim.cell_bytes, f"row {at}: `{name}` holds {_mb(biggest)}, over "
                                f"the {show('cell_bytes', lim.cell_bytes)} `cell_bytes` limit", at)



def _read_json_file(path: Path, probs: _Problems, what: str) -> Any:
    try:
        return json.loads(read_regular(path, L.current().json_document_bytes, "json_document_bytes").decode("utf-8"))
    except (OSError, ValueError, LimitExceeded) as e:
        probs.file(f"{what} `{path.name}` cannot be read: {_excerpt(str(e), 100)}",
                   "the folder should be written by `Dataset.save_to_disk`", kind="unreadable")
        return None


def _read_hf_dataset(path: Path, table: Table, probs: _Problems, lim: Limits, size: int
                     ) -> Generator[Batch, None, list[Path]]:
    """Rows of a folder written by `Dataset.save_to_disk`, one Arrow record batch at a time;
    returns the files it hashed."""
    import pyarrow as pa

    table.location_kind = "row"
    if (path / "dataset_dict.json").is_file() and not (path / "state.json").is_file():
        info = _read_json_file(path / "dataset_dict.json", probs, "the split list")
        splits = [str(s) for s in info.get("splits", [])] if isinstance(info, dict) else []
        if info is not None:
            first = splits[0] if splits else "train"
            probs.file(f"a DatasetDict folder (splits: {', '.join(splits) or 'none'}), not one split",
                       f'name one split\'s folder, such as `"{probs.display.rstrip("/")}/{first}"`',
                       kind="format")
        return []
    state = _read_json_file(path / "state.json", probs, "the dataset state")
    if state is None:
        return []
    entries = state.get("_data_files") if isinstance(state, dict) else None
    if not isinstance(entries, list) or not all(isinstance(d, dict) and "filename" in d for d in entries):
        probs.file("state.json has no `_data_files` list", "the folder should be written by `Dataset.save_to_disk`",
                   kind="unreadable")
        return []
    labels, images = _hf_features(path, probs)
    files: list[Path] = []
    count = 0  # rows read, good or bad: the next row's number is count + 1
    for entry in entries:
        file = path / str(entry["filename"])
        if not file.is_file():
            probs.file(f"data file `{entry['filename']}` listed in state.json does not exist",
                       "copy the whole folder that `save_to_disk` wrote", kind="missing")
            return files
        files.append(file)
        try:
            for batch in _arrow_batches(file):
                _check_cells(batch, count, lim)
                rows = _class_names(batch.to_pylist(), labels)
                if not table.columns:
                    table.columns = tuple(batch.schema.names)
                    if images:
                        table.columns = tuple(dict.fromkeys((*table.columns, *IMAGE_COLUMNS)))
                if images:
                    yield _hf_images(rows, count, images, probs)
                else:
                    yield rows, list(range(count + 1, count + 1 + len(rows)))
                count += len(rows)
        except (pa.ArrowException, OSError, ValueError) as e:
            probs.file(f"`{entry['filename']}` is not readable Arrow data after row {count}: "
                       f"{_arrow_error(e)}", "the file is corrupt or truncated: save the dataset again",
                       kind="unreadable", line=count + 1)
            return files
    info_file = path / "dataset_info.json"
    return files + ([info_file] if info_file.is_file() else [])


def _arrow_batches(file: Path) -> Iterator[Any]:
    """Record batches of an Arrow IPC stream file (what save_to_disk writes), or of an IPC file."""
    import pyarrow as pa

    with pa.memory_map(str(file)) as source:
        try:
            reader: Any = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            source.seek(0)
            file_reader = pa.ipc.open_file(source)
            for i in range(file_reader.num_record_batches):
                yield file_reader.get_batch(i)
            return
        yield from reader


def _hf_features(path: Path, probs: _Problems) -> tuple[dict[str, list[str]], list[str]]:
    """From dataset_info.json: ClassLabel columns (column -> names; labels are stored as ints)
    and Image columns (structs of encoded bytes and a path)."""
    info_file = path / "dataset_info.json"
    if not info_file.is_file():
        return {}, []
    info = _read_json_file(info_file, probs, "the dataset info")
    feats = info.get("features") if isinstance(info, dict) else None
    labels: dict[str, list[str]] = {}
    images: list[str] = []
    if isinstance(feats, dict):
        for name, feat in feats.items():
            kind = feat.get("_type") if isinstance(feat, dict) else None
            if kind == "ClassLabel" and isinstance(feat.get("names"), list):
                labels[name] = [str(n) for n in feat["names"]]
            elif kind == "Image":
                images.append(name)
    return labels, images


def _hf_images(rows: list[dict[str, Any]], count: int, columns: list[str], probs: _Problems) -> Batch:
    """The rows whose embedded images decode, with IMAGE_COLUMNS of the first image."""
    kept: list[dict[str, Any]] = []
    locations: list[int] = []
    for i, row in enumerate(rows, count + 1):
        problem = None
        for name in columns:
            value = row.get(name)
            data = value.get("bytes") if isinstance(value, dict) else None
            if not isinstance(data, bytes):
                continue  # an image stored by path only, or None: the contract judges it
            info = _probe_image(data)
            if isinstance(info, str):
                problem = (name, info)
                break
            _image_row(row, info)
        if problem is not None:
            probs.row(i, f"the image in `{problem[0]}` {problem[1]}", "replace or remove the row",
                      kind="image", field=problem[0])
            continue
        kept.append(row)
        locations.append(i)
    return kept, locations


def _class_names(rows: list[dict[str, Any]], features: dict[str, list[str]]) -> list[dict[str, Any]]:
    for name, names in features.items():
        for row in rows:
            v = row.get(name)
            if type(v) is int and 0 <= v < len(names):
                row[name] = names[v]
    return rows


# ---------------------------------------------------------------------------------------------
# images


def _probe_image(data: bytes) -> tuple[int, int, str] | str:
    """(width, height, mode) of an image in a known format, or why it cannot be used."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as im:
                size, mode = im.size, im.mode
                im.verify()
    except UnidentifiedImageError:
        magic = _magic_format(data)
        if magic is not None:
            return f"cannot be decoded: a truncated or corrupt {magic} file"
        return "is not an image in a known format (" + ", ".join(IMAGE_FORMATS) + ")"
    except Exception as e:  # noqa: BLE001 (Pillow raises many kinds for corrupt data)
        return f"cannot be decoded: {_excerpt(str(e) or type(e).__name__, 80)}"
    return size[0], size[1], mode


_MAGIC = ((b"\x89PNG", "PNG"), (b"\xff\xd8", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
          (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def _magic_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _MAGIC if data.startswith(magic)), None)


class _ImageCache:
    """Reads, hashes and probes each image once."""

    def __init__(self) -> None:
        self.digests: dict[str, bytes] = {}  # relative path -> sha256, for the source's hash
        self.hexes: dict[Path, str] = {}  # file -> sha256 hex, for Table.image_sha256
        self.results: dict[Path, tuple[int, int, str] | str] = {}
        self.max_bytes = L.current().image_bytes

    def probe(self, file: Path, rel: str) -> tuple[int, int, str] | str:
        """(width, height, mode), or why the image cannot be used; `digests[rel]` gets the hash."""
        if file in self.results:
            return self.results[file]
        try:
            data = read_regular(file, self.max_bytes, "image_bytes")
        except FileNotFoundError:
            result: tuple[int, int, str] | str = "does not exist"
        except NotRegular as e:
            result = f"is {e.strerror}"
        except LimitExceeded:
            result = (f"is over the {show('image_bytes', self.max_bytes)} `image_bytes` limit (raise it with "
                      f"{L.BY_NAME['image_bytes'].env}, see compiler/data/limits.py)")
        except OSError as e:
            result = "is a symlink loop" if e.errno == errno.ELOOP else f"cannot be read: {e.strerror or e}"
        else:
            digest = hashlib.sha256(data)
            self.digests[rel], self.hexes[file] = digest.digest(), digest.hexdigest()
            result = _probe_image(data) if data else "is an empty file"
        self.results[file] = result
        return result


def _image_row(row: dict[str, Any], info: tuple[int, int, str]) -> None:
    """Add what vision rules need without decoding the image again (existing fields win)."""
    for name, value in zip(IMAGE_COLUMNS, info):
        row.setdefault(name, value)


def _read_image_folder(path: Path, table: Table, probs: _Problems) -> str:
    table.location_kind = "row"
    table.columns = ("image", "label", *IMAGE_COLUMNS)
    cache, root = _ImageCache(), probs.display.rstrip("/")
    classes = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    for loose in sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        probs.row(None, f"image `{loose.name}` is outside any class folder", "an image folder holds one "
                  "sub-folder per class (`root/<label>/<image>`): move it into its class", kind="image",
                  field="label", path=f"{root}/{loose.name}")
    if not classes:
        probs.file("no class folders: an image folder holds one sub-folder per label",
                   "arrange the images as `root/<label>/<image>`", kind="empty")
        return _sha256_tree(cache.digests)
    for cls in classes:
        files = sorted(p for p in cls.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(cls).parts))
        if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in files):
            probs.file(f"class folder `{cls.name}` holds no images", "add its images, or remove the folder "
                       "(an empty class cannot be learned or evaluated)", kind="empty", field="label",
                       path=f"{root}/{cls.name}")
        for file in files:
            rel = file.relative_to(path).as_posix()
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                probs.row(None, f"`{rel}` is not an image file", "keep only images ("
                          + ", ".join(sorted(IMAGE_SUFFIXES)) + ") in class folders", kind="image",
                          field="image", path=f"{root}/{rel}")
                continue
            info = cache.probe(file, rel)
            if isinstance(info, str):
                probs.row(None, f"image `{rel}` {info}", "replace or remove the file", kind="image",
                          field="image", path=f"{root}/{rel}")
                continue
            row: dict[str, Any] = {"image": rel, "label": cls.name}
            _image_row(row, info)
            table.rows.append(row)
            table.locations.append(len(table.rows))
            table.image_sha256[rel] = cache.hexes[file]
    return _sha256_tree(cache.digests)


def _check_image_table(table: Table, root: Path, field: str, probs: _Problems, where: str) -> str:
    """Drop rows whose image is missing or undecodable; add IMAGE_COLUMNS to the others.
    `where` says, for messages, what the paths are relative to."""
    cache = _ImageCache()
    rows, locations = [], []
    for row, line in zip(table.rows, table.locations):
        value = row.get(field)
        if not isinstance(value, str) or not value.strip():
            what = "missing" if value is None else f"not a path (`{_excerpt(repr(value), 40)}`)"
            probs.row(line, f"`{field}` is {what}", f"each row names its image file in `{field}`, "
                      "relative to image_root", kind="image", field=field)
            continue
        file = root / value
        info = cache.probe(file, Path(value).as_posix())
        if isinstance(info, str):
            probs.row(line, f"image `{value}` {info}", f"image paths are relative to {where}"
                      if info == "does not exist" else "replace or remove the image", kind="image", field=field)
            continue
        _image_row(row, info)
        rows.append(row)
        locations.append(line)
        table.image_sha256[value] = cache.hexes[file]
    table.rows, table.locations = rows, locations
    table.columns = tuple(dict.fromkeys((*table.columns, *IMAGE_COLUMNS)))
    return _sha256_tree(cache.digests)


# ---------------------------------------------------------------------------------------------
# Entry point


class TableStream:
    """One data source read in batches of at most `batch_rows` rows: iterate it for
    (rows, locations); `table` is the header (path, format, columns, problems, bad-row count,
    hash) and is complete once the iteration ends. Iterating again reads the source again.

    Bad input never raises. The source is refused before it is opened when it cannot be a data
    source (compiler/data/access.py: a device, a FIFO, a socket, a symlink loop, a folder where a
    file is meant, permission denied); reading stops with a problem at the first overrun of a
    bound (compiler/data/limits.py). jsonl, csv, parquet and saved `datasets` stream; an image
    folder or image table is held whole while its images are checked (its rows are short paths),
    then handed out in batches too.
    """

    def __init__(self, path: Path, display: str, fmt: str | None = None, *, max_problems: int = 5,
                 image_root: Path | None = None, image_field: str = "image", batch_rows: int | None = None) -> None:
        self.path, self.display, self.max_problems = path, display, max_problems
        self.fmt = fmt or infer_format(path) or _suffix_format(path.name)  # a folder named like a file
        self.image_root, self.image_field = image_root, image_field
        self.batch_rows = max(1, batch_rows if batch_rows is not None else _BATCH)
        self.table = Table(path=display, fmt=self.fmt or "unknown")
        self.count = 0  # rows handed out by the last iteration

    def __iter__(self) -> Iterator[Batch]:
        probs = _Problems(self.display, self.max_problems)
        self.table = Table(path=self.display, fmt=self.fmt or "unknown")
        self.count = 0
        try:
            if self._refused(probs):
                return
            yield from self._limited(probs, L.current())
            if not self.count and not probs.items and probs.bad_rows == 0:
                probs.file("empty: no rows", "the data source holds no rows", kind="empty")
        finally:
            self.table.problems, self.table.bad_rows = probs.items, probs.bad_rows

    def _refused(self, probs: _Problems) -> bool:
        """True (with the problem) when the source cannot be read at all."""
        fmt, display, path = self.fmt, self.display, self.path
        folder = fmt in _FOLDER_FORMATS
        found = problem(path, display, folder)
        if found is not None and found[0] != "permission":
            kind, message, help = found
            probs.file(message, help, kind=kind)
        elif fmt not in FORMATS:
            what = "cannot tell the format of" if fmt is None else f"unknown format `{fmt}` for"
            probs.file(f"{what} `{display}`", "name it in the data block: `format` with one of "
                       + ", ".join(FORMATS), kind="format")
        elif folder != path.is_dir():
            want = "a folder" if folder else "a file"
            probs.file(f"`{display}` is {'a folder' if path.is_dir() else 'a file'}; format {fmt} reads {want}",
                       f"check the path, or the `format` ({', '.join(FORMATS)})", kind="format")
        elif found is not None:
            probs.file(found[1], found[2], kind=found[0])
        else:
            return False
        return True

    def _limited(self, probs: _Problems, lim: Limits) -> Iterator[Batch]:
        """The reader's batches, cut at the `rows_per_file` limit; I/O errors and overruns as problems."""
        most = lim.rows_per_file
        try:
            for rows, locations in self._dispatch(probs, lim):
                room = most - self.count - probs.bad_rows
                if len(rows) > room:
                    rows, locations = rows[:max(0, room)], locations[:max(0, room)]
                    self.count += len(rows)
                    if rows:
                        yield rows, locations
                    at = locations[-1] if locations else None
                    raise LimitExceeded("rows_per_file", most, f"the file holds more than {show('rows_per_file', most)} "
                                        "(the `rows_per_file` limit); stopped reading"
                                        + (f" after {self.table.location_kind} {at}" if at else ""), at)
                self.count += len(rows)
                yield rows, locations
        except LimitExceeded as e:
            probs.file(e.message, raise_help(e.name, e.value), kind="limit", line=e.line)
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            probs.file(f"the compressed file is corrupt or truncated: {_excerpt(str(e), 100)}",
                       "compress it again", kind="unreadable")
        except NotRegular as e:
            probs.file(f"`{self.display}` is {e.strerror}", "name a data file: ftc reads only regular files",
                       kind="not_regular")
        except PermissionError:
            probs.file(f"cannot read `{self.display}`: permission denied", "give the user running ftc read access "
                       "(`ls -l` shows who may read it; `chmod u+r`)", kind="permission")
        except OSError as e:
            probs.file(f"cannot read `{self.display}`: {e.strerror or e}", "check that the file is readable",
                       kind="unreadable")

    def _dispatch(self, probs: _Problems, lim: Limits) -> Iterator[Batch]:
        path, table, fmt, size = self.path, self.table, self.fmt, self.batch_rows
        if fmt in ("jsonl", "csv", "parquet"):
            yield from {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}[fmt](
                path, table, probs, lim, size)
            table.sha256 = _sha256_files([path])
        elif fmt == "hf_dataset":
            files = yield from _read_hf_dataset(path, table, probs, lim, size)
            table.sha256 = _sha256_files(sorted(files))
        else:
            if fmt == "image_folder":
                table.sha256 = _read_image_folder(path, table, probs)
            else:
                _read_image_table(path, table, probs, lim, self.image_root, self.image_field)
            rows, locations = table.rows, table.locations
            table.rows, table.locations = [], []
            for a in range(0, len(rows), size):
                yield rows[a:a + size], locations[a:a + size]


def read_table(path: Path, display: str, fmt: str | None = None, *, max_problems: int = 5,
               image_root: Path | None = None, image_field: str = "image") -> Table:
    """Read one data source whole. `display` is the path shown in problems; `fmt` one of FORMATS,
    or None to infer it. For `image_table`, `image_field` names the column of image paths, which
    are relative to `image_root` (default: the table's folder). Never raises for bad input; the
    bounds of compiler/data/limits.py apply (TableStream reads the same source in batches)."""
    stream = TableStream(path, display, fmt, max_problems=max_problems, image_root=image_root,
                         image_field=image_field)
    rows: list[dict[str, Any]] = []
    locations: list[int] = []
    for batch_rows, batch_locations in stream:
        rows.extend(batch_rows)
        locations.extend(batch_locations)
    table = stream.table
    table.rows, table.locations = rows, locations
    return table


def _read_image_table(path: Path, table: Table, probs: _Problems, lim: Limits, image_root: Path | None,
                      image_field: str) -> None:
    inner = _suffix_format(path.name)
    if inner not in TABLE_FORMATS:
        probs.file(f"an image table must be jsonl, csv or parquet; cannot tell what `{path.name}` is",
                   "name the table with a .jsonl, .csv or .parquet extension", kind="format")
        return
    reader = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}[inner]
    for rows, locations in reader(path, table, probs, lim, _BATCH):
        table.rows.extend(rows)
        table.locations.extend(locations)
    table_hash = _sha256_files([path])
    if table.rows and image_field not in table.columns:
        probs.file(f"no `{image_field}` column of image paths (columns: {', '.join(table.columns)})",
                   "name the column that holds image paths", kind="image", field=image_field)
        table.sha256 = table_hash
        return
    if image_root is None:
        where = f"the table's folder (`{posixpath.dirname(probs.display) or '.'}`) unless `image_root` is given"
        images = _check_image_table(table, path.parent, image_field, probs, where)
    else:
        images = _check_image_table(table, image_root, image_field, probs, "`image_root`")
    table.sha256 = hashlib.sha256(bytes.fromhex(table_hash) + bytes.fromhex(images)).hexdigest()
