"""Data checks that stream: a training file is read in batches and never held.

`ftc check` on a 12-million-row training file used to hold every row (13.4 GB for a 2 GB file).
Here a training split is read batch by batch (readers.TableStream): each batch is checked against
the row contract (contracts.RowChecker), then fed to the split's PartStats (stats.py: hashes and
counts, 16–40 bytes a row), and dropped. What stays per row is its location and its text hashes;
the rows themselves are read again only if something asks for `Part.rows` (the runtime, `ftc plan`
with `dedup`), which `ftc check` never does for a streamed part.

- Pre-split data: the train file streams; val and test are held (they are what the rules show
  rows of, and what near-duplicate search holds as its query side).
- One `source` with `split`: a random or group split assigns each row as it goes by; a
  stratified or time split needs every row's class or time first, so it reads the file twice
  (keys, then rows). Evaluation rows are held, training rows streamed.
- Near-duplicate leakage (FT206) compares every training text with the evaluation rows: it reads
  the training split once more, its texts scanned block by block against the held side
  (near.NearScan), and only when the rule runs.

Only jsonl, csv and parquet stream; a saved `datasets` folder, an image folder or an image table is
read whole as before (images are checked file by file; their tables hold paths).
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ftc.compiler.data.contracts import RowChecker, apply_mapping
from ftc.compiler.data.fields import row_text
from ftc.compiler.data.readers import TableStream
from ftc.compiler.data.splits import SPLIT_NAMES, Part, Same, canonical, parse_time, unit_hash
from ftc.compiler.data.stats import PartStats
from ftc.compiler.data.table import RowProblem, Table

if TYPE_CHECKING:
    from ftc.compiler.data.near import Match

STREAMED_FORMATS = ("jsonl", "csv", "parquet")
HOLD_ROWS = 50_000  # a training split up to this many rows keeps its rows (no second read when used)
Rows = list[dict[str, Any]]


class DataChanged(RuntimeError):
    """A streamed file changed between the check and the first use of its rows."""


class _Held:
    """The training rows gathered while streaming, dropped once there are more than HOLD_ROWS."""

    def __init__(self) -> None:
        self.rows: Rows | None = []

    def add(self, rows: Rows) -> None:
        if self.rows is not None:
            self.rows.extend(rows)
            if len(self.rows) > HOLD_ROWS:
                self.rows = None


def _stamp(path: Any) -> tuple[int, int] | None:
    import os

    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _guarded(source: Source, load: Callable[[], Rows]) -> Callable[[], Rows]:
    """`load`, refusing to read a file that changed since it was streamed (its rows would not be
    the rows checked)."""
    stamp = _stamp(source.stream.path)

    def run() -> Rows:
        if _stamp(source.stream.path) != stamp:
            raise DataChanged(f"`{source.stream.display}` changed since it was checked: check it again")
        return load()

    return run


def streams(stream: TableStream) -> bool:
    return stream.fmt in STREAMED_FORMATS


@dataclass
class Source:
    """One data file read for a split or splits: the stream, the `fields` mapping, the contract."""

    stream: TableStream
    mapping: dict[str, str]
    schema: dict[str, Any]
    max_problems: int = 5

    def batches(self) -> Iterator[tuple[Rows, list[int]]]:
        """(rows in the spec's names, locations) of each batch; the header is `stream.table`."""
        for rows, locations in self.stream:
            yield (apply_mapping(rows, self.mapping) if self.mapping else rows), locations

    def checked(self, checker: RowChecker) -> Iterator[tuple[Rows, list[int]]]:
        """The batches, each checked against the contract (with the user's column names) first."""
        for rows, locations in self.stream:
            checker.feed(rows, locations)
            yield (apply_mapping(rows, self.mapping) if self.mapping else rows), locations

    def rows(self) -> Rows:
        out: Rows = []
        for rows, _ in self.batches():
            out.extend(rows)
        return out


@dataclass
class Read:
    """What the first pass over a source found: its header and the contract's verdict."""

    table: Table
    problems: list[RowProblem] = field(default_factory=list)  # the contract's
    invalid: int = 0


def _finish(source: Source, checker: RowChecker) -> Read:
    table = source.stream.table
    problems, invalid = checker.finish(table.columns, lambda: iter(source.stream))
    return Read(table, problems, invalid)


# --- a pre-split file ------------------------------------------------------------------------


def stream_part(source: Source, name: str, stats: PartStats) -> tuple[Part, Read]:
    """A whole file as one split, streamed: its Part holds locations and stats, not rows."""
    checker = RowChecker(source.stream.display, source.schema, mapping=source.mapping)
    locations: array[int] = array("q")
    held = _Held()
    for rows, locs in source.checked(checker):
        stats.feed(rows)
        locations.extend(locs)
        held.add(rows)
    read = _finish(source, checker)
    table = read.table
    n = len(locations)
    part = Part(name, held.rows, Same(table.path, n), locations, table.location_kind, table.sha256,
                size=n, loader=_guarded(source, source.rows), stats=stats)
    part.text_batches = lambda fields: train_texts(source, fields)
    if not part.sha256:  # the file could not be hashed whole (read stopped): hash the rows read
        part.sha256 = _content_hash(source.batches())
    return part, read


def _content_hash(batches: Iterator[tuple[Rows, list[int]]], keep: Callable[[int], bool] | None = None) -> str:
    """splits.content_hash over the rows of the batches (those whose ordinal `keep` accepts)."""
    h, i = hashlib.sha256(), 0
    for rows, _ in batches:
        for row in rows:
            if keep is None or keep(i):
                h.update(canonical(row).encode("utf-8", "surrogatepass"))
                h.update(b"\n")
            i += 1
    return h.hexdigest()


# --- one source, split --------------------------------------------------------------------------


@dataclass
class SplitPlan:
    ratios: tuple[float, ...]
    by: str
    key: str | None
    seed: int
    stratify: str | None

    @property
    def names(self) -> tuple[str, ...]:
        return SPLIT_NAMES[: len(self.ratios)]

    def cuts(self) -> list[float]:
        out, acc = [], 0.0
        for r in self.ratios[:-1]:
            acc += r
            out.append(acc)
        return out


def _bucket(u: float, cuts: list[float]) -> int:
    for i, c in enumerate(cuts):
        if u < c:
            return i
    return len(cuts)


def stream_split(source: Source, plan: SplitPlan, stats: PartStats
                 ) -> tuple[dict[str, Part], Read, list[RowProblem]]:
    """Divide one source as splits.split_source does, the training rows streamed into `stats`
    and the others held. Returns the parts, the first pass's header, and the split's problems."""
    problems: list[RowProblem] = []
    display = source.stream.display
    assign = _global_assignment(source, plan, problems) if plan.by == "time" or (
        plan.stratify is not None and plan.by == "random") else None
    checker = RowChecker(display, source.schema, mapping=source.mapping)
    names = plan.names
    held: dict[str, tuple[Rows, list[int], Any]] = {n: ([], [], hashlib.sha256()) for n in names if n != "train"}
    train_locations: array[int] = array("q")
    train_hash = hashlib.sha256()
    held_train = _Held()
    order: array[int] = array("b")  # per row ordinal: its split's position in names, -1 when placed nowhere
    cuts, i = plan.cuts(), 0
    for rows, locs in source.checked(checker):
        to_train: Rows = []
        for row, line in zip(rows, locs):
            b = assign[i] if assign is not None else _place(row, line, plan, cuts, display, problems)
            i += 1
            order.append(b)
            if b < 0:
                continue
            text = canonical(row).encode("utf-8", "surrogatepass") + b"\n"
            if names[b] == "train":
                to_train.append(row)
                train_locations.append(line)
                train_hash.update(text)
            else:
                part_rows, part_locs, h = held[names[b]]
                part_rows.append(row)
                part_locs.append(line)
                h.update(text)
        if to_train:
            stats.feed(to_train)
            held_train.add(to_train)
    read = _finish(source, checker)
    table = read.table
    parts: dict[str, Part] = {}
    for n in names:
        if n == "train":
            size = len(train_locations)
            parts[n] = Part(n, held_train.rows, Same(table.path, size), train_locations, table.location_kind,
                            train_hash.hexdigest(), size=size,
                            loader=_guarded(source, lambda: _rows_of(source, order, names, "train")), stats=stats)
            parts[n].text_batches = lambda fields: train_texts(source, fields, order, names)
        else:
            part_rows, part_locs, h = held[n]
            parts[n] = Part(n, part_rows, [table.path] * len(part_rows), part_locs, table.location_kind, h.hexdigest())
    return parts, read, problems


def _rows_of(source: Source, order: array[int], names: tuple[str, ...], name: str) -> Rows:
    want = names.index(name)
    out: Rows = []
    i = 0
    for rows, _ in source.batches():
        for row in rows:
            if i < len(order) and order[i] == want:
                out.append(row)
            i += 1
    return out


def _place(row: dict[str, Any], line: int, plan: SplitPlan, cuts: list[float], display: str,
           problems: list[RowProblem]) -> int:
    """A random or group split's bucket for a row, or -1 (with a problem) when it has no group key."""
    if plan.by == "group":
        assert plan.key is not None
        value = row.get(plan.key)
        if value is None or value == "":
            problems.append(RowProblem(display, line, plan.key, f"row has no group key `{plan.key}`",
                                       "every row needs the group field when splitting `by group`"))
            return -1
        return _bucket(unit_hash(plan.seed, canonical({"group": value})), cuts)
    return _bucket(unit_hash(plan.seed, canonical(row)), cuts)


def _global_assignment(source: Source, plan: SplitPlan, problems: list[RowProblem]) -> array[int]:
    """A time or stratified split's bucket per row ordinal (-1: placed nowhere), from a first pass
    that keeps each row's time (or class and hash), as splits._time_split and _stratified do."""
    import numpy as np

    keys: list[Any] = []
    lines: list[int] = []
    display = source.stream.display
    for rows, locs in source.batches():
        for row, line in zip(rows, locs):
            keys.append(_key(row, line, plan, display, problems))
            lines.append(line)
    out = np.full(len(keys), -1, dtype=np.int8)
    if plan.by == "time":
        _assign_time(keys, plan, out)
    else:
        _assign_strata(keys, plan, out)
    return array("b", out.tobytes())


def _key(row: dict[str, Any], line: int, plan: SplitPlan, display: str, problems: list[RowProblem]) -> Any:
    if plan.by == "time":
        assert plan.key is not None
        t = parse_time(row.get(plan.key))
        if t is None:
            problems.append(RowProblem(display, line, plan.key, f"`{plan.key}` is not a time: "
                                       f"{str(row.get(plan.key))[:40]!r}",
                                       "use ISO 8601 (2024-05-01T12:00:00Z) or seconds since the epoch"))
        return t
    assert plan.stratify is not None
    value = row.get(plan.stratify)
    if value is None:
        problems.append(RowProblem(display, line, plan.stratify, f"row has no `{plan.stratify}` to stratify by",
                                   "every row needs the stratify field"))
        return None
    return (canonical({"v": value}), unit_hash(plan.seed, canonical(row)))


def _assign_time(times: list[Any], plan: SplitPlan, out: Any) -> None:
    timed = sorted((t, i) for i, t in enumerate(times) if t is not None)
    n = len(timed)
    bounds = [round(c * n) for c in plan.cuts()]
    for j, b in enumerate(bounds):  # keep equal timestamps on one side: test strictly after train
        while 0 < b < n and timed[b][0] == timed[b - 1][0]:
            b += 1
        bounds[j] = max(b, bounds[j - 1] if j else 0)
    start = 0
    for part, stop in enumerate([*bounds, n]):
        for _, i in timed[start:stop]:
            out[i] = part
        start = stop


def _assign_strata(keys: list[Any], plan: SplitPlan, out: Any) -> None:
    classes: dict[str, list[tuple[float, int]]] = {}
    for i, key in enumerate(keys):
        if key is not None:
            classes.setdefault(key[0], []).append((key[1], i))
    for members in classes.values():
        members.sort()
        n = len(members)
        bounds = [round(c * n) for c in plan.cuts()] + [n]
        start = 0
        for b, stop in enumerate(bounds):
            for _, i in members[start:stop]:
                out[i] = b
            start = stop


# --- near-duplicate leakage against a streamed training split -------------------------------


def near_leaks(train: Part, others: dict[str, list[str]], threshold: float,
               fields: tuple[str, ...]) -> dict[str, list[Match]]:
    """near.near_matches(train texts, each other's texts) for every evaluation part at once, the
    training texts of a streamed part read again batch by batch and never held."""
    from ftc.compiler.data.near import NearScan

    assert train.text_batches is not None
    scans = {name: NearScan(query, threshold) for name, query in others.items()}
    for texts in train.text_batches(fields):
        for scan in scans.values():
            scan.feed(texts)
    return {name: scan.finish() for name, scan in scans.items()}


def train_texts(source: Source, fields: tuple[str, ...], order: array[int] | None = None,
                names: tuple[str, ...] = ()) -> Iterator[list[str]]:
    """The training texts of a source, batch by batch (only the rows placed in train when split)."""
    want = names.index("train") if order is not None else -1
    i = 0
    for rows, _ in source.batches():
        if order is None:
            yield [row_text(r, fields) for r in rows]
            continue
        picked = []
        for r in rows:
            if i < len(order) and order[i] == want:
                picked.append(row_text(r, fields))
            i += 1
        yield picked


