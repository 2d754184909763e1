"""Source text -> AST, with friendly, located syntax errors.

The Lark LALR parser is built once per process (its tables cached on disk by lark). Syntax errors
are matched against a catalogue of labelled bad examples (compiler/syntax_errors.py), so that a
parser state maps to a message a person understands instead of a list of token names.

Matching. lark's `UnexpectedInput.match_examples(..., use_accepts=True)` compares parser states
including the depth of the parse stack, so an example written at the spec's top level would not
match the same mistake inside `model { ... }`. We keep its rule (same LR state, same accepted
tokens, the exact token preferred over the token type) but key it on the LR state alone, and parse
the examples once per process instead of once per error.

Recovery. After an error the parser goes on with the offending line neutralised: first the text
from the error to the end of the line is blanked (brackets kept, so the block structure stays);
if the same line fails again the whole line is blanked. Offsets never move, so every later error
is still located in the user's text. At most one error is reported per line (the rest of a line
is usually a cascade), and mistakes at the file's top level stop the recovery.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

from ftc.compiler import ast, larkimport, limits  # noqa: F401 (larkimport first: see its docstring)
from ftc.compiler.diagnostics import Diagnostic, Related, make
from ftc.compiler.lower import Lowerer
from ftc.compiler.source import Source, Span
from ftc.compiler.syntax_errors import (
    CATALOGUE,
    Entry,
    describe_expected,
    describe_token,
    unexpected_character,
)
from lark import (
    Lark,
    Token,
    Tree,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
)
from lark.parsers.lalr_analysis import Shift

MAX_SYNTAX_ERRORS = 10


@functools.lru_cache(maxsize=1)
def grammar_text() -> str:
    import ftc.grammar

    return (Path(ftc.grammar.__file__).parent / "ftspec.lark").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def lark_parser() -> Lark:
    return Lark(grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=False,
                cache=True)


# --- scans that skip strings and comments -------------------------------------------------------

def _code_chars(text: str) -> Iterator[tuple[int, str]]:
    """(offset, char) for every character outside strings and comments (strings end at a line end)."""
    in_string = escaped = comment = False
    for i, ch in enumerate(text):
        if comment:
            comment = ch != "\n"
        elif in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch in '"\n':
                in_string = False
        elif ch == "#":
            comment = True
        elif ch == '"':
            in_string = True
        else:
            yield i, ch


def _comments(source: Source) -> tuple[ast.Comment, ...]:
    """Comments found by a scan that skips strings (strings never span lines)."""
    out: list[ast.Comment] = []
    offset = 0
    for line in source.text.split("\n"):
        in_string = escaped = False
        for i, ch in enumerate(line):
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch == "#":
                out.append(ast.Comment(line[i:], source.span(offset + i, offset + len(line))))
                break
        offset += len(line) + 1
    return tuple(out)


def _unclosed_braces(source: Source) -> list[Span]:
    """Spans of `{` / `[` never closed, found by a bracket scan outside strings and comments.

    A closer pops up to its own kind of opener, so `[` left open inside a block is reported even
    though the block's `}` comes; a closer with no opener of its kind is ignored.
    """
    stack: list[int] = []
    unclosed: list[int] = []
    for i, ch in _code_chars(source.text):
        if ch in "{[":
            stack.append(i)
        elif ch in "}]":
            opener = "{" if ch == "}" else "["
            if any(source.text[j] == opener for j in stack):
                while source.text[stack[-1]] != opener:
                    unclosed.append(stack.pop())
                stack.pop()
    return [source.span(i, i + 1) for i in sorted(unclosed + stack)]


def _root_close(source: Source) -> Span | None:
    """The `}` that closes the file's first top-level block, if any."""
    depth = 0
    for i, ch in _code_chars(source.text):
        if ch == "{":
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                return source.span(i, i + 1)
    return None


def _only_comments(source: Source) -> bool:
    return not any(not ch.isspace() for _, ch in _code_chars(source.text))


# --- catalogue matching ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _example_index() -> dict[object, list[tuple[UnexpectedToken, str]]]:
    """LR state -> [(the error, label)] for every catalogue example (built at the first error)."""
    index: dict[object, list[tuple[UnexpectedToken, str]]] = {}
    for label, examples in CATALOGUE.examples().items():
        for text in examples:
            try:
                lark_parser().parse(text)
            except UnexpectedToken as err:
                index.setdefault(err.state.position, []).append((err, label))
            except UnexpectedInput:
                continue
    return index


