"""A reviewed plan file (`ftc plan --out plan.json`) read back for `ftc run plan.json`.

A plan file is input like a spec: it can be damaged, truncated, written by another ftc, or edited
by hand. `load_plan` returns the Plan or located diagnostics (FT007, file:line:col into the JSON),
never a KeyError. Positions come from a small scanner over the JSON text that records where each
value starts (Python's json module keeps no positions); the values themselves are decoded by json.

What is refused: text that is not JSON; another `format_version`; a missing or mistyped field; a
node kind ftc has no executor step for; duplicate ids; an input naming no node; a cycle; and a
node whose hash does not match its content (a hand edit: `ftc run` runs exactly what was reviewed,
so a changed parameter must come from `ftc plan` again, which re-hashes and re-reviews it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ftc.compiler.diagnostics import Diagnostic, make
from ftc.compiler.plan import FORMAT_VERSION, NODE_KINDS, Plan, node_hash
from ftc.compiler.source import Source, Span

Where = tuple[str | int, ...]  # a JSON path: keys and list indices
_WS = " \t\n\r"
_HELP = "make the plan again with `ftc plan SPEC --out plan.json` (and review it); do not edit it by hand"


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _positions(text: str) -> dict[Where, int]:
    """The offset where each value of a well-formed JSON document starts, by its path."""
    out: dict[Where, int] = {}
    decoder = json.JSONDecoder()

    def value(i: int, where: Where) -> int:
        i = _skip(text, i)
        out[where] = i
        if text.startswith("{", i):
            i = _skip(text, i + 1)
            while not text.startswith("}", i):
                key, i = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
                i = value(_skip(text, i) + 1, (*where, key))  # past the ':'
                i = _skip(text, i)
                i = _skip(text, i + 1) if text.startswith(",", i) else i
            return i + 1
        if text.startswith("[", i):
            i, n = _skip(text, i + 1), 0
            while not text.startswith("]", i):
                i = _skip(text, value(i, (*where, n)))
                i, n = (_skip(text, i + 1) if text.startswith(",", i) else i), n + 1
            return i + 1
        return decoder.raw_decode(text, i)[1]

    value(0, ())
    return out


class _Check:
    def __init__(self, src: Source, doc: Any) -> None:
        self.src, self.doc = src, doc
        try:
            self.at = _positions(src.text)
        except RecursionError:  # deeper than this scanner goes: diagnostics point at the start
            self.at = {}
        self.diags: list[Diagnostic] = []

    def span(self, where: Where) -> Span:
        while where and where not in self.at:
            where = where[:-1]
        start = self.at.get(where, 0)
        return self.src.span(start, start + 1)

    def error(self, where: Where, message: str, help: str = _HELP) -> None:
        self.diags.append(make("FT007", message, self.span(where), help=help))

    def field(self, obj: Any, where: Where, key: str, kind: type | tuple[type, ...]) -> Any:
        shown = ".".join(str(w) for w in (*where, key))
        if not isinstance(obj, dict) or key not in obj:
            self.error(where, f"the plan has no `{shown}`")
            return None
        value = obj[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            self.error((*where, key), f"`{shown}` is not {_kind_name(kind)}")
            return None
        return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "a number"}
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))


def _node_problems(check: _Check, nodes: list[Any]) -> Iterator[tuple[Where, str]]:
    ids: dict[str, int] = {}
    for i, n in enumerate(nodes):
        where: Where = ("nodes", i)
        node_id = check.field(n, where, "id", str)
        if node_id is not None:
            if node_id in ids:
                yield (*where, "id"), f"two plan nodes have the id `{node_id}`"
            ids[node_id] = i
        fields = [check.field(n, where, k, t) for k, t in
                  (("kind", str), ("inputs", list), ("params", dict), ("hash", str), ("estimate", dict))]
        if node_id is None or any(f is None for f in fields):
            continue
        kind = n["kind"]
        if kind not in NODE_KINDS:
            yield (*where, "kind"), (f"plan node `{node_id}` has kind `{kind}`, which this ftc has no step for "
                                     f"(kinds: {', '.join(NODE_KINDS)})")
    for i, n in enumerate(nodes):
        if isinstance(n, dict) and isinstance(n.get("inputs"), list):
            for j, name in enumerate(n["inputs"]):
                if name not in ids:
                    yield ("nodes", i, "inputs", j), f"plan node `{n.get('id')}` reads `{name}`, which is no node"


def _hash_problems(nodes: list[dict[str, Any]]) -> Iterator[tuple[Where, str]]:
    """Nodes whose stored hash is not the hash of their content, in input order (a cycle is one)."""
    by_id = {n["id"]: (i, n) for i, n in enumerate(nodes)}
    done: dict[str, str] = {}
    pending = sorted(by_id)
    while pending:
        ready = [k for k in pending if all(x in done for x in by_id[k][1]["inputs"])]
        if not ready:
            i, n = by_id[pending[0]]
            yield ("nodes", i, "inputs"), f"the plan's nodes form a cycle through `{n['id']}`"
            return
        for k in ready:
            i, n = by_id[k]
            inputs = sorted(n["inputs"])
            if node_hash(n["kind"], n["params"], [done[x] for x in inputs]) != n["hash"]:
                yield ("nodes", i, "hash"), f"plan node `{k}` does not match its hash: it was edited after `ftc plan`"
            done[k] = n["hash"]
        pending = [k for k in pending if k not in done]


def _problems(check: _Check) -> None:
    doc = check.doc
    if not isinstance(doc, dict):
        check.error((), "a plan file holds one JSON object")
        return
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        check.error(("format_version",), f"plan format_version {version!r} is not {FORMAT_VERSION} "
                    "(the plan was written by another ftc)")
        return
    spec = check.field(doc, (), "spec", dict)
    if spec is not None:
        check.field(spec, ("spec",), "path", str)
    for key in ("data", "base"):
        check.field(doc, (), key, dict)
    nodes = check.field(doc, (), "nodes", list)
    if nodes is None:
        return
    node_errors = list(_node_problems(check, nodes))
    for where, message in node_errors:
        check.error(where, message)
    if not node_errors and not check.diags:
        for where, message in _hash_problems(nodes):
            check.error(where, message)


def load_plan(path: Path, shown: str) -> tuple[Plan | None, list[Diagnostic], Source | None]:
    """The plan in `path`, or the diagnostics that say where and why it cannot be run."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        at = Span(shown, 0, 0, 1, 1, 1, 1)
        reason = err.strerror if isinstance(err, OSError) and err.strerror else "not UTF-8 text"
        return None, [make("FT007", f"cannot read the plan {shown}: {reason}", at, help="check the path")], None
    src = Source(shown, text)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        at = src.span(err.pos, err.pos + 1)
        return None, [make("FT007", f"{shown} is not JSON: {err.msg}", at, help=_HELP)], src
    except RecursionError:
        return None, [make("FT007", f"{shown} nests too deeply to be a plan", src.span(0, 1), help=_HELP)], src
    check = _Check(src, doc)
    _problems(check)
    if check.diags:
        return None, check.diags, src
    return Plan.from_dict(doc), [], src
