"""Realise the spec's splits: pre-split files as they are, or one source divided by hashing.

Every assignment is a pure function of the row's content (or group key) and the seed: stable
across machines, Python versions and row order. A random split hashes the row's canonical JSON, so
exact duplicates always land in the same split. A group split hashes the group key, so a group
never spans two splits. A time split orders by the time field and moves each boundary so that
equal timestamps stay together (test strictly after train). A stratified split ranks the rows of
each class by hash and cuts every class at the same ratios.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from ftc.compiler.data.table import RowProblem, Table

SPLIT_NAMES = ("train", "val", "test")


class Part:
    """One realised split: rows (with the file and line each came from) and a content hash.

    A part read by a streaming check (compiler/data/stream.py) does not hold its rows: `size`,
    `locations` and `stats` (what the data rules need) were gathered as the rows went by, and
    `rows` (and `paths`) are read again from the file on first use, by `loader` (the runtime and
    `ftc plan` use them; `ftc check` never does for such a part)."""

    def __init__(self, name: str, rows: list[dict[str, Any]] | None = None, paths: Sequence[str] | None = None,
                 locations: Sequence[int] | None = None, location_kind: str = "line", sha256: str = "",
                 image_sha256: dict[str, str] | None = None, texts: list[str] | None = None, *,
                 size: int | None = None, loader: Callable[[], list[dict[str, Any]]] | None = None,
                 stats: Any = None) -> None:
        self.name, self.location_kind, self.sha256 = name, location_kind, sha256
        self.image_sha256: dict[str, str] = image_sha256 if image_sha256 is not None else {}
        self.texts = texts  # what leakage compares, computed once
        self._rows = rows if rows is not None or loader is not None else []
        self._loader = loader
        self.paths: Sequence[str] = paths if paths is not None else []
        self.locations: Sequence[int] = locations if locations is not None else []
        self._size = size
        self.stats = stats  # compiler/data/stats.py PartStats, gathered while streaming (or on demand)
        # a streamed part: its input texts (for the given fields) read again batch by batch
        self.text_batches: Callable[[tuple[str, ...]], Iterator[list[str]]] | None = None
        self.memo: dict[Any, Any] = {}  # results computed from a streamed part, kept for the other rules

    @property
    def rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            assert self._loader is not None
            self._rows = self._loader()
        return self._rows

    @rows.setter
    def rows(self, value: list[dict[str, Any]]) -> None:
        self._rows, self._size = value, None

    @property
    def held(self) -> bool:
        """Whether the rows are in memory (a streamed part's are read again on use)."""
        return self._rows is not None

    def __len__(self) -> int:
        return self._size if self._size is not None and self._rows is None else len(self.rows)

    def __repr__(self) -> str:
        return f"Part({self.name!r}, {len(self)} rows, sha256={self.sha256[:12]!r})"

    def where(self, i: int) -> str:
        word = "line" if self.location_kind == "line" else "row"
        return f"{self.paths[i]}:{self.locations[i]}" if word == "line" else f"{self.paths[i]} {word} {self.locations[i]}"


class Same(Sequence[str]):
    """One display path repeated `n` times: the `paths` of a part read from one file."""

    def __init__(self, path: str, n: int) -> None:
        self.path, self.n = path, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self.path] * len(range(*i.indices(self.n)))
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return self.path


