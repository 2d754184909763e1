"""Seeded mutations of the shipped examples for the conformance corpus (tests/runtime/corpus.py).

A mutation edits 1-3 settings of one example, each to another legal value of its key:

  enum       another choice                     boolean   flipped
  integer    another value in the key's bounds  number    another value in its bounds (x10, /10, ends)
  quantity   another amount of its dimension    list      another subset: of an enum's choices
                                                          (augment), of the base's module names (LoRA
                                                          targets, freeze patterns), of the labels
  composite statements (dedup, split, max_length, early_stopping, checkpoints, a slice, a metric,
  a gate, ...) and string keys (field names, the base, a revision): from COMPOSITE and STRINGS
  below, the one place where the signature cannot tell; field names come from the example's data.

The legal values are read from the key's signature in compiler/schema.py (compiler/types.py
builds each signature as a closure over its choices and bounds; `signature()` reads them back,
and fails loudly on a signature it does not know, so that a new kind of key is noticed).
An optional setting may also be added (where the example does not write it; with `override`
where it inherits it through `extends`) or removed; an absent optional block added (`tracking`,
an RLHF stage's `train`); the method switched to another kind (test_matrix's minimal block, with
one of the new kind's keys set half the time).

Each mutation is a list of text edits at offsets of the example's file, so it applies to any
byte-identical copy; a mutation is described by its edits ("train.learning_rate: `override
learning_rate 3e-3` -> `override learning_rate 0.03`").
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import random
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.compiler import ast
from ftc.compiler import schema as s
from ftc.compiler.parser import parse
from ftc.compiler.source import Source

from tests.conftest import ROOT
from tests.runtime import test_matrix as M

# ---------------------------------------------------------------------------------------------
# What a signature accepts


@dataclass(frozen=True)
class Signature:
    kind: str  # enum | boolean | integer | number | quantity | list | string | the sig's own name
    params: dict[str, Any]


def signature(sig: Callable[..., Any]) -> Signature:
    """The constructor of compiler/types.py that built `sig`, and the values it closed over."""
    name = sig.__qualname__
    if "<locals>" not in name:
        return Signature(name, {})  # a composite signature of schema.py (sig_dedup, ...)
    kind = name.split(".")[0]
    cells = dict(zip(sig.__code__.co_freevars, (c.cell_contents for c in sig.__closure__ or ())))
    if kind == "list_of":
        return Signature("list", {**cells, "item": signature(cells["item"])})
    if kind not in ("enum", "boolean", "integer", "number", "quantity", "string"):
        raise ValueError(f"mutate.py does not know the signature kind {name}: teach signature() its values")
    return Signature(kind, cells)


def _g(x: float) -> str:
    return f"{x:g}"


def integers(lo: int | None, hi: int | None, current: Any) -> list[str]:
    top = hi if hi is not None and hi <= 1024 else 256
    cands = {lo or 0, 1, 2, 3, 4, 8, 16, 64, 256, top}
    return [str(x) for x in sorted(cands) if (lo or 0) <= x <= top and x != current]


def numbers(lo: float | None, hi: float | None, current: Any) -> list[str]:
    low, top = lo if lo is not None else 0.0, hi if hi is not None else 100.0
    cur = float(current) if isinstance(current, (int, float)) else 0.1
    cands = {low, top, cur * 10, cur / 10, 0.5, 1e-3, 0.05}
    return [_g(x) for x in sorted(cands) if low <= x <= top and abs(x - cur) > 1e-12]


QUANTITIES = {"memory": ("2GB", "24GB", "80GB"), "time": ("1s", "10min", "2h"), "count": ("1M", "110M", "7B")}


def subsets(items: Sequence[str], rng: random.Random, n: int = 3) -> list[str]:
    """A few random non-empty subsets of `items`, as ftspec lists."""
    out = []
    for _ in range(n):
        k = rng.randint(1, min(3, len(items)))
        out.append("[" + ", ".join(json.dumps(x) for x in sorted(rng.sample(list(items), k))) + "]")
    return sorted(set(out))


# ---------------------------------------------------------------------------------------------
# What the example offers: its data's columns and sample values, its base's module names


@dataclass(frozen=True)
class Example:
    path: str  # relative to the repository
    text: str
    tree: ast.SpecFile
    inherited: tuple[ast.SpecFile, ...]  # the files it extends
    columns: dict[str, str]  # data column -> a string value of it (or "")
    modules: tuple[str, ...]  # leaf names of the base's weight matrices (LoRA targets)
    prefixes: tuple[str, ...]  # leading module paths of the base (freeze patterns)

    @property
    def folder(self) -> Path:
        return (ROOT / self.path).parent

    @property
    def name(self) -> str:
        return Path(self.path).stem


def _parse(path: Path) -> ast.SpecFile:
    tree, diags = parse(Source(str(path), path.read_text(encoding="utf-8")))
    assert tree is not None, [d.message for d in diags]
    return tree


def _walk(body: ast.Body) -> Iterator[ast.Stmt]:
    for st in body.stmts:
        yield st
        if st.body is not None:
            yield from _walk(st.body)


def _data_columns(folder: Path, tree: ast.SpecFile) -> dict[str, str]:
    cols: dict[str, str] = {}
    for st in _walk(tree.body):
        if st.key in ("train", "val", "test", "source") and st.args and isinstance(st.args[0], ast.Str):
            target = folder / st.args[0].value
            if target.is_dir():
                cols.update({"image": "", "label": next(p.name for p in sorted(target.iterdir()))})
            elif target.suffix == ".jsonl":
                row = json.loads(target.read_text(encoding="utf-8").splitlines()[0])
                cols.update({k: v if isinstance(v, str) else "" for k, v in row.items()})
    return dict(sorted(cols.items()))


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    with path.open("rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def _base_modules(folder: Path, tree: ast.SpecFile) -> tuple[tuple[str, ...], tuple[str, ...]]:
    base = next(st.args[0].value for st in _walk(tree.body) if st.key == "base" and isinstance(st.args[0], ast.Str))
    names = [n for f in sorted((folder / base).glob("*.safetensors")) for n, shape in safetensors_shapes(f).items()
             if n.endswith(".weight") and len(shape) >= 2]
    modules = [n.removesuffix(".weight") for n in names]
    leaves = sorted({m.split(".")[-1] for m in modules})
    prefixes = sorted({".".join(m.split(".")[:2]) for m in modules})
    return tuple(leaves), tuple(prefixes)


@functools.cache
def load_example(path: str) -> Example:
    full = ROOT / path
    tree = _parse(full)
    inherited = tuple(_parse(full.parent / e.value) for e in tree.extends)
    modules, prefixes = _base_modules(full.parent, tree)
    return Example(path, full.read_text(encoding="utf-8"), tree, inherited, _data_columns(full.parent, tree),
                   modules, prefixes)


# ---------------------------------------------------------------------------------------------
# Where a setting is written: sites


@dataclass(frozen=True)
class Site:
    """One key of one block of an example (or a block it does not write)."""

    path: str  # schema.key_paths spelling: train.learning_rate, method.lora.rank, signal.rlhf.policy.train
    word: str  # what the user writes: `metric` for eval.metrics
    field: Any  # the dataclass field (None for a method switch)
    body: ast.Body  # where a new statement goes (for an absent block: the body that gets the block)
    stmt: ast.Stmt | None = None  # the example's statement (None: not written there)
    inherited: ast.Stmt | None = None  # the statement of an extended file it takes the value from
    absent_block: bool = False


def _find(body: ast.Body | None, word: str, kind: str | None = None) -> ast.Stmt | None:
    for st in body.stmts if body is not None else ():
        if st.key == word and (kind is None or (st.args and isinstance(st.args[0], ast.Name)
                                                 and st.args[0].text == kind)):
            return st
    return None


def _block_sites(cls: type, body: ast.Body, parents: list[ast.Body | None], prefix: str) -> Iterator[Site]:
    for name, f in s.schema_fields(cls).items():
        meta, word, here = f.metadata, s.key_name(f), f"{prefix}{name}"
        if "block" in meta:
            if meta["mapping"] or meta["kinds"]:
                continue  # a field mapping needs columns the data may lack; variant blocks: spec level
            inner = _find(body, name)
            if inner is None or inner.body is None:
                yield Site(here, name, f, body, absent_block=True)
            else:
                yield from _block_sites(meta["block"], inner.body, [_sub(p, name) for p in parents], f"{here}.")
        elif meta["repeat"]:
            yield Site(here, word, f, body)  # one more
            yield from (Site(here, word, f, body, st) for st in body.stmts if st.key == word)  # one fewer
        else:
            inherited = next((x for p in parents if (x := _find(p, word)) is not None), None)
            yield Site(here, word, f, body, _find(body, word), inherited)


def _sub(body: ast.Body | None, word: str, kind: str | None = None) -> ast.Body | None:
    st = _find(body, word, kind)
    return st.body if st is not None else None


def sites(ex: Example) -> list[Site]:
    """Every key of the blocks the example writes, an absent optional block, and the method."""
    out: list[Site] = []
    for name, f in s.schema_fields(s.Spec).items():
        meta = f.metadata
        st = _find(ex.tree.body, name)
        parents = [p.body for p in ex.inherited]
        if st is None or st.body is None:
            if not meta["required"]:
                out.append(Site(name, name, f, ex.tree.body, absent_block=True))
            continue
        if meta["kinds"]:
            kind = st.args[0].text if st.args and isinstance(st.args[0], ast.Name) else ""
            cls = meta["kinds"][kind]
            if name == "method":
                out.append(Site("method", "method", None, ex.tree.body, st))
            out.extend(_block_sites(cls, st.body, [_sub(p, name, kind) for p in parents], f"{name}.{kind}."))
        else:
            out.extend(_block_sites(meta["block"], st.body, [_sub(p, name) for p in parents], f"{name}."))
    return out


# ---------------------------------------------------------------------------------------------
# The legal values of a site (argument texts; None removes the statement)

COMPOSITE: dict[str, Sequence[str]] = {
    "sig_dedup": ("exact", "near 0.9", "near 0.5", "none"),
    "sig_max_length": ("16 truncate", "64 drop", "512 truncate"),
    "sig_early_stopping": ("patience 1 on val.loss", "patience 3 on val.loss min_delta 0.01",
                           "patience 2 on val.accuracy"),
    "sig_checkpoints": ("keep 1", "keep 2 every 1 steps", "keep 1 every epoch"),
    "sig_artifacts": ("keep 0", "keep 3"),
    "sig_gate": ("latency.p95 <= 10s", "loss <= 100 on test", "accuracy >= 0.0 on val"),
    "sig_metric": tuple("recall_at_k 5" if m == "recall_at_k" else m for m in s.METRICS) + ("f1 weighted",),
    "sig_tracking_uri": ('"sqlite:///mlruns.db"',),
    "sig_register": ("false", '"corpus-model"'),
    "sig_alias": ('"staging"',),
}
RATIOS = ("70/15/15", "90/5/5", "60/20/20", "80/20")
FIELD_KEYS = ("input", "target", "messages", "prompt", "chosen", "rejected", "anchor", "positive", "negative",
              "image", "caption", "stratify", "group", "time")
BASES = ("specs/ticket-triage/models/tiny-bert", "specs/reply-tone/models/tiny-gpt2",
         "specs/defect-inspection/models/tiny-convnext", "specs/icon-search/models/tiny-clip")
STRINGS: dict[str, Callable[[Example], Sequence[str]]] = {
    "owner": lambda ex: ('"qa-team"',),
    "base": lambda ex: (*(json.dumps(os.path.relpath(ROOT / b, ex.folder)) for b in BASES), '"hf:org/model"'),
    "revision": lambda ex: ('"0123456789abcdef0123456789abcdef01234567"', '"main"'),
    "pretrained": lambda ex: ('"laion2b_s34b_b79k"',),
    "output_schema": lambda ex: ('"schema.json"',),
    "init_text": lambda ex: ('"Answer the customer:"',),
    "image_root": lambda ex: ('"data"', '"data/images"'),
    "experiment": lambda ex: ('"corpus"',),
    "artifacts": lambda ex: ('"mlartifacts"',),
    **{k: (lambda ex: tuple(json.dumps(c) for c in ex.columns)) for k in FIELD_KEYS},
}
# An absent optional block, added with one of these bodies.
BLOCKS = {"tracking": ('mlflow "sqlite:///mlruns.db"', 'mlflow "sqlite:///mlruns.db"; register false'),
          "train": ("batch_size 2", "learning_rate 0.01", "epochs 1", "precision fp32", "seed 7"),
          "budget": ("max_time 1h", "gpu_memory 24GB")}


def _used(st: ast.Stmt, f: Any) -> int:
    return int(f.metadata["sig"](st.args, st.key_span, st.key).used)


def _current(site: Site) -> Any:
    st = site.stmt or site.inherited
    if st is None:
        f = site.field
        return f.default_factory() if f.default is dataclasses.MISSING else f.default
    return site.field.metadata["sig"](st.args, st.key_span, st.key).value


def _by_signature(site: Site, ex: Example, rng: random.Random) -> list[str]:
    sig, cur = signature(site.field.metadata["sig"]), _current(site)
    p = sig.params
    if sig.kind == "enum":
        return [c for c in p["choices"] if c != cur]
    if sig.kind == "boolean":
        return ["false" if cur else "true"]
    if sig.kind == "integer":
        return integers(p["lo"], p["hi"], cur)
    if sig.kind == "number":
        return numbers(p["lo"], p["hi"], cur)
    if sig.kind == "quantity":
        return list(QUANTITIES[p["dimension"]])
    if sig.kind == "list":
        return _lists(site, ex, p["item"], cur, rng)
    if sig.kind == "string":
        return [v for v in STRINGS[site.word](ex) if v != json.dumps(cur)] if site.word in STRINGS else []
    return _composite(site, ex, sig.kind)


def _lists(site: Site, ex: Example, item: Signature, cur: Any, rng: random.Random) -> list[str]:
    if item.kind == "enum":
        pool: Sequence[str] = item.params["choices"]
    elif site.word == "targets":
        return [*subsets(ex.modules, rng), '["all-linear"]']
    elif site.word in ("freeze", "unfreeze", "progressive"):
        pool = ex.prefixes
    elif site.word == "labels" and cur:
        return ["[" + ", ".join(json.dumps(x) for x in v) + "]" for v in (cur[:-1], (*cur, "other")) if len(v)]
    else:
        return []
    return [v for v in subsets(pool, rng) if v != "[" + ", ".join(json.dumps(x) for x in cur or ()) + "]"]


def _composite(site: Site, ex: Example, name: str) -> list[str]:
    st = site.stmt or site.inherited
    if name == "sig_split":
        tail = ex.text[st.args[1].span.start:st.args[_used(st, site.field) - 1].span.end] if st and len(st.args) > 1 \
            and _used(st, site.field) > 1 else ""
        return [f"{r} {tail}".strip() for r in RATIOS]
    if name == "sig_data_file":
        if st is None or site.stmt is None:
            return []
        path = json.dumps(st.args[0].value)  # type: ignore[union-attr]
        rows = site.field.metadata["sig"](st.args, st.key_span, st.key).value.rows
        return [path] if rows is None else [path, f"{path} rows {rows + 1}"]
    if name == "sig_slice":
        return [f's_{c} where {c} == {json.dumps(v)}' for c, v in ex.columns.items() if v]
    return list(COMPOSITE.get(name, ()))


def legal_values(site: Site, ex: Example, rng: random.Random) -> list[str | None]:
    """Another legal value of the site (the argument text), or None to remove its statement."""
    if site.field is None:  # the method: another kind
        return [k for k in s.METHODS if k != site.stmt.args[0].text]  # type: ignore[union-attr]
    if site.absent_block:
        return list(BLOCKS.get(site.word, ()))
    if site.field.metadata["repeat"] and site.stmt is None:
        return [v for v in _by_signature(site, ex, rng) if v]
    removable = site.stmt is not None and not site.field.metadata["required"]
    if site.field.metadata["repeat"]:
        return [None]
    return [*_by_signature(site, ex, rng), *([None] if removable else [])]


# ---------------------------------------------------------------------------------------------
# Edits: text changes at offsets of the example file


@dataclass(frozen=True)
class Edit:
    path: str
    old: str | None  # the statement before (None: not written)
    new: str | None  # the statement after (None: removed)
    start: int = field(compare=False)
    end: int = field(compare=False)
    text: str = field(compare=False)  # what replaces text[start:end]

    def __str__(self) -> str:
        return f"{self.path}: {f'`{self.old}`' if self.old else '(not written)'} -> " + (
            f"`{self.new}`" if self.new else "(removed)")


def _insertion(text: str, body: ast.Body, stmt: str) -> tuple[int, str]:
    """Where and what to insert so that `stmt` becomes the last statement of `body`."""
    close = body.span.end - 1
    assert text[close] == "}", text[close - 10:close + 1]
    line_start = text.rfind("\n", 0, close) + 1
    if not text[line_start:close].strip():  # the brace on its own line
        indent = text[line_start:close] + "  "
        return line_start, f"{indent}{stmt}\n"
    if not body.stmts:
        return close, f"{stmt} "
    return len(text[:close].rstrip()), f"; {stmt}"  # after the last statement, on its line


def _removal(text: str, start: int, end: int) -> tuple[int, int]:
    """A statement's region grown over its separator, or its whole line when nothing else is on it."""
    line_start, line_end = text.rfind("\n", 0, start) + 1, text.find("\n", end)
    rest = text[end:line_end].lstrip()
    if not text[line_start:start].strip() and (not rest or rest.startswith("#")):
        return line_start, line_end + 1
    after = text[end:line_end]
    if after.lstrip().startswith(";"):
        stop = end + after.index(";") + 1
        return start, stop + len(text[stop:line_end]) - len(text[stop:line_end].lstrip(" "))
    before = text[line_start:start].rstrip()
    if before.endswith(";"):
        return line_start + len(before) - 1, end
    return start, end


