"""What the data rules need to know about a split, gathered row batch by row batch.

`PartStats` is fed a split's rows in batches (`feed`) and keeps only what compiler/rules/data.py
asks, so that a streamed training file is never held (compiler/data/stream.py):

| rule | state kept | size |
| --- | --- | --- |
| FT205, FT209, evaluation-file FT205 | two 64-bit hashes of each row's normalised input text | 16 bytes a row |
| FT207 | a 128-bit hash of each row's group value, with the row's index | 24 bytes a row with a group |
| FT208 | the latest time | one number |
| FT210, FT216, FT219 | label counts (classification only), image sizes and modes | distinct values |
| FT211 | the first target and input, and whether any other differs | two texts |
| FT212, FT213 | identical pairs (count, first rows), longer/shorter counts | counts |
| FT214 | private-data counts and the first masked examples | counts |
| FT215 | rows over `max_length` (count, first rows) | counts |
| FT218 | rows per slice | counts |
| FT206 | nothing here: the streamed reference side is scanned in its own pass (`near.NearScan`) | |

A part held in memory (an evaluation split) gets the same stats from its rows on first use
(`stats_of`), so each rule has one code path. Row indices are positions in the part.
"""

from __future__ import annotations

import hashlib
import math
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ftc.compiler import schema as s
from ftc.compiler.data.fields import input_fields, row_text, target_field

if TYPE_CHECKING:
    import numpy as np
    from ftc.compiler.checked import CheckedSpec
    from ftc.compiler.data.pii import PiiReport
    from ftc.compiler.data.splits import Part

SHOW = 3  # rows remembered per finding (the rules show three)
MAX_DISTINCT = 10_000  # distinct labels, sizes or modes counted (more are summed, not named)