def _accepts(err: UnexpectedToken) -> frozenset[str]:
    """The terminals the parser could take where it failed: lark's `accepts`, computed on the state
    stack alone (lark copies the whole parser state per terminal, which is slow to do per example)."""
    conf = err.state.parse_conf
    out: set[str] = set()
    for term in conf.states[err.state.position]:
        if not term.isupper():  # a rule's goto, not a terminal
            continue
        stack = list(err.state.state_stack)
        while (action := conf.states[stack[-1]].get(term)) is not None:
            kind, arg = action
            if kind is Shift:
                out.add(term)
                break
            if arg.expansion:
                del stack[-len(arg.expansion):]
            stack.append(conf.states[stack[-1]][arg.origin.name][1])
            if term == "$END" and stack[-1] == conf.end_state:
                out.add(term)
                break
    return frozenset(out)


def match_label(err: UnexpectedToken) -> str | None:
    """The catalogue label whose examples fail like `err`: the same LR state and accepted tokens;
    among those, the exact token first, then the token type, then an entry that takes any token."""
    accepts = _accepts(err)
    candidates = [(ex.token, label) for ex, label in _example_index().get(err.state.position, [])
                  if _accepts(ex) == accepts]
    for tok, label in candidates:
        if tok.type == err.token.type and str(tok) == str(err.token):
            return label
    for tok, label in candidates:
        if tok.type == err.token.type:
            return label
    for tok, label in candidates:
        entry = CATALOGUE.get(label)
        if entry is not None and entry.any_token:
            return label
    return None


# --- diagnostics ---------------------------------------------------------------------------------

def _token_diagnostic(src: Source, err: UnexpectedToken) -> tuple[Diagnostic, Entry | None]:
    token = err.token
    start = int(token.start_pos or 0)
    span = src.span(start, max(start + 1, token.end_pos or start + len(token)))
    if token.type == "_NL":  # the end of the line's code (before a comment), not the line break
        end = _end_of_code(src, start)
        span = src.span(end, end)
    label = match_label(err)
    entry = CATALOGUE.get(label) if label else None
    found = describe_token(token)
    if entry is None:
        expected = describe_expected(err.accepts or err.expected)
        return make("FT001", f"expected {expected}, found {found}", span,
                    help="check the statement's syntax; `ftc explain FT001` shows an example"), None
    related: tuple[Related, ...] = ()
    line = 0
    if entry.label in ("stray-close", "after-root"):
        close = _root_close(src)
        if close is not None and close.start < start:
            related = (Related(close, "the file's block closes here"),)
    if entry.label in ("missing-list-comma", "list-close"):
        opened = [s for s in _unclosed_braces(src) if src.text[s.start] == "[" and s.start < start]
        if opened and opened[-1].line < span.line and _starts_line(src, start):
            entry = CATALOGUE.get("unclosed-list") or entry
            related, line = (Related(opened[-1], "the list opens here"),), opened[-1].line
    key = src.text[_line_bounds(src.text, start)[0]:start].split()[-1:] or [""]  # before a `.`
    message = entry.message.format(found=found, key=key[0].rstrip("."), line=line)
    return make(entry.code, message, span, help=entry.help, related=related), entry


def _end_of_code(src: Source, offset: int) -> int:
    """The offset just after the last code character on the line of `offset` (a comment skipped)."""
    begin, end = _line_bounds(src.text, offset)
    comments = _comments(Source(src.path, src.text[begin:end]))
    cut = begin + comments[0].span.start if comments else end
    return begin + len(src.text[begin:cut].rstrip())


def _starts_line(src: Source, offset: int) -> bool:
    line, _ = src.position(offset)
    return src.line_text(line).strip().startswith(src.text[offset:offset + 1])


def _char_diagnostic(src: Source, err: UnexpectedCharacters) -> Diagnostic:
    pos = err.pos_in_stream or 0
    if pos < len(src.text) and src.text[pos] == '"':
        end = src.text.find("\n", pos)
        end = len(src.text) if end < 0 else end
        return make("FT002", "unterminated string", src.span(pos, end),
                    help='close the string with `"` on the same line (strings cannot span lines)')
    return unexpected_character(src, pos)