def _method_block(kind: str, ex: Example, rng: random.Random) -> str:
    """test_matrix's minimal block of `kind` (`lora { rank 4 }`), half the time with one of its
    keys set to a legal value."""
    block = M.MINIMAL_METHOD[kind]
    inner = block[block.index("{") + 1:block.rindex("}")].strip()
    if rng.random() < 0.5:
        f = rng.choice(list(s.schema_fields(s.METHODS[kind]).values()))
        site = Site(f"method.{kind}.{f.name}", s.key_name(f), f, ex.tree.body)
        values = [v for v in _by_signature(site, ex, rng) if v]
        if values:
            setting = f"{site.word} {rng.choice(values)}"
            inner = setting if not inner or inner.split()[0] == site.word else f"{inner}; {setting}"
    return f"{kind} {{ {inner} }}" if inner else f"{kind} {{ }}"


def make_edit(site: Site, value: str | None, ex: Example, rng: random.Random) -> Edit:
    text = ex.text
    if site.field is None:  # method switch
        st = site.stmt
        assert st is not None and st.body is not None
        new = f"method {_method_block(str(value), ex, rng)}"
        return Edit(site.path, f"method {st.args[0].show()} {{...}}", new, st.span.start, st.span.end, new)
    if site.absent_block:
        at, ins = _insertion(text, site.body, f"{site.word} {{ {value} }}")
        return Edit(site.path, None, f"{site.word} {{ {value} }}", at, at, ins)
    st = site.stmt
    if st is None:
        new = ("override " if site.inherited is not None else "") + f"{site.word} {value}"
        at, ins = _insertion(text, site.body, new)
        was = site.inherited
        old = f"{was.key} {' '.join(a.show() for a in was.args)} (inherited)" if was is not None else None
        return Edit(site.path, old, new, at, at, ins)
    end = st.args[_used(st, site.field) - 1].span.end if st.args else st.key_span.end
    old = text[st.span.start:end]
    if value is None:
        a, b = _removal(text, st.span.start, end)
        return Edit(site.path, old, None, a, b, "")
    new = ("override " if st.override else "") + f"{site.word} {value}"
    return Edit(site.path, old, new, st.span.start, end, new)


