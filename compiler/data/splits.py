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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ftc.compiler.data.table import RowProblem, Table

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class Part:
    """One realised split: rows (with the file and line each came from) and a content hash."""

    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # display path of the file of each row
    locations: list[int] = field(default_factory=list)
    location_kind: str = "line"
    sha256: str = ""
    image_sha256: dict[str, str] = field(default_factory=dict)  # image path in a row -> its bytes' hash
    texts: list[str] | None = field(default=None, repr=False)  # what leakage compares, computed once

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, i: int) -> str:
        word = "line" if self.location_kind == "line" else "row"
        return f"{self.paths[i]}:{self.locations[i]}" if word == "line" else f"{self.paths[i]} {word} {self.locations[i]}"


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
    part = Part(name, location_kind=table.location_kind, image_sha256=table.image_sha256)
    for i in indices:
        part.rows.append(table.rows[i])
        part.paths.append(table.path)
        part.locations.append(table.locations[i])
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
