"""One line per diagnostic, for editors and grep: `path:line:col: CODE [severity] message`.

A diagnostic without a span is printed as `CODE [severity] message`. Suppressed diagnostics are left
out and there is no summary line, so a clean run prints nothing (the exit code tells the outcome).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ftc.compiler.diagnostics import Diagnostic
from ftc.compiler.render import RuleInfo, visible
from ftc.compiler.source import Source


def line(d: Diagnostic) -> str:
    body = f"{d.code} [{d.severity.value}] {d.message}"
    if d.span is None:
        return body
    return f"{d.span.path}:{d.span.line}:{d.span.column}: {body}"


def render(
    diags: Sequence[Diagnostic],
    sources: Mapping[str, Source],
    *,
    color: bool = False,
    files_checked: int = 0,
    rules: Sequence[RuleInfo] | None = None,
) -> str:
    return "".join(line(d) + "\n" for d in visible(diags))
