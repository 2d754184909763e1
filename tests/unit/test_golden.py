"""Golden tests: every case file under tests/golden/ checks to exactly its inline expectations, and
its text rendering equals the `.expected` file beside it (`pytest --update-goldens` rewrites them).

A case is `tests/golden/<group>/<name>.ftspec`. Expectations:
  `# expect: FT011, FT016`   these codes start on this line (unsuppressed diagnostics)
  `# expect-next-line: FT022`  ... on the next line (a line whose comment is a suppression: the
                             suppression's reason runs to the end of the line)
  `# expect-clean`           nothing is reported (a suppressed finding, for instance)
  `# expect-file: FT005`     this code somewhere in this file (for a line that cannot hold a comment,
                             such as inside an unterminated string)
  `# expect-data: data_x/train.jsonl:17 FT201`  this code starts on line 17 of a data file the case
                             reads (which cannot hold a comment); the path is relative to the folder
                             of the file holding the marker, as paths in a spec are
  `<name>.expect` sidecar    lines `LINE: CODES` or `file: CODES`, for a file that can hold nothing
                             (the empty file)
  `# golden: target=cpu`     check options for the case (target=NAME)
`# expect-file:` also serves end-of-file errors, so that the marker does not become the file's last
character. Markers count in every file the case loads (a file it extends, too). Folders and files
whose name starts with `_` are helpers (parents for `extends`), not cases.

Groups: rules/ (one case or more per spec rule), files/ (reads the data its specs name; every other
group runs with `no_data=True`), target/ (hardware profiles, `# golden: target=NAME`), frontend/
(the resolver, extends, suppressions), syntax/ (the negative syntax corpus, each file labelled in
its first line; tests/golden/.gitattributes keeps their bytes, CRLF and BOM included).

Structural invariants are checked for every case: every span (diagnostics, related spans, AST
nodes, the checked spec's nodes) lies inside its file, and the output order is stable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import posixpath
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ftc.compiler.check import CheckOptions, FileResult, check_file
from ftc.compiler.diagnostics import Diagnostic, sort_diagnostics
from ftc.compiler.parser import parse
from ftc.compiler.render import render
from ftc.compiler.rules import RULES
from ftc.compiler.source import Source, Span

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
MARKER = re.compile(r"#\s*expect(?P<where>-file|-next-line)?:\s*(?P<codes>FT\d+(?:\s*,\s*FT\d+)*)")
DATA_MARKER = re.compile(r"#\s*expect-data:\s*(?P<path>\S+):(?P<line>\d+)\s+(?P<codes>FT\d+(?:\s*,\s*FT\d+)*)")
CLEAN = "# expect-clean"
OPTION = re.compile(r"#\s*golden:\s*(?P<opts>.*)$")
SYNTAX_CODES = {"FT001", "FT002", "FT003", "FT004", "FT005"}

Expect = tuple[str, int | None, str]  # (path, line or None for anywhere in the file, code)


def _cases() -> list[Path]:
    return sorted(p.relative_to(GOLDEN) for p in GOLDEN.rglob("*.ftspec")
                  if not any(part.startswith("_") for part in p.relative_to(GOLDEN).parts))


CASES = _cases()


def _options(case: Path, text: str) -> CheckOptions:
    opts: dict[str, Any] = {"no_data": case.parts[0] != "files"}
    for line in text.splitlines():
        m = OPTION.search(line)
        if m:
            for item in m.group("opts").split():
                key, _, value = item.partition("=")
                opts[key] = value
    return CheckOptions(**opts)


@functools.cache
def checked(case: Path) -> FileResult:
    """The case checked from tests/golden/, so that paths read `rules/ft110_....ftspec`."""
    raw = (GOLDEN / case).read_bytes().decode("utf-8", errors="replace")
    with contextlib.chdir(GOLDEN), _no_data_cache():
        return check_file(case, _options(case, raw))


@contextlib.contextmanager
def _no_data_cache() -> Iterator[None]:
    """No `.ftc/cache` under tests/golden/: each case reads its data afresh."""
    old = os.environ.get("FTC_NO_CACHE")
    os.environ["FTC_NO_CACHE"] = "1"
    try:
        yield
    finally:
        if old is None:
            del os.environ["FTC_NO_CACHE"]
        else:
            os.environ["FTC_NO_CACHE"] = old


def _markers(path: str, text: str) -> set[Expect]:
    out: set[Expect] = set()
    for number, line in enumerate(text.splitlines(), 1):
        for m in MARKER.finditer(line):
            where = {"-file": None, "-next-line": number + 1}.get(m.group("where") or "", number)
            for code in m.group("codes").split(","):
                out.add((path, where, code.strip()))
        for m in DATA_MARKER.finditer(line):
            data = posixpath.normpath(posixpath.join(posixpath.dirname(path), m.group("path")))
            out |= {(data, int(m.group("line")), code.strip()) for code in m.group("codes").split(",")}
    return out


def _sidecar(case: Path) -> set[Expect]:
    side = (GOLDEN / case).with_suffix(".expect")
    out: set[Expect] = set()
    if side.exists():
        for row in side.read_text(encoding="utf-8").splitlines():
            where, _, codes = row.partition(":")
            if codes.strip():
                line = None if where.strip() == "file" else int(where)
                out |= {(case.as_posix(), line, c.strip()) for c in codes.split(",")}
    return out


def expectations(case: Path, result: FileResult) -> set[Expect]:
    raw = (GOLDEN / case).read_bytes().decode("utf-8", errors="replace")
    found = _markers(case.as_posix(), raw) | _sidecar(case)
    for path, source in result.sources.items():
        if path != case.as_posix():
            found |= _markers(path, source.text)
    return found


def actual(result: FileResult, expected: set[Expect]) -> set[Expect]:
    anywhere = {(p, c) for p, line, c in expected if line is None}
    out: set[Expect] = set()
    for d in result.diagnostics:
        if d.suppressed_reason is not None or d.span is None:
            continue
        key = (d.span.path, d.span.line, d.code)
        if (d.span.path, d.code) in anywhere and key not in expected:
            key = (d.span.path, None, d.code)
        out.add(key)
    return out


def rendering(result: FileResult) -> str:
    return render(list(result.diagnostics), result.sources, "text", files_checked=1)


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.as_posix())
def test_expectations(case: Path) -> None:
    result = checked(case)
    expected = expectations(case, result)
    got = actual(result, expected)
    clean = CLEAN in (GOLDEN / case).read_text(encoding="utf-8", errors="replace")
    assert bool(expected) != clean, f"{case}: a case needs `# expect:` markers (or a sidecar), or `{CLEAN}`"
    missing, extra = sorted(expected - got, key=str), sorted(got - expected, key=str)
    assert not missing and not extra, (
        f"{case}: missing {missing}, unexpected {extra}\n\n{rendering(result)}")


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.as_posix())
def test_rendering(case: Path, update_goldens: bool) -> None:
    text = rendering(checked(case))
    golden = (GOLDEN / case).with_suffix(".expected")
    if update_goldens:
        golden.write_text(text, encoding="utf-8")
        return
    assert golden.exists(), f"{golden} is missing; run `pytest --update-goldens` and review it"
    assert text == golden.read_text(encoding="utf-8"), f"{case}: rendering differs from {golden.name}"


# --- structural invariants ------------------------------------------------------------------------

def assert_inside(span: Span, sources: dict[str, Source] | Any, what: str) -> None:
    assert span.line >= 1 and span.column >= 1, f"{what}: {span}"
    assert (span.end_line, span.end_column) >= (span.line, span.column), f"{what}: ends before it starts: {span}"
    assert span.end >= span.start >= 0, f"{what}: {span}"
    source = sources.get(span.path)
    if source is None:  # a data file, or a file that could not be read: no text to check against
        return
    assert span.end <= len(source.text), f"{what}: past the end of {span.path}: {span}"
    assert span.line <= source.line_count and span.end_line <= source.line_count, f"{what}: {span}"
    assert span.column <= len(source.line_text(span.line)) + 1, f"{what}: column past the line: {span}"
    assert span.end_column <= len(source.line_text(span.end_line)) + 1, f"{what}: {span}"
    assert source.span(span.start, span.end) == span, f"{what}: offsets and line/column disagree: {span}"


def _spans(obj: Any, seen: set[int] | None = None) -> Iterator[Span]:
    """Every Span reachable from an AST or checked-spec node."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, Span):
        yield obj
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _spans(getattr(obj, f.name), seen)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _spans(v, seen)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            yield from _spans(v, seen)


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.as_posix())
def test_spans_inside_files(case: Path) -> None:
    result = checked(case)
    sources = dict(result.sources)
    for d in result.diagnostics:
        if d.span is not None:
            assert_inside(d.span, sources, f"{d.code} {d.message}")
        for rel in d.related:
            assert_inside(rel.span, sources, f"{d.code} related `{rel.message}`")
    for source in sources.values():
        tree, _ = parse(source)
        for span in _spans(tree):
            assert_inside(span, sources, "AST node")
    if result.checked is not None:
        for span in _spans(result.checked.spec):
            assert_inside(span, sources, "checked spec node")


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.as_posix())
def test_order_is_stable(case: Path) -> None:
    result = checked(case)
    diags = list(result.diagnostics)
    assert diags == sort_diagnostics(diags)
    keys = [d.sort_key() for d in diags]
    assert keys == sorted(keys)
    again = checked.__wrapped__(case)
    assert [_key(d) for d in again.diagnostics] == [_key(d) for d in diags]
    assert rendering(again) == rendering(result)


