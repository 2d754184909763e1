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
import gzip
import hashlib
import io
import json
import posixpath
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ftc.compiler.data.table import RowProblem, Table

FORMATS = ("jsonl", "csv", "parquet", "hf_dataset", "image_folder", "image_table")
TABLE_FORMATS = ("jsonl", "csv", "parquet")  # what an image_table's table may be
IMAGE_SUFFIXES = frozenset((".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"))
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")  # Pillow plugins tried
IMAGE_COLUMNS = ("width", "height", "mode")  # added to each row with an image
MAX_LINE = 10 * 1024 * 1024  # bytes: a longer line is a problem, and is skipped without loading it
MAX_JSON_DOCUMENT = 1024 * 1024 * 1024  # a `.json` file holding one array is parsed whole up to this
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


class _Lines:
    """Decoded lines of a text file, as (line number, text); a line that cannot be used yields None.

    Lines over MAX_LINE are skipped in chunks (never held whole); a NUL byte marks the file as
    binary and stops reading; the first line that is not UTF-8 is reported with its byte offset,
    later ones are counted. A UTF-8 byte order mark is dropped. The jsonl reader runs its own
    copy of the loop in `__iter__` (for speed) and calls the same methods for the rare cases.
    """

    def __init__(self, f: IO[bytes], probs: _Problems, what: str) -> None:
        self.f, self.probs, self.what = f, probs, what
        self.lineno = 0
        self.stopped = False
        self.bad_encoding = 0
        self._first_bad: tuple[int, int, int, int] | None = None  # byte, offset, line, column

    def __iter__(self) -> Iterator[tuple[int, str | None]]:
        readline, offset = self.f.readline, 0
        while True:
            raw = readline(MAX_LINE + 1)
            if not raw:
                break
            self.lineno += 1
            start = offset
            offset += len(raw)
            if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
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
        self.probs.row(self.lineno, f"line {self.lineno} is {_mb(offset - start)} long, over the "
                       f"{_mb(MAX_LINE)} limit for one row", "split the record, or keep large payloads "
                       "(documents, images) in files that the row names by path", kind="too_large")
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


def _open_bytes(path: Path) -> IO[bytes]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


# ---------------------------------------------------------------------------------------------
# jsonl


_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true/false",
          type(None): "null"}


def _read_jsonl(path: Path, table: Table, probs: _Problems) -> None:
    with _open_bytes(path) as f:
        if path.name.lower().endswith((".json", ".json.gz")) and _starts_with_bracket(f):
            _read_json_array(f, table, probs)
            return
        f.seek(0)
        lines = _Lines(f, probs, "a JSON lines file")
        _jsonl_loop(f, lines, table, probs)
        lines.finish()


def _jsonl_loop(f: IO[bytes], lines: _Lines, table: Table, probs: _Problems) -> None:
    """The hot loop: about 2 µs a row. The C scanner parses; errors are re-parsed by json.loads
    for its message."""
    scan = _scanner()
    rows, locations, readline = table.rows, table.locations, f.readline
    columns: dict[str, None] = {}
    last_keys: Any = None
    lineno = offset = 0
    while True:
        raw = readline(MAX_LINE + 1)
        if not raw:
            break
        lineno += 1
        start = offset
        offset += len(raw)
        lines.lineno = lineno
        if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
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
    table.columns = tuple(columns)


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


def _read_json_array(f: IO[bytes], table: Table, probs: _Problems) -> None:
    """A `.json` file holding one array of objects; rows are located by their index (1-based)."""
    f.seek(0)
    data = f.read(MAX_JSON_DOCUMENT + 1)
    table.location_kind = "row"
    if len(data) > MAX_JSON_DOCUMENT:
        probs.file(f"the JSON array is over {_mb(MAX_JSON_DOCUMENT)}", "write one object per line (jsonl)",
                   kind="too_large")
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
    columns: dict[str, None] = {}
    for i, obj in enumerate(items, 1):
        if type(obj) is not dict:
            probs.row(i, f"item {i} of the array is {_KINDS.get(type(obj), type(obj).__name__)}, not an object",
                      "each item must be an object, such as {\"text\": \"...\"}", kind="shape")
            continue
        columns.update(dict.fromkeys(obj))
        table.rows.append(obj)
        table.locations.append(i)
    table.columns = tuple(columns)


