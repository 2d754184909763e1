"""GitHub Actions workflow commands, one annotation per diagnostic:

    ::error file=specs/x.ftspec,line=7,col=17,endLine=7,endColumn=21,title=FT011 unknown-key::msg

Errors use `::error`, warnings `::warning`, notes `::notice`. The text is the message, then `detail`
and `help: ...` on lines of their own. Escaping follows GitHub's toolkit: the text escapes `%`, CR
and LF; property values also escape `:` and `,`. Columns are 1-based, endColumn exclusive. Suppressed
diagnostics are left out; a clean run prints nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ftc.compiler.diagnostics import Diagnostic, Severity
from ftc.compiler.render import RuleInfo, visible
from ftc.compiler.source import Source

COMMAND = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.NOTE: "notice"}


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(d: Diagnostic) -> str:
    props: list[tuple[str, str]] = []
    if d.span is not None:
        s = d.span
        props += [
            ("file", s.path.replace("\\", "/")),
            ("line", str(s.line)),
            ("col", str(s.column)),
            ("endLine", str(s.end_line)),
            ("endColumn", str(s.end_column)),
        ]
    props.append(("title", f"{d.code} {d.name}"))
    text = "\n".join(
        [d.message] + ([d.detail] if d.detail else []) + ([f"help: {d.help}"] if d.help else [])
    )
    joined = ",".join(f"{k}={escape_property(v)}" for k, v in props)
    return f"::{COMMAND[d.severity]} {joined}::{escape_data(text)}"


def render(
    diags: Sequence[Diagnostic],
    sources: Mapping[str, Source],
    *,
    color: bool = False,
    files_checked: int = 0,
    rules: Sequence[RuleInfo] | None = None,
) -> str:
    return "".join(annotation(d) + "\n" for d in visible(diags))