def _key(d: Diagnostic) -> tuple[Any, ...]:
    return (d.code, d.span, d.message, d.help, d.related, d.suppressed_reason)


# --- what the corpus must cover --------------------------------------------------------------------

def _expected_codes(group: str) -> set[str]:
    codes: set[str] = set()
    for case in CASES:
        if case.parts[0] == group:
            codes |= {c for _, _, c in expectations(case, checked(case))}
    return codes


def test_every_spec_rule_has_a_case() -> None:
    spec_codes = {r.code for r in RULES if r.stage == "spec" and r.status == "active"}
    assert spec_codes - _expected_codes("rules") == set()


def test_files_group_covers_file_not_found() -> None:
    assert "FT180" in _expected_codes("files")


def test_files_group_covers_every_data_rule() -> None:
    data_codes = {r.code for r in RULES if r.stage == "data"}
    assert data_codes - _expected_codes("files") == set()


def test_every_target_rule_has_a_case() -> None:
    target_codes = {r.code for r in RULES if r.stage == "target" and r.status == "active"}
    assert target_codes - _expected_codes("target") == set()


def test_frontend_group_covers_the_resolver() -> None:
    wanted = {"FT010", "FT011", "FT012", "FT013", "FT014", "FT015", "FT016", "FT017", "FT018", "FT019",
              "FT020", "FT021", "FT022"}
    assert wanted - _expected_codes("frontend") == set()