# ---------------------------------------------------------------------------------------------
# csv


def _read_csv(path: Path, table: Table, probs: _Problems) -> None:
    name = path.name.lower().removesuffix(".gz")
    delimiter = "\t" if name.endswith(".tsv") else ","
    if csv.field_size_limit() < MAX_LINE:
        csv.field_size_limit(MAX_LINE)
    with _open_bytes(path) as f:
        lines = _Lines(f, probs, "a CSV file")
        spoiled: set[int] = set()

        def texts() -> Iterator[str]:
            for lineno, text in lines:
                if text is None:
                    spoiled.add(lineno)
                    yield "\n"
                else:
                    yield text

        reader = csv.reader(texts(), delimiter=delimiter)
        header: list[str] | None = None
        end = 0
        while True:
            start = end + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                end = lines.lineno
                probs.row(start, f"row at line {start} cannot be parsed: {e}",
                          "check the quoting of this row", kind="syntax")
                continue
            end = lines.lineno
            if not cells or any(n in spoiled for n in range(start, end + 1)):
                continue
            if header is None:
                header = _header(cells, start, probs)
                continue
            if len(cells) != len(header):
                n = len(cells)
                probs.row(start, f"row at line {start} has {n} cell{'s' if n != 1 else ''}, the header has "
                          f"{len(header)}",
                          "quote cells that contain the delimiter or line breaks, and give every row "
                          "one cell per column", kind="shape")
                continue
            table.rows.append(dict(zip(header, cells)))
            table.locations.append(start)
        lines.finish()
        if lines.stopped:
            return
        if header is None:
            if not probs.items and probs.bad_rows == 0:
                probs.file("empty: no header and no rows", "a CSV file starts with a header row naming "
                           "its columns", kind="empty")
            return
        table.columns = tuple(header)
        if not table.rows and probs.bad_rows == 0:
            probs.file("empty: a header but no rows", "add data rows below the header", kind="empty", line=1)


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


def _read_parquet(path: Path, table: Table, probs: _Problems) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table.location_kind = "row"
    try:
        pf = pq.ParquetFile(path)
        table.columns = tuple(pf.schema_arrow.names)
    except (pa.ArrowException, OSError, ValueError) as e:
        probs.file(f"not a readable parquet file: {_arrow_error(e)}",
                   "check that the file is parquet and was written completely", kind="unreadable")
        return
    try:
        for batch in pf.iter_batches(batch_size=_BATCH):
            _extend(table, batch.to_pylist())
    except (pa.ArrowException, OSError, ValueError) as e:
        probs.file(f"parquet data unreadable after row {len(table.rows)}: {_arrow_error(e)}",
                   "the file is corrupt or truncated: write it again", kind="unreadable",
                   line=len(table.rows) + 1)


def _extend(table: Table, rows: list[dict[str, Any]]) -> None:
    n = len(table.rows)
    table.rows.extend(rows)
    table.locations.extend(range(n + 1, n + 1 + len(rows)))


