"""Bounds on reading data files: every overrun is a located problem naming the limit and how to
raise it, never a hang or a machine's worth of memory.

| limit | default | raise it with | what it bounds |
| --- | --- | --- | --- |
| `data_file_bytes` | 8 GiB | `FTC_MAX_DATA_FILE_BYTES` | one data file's size on disk (a `.gz` file's compressed size) |
| `decompressed_bytes` | 8 GiB | `FTC_MAX_DECOMPRESSED_BYTES` | what one compressed file expands to |
| `compression_ratio` | 200 | `FTC_MAX_COMPRESSION_RATIO` | expanded / compressed bytes, judged once 64 MiB are expanded (a gzip bomb) |
| `rows_per_file` | 50,000,000 | `FTC_MAX_ROWS_PER_FILE` | rows (good or bad) read from one data file |
| `row_bytes` | 10 MiB | `FTC_MAX_ROW_BYTES` | one line of a jsonl or csv file (skipped in chunks, never held whole) |
| `cell_bytes` | 10 MiB | `FTC_MAX_CELL_BYTES` | one string or binary value of a parquet or Arrow file |
| `json_document_bytes` | 256 MiB | `FTC_MAX_JSON_DOCUMENT_BYTES` | a `.json` file holding one array, which is parsed whole |
| `image_bytes` | 64 MiB | `FTC_MAX_IMAGE_BYTES` | one image file an image folder or image table names |

Only regular files are read: a device (`/dev/zero`), a FIFO, a socket or a folder where a file is
meant is refused before it is opened (FIFOs are opened non-blocking and checked again, so a file
swapped for one after the check is refused too). Each variable takes a plain number of bytes (or,
for the ratio, a number); an unset, empty or unparsable variable leaves the default. The values are
read when a data file is read (`current()`), so a test or a CI job can lower or raise them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

GIB = 1024**3
MIB = 1024**2
RATIO_FLOOR = 64 * MIB  # expanded bytes before the compression ratio is judged


@dataclass(frozen=True)
class Limit:
    name: str
    default: int
    env: str
    unit: str  # "bytes", "rows" or "x" (a ratio)


LIMITS: tuple[Limit, ...] = (
    Limit("data_file_bytes", 8 * GIB, "FTC_MAX_DATA_FILE_BYTES", "bytes"),
    Limit("decompressed_bytes", 8 * GIB, "FTC_MAX_DECOMPRESSED_BYTES", "bytes"),
    Limit("compression_ratio", 200, "FTC_MAX_COMPRESSION_RATIO", "x"),
    Limit("rows_per_file", 50_000_000, "FTC_MAX_ROWS_PER_FILE", "rows"),
    Limit("row_bytes", 10 * MIB, "FTC_MAX_ROW_BYTES", "bytes"),
    Limit("cell_bytes", 10 * MIB, "FTC_MAX_CELL_BYTES", "bytes"),
    Limit("json_document_bytes", 256 * MIB, "FTC_MAX_JSON_DOCUMENT_BYTES", "bytes"),
    Limit("image_bytes", 64 * MIB, "FTC_MAX_IMAGE_BYTES", "bytes"),
)
BY_NAME = {lim.name: lim for lim in LIMITS}


@dataclass(frozen=True)
class Limits:
    """The limits in force for one read (defaults, or the environment's values)."""

    data_file_bytes: int
    decompressed_bytes: int
    compression_ratio: int
    rows_per_file: int
    row_bytes: int
    cell_bytes: int
    json_document_bytes: int
    image_bytes: int


def _value(lim: Limit) -> int:
    text = os.environ.get(lim.env, "").strip().replace("_", "")
    try:
        value = int(text)
    except ValueError:
        return lim.default
    return value if value > 0 else lim.default


def current() -> Limits:
    return Limits(**{lim.name: _value(lim) for lim in LIMITS})


def show(name: str, value: int) -> str:
    """A limit's value for messages: `10.0 MiB`, `50,000,000 rows`, `200x`."""
    unit = BY_NAME[name].unit
    if unit == "bytes":
        if value < MIB:
            return f"{value:,} bytes"
        return f"{value / GIB:.1f} GiB" if value >= GIB else f"{value / MIB:.1f} MiB"
    return f"{value:,} rows" if unit == "rows" else f"{value}x"


def raise_help(name: str, value: int) -> str:
    """The help line of an overrun: how to raise this limit."""
    lim = BY_NAME[name]
    return (f"if the file is meant to be this large, raise the `{name}` limit ({show(name, value)}): "
            f"set {lim.env} (see compiler/data/limits.py)")


class LimitExceeded(Exception):
    """Raised inside a reader when a bound is overrun; `read_table` turns it into a problem."""

    def __init__(self, name: str, value: int, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.name, self.value, self.message, self.line = name, value, message, line