def apply(text: str, edits: Sequence[Edit]) -> str:
    for e in sorted(edits, key=lambda e: (e.start, e.end), reverse=True):
        text = text[:e.start] + e.text + text[e.end:]
    return text


def _overlap(a: Edit, b: Edit) -> bool:
    if a.start == a.end and b.start == b.end:
        return False  # two insertions at one place both land
    return a.start < b.end and b.start < a.end or (a.start == a.end and b.start < a.start < b.end) or (
        b.start == b.end and a.start < b.start < a.end)


# ---------------------------------------------------------------------------------------------
# Mutations


@dataclass(frozen=True)
class Mutation:
    index: int
    example: str  # the example's spec, relative to the repository and to a corpus root
    edits: tuple[Edit, ...]

    @property
    def id(self) -> str:
        return f"m{self.index:03d}-{Path(self.example).stem}"

    @property
    def path(self) -> str:
        """The mutated spec, beside its example (so that extends and relative paths still resolve)."""
        return str(Path(self.example).parent / f"mutation-{self.index:03d}.ftspec")

    def text(self) -> str:
        return apply(load_example(self.example).text, self.edits)

    def describe(self) -> str:
        return f"{self.id}: " + "; ".join(str(e) for e in self.edits)


def _draw(ex: Example, rng: random.Random) -> tuple[Edit, ...] | None:
    chosen: list[Edit] = []
    for site in rng.sample(sites(ex), rng.choice((1, 2, 3))):
        values = legal_values(site, ex, rng)
        if not values:
            return None
        edit = make_edit(site, rng.choice(values), ex, rng)
        if any(_overlap(edit, e) or e.path == edit.path for e in chosen):
            return None
        chosen.append(edit)
    return tuple(chosen)


@functools.cache
def mutations(n: int, seed: int = 0) -> tuple[Mutation, ...]:
    """n distinct mutations of the examples; the same (n, seed) always gives the same ones, and
    the first k of n are the mutations of (k, seed)."""
    from tests.runtime.corpus import examples

    exs = [load_example(p) for p in examples()]
    out: list[Mutation] = []
    seen: set[tuple[str, tuple[Edit, ...]]] = set()
    draw = 0
    while len(out) < n:
        rng = random.Random(f"{seed}:{draw}")
        draw += 1
        ex = exs[rng.randrange(len(exs))]
        edits = _draw(ex, rng)
        if edits is None or (ex.path, tuple(sorted(edits, key=str))) in seen:
            continue
        seen.add((ex.path, tuple(sorted(edits, key=str))))
        out.append(Mutation(len(out), ex.path, edits))
    return tuple(out)


def write_mutation(root: Path, m: Mutation) -> Path:
    """The mutated spec, written beside the copy of its example under `root`."""
    copy = (root / m.example).read_text(encoding="utf-8")
    assert copy == load_example(m.example).text, f"{m.example} differs from the repository's"
    out = root / m.path
    out.write_text(m.text(), encoding="utf-8")
    return out
