"""What readers return: rows with their locations, and the problems met while reading."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RowProblem:
    """A located problem in a data file: `line` is 1-based (a row number for binary formats)."""

    path: str  # display path of the data file
    line: int | None  # None for a problem with the whole file
    field: str | None
    message: str
    help: str
    column: int = 1
    # What went wrong, for rules that map problems to diagnostic codes: missing, empty, binary,
    # encoding, too_large, syntax (unparsable row), shape (not an object, ragged CSV row, header),
    # unreadable (corrupt file, I/O error), format (format unknown or not the declared one),
    # image (missing or undecodable image), contract (a row breaks the signal's data contract).
    kind: str = "row"


@dataclass
class Table:
    """Rows read from one data source, in file order.

    rows[i] is a dict (field -> value) and locations[i] its 1-based line (jsonl, csv) or row
    number (parquet, arrow, image folders). `location_kind` says which, for messages. Rows that
    could not be parsed are not in `rows`; they are counted in `bad_rows` and the first few are
    described in `problems`. `sha256` hashes the bytes read (all files, in a fixed order).
    """

    path: str
    fmt: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    locations: list[int] = field(default_factory=list)
    location_kind: str = "line"
    problems: list[RowProblem] = field(default_factory=list)
    bad_rows: int = 0
    sha256: str = ""
    columns: tuple[str, ...] = ()
    # image_folder and image_table: the image path as the row gives it -> sha256 of the image's
    # bytes (paths repeat across split folders, so leakage checks compare content, not names)
    image_sha256: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)
