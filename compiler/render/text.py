"""Compiler-style text output, like rustc and ruff.

    error[FT011]: unknown key `rnak` in `method lora`
      --> specs/x.ftspec:7:17
       |
     7 |   method lora { rnak 8 }
       |                 ^^^^
       = help: did you mean `rank`?

The gutter is one column wider than the largest line number shown in the block. A span over several
lines is underlined to the end of its first line; an empty span gets one caret. Tabs are shown as
four spaces and wide (East Asian) characters count two columns, so carets stay under their text.
`detail` lines become `= note:` and `help` becomes `= help:`; each related span follows as its own
`note:` block with a `-->` location and its source line underlined with `-` (only the location when
its file is not in `sources`). Suppressed diagnostics are not shown. The output ends with one summary
line: `2 errors, 1 warning in 3 files`, or `All checks passed: 3 files`, with ` (N suppressed)` added
when any were suppressed.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence

from ftc.compiler.diagnostics import Diagnostic, Severity
from ftc.compiler.render import RuleInfo, counts, visible
from ftc.compiler.source import Source, Span

TAB = "    "
GUTTER = "1;34"  # bold blue
BOLD = "1"
STYLE = {Severity.ERROR: "1;31", Severity.WARNING: "1;33", Severity.NOTE: "1;36"}


class _Paint:
    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, style: str) -> str:
        return f"\x1b[{style}m{text}\x1b[0m" if self.color and text else text


def _width(text: str) -> int:
    """Display columns of `text` (tabs already expanded)."""
    total = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        total += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return total


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _snippet(
    span: Span, source: Source, gw: int, paint: _Paint, mark: str, style: str
) -> list[str]:
    raw = source.line_text(span.line)
    start = max(span.column - 1, 0)
    stop = span.end_column - 1 if span.end_line == span.line else len(raw)
    pad = _width(raw[:start].replace("\t", TAB))
    n = max(1, _width(raw[start : max(stop, start)].replace("\t", TAB)))
    bar = " " * (gw + 1) + paint("|", GUTTER)
    row = f"{paint(str(span.line).rjust(gw), GUTTER)} {paint('|', GUTTER)}"
    shown = raw.replace("\t", TAB)
    return [bar, f"{row} {shown}" if shown else row, f"{bar} {' ' * pad}{paint(mark * n, style)}"]


def _location(span: Span, gw: int, paint: _Paint) -> str:
    return f"{' ' * gw}{paint('-->', GUTTER)} {span.path}:{span.line}:{span.column}"


def _footer(label: str, text: str, gw: int, paint: _Paint) -> list[str]:
    lines = text.splitlines() or [""]
    head = f"{' ' * (gw + 1)}{paint('=', GUTTER)} {paint(label + ':', BOLD)} "
    indent = " " * (gw + 1 + 2 + len(label) + 2)
    return [(head + lines[0]).rstrip()] + [indent + line if line else "" for line in lines[1:]]


def _block(d: Diagnostic, sources: Mapping[str, Source], paint: _Paint) -> list[str]:
    style = STYLE[d.severity]
    spans = ([d.span] if d.span else []) + [r.span for r in d.related]
    gw = len(str(max(s.line for s in spans))) + 1 if spans else 1
    out = [paint(f"{d.severity.value}[{d.code}]", style) + paint(f": {d.message}", BOLD)]
    if d.span is not None:
        out.append(_location(d.span, gw, paint))
        source = sources.get(d.span.path)
        if source is not None:
            out.extend(_snippet(d.span, source, gw, paint, "^", style))
    if d.detail:
        out.extend(_footer("note", d.detail, gw, paint))
    if d.help:
        out.extend(_footer("help", d.help, gw, paint))
    for rel in d.related:
        out.append(paint("note", STYLE[Severity.NOTE]) + paint(f": {rel.message}", BOLD))
        out.append(_location(rel.span, gw, paint))
        source = sources.get(rel.span.path)
        if source is not None:
            out.extend(_snippet(rel.span, source, gw, paint, "-", GUTTER))
    return out


def summary(diags: Sequence[Diagnostic], files_checked: int, paint: _Paint) -> str:
    c = counts(diags)
    tail = f" ({c['suppressed']} suppressed)" if c["suppressed"] else ""
    files = _plural(files_checked, "file")
    parts = [_plural(c[k + "s"], k) for k in ("error", "warning", "note") if c[k + "s"]]
    if not parts:
        return paint("All checks passed", "1;32") + f": {files}{tail}"
    style = (
        STYLE[Severity.ERROR] if c["errors"] else STYLE[Severity.WARNING] if c["warnings"] else BOLD
    )
    return paint(", ".join(parts), style) + f" in {files}{tail}"


def render(
    diags: Sequence[Diagnostic],
    sources: Mapping[str, Source],
    *,
    color: bool = False,
    files_checked: int = 0,
    rules: Sequence[RuleInfo] | None = None,
) -> str:
    paint = _Paint(color)
    lines: list[str] = []
    for d in visible(diags):
        lines.extend(_block(d, sources, paint))
        lines.append("")
    lines.append(summary(diags, files_checked, paint))
    return "\n".join(lines) + "\n"
