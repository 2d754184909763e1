"""Name and type resolution: AST statements -> typed blocks, `extends` merged, defaults filled.

Three steps, each a plain function:
  decode(body, block class)     statements -> Decoded (typed values with spans; unknown keys,
                                wrong types and duplicates become diagnostics)
  merge(parent, child)          inheritance through `extends`; replacing an inherited value must
                                be written `override`
  build(decoded, block class)   Decoded -> frozen dataclass with defaults filled
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ftc.compiler import ast
from ftc.compiler import schema as s
from ftc.compiler import types as t
from ftc.compiler.diagnostics import Diagnostic, Related, make
from ftc.compiler.source import Span

Report = Callable[[Diagnostic], None]


@dataclass(frozen=True)
class Entry:
    value: Any
    span: Span  # the value's span
    stmt_span: Span  # key and arguments
    override: bool


@dataclass
class Decoded:
    cls: type
    span: Span
    kind: str | None = None
    kind_span: Span | None = None
    entries: dict[str, list[Entry]] = field(default_factory=dict)
    blocks: dict[str, Decoded] = field(default_factory=dict)
    block_stmts: dict[str, ast.Stmt] = field(default_factory=dict)
    mapping: dict[str, Entry] = field(default_factory=dict)
    head: Span | None = None  # the block's key (or the spec's name): where "missing ..." points
    failed: set[str] = field(default_factory=set)  # keys written with a bad value: not "missing" too


def _all_keys() -> dict[str, str]:
    """Every key word in the language -> the block it belongs to (for 'belongs in ...' hints)."""
    out: dict[str, str] = {}
    blocks: list[tuple[str, type]] = [("spec", s.Spec)]
    seen: set[type] = set()
    while blocks:
        name, cls = blocks.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for f in s.schema_fields(cls).values():
            out.setdefault(s.key_name(f), name)
            if "block" in f.metadata:
                kinds = f.metadata["kinds"] or {}
                for kind, kcls in kinds.items():
                    blocks.append((f"{f.name} {kind}", kcls))
                blocks.append((f.name, f.metadata["block"]))
    return out


_KEY_HOME: dict[str, str] | None = None


def _key_home(word: str) -> str | None:
    global _KEY_HOME
    if _KEY_HOME is None:
        _KEY_HOME = _all_keys()
    return _KEY_HOME.get(word)


def _keys_of(cls: type) -> dict[str, Any]:
    return {s.key_name(f): f for f in s.schema_fields(cls).values()}


def _block_label(cls: type, kind: str | None) -> str:
    names = {s.Spec: "spec", s.Intent: "intent", s.Model: "model", s.Data: "data", s.Train: "train",
             s.Eval: "eval", s.Budget: "budget", s.RewardStage: "reward", s.PolicyStage: "policy",
             s.DataFields: "fields"}
    if cls in names:
        return names[cls]
    for table, word in ((s.METHODS, "method"), (s.SIGNALS, "signal")):
        for k, c in table.items():
            if c is cls:
                return f"{word} {k}"
    return kind or cls.__name__.lower()


def decode(body: ast.Body, cls: type, report: Report, kind: str | None = None,
           kind_span: Span | None = None) -> Decoded:
    out = Decoded(cls, body.span, kind, kind_span)
    keys = _keys_of(cls)
    label = _block_label(cls, kind)
    for stmt in body.stmts:
        if cls is s.DataFields:
            _decode_mapping(stmt, out, report)
            continue
        pending: ast.Stmt | None = stmt
        while pending is not None:
            pending = _decode_stmt(pending, keys, label, out, report)
    return out


def _decode_mapping(stmt: ast.Stmt, out: Decoded, report: Report) -> None:
    if len(stmt.args) != 1 or not isinstance(stmt.args[0], ast.Str) or stmt.body is not None:
        report(make("FT013", f"`fields` maps a name to a column: `{stmt.key} \"column\"`", stmt.span,
                    help='write one mapping per line, e.g. `text "body"`'))
        return
    if stmt.key in out.mapping:
        _duplicate(stmt.key, out.mapping[stmt.key].stmt_span, stmt.span, report)
        return
    arg = stmt.args[0]
    assert isinstance(arg, ast.Str)
    out.mapping[stmt.key] = Entry(arg.value, arg.span, stmt.span, stmt.override)


def _duplicate(word: str, first: Span, second: Span, report: Report) -> None:
    report(make("FT012", f"`{word}` is set twice", second,
                help=f"keep one `{word}`; remove or merge the other",
                related=(Related(first, "first set here"),)))


def _unknown(stmt: ast.Stmt, keys: dict[str, Any], label: str, report: Report) -> None:
    home = _key_home(stmt.key)
    hint = t.suggest(stmt.key, list(keys))
    if home and home != label and not hint:
        hint = f"`{stmt.key}` belongs in the `{home}` block; "
    kinds = "block" if stmt.body is not None else "key"
    report(make("FT011" if kinds == "key" else "FT010", f"unknown {kinds} `{stmt.key}` in `{label}`",
                stmt.key_span, help=f"{hint}known here: {', '.join(f'`{k}`' for k in keys)}"))


def _decode_stmt(stmt: ast.Stmt, keys: dict[str, Any], label: str, out: Decoded,
                 report: Report) -> ast.Stmt | None:
    """Decode one statement; return the rest of the line when it starts another key."""
    f = keys.get(stmt.key)
    if f is None:
        _unknown(stmt, keys, label, report)
        return None
    if "block" in f.metadata:
        _decode_block_stmt(stmt, f, out, report)
        return None
    try:
        parsed = f.metadata["sig"](stmt.args, stmt.key_span, stmt.key)
    except t.SigError as err:
        report(err.diag)
        out.failed.add(f.name)
        return None
    rest = stmt.args[parsed.used:]
    stmt_span = Span(stmt.span.path, stmt.key_span.start, parsed.span.end, stmt.key_span.line,
                     stmt.key_span.column, parsed.span.end_line, parsed.span.end_column)
    entries = out.entries.setdefault(f.name, [])
    if entries and not f.metadata["repeat"]:
        _duplicate(stmt.key, entries[0].stmt_span, stmt_span, report)
    else:
        entries.append(Entry(parsed.value, parsed.span, stmt_span, stmt.override))
    if not rest and stmt.body is None:
        return None
    head = rest[0] if rest else None
    if isinstance(head, ast.Name) and len(head.parts) == 1 and head.text in keys:
        end = stmt.span
        return ast.Stmt(head.text, head.span, tuple(rest[1:]), stmt.body, False,
                        Span(end.path, head.span.start, end.end, head.span.line, head.span.column,
                             end.end_line, end.end_column))
    if head is None:
        assert stmt.body is not None
        report(make("FT013", f"`{stmt.key}` is a setting, not a block", stmt.body.span,
                    help=f"write `{stmt.key} VALUE` without `{{ ... }}`"))
        return None
    word = head.text if isinstance(head, ast.Name) else head.show()
    hint = t.suggest(word, list(keys)) if isinstance(head, ast.Name) else ""
    report(make("FT016", f"unexpected `{word}` after `{stmt.key} {' '.join(a.show() for a in stmt.args[:parsed.used])}`",
                head.span, help=f"{hint}put each setting on its own line or separate settings with `;`"))
    return None


def _decode_block_stmt(stmt: ast.Stmt, f: Any, out: Decoded, report: Report) -> None:
    kinds = f.metadata["kinds"]
    word = s.key_name(f)
    out.failed.add(f.name)  # until the block decodes
    if stmt.body is None:
        example = f"{word} lora {{ rank 8 }}" if kinds else f"{word} {{ ... }}"
        report(make("FT013", f"`{word}` is a block", stmt.span, help=f"write `{example}`"))
        return
    kind = None
    kind_span = None
    if kinds:
        aliases = s.SIGNAL_ALIASES if kinds is s.SIGNALS else {}
        if len(stmt.args) != 1:
            report(make("FT013", f"`{word}` needs its kind: one of {', '.join(kinds)}", stmt.key_span,
                        help=f"write `{word} {next(iter(kinds))} {{ ... }}`"))
            return
        try:
            kind = t.enum_value(stmt.args[0], word, list(kinds), aliases)
        except t.SigError as err:
            report(err.diag)
            return
        kind_span = stmt.args[0].span
        cls = kinds[kind]
    else:
        if stmt.args:
            report(make("FT016", f"`{word}` takes no arguments before `{{`", stmt.args[0].span,
                        help=f"write `{word} {{ ... }}`"))
            return
        cls = f.metadata["block"]
    if f.name in out.blocks:
        _duplicate(word, out.block_stmts[f.name].key_span, stmt.key_span, report)
        return
    out.blocks[f.name] = decode(stmt.body, cls, report, kind, kind_span)
    out.blocks[f.name].head = stmt.key_span
    out.failed.discard(f.name)
    out.block_stmts[f.name] = stmt


# --- inheritance ---------------------------------------------------------------------------------

def merge(parent: Decoded, child: Decoded, report: Report) -> Decoded:
    """Child settings over parent ones. Repeated keys (metric, gate, slice) accumulate."""
    if child.kind != parent.kind:
        return child
    merged = Decoded(child.cls, child.span, child.kind, child.kind_span, head=child.head,
                     failed=parent.failed | child.failed)
    merged.mapping = _merge_flat(parent.mapping, child.mapping, report)
    for name in dict.fromkeys([*parent.entries, *child.entries]):
        p, c = parent.entries.get(name, []), child.entries.get(name, [])
        f = s.schema_fields(child.cls).get(name)
        if f is not None and f.metadata.get("repeat"):
            for e in c:
                if e.override:
                    report(make("FT019", f"`override {s.key_name(f)}`: `{s.key_name(f)}` entries accumulate "
                                         "across `extends`, so there is nothing to replace", e.stmt_span,
                                help=f"remove `override`; an inherited `{s.key_name(f)}` stays in force"))
            merged.entries[name] = [*p, *c]
        else:
            merged.entries[name] = _merge_one(name, p, c, report)
    for name in dict.fromkeys([*parent.blocks, *child.blocks]):
        pb, cb = parent.blocks.get(name), child.blocks.get(name)
        cs = child.block_stmts.get(name)
        if pb is None or cb is None:
            chosen = cb or pb
            assert chosen is not None
            if cb is not None and cs is not None and cs.override:
                _nothing_to_override(name, cs.key_span, report)
            merged.blocks[name] = chosen
            merged.block_stmts[name] = cs or parent.block_stmts[name]
            continue
        assert cs is not None
        if cs.override:
            merged.blocks[name] = cb
        elif cb.kind != pb.kind:
            ps = parent.block_stmts[name]
            report(make("FT018", f"`{name} {cb.kind}` replaces the inherited `{name} {pb.kind}`", cs.key_span,
                        help=f"write `override {name} {cb.kind} {{ ... }}` to replace the inherited block",
                        related=(Related(ps.key_span, "inherited from here"),)))
            merged.blocks[name] = cb
        else:
            merged.blocks[name] = merge(pb, cb, report)
        merged.block_stmts[name] = cs
    return merged


def _merge_one(name: str, p: list[Entry], c: list[Entry], report: Report) -> list[Entry]:
    if not c:
        return p
    if not p:
        if c[0].override:
            _nothing_to_override(name, c[0].stmt_span, report)
        return c
    if not c[0].override:
        report(make("FT018", f"`{name}` replaces a value inherited through `extends`", c[0].stmt_span,
                    help=f"write `override {name} ...` to make the change explicit, or remove the line",
                    related=(Related(p[0].stmt_span, "inherited value set here"),)))
    return c


def _merge_flat(p: dict[str, Entry], c: dict[str, Entry], report: Report) -> dict[str, Entry]:
    out = dict(p)
    for k, entry in c.items():
        out[k] = _merge_one(k, [p[k]] if k in p else [], [entry], report)[0]
    return out


def _nothing_to_override(name: str, span: Span, report: Report) -> None:
    report(make("FT019", f"`override {name}` overrides nothing: no inherited `{name}`", span,
                help="remove `override`, or check the file named by `extends`"))


# --- building typed blocks ------------------------------------------------------------------------

def build(dec: Decoded, report: Report, partial: bool = False) -> Any:
    """Decoded -> the block's frozen dataclass; defaults filled, missing required keys reported."""
    values: dict[str, Any] = {}
    spans: dict[str, Span] = {}
    label = _block_label(dec.cls, dec.kind)
    head = dec.head or dec.span
    for name, f in s.schema_fields(dec.cls).items():
        if "block" in f.metadata:
            sub_dec = dec.blocks.get(name)
            if sub_dec is not None:
                values[name] = build(sub_dec, report, partial)
                spans[name] = dec.block_stmts[name].key_span
            elif f.metadata["required"] and not partial and name not in dec.failed:
                _missing(s.key_name(f), label, head, True, f.metadata, report)
            elif not f.metadata["kinds"] and not f.metadata["mapping"] and f.metadata["block"] in _FILLED:
                values[name] = f.metadata["block"]()
            continue
        entries = dec.entries.get(name, [])
        if f.metadata["repeat"]:
            values[name] = tuple(e.value for e in entries)
            if entries:
                spans[name] = entries[0].span
        elif entries:
            values[name] = entries[0].value
            spans[name] = entries[0].span
        elif f.metadata["required"] and not partial and name not in dec.failed:
            _missing(s.key_name(f), label, head, False, f.metadata, report)
    if dec.cls is s.DataFields:
        values["mapping"] = {k: e.value for k, e in dec.mapping.items()}
        spans.update({k: e.span for k, e in dec.mapping.items()})
    return dec.cls(span=head, spans=spans, kind=dec.kind or "", kind_span=dec.kind_span, **values)


_FILLED = (s.Train, s.Budget)


def _missing(word: str, label: str, span: Span, block: bool, meta: dict[str, Any], report: Report) -> None:
    if block and meta.get("kinds"):
        first = next(iter(meta["kinds"]))
        example = f"{word} {first} {{ ... }}"
    elif block:
        example = f"{word} {{ ... }}"
    else:
        example = f"{word} ..."
    report(make("FT020", f"`{label}` is missing `{word}`", span,
                help=f"add `{example}` ({meta['doc']})"))


def stray_overrides(dec: Decoded, report: Report) -> None:
    """`override` in a file that extends nothing overrides nothing."""
    for name, entries in dec.entries.items():
        for e in entries:
            if e.override:
                _nothing_to_override(name, e.stmt_span, report)
    for k, e in dec.mapping.items():
        if e.override:
            _nothing_to_override(k, e.stmt_span, report)
    for name, sub_dec in dec.blocks.items():
        stmt = dec.block_stmts[name]
        if stmt.override:
            _nothing_to_override(name, stmt.key_span, report)
        stray_overrides(sub_dec, report)