SYNTAX = [c for c in CASES if c.parts[0] == "syntax"]


def test_syntax_corpus_is_large_enough() -> None:
    assert len(SYNTAX) >= 25


@pytest.mark.parametrize("case", SYNTAX, ids=lambda p: p.as_posix())
def test_syntax_messages_are_friendly(case: Path) -> None:
    result = checked(case)
    shown = [d for d in result.diagnostics if d.suppressed_reason is None]
    assert shown and {d.code for d in shown} <= SYNTAX_CODES | {"FT006"}, rendering(result)
    for d in shown:
        words = f"{d.message} {d.help}"
        assert not re.search(r"\b(RBRACE|LBRACE|LSQB|RSQB|_NL|NUMLIT|STRING|NAME|CMP|\$END)\b", words), words
        assert "check the statement's syntax" not in d.help, f"{case}: uncatalogued error: {d.message}"
        assert d.help, f"{case}: {d.code} has no help"


@pytest.mark.parametrize("case", SYNTAX, ids=lambda p: p.as_posix())
def test_end_of_file_errors_point_at_the_end(case: Path) -> None:
    result = checked(case)
    for d in result.diagnostics:
        if d.code != "FT005" or not d.related:
            continue
        assert d.span is not None
        source = result.sources[d.span.path]
        assert d.span == source.end_span(), "an EOF error points at the last non-blank character"
        opener = d.related[0].span
        assert source.text[opener.start:opener.end] in ("{", "["), d.related
        assert "never closed" in d.message


def test_no_orphan_expected_files() -> None:
    cases = {GOLDEN / c for c in CASES}
    orphans = [p for p in GOLDEN.rglob("*.expected") if p.with_suffix(".ftspec") not in cases]
    orphans += [p for p in GOLDEN.rglob("*.expect") if p.with_suffix(".ftspec") not in cases]
    assert orphans == []
