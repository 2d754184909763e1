"""Source text -> AST, with friendly, located syntax errors.

The Lark LALR parser is built once per process (its tables cached on disk by lark). Syntax errors
are matched against a catalogue of labelled bad examples (lark's `match_examples`), so that a
parser state maps to a message a person understands. Parsing goes on after an error where the
parser can recover, so one run reports several syntax errors.
"""

from __future__ import annotations

import functools
from importlib import resources

from ftc.compiler import ast
from ftc.compiler.diagnostics import Diagnostic, Related, make
from ftc.compiler.lower import Lowerer
from ftc.compiler.source import Source, Span
from ftc.compiler.syntax_errors import CATALOGUE, describe_token
from lark import Lark, Token, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.exceptions import LarkError

MAX_SYNTAX_ERRORS = 10
_SKIPPABLE = {"NAME", "STRING", "NUMLIT", "CMP", "COMMA", "SEMICOLON", "EXTENDS", "SPEC", "DEFAULTS", "OVERRIDE"}


@functools.lru_cache(maxsize=1)
def grammar_text() -> str:
    return resources.files("ftc.grammar").joinpath("ftspec.lark").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def lark_parser() -> Lark:
    return Lark(grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=False,
                cache=True)


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
    """Spans of `{` / `[` never closed, found by a bracket scan outside strings and comments."""
    stack: list[int] = []
    in_string = escaped = False
    comment = False
    for i, ch in enumerate(source.text):
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
        elif ch in "{[":
            stack.append(i)
        elif ch in "}]" and stack:
            stack.pop()
    return [source.span(i, i + 1) for i in stack]


class _Collector:
    def __init__(self, source: Source) -> None:
        self.source = source
        self.diags: list[Diagnostic] = []
        self.lines: set[int] = set()

    def add(self, diag: Diagnostic) -> None:
        line = diag.span.line if diag.span else 0
        if line in self.lines:  # one syntax error per line: the rest is usually a cascade
            return
        self.lines.add(line)
        self.diags.append(diag)

    def handle(self, err: UnexpectedInput) -> bool:
        self.add(self.to_diagnostic(err))
        if len(self.diags) >= MAX_SYNTAX_ERRORS or isinstance(err, UnexpectedEOF):
            return False
        # Skip a stray atom and go on; a misplaced bracket or line break would only cascade.
        return isinstance(err, UnexpectedToken) and err.token.type in _SKIPPABLE

    def to_diagnostic(self, err: UnexpectedInput) -> Diagnostic:
        src = self.source
        if isinstance(err, UnexpectedCharacters):
            return _bad_character(src, err)
        token = getattr(err, "token", None)
        at_end = isinstance(err, UnexpectedEOF) or (token is not None and token.type == "$END")
        if at_end:
            return _unexpected_end(src)
        assert isinstance(token, Token)
        span = src.span(token.start_pos or 0, token.end_pos or (token.start_pos or 0) + len(token))
        label = None
        try:
            label = err.match_examples(lark_parser().parse, CATALOGUE.examples(), use_accepts=True)
        except LarkError:  # an example that does not fail as labelled must not hide the error
            label = None
        entry = CATALOGUE.get(label) if label else None
        found = describe_token(token)
        if entry is None:
            expected = sorted(getattr(err, "expected", set()) or set())
            names = ", ".join(dict.fromkeys(describe_token(Token(e, "")) for e in expected))
            return make("FT001", f"unexpected {found}", span,
                        help=f"expected {names}" if names else "check the statement's syntax")
        return make(entry.code, entry.message.format(found=found), span, help=entry.help)


def _bad_character(src: Source, err: UnexpectedCharacters) -> Diagnostic:
    pos = err.pos_in_stream
    ch = src.text[pos] if pos < len(src.text) else ""
    span = src.span(pos, pos + 1)
    if ch == '"':
        end = src.text.find("\n", pos)
        end = len(src.text) if end < 0 else end
        return make("FT002", "unterminated string", src.span(pos, end),
                    help='close the string with `"` on the same line (strings cannot span lines)')
    hints = {
        "=": "write `key value` without `=`, e.g. `rank 8`",
        ":": "write `key value` without `:`, e.g. `rank 8`",
        "'": 'strings use double quotes: "text"',
        "(": "use `[a, b]` for lists and `{ ... }` for blocks",
        ")": "use `[a, b]` for lists and `{ ... }` for blocks",
        "-": "names use `_`, not `-` (e.g. `learning_rate`); a negative number is written `-1`",
        "!": "the comparisons are >=, <=, ==, !=, >, <",
    }
    shown = repr(ch)[1:-1] if ch.isprintable() else f"U+{ord(ch):04X}" if ch else "end of file"
    return make("FT004", f"unexpected character `{shown}`", span,
                help=hints.get(ch, "remove the character, or quote the text as a string"))


def _unexpected_end(src: Source) -> Diagnostic:
    unclosed = _unclosed_braces(src)
    if unclosed:
        last = unclosed[-1]
        closer = "}" if src.text[last.start] == "{" else "]"
        return make("FT005", f"unexpected end of file: `{src.text[last.start]}` is never closed",
                    src.end_span(), help=f"add `{closer}` to close it",
                    related=(Related(last, "opened here"),))
    if not src.text.strip():
        return make("FT005", "the file is empty", src.span(0, 0),
                    help='a spec file holds one experiment: `spec "name" { ... }`')
    return make("FT005", "unexpected end of file", src.end_span(),
                help='a spec file holds one `spec "name" { ... }` block; complete the last statement')


def parse(source: Source) -> tuple[ast.SpecFile | None, list[Diagnostic]]:
    """Parse one file. Returns the AST (None if there were syntax errors) and diagnostics."""
    collector = _Collector(source)
    text = source.text if source.text.endswith("\n") else source.text + "\n"
    try:
        tree = lark_parser().parse(text, on_error=collector.handle)
    except UnexpectedInput as err:
        if not collector.diags or not isinstance(err, UnexpectedToken) or err.token.type != "$END":
            collector.add(collector.to_diagnostic(err))
        elif _unclosed_braces(source) or not source.text.strip():
            collector.diags.append(_unexpected_end(source))
        return None, collector.diags
    if collector.diags:
        return None, collector.diags
    lowerer = Lowerer(source, collector.diags.append)
    spec = lowerer.file(tree, _comments(source))
    return (spec if not collector.diags else None), collector.diags


def strip_bom(text: str) -> str:
    return text.removeprefix("\ufeff")

