"""One versioned JSON object with every diagnostic, suppressed ones included.

    {"format_version": 1,
     "diagnostics": [{"code", "name", "severity", "message", "help", "detail",
                      "path", "line", "column", "end_line", "end_column",
                      "related": [{"path", "line", "column", "end_line", "end_column", "message"}],
                      "suppressed", "suppression_reason"}],
     "summary": {"errors", "warnings", "notes", "suppressed", "files"}}

Lines and columns are 1-based, the end exclusive; a diagnostic without a span has null location
fields. The summary counts unsuppressed diagnostics only. Keys are sorted and the text indented by 2,
so the same input always gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ftc.compiler.diagnostics import Diagnostic
from ftc.compiler.render import RuleInfo, counts
from ftc.compiler.source import Source, Span

FORMAT_VERSION = 1


def _location(span: Span | None) -> dict[str, Any]:
    if span is None:
        return dict.fromkeys(("path", "line", "column", "end_line", "end_column"))
    return {
        "path": span.path,
        "line": span.line,
        "column": span.column,
        "end_line": span.end_line,
        "end_column": span.end_column,
    }


def diagnostic(d: Diagnostic) -> dict[str, Any]:
    return {
        "code": d.code,
        "name": d.name,
        "severity": d.severity.value,
        "message": d.message,
        "help": d.help,
        "detail": d.detail,
        **_location(d.span),
        "related": [{**_location(r.span), "message": r.message} for r in d.related],
        "suppressed": d.suppressed_reason is not None,
        "suppression_reason": d.suppressed_reason,
    }


def render(
    diags: Sequence[Diagnostic],
    sources: Mapping[str, Source],
    *,
    color: bool = False,
    files_checked: int = 0,
    rules: Sequence[RuleInfo] | None = None,
) -> str:
    doc = {
        "format_version": FORMAT_VERSION,
        "diagnostics": [diagnostic(d) for d in diags],
        "summary": {**counts(diags), "files": files_checked},
    }
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