def _unexpected_end(src: Source) -> Diagnostic:
    unclosed = _unclosed_braces(src)
    if unclosed:
        last = unclosed[-1]
        opener = src.text[last.start]
        closer = "}" if opener == "{" else "]"
        more = f" (and {len(unclosed) - 1} more)" if len(unclosed) > 1 else ""
        return make("FT005", f"unexpected end of file: `{opener}` is never closed{more}",
                    src.end_span(), help=f"add `{closer}` to close it",
                    related=(Related(last, "opened here"),))
    if not src.text.strip():
        return make("FT005", "the file is empty", src.span(0, 0),
                    help='a spec file holds one experiment: `spec "name" { ... }`')
    if _only_comments(src):
        return make("FT005", "the file holds only comments", src.end_span(),
                    help='a spec file holds one experiment: `spec "name" { ... }`')
    return make("FT005", "unexpected end of file", src.end_span(),
                help='a spec file holds one `spec "name" { ... }` block; complete the last statement')


# --- recovery ------------------------------------------------------------------------------------

def _line_bounds(text: str, offset: int) -> tuple[int, int]:
    begin = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    return begin, len(text) if end < 0 else end


def _blank(text: str, start: int, whole_line: bool, in_string: bool = False) -> str:
    """Blank the line from `start` (or all of it), keeping brackets; offsets do not move.

    `in_string`: the rest of the line is an unterminated string; keep its brackets too, since a
    `}` after a missing `"` is far more often the block's end than part of the text."""
    begin, end = _line_bounds(text, start)
    if whole_line:
        start = begin
    if in_string:
        kept = {i for i in range(start, end) if text[i] in "{}[]"}
    else:
        kept = {i for i, ch in _code_chars(text[:end]) if i >= start and ch in "{}[]"}
    chars = [ch if i in kept else " " for i, ch in enumerate(text[start:end], start)]
    first = next((i for i, ch in enumerate(chars) if ch != " "), None)
    if whole_line and first is not None and chars[first] in "{[" and first > 0:
        chars[first - 1] = "_"  # a key for a bracket that now starts the statement
    return text[:start] + "".join(chars) + text[end:]


def _parse_text(source: Source, text: str) -> tuple[Tree[Token] | None, list[Diagnostic]]:
    """Parse `text` (the source, newline-terminated): its tree if it parsed, and its syntax errors."""
    diags: list[Diagnostic] = []
    lines: dict[int, int] = {}  # line -> times it failed
    work = text
    for _ in range(3 * MAX_SYNTAX_ERRORS):
        try:
            tree = lark_parser().parse(work)
            return (tree if work is text else None), diags
        except UnexpectedInput as err:
            at_end = isinstance(err, UnexpectedEOF) or (
                isinstance(err, UnexpectedToken) and err.token.type == "$END")
            if at_end:
                if not diags or _unclosed_braces(source) or _only_comments(source):
                    diags.append(_unexpected_end(source))
                return None, diags
            entry: Entry | None = None
            if isinstance(err, UnexpectedCharacters):
                diag = _char_diagnostic(source, err)
                offset = err.pos_in_stream or 0
            else:
                assert isinstance(err, UnexpectedToken)
                diag, entry = _token_diagnostic(source, err)
                offset = int(err.token.start_pos or 0)
            line = source.position(offset)[0]
            tries = lines.get(line, 0)
            if tries == 0:
                diags.append(diag)
            lines[line] = tries + 1
            if len(diags) >= MAX_SYNTAX_ERRORS or tries >= 2 or (entry is not None and not entry.recover):
                return None, diags
            work = _blank(work, offset, whole_line=tries == 1, in_string=diag.code == "FT002")
    return None, diags


def too_deep(source: Source, limit: int) -> Diagnostic | None:
    """FT024 at the first `{` or `[` that opens more than `limit` levels, found by a bracket scan
    before the file is parsed: the parser is iterative, but lowering, decoding and merging walk the
    tree recursively, so the depth is bounded before any of them runs."""
    depth = 0
    for i, ch in _code_chars(source.text):
        if ch in "{[":
            depth += 1
            if depth > limit:
                return make("FT024", f"blocks and lists nest deeper than {limit} levels here",
                            source.span(i, i + 1), help=f"flatten the spec; {limits.NESTING_DEPTH.help(limit)}")
        elif ch in "}]" and depth:
            depth -= 1
    return None


def parse(source: Source) -> tuple[ast.SpecFile | None, list[Diagnostic]]:
    """Parse one file. Returns the AST (None if there were syntax errors) and diagnostics."""
    bounds = limits.current()
    deep = too_deep(source, bounds.nesting_depth)
    if deep is not None:
        return None, [deep]
    text = source.text if source.text.endswith("\n") else source.text + "\n"
    tree, diags = _parse_text(source, text)
    if tree is None:
        return None, diags
    lowerer = Lowerer(source, diags.append, bounds)
    spec = lowerer.file(tree, _comments(source))
    return (spec if not diags else None), diags