def strings(value: Any) -> Iterator[str]:
    """Every string in a cell, nested lists and objects included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def estimate_tokens(text: str) -> int:
    """Tokens without a tokenizer: about 4 characters per token for English BPE vocabularies."""
    return (len(text) + 3) // 4


def token_counter(c: CheckedSpec) -> tuple[Callable[[list[str]], list[int]], str]:
    """Exact token counts with the base's own tokenizer (a local folder with tokenizer.json, and
    `ftc check --tokenize`), else the ~4-characters-per-token estimate. The `tokenizers` library
    loads no model and imports no torch."""
    model = c.spec.model
    if c.options.tokenize and model is not None:
        path = c.resolve_path(model.base, model.at("base")) / "tokenizer.json"
        if path.is_file():
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(path))
            tok.no_padding()  # a saved tokenizer may pad or truncate batches: count real tokens
            tok.no_truncation()

            def exact(texts: list[str]) -> list[int]:
                return [len(e.ids) for e in tok.encode_batch(texts)]
            return exact, f"counted with {model.base}'s tokenizer"
    return (lambda texts: [estimate_tokens(t) for t in texts]), "estimated at ~4 characters per token"


def matches(row: dict[str, Any], cond: s.Condition) -> bool:
    """Whether a row meets a slice condition (a cell that is a list or an object never does,
    unless compared as text)."""
    value = row.get(cond.field)
    if value is None:
        return False
    other: Any = cond.value
    if isinstance(other, float) and not isinstance(value, bool):
        try:
            value = float(value)
        except (TypeError, ValueError):
            return False
    else:
        value = str(value).lower() if other in ("true", "false") else str(value)
    ops = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, ">=": lambda a, b: a >= b,
           "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b}
    try:
        return bool(ops[cond.op](value, other))
    except TypeError:
        return False


def _hashable(value: Any) -> Any:
    """A value usable as a set member or a dict key: lists and objects by their JSON text."""
    try:
        hash(value)
    except TypeError:
        import json

        return json.dumps(value, sort_keys=True, default=str)
    return value


@dataclass(frozen=True)
class Wants:
    """Which stats a collection of parts needs, read from the spec once."""

    fields: tuple[str, ...] = ()  # input fields: texts for leakage and duplicates
    target: str | None = None
    classes: bool = False  # count labels (a classification task)
    pref: tuple[str, str] | None = None  # (chosen, rejected) of preference pairs
    group: str | None = None
    time: str | None = None
    slices: tuple[tuple[str, tuple[s.Condition, ...]], ...] = ()
    max_length: int | None = None
    count_tokens: Callable[[list[str]], list[int]] | None = None
    pii: bool = False
    images: bool = False


def wants(c: CheckedSpec, stage: str | None) -> Wants:
    """The stats the data rules read for the spec's data (`stage` None) or an RLHF stage's own data."""
    spec = c.spec
    sig, model, data = spec.signal, spec.model, spec.data
    if stage is not None:
        reward = sig.reward if isinstance(sig, s.RlhfSignal) else None
        return Wants(pref=(reward.chosen, reward.rejected) if reward is not None else None)
    pref: tuple[str, str] | None = None
    if isinstance(sig, s.DpoSignal):
        pref = (sig.chosen, sig.rejected)
    elif isinstance(sig, s.RlhfSignal) and sig.reward is not None and sig.reward.data is None:
        pref = (sig.reward.chosen, sig.reward.rejected)
    time = None
    if data is not None:
        time = data.time or (data.split.key if data.split is not None and data.split.by == "time" else None)
    counter = token_counter(c)[0] if data is not None and data.max_length is not None else None
    return Wants(fields=input_fields(spec), target=target_field(spec),
                 classes=model is not None and (bool(model.labels)
                                                or model.task in ("classification", "image_classification")),
                 pref=pref, group=data.group if data is not None else None, time=time,
                 slices=tuple((sl.name, tuple(sl.conditions)) for sl in data.slices) if data is not None else (),
                 max_length=data.max_length.tokens if data is not None and data.max_length is not None else None,
                 count_tokens=counter, pii=True,
                 images=model is not None and model.modality != "text")


@dataclass
class Firsts:
    """How many rows met a condition, and the first few of them."""

    count: int = 0
    first: list[int] = field(default_factory=list)

    def add(self, i: int) -> None:
        self.count += 1
        if len(self.first) < SHOW:
            self.first.append(i)


@dataclass
class PartStats:
    """The stats of one part (see the module's table). `train` says whether the training-only
    state (group index, private data, label counts) is gathered."""

    wants: Wants
    train: bool = True
    n: int = 0
    seq: list[tuple[Any, Any]] = field(default_factory=list)  # per batch: sequence hashes
    first_text: str | None = None
    texts_vary: bool = False
    first_target: str | None = None
    targets_vary: bool = False
    labels: Counter[str] = field(default_factory=Counter)  # str(label) -> rows (None counted as "None")
    none_labels: int = 0
    groups: tuple[array[int], array[int], array[int]] = field(
        default_factory=lambda: (array("Q"), array("Q"), array("q")))
    latest: float | None = None
    identical: Firsts = field(default_factory=Firsts)
    longer: int = 0
    shorter: int = 0
    differing: int = 0
    over_length: Firsts = field(default_factory=Firsts)
    slices: Counter[str] = field(default_factory=Counter)
    pii: PiiReport | None = None
    sizes: set[Any] = field(default_factory=set)
    modes: set[Any] = field(default_factory=set)
    _hashes: tuple[Any, Any] | None = None

    def feed(self, rows: list[dict[str, Any]], texts: list[str] | None = None) -> None:
        """The next rows of the part, in order; `texts` their compared texts when already known."""
        w, base = self.wants, self.n
        self.n += len(rows)
        if w.fields or texts is not None:
            self._texts(texts if texts is not None else [row_text(r, w.fields) for r in rows])
        if w.target:
            self._targets([r.get(w.target) for r in rows])
        if w.pref is not None:
            self._pairs(rows, base, *w.pref)
        if w.max_length is not None and w.count_tokens is not None:
            lengths = w.count_tokens([" ".join(strings(r)) for r in rows])
            for i, n in enumerate(lengths, base):
                if n > w.max_length:
                    self.over_length.add(i)
        for name, conds in w.slices:
            self.slices[name] += sum(all(matches(r, cond) for cond in conds) for r in rows)
        if self.train:
            self._train_only(rows, base)

    def _texts(self, texts: list[str]) -> None:
        from ftc.compiler.data import near

        if texts:
            self.seq.append(near.sequence_hashes(texts))
            if self.first_text is None:
                self.first_text = texts[0]
            if not self.texts_vary:
                self.texts_vary = any(t != self.first_text for t in texts)

    def _targets(self, values: list[Any]) -> None:
        shown = [str(v) for v in values]
        if shown and self.first_target is None:
            self.first_target = shown[0]
        if not self.targets_vary:
            self.targets_vary = any(t != self.first_target for t in shown)
        if self.wants.classes:
            self.none_labels += sum(v is None for v in values)
            for t in shown:
                if t in self.labels or len(self.labels) < MAX_DISTINCT:
                    self.labels[t] += 1

    def _pairs(self, rows: list[dict[str, Any]], base: int, chosen: str, rejected: str) -> None:
        for i, r in enumerate(rows, base):
            a, b = r.get(chosen), r.get(rejected)
            if a is not None and a == b:
                self.identical.add(i)
            sa, sb = str(r.get(chosen, "")), str(r.get(rejected, ""))
            if sa != sb:
                self.differing += 1
                self.longer += len(sa) > len(sb)
                self.shorter += len(sa) < len(sb)

    def _train_only(self, rows: list[dict[str, Any]], base: int) -> None:
        w = self.wants
        if w.group:
            self._group_hashes(rows, base, w.group)
        if w.time:
            from ftc.compiler.data.splits import parse_time

            times = [t for t in (parse_time(r.get(w.time)) for r in rows) if t is not None]
            if times:
                self.latest = max(times) if self.latest is None else max(self.latest, max(times))
        if w.pii:
            self._pii(rows, base)
        if w.images:
            for r in rows:
                if r.get("width") and len(self.sizes) < MAX_DISTINCT:
                    self.sizes.add((_hashable(r.get("width")), _hashable(r.get("height"))))
                if r.get("mode") and len(self.modes) < MAX_DISTINCT:
                    self.modes.add(_hashable(r.get("mode")))

    def _group_hashes(self, rows: list[dict[str, Any]], base: int, key: str) -> None:
        g1, g2, at = self.groups
        for i, r in enumerate(rows, base):
            value = r.get(key)
            if value is not None:
                d = group_digest(value)
                g1.append(d[0])
                g2.append(d[1])
                at.append(i)

    def _pii(self, rows: list[dict[str, Any]], base: int) -> None:
        from ftc.compiler.data.pii import PiiReport, find_many

        if self.pii is None:
            self.pii = PiiReport()
        hits = find_many([" ".join(strings(row)) for row in rows])
        for i in sorted(hits):
            self.pii.add(base + i, hits[i])

    def hashes(self) -> tuple[np.ndarray, np.ndarray]:
        """The sequence hashes of every row's text (h1, h2), in row order."""
        import numpy as np

        if self._hashes is None:
            if self.seq:
                self._hashes = (np.concatenate([a for a, _ in self.seq]), np.concatenate([b for _, b in self.seq]))
            else:
                self._hashes = (np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint64))
            self.seq = [self._hashes]
        return self._hashes

    def group_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(g1, g2, first row) of each distinct group, sorted by (g1, g2): the first row with each."""
        import numpy as np

        g1 = np.frombuffer(self.groups[0], dtype=np.uint64) if len(self.groups[0]) else np.zeros(0, np.uint64)
        g2 = np.frombuffer(self.groups[1], dtype=np.uint64) if len(self.groups[1]) else np.zeros(0, np.uint64)
        at = np.frombuffer(self.groups[2], dtype=np.int64) if len(self.groups[2]) else np.zeros(0, np.int64)
        order = np.lexsort((at, g2, g1))
        g1, g2, at = g1[order], g2[order], at[order]
        new = np.ones(g1.size, dtype=bool)
        new[1:] = (g1[1:] != g1[:-1]) | (g2[1:] != g2[:-1])
        return g1[new], g2[new], at[new]


def group_digest(value: Any) -> tuple[int, int]:
    """A 128-bit hash of a group value as FT207 compares it (its `str`), as two 64-bit halves."""
    d = hashlib.blake2b(str(value).encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return int.from_bytes(d[:8], "little"), int.from_bytes(d[8:], "little")


def first_in_train(train: PartStats, values: list[Any]) -> list[int | None]:
    """For each value (an evaluation row's group), the first training row with that group, or None."""
    import numpy as np

    g1, g2, at = train.group_index()
    out: list[int | None] = []
    for v in values:
        if v is None or not g1.size:
            out.append(None)
            continue
        a, b = group_digest(v)
        lo = int(np.searchsorted(g1, np.uint64(a), side="left"))
        hi = int(np.searchsorted(g1, np.uint64(a), side="right"))
        hit = next((int(at[j]) for j in range(lo, hi) if int(g2[j]) == b), None)
        out.append(hit)
    return out


def stats_of(c: CheckedSpec, part: Part, stage: str | None = None, *, train: bool | None = None) -> PartStats:
    """The part's stats: gathered while it was streamed, else computed from its rows (once)."""
    from ftc.compiler.data.fields import part_texts

    if part.stats is None:
        st = PartStats(wants(c, stage), train=part.name == "train" if train is None else train)
        texts = part_texts(c.spec, part) if stage is None else None
        if texts is not None:
            part.texts = texts
        st.feed(part.rows, texts)
        part.stats = st
    stats: PartStats = part.stats
    return stats


def finite(x: float) -> bool:
    return math.isfinite(x)