def _read_json_file(path: Path, probs: _Problems, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        probs.file(f"{what} `{path.name}` cannot be read: {_excerpt(str(e), 100)}",
                   "the folder should be written by `Dataset.save_to_disk`", kind="unreadable")
        return None


def _read_hf_dataset(path: Path, table: Table, probs: _Problems) -> list[Path]:
    """Rows of a folder written by `Dataset.save_to_disk`; returns the files it hashed."""
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
                rows = _class_names(batch.to_pylist(), labels)
                if not table.columns:
                    table.columns = tuple(batch.schema.names)
                    if images:
                        table.columns = tuple(dict.fromkeys((*table.columns, *IMAGE_COLUMNS)))
                if images:
                    _hf_images(rows, count, images, table, probs)
                else:
                    _extend(table, rows)
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


def _hf_images(rows: list[dict[str, Any]], count: int, columns: list[str], table: Table,
               probs: _Problems) -> None:
    """Keep the rows whose embedded images decode, with IMAGE_COLUMNS of the first image."""
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
        table.rows.append(row)
        table.locations.append(i)


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

    def probe(self, file: Path, rel: str) -> tuple[int, int, str] | str:
        """(width, height, mode), or why the image cannot be used; `digests[rel]` gets the hash."""
        if file in self.results:
            return self.results[file]
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            result: tuple[int, int, str] | str = "does not exist"
        except OSError as e:
            result = f"cannot be read: {e.strerror or e}"
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


def read_table(path: Path, display: str, fmt: str | None = None, *, max_problems: int = 5,
               image_root: Path | None = None, image_field: str = "image") -> Table:
    """Read one data source. `display` is the path shown in problems; `fmt` one of FORMATS, or None
    to infer it. For `image_table`, `image_field` names the column of image paths, which are
    relative to `image_root` (default: the table's folder). Never raises for bad input."""
    probs = _Problems(display, max_problems)
    fmt = fmt or infer_format(path)
    table = Table(path=display, fmt=fmt or "unknown")
    if not path.exists():
        probs.file(f"no such {'folder' if fmt in _FOLDER_FORMATS else 'file'}: `{display}`",
                   "paths are relative to the spec's folder", kind="missing")
    elif fmt not in FORMATS:
        what = "cannot tell the format of" if fmt is None else f"unknown format `{fmt}` for"
        probs.file(f"{what} `{display}`", "name it in the data block: `format` with one of "
                   + ", ".join(FORMATS), kind="format")
    elif (fmt in _FOLDER_FORMATS) != path.is_dir():
        want = "a folder" if fmt in _FOLDER_FORMATS else "a file"
        probs.file(f"`{display}` is {'a folder' if path.is_dir() else 'a file'}; format {fmt} reads {want}",
                   f"check the path, or the `format` ({', '.join(FORMATS)})", kind="format")
    else:
        try:
            _dispatch(path, fmt, table, probs, image_root, image_field)
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            probs.file(f"the compressed file is corrupt or truncated: {_excerpt(str(e), 100)}",
                       "compress it again", kind="unreadable")
        except OSError as e:
            probs.file(f"cannot read `{display}`: {e.strerror or e}", "check that the file is readable",
                       kind="unreadable")
        if not table.rows and not probs.items and probs.bad_rows == 0:
            probs.file("empty: no rows", "the data source holds no rows", kind="empty")
    table.problems, table.bad_rows = probs.items, probs.bad_rows
    return table




def _dispatch(path: Path, fmt: str, table: Table, probs: _Problems, image_root: Path | None,
              image_field: str) -> None:
    if fmt == "jsonl":
        _read_jsonl(path, table, probs)
        table.sha256 = _sha256_files([path])
    elif fmt == "csv":
        _read_csv(path, table, probs)
        table.sha256 = _sha256_files([path])
    elif fmt == "parquet":
        _read_parquet(path, table, probs)
        table.sha256 = _sha256_files([path])
    elif fmt == "hf_dataset":
        table.sha256 = _sha256_files(sorted(_read_hf_dataset(path, table, probs)))
    elif fmt == "image_folder":
        table.sha256 = _read_image_folder(path, table, probs)
    else:
        _read_image_table(path, table, probs, image_root, image_field)


def _read_image_table(path: Path, table: Table, probs: _Problems, image_root: Path | None,
                      image_field: str) -> None:
    inner = _suffix_format(path.name)
    if inner not in TABLE_FORMATS:
        probs.file(f"an image table must be jsonl, csv or parquet; cannot tell what `{path.name}` is",
                   "name the table with a .jsonl, .csv or .parquet extension", kind="format")
        return
    {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}[inner](path, table, probs)
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