def canonical(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def unit_hash(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from the seed and a key (blake2b, stable everywhere)."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def content_hash(rows: Sequence[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for row in rows:
        h.update(canonical(row).encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return h.hexdigest()


def _bucket(u: float, cuts: Sequence[float]) -> int:
    for i, c in enumerate(cuts):
        if u < c:
            return i
    return len(cuts)


def _cuts(ratios: Sequence[float]) -> list[float]:
    out, acc = [], 0.0
    for r in ratios[:-1]:
        acc += r
        out.append(acc)
    return out


def parse_time(value: Any) -> float | None:
    """Seconds since the epoch from a number or an ISO 8601 string; None if it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    return None


def _part_from(table: Table, name: str, indices: Sequence[int], whole: bool = False) -> Part:
    part = Part(name, [table.rows[i] for i in indices], [table.path] * len(indices),
                [table.locations[i] for i in indices], table.location_kind, image_sha256=table.image_sha256)
    # a whole file (pre-split) is identified by its bytes' hash; a subset by its rows
    part.sha256 = table.sha256 if whole and table.sha256 else content_hash(part.rows)
    if table.image_sha256 and not whole:  # rows name images by path: the hash must follow the images' bytes too
        used = sorted({table.image_sha256[v] for r in part.rows for v in r.values()
                       if isinstance(v, str) and v in table.image_sha256})
        part.sha256 = hashlib.sha256((part.sha256 + "".join(used)).encode()).hexdigest()
    return part


def split_source(table: Table, ratios: Sequence[float], by: str, key: str | None, seed: int,
                 stratify: str | None = None) -> tuple[dict[str, Part], list[RowProblem]]:
    """Divide one table into train/val(/test) parts; rows the split cannot place become problems."""
    names = SPLIT_NAMES[: len(ratios)]
    buckets: list[list[int]] = [[] for _ in names]
    problems: list[RowProblem] = []
    cuts = _cuts(ratios)
    if by == "time":
        assert key is not None
        _time_split(table, ratios, key, buckets, problems)
    elif stratify is not None and by == "random":
        _stratified(table, ratios, seed, stratify, buckets, problems)
    else:
        for i, row in enumerate(table.rows):
            if by == "group":
                assert key is not None
                value = row.get(key)
                if value is None or value == "":
                    problems.append(RowProblem(table.path, table.locations[i], key,
                                               f"row has no group key `{key}`",
                                               "every row needs the group field when splitting `by group`"))
                    continue
                u = unit_hash(seed, canonical({"group": value}))
            else:
                u = unit_hash(seed, canonical(row))
            buckets[_bucket(u, cuts)].append(i)
    return {n: _part_from(table, n, b) for n, b in zip(names, buckets)}, problems


def _stratified(table: Table, ratios: Sequence[float], seed: int, label: str,
                buckets: list[list[int]], problems: list[RowProblem]) -> None:
    classes: dict[str, list[tuple[float, int]]] = {}
    for i, row in enumerate(table.rows):
        value = row.get(label)
        if value is None:
            problems.append(RowProblem(table.path, table.locations[i], label, f"row has no `{label}` to stratify by",
                                       "every row needs the stratify field"))
            continue
        classes.setdefault(canonical({"v": value}), []).append((unit_hash(seed, canonical(row)), i))
    for members in classes.values():
        members.sort()
        n = len(members)
        bounds = [round(c * n) for c in _cuts(ratios)] + [n]
        start = 0
        for b, stop in enumerate(bounds):
            buckets[b].extend(i for _, i in members[start:stop])
            start = stop
    for bucket in buckets:
        bucket.sort()


def _time_split(table: Table, ratios: Sequence[float], key: str, buckets: list[list[int]],
                problems: list[RowProblem]) -> None:
    timed: list[tuple[float, int]] = []
    for i, row in enumerate(table.rows):
        t = parse_time(row.get(key))
        if t is None:
            problems.append(RowProblem(table.path, table.locations[i], key,
                                       f"`{key}` is not a time: {str(row.get(key))[:40]!r}",
                                       "use ISO 8601 (2024-05-01T12:00:00Z) or seconds since the epoch"))
            continue
        timed.append((t, i))
    timed.sort()
    n = len(timed)
    bounds = [round(c * n) for c in _cuts(ratios)]
    for j, b in enumerate(bounds):  # keep equal timestamps on one side: test strictly after train
        while 0 < b < n and timed[b][0] == timed[b - 1][0]:
            b += 1
        bounds[j] = max(b, bounds[j - 1] if j else 0)
    start = 0
    for part, stop in enumerate([*bounds, n]):
        buckets[part].extend(sorted(i for _, i in timed[start:stop]))
        start = stop


def presplit(tables: dict[str, Table]) -> dict[str, Part]:
    return {name: _part_from(t, name, range(len(t.rows)), whole=True) for name, t in tables.items()}
