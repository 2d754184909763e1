"""Diagnostics: user mistakes are values, collected and returned; exceptions are bugs."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

from ftc.compiler.source import Span


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"

    @property
    def rank(self) -> int:
        return {"error": 0, "warning": 1, "note": 2}[self.value]


@dataclass(frozen=True)
class Related:
    span: Span
    message: str


@dataclass(frozen=True)
class Diagnostic:
    code: str
    name: str
    severity: Severity
    message: str
    span: Span | None
    help: str = ""
    detail: str = ""
    related: tuple[Related, ...] = ()
    suppressed_reason: str | None = field(default=None, compare=False)

    def sort_key(self) -> tuple[str, int, int, str, str]:
        if self.span is None:
            return ("", -1, -1, self.code, self.message)
        return (self.span.path, self.span.line, self.span.column, self.code, self.message)

    def with_severity(self, severity: Severity) -> Diagnostic:
        return replace(self, severity=severity)


def sort_diagnostics(diags: list[Diagnostic] | tuple[Diagnostic, ...]) -> list[Diagnostic]:
    """Deterministic order: by path, offset, code, message; exact duplicates dropped."""
    seen: set[tuple[object, ...]] = set()
    out: list[Diagnostic] = []
    for d in sorted(diags, key=Diagnostic.sort_key):
        key = (d.code, d.span, d.message)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def has_errors(diags: list[Diagnostic] | tuple[Diagnostic, ...]) -> bool:
    return any(d.severity is Severity.ERROR for d in diags)


def make(
    code: str,
    message: str,
    span: Span | None,
    *,
    help: str = "",
    detail: str = "",
    related: tuple[Related, ...] = (),
) -> Diagnostic:
    """A diagnostic whose name and severity come from the one rule table."""
    from ftc.compiler.rules import rule_for  # the table imports the schema; import lazily

    rule = rule_for(code)
    return Diagnostic(code, rule.name, rule.severity, message, span, help, detail, related)


def to_dict(d: Diagnostic) -> dict[str, Any]:
    """A JSON-able form (for caches); from_dict restores it exactly."""
    def span(s: Span | None) -> list[object] | None:
        return None if s is None else [s.path, s.start, s.end, s.line, s.column, s.end_line, s.end_column]

    return {"code": d.code, "name": d.name, "severity": d.severity.value, "message": d.message,
            "span": span(d.span), "help": d.help, "detail": d.detail,
            "related": [[span(r.span), r.message] for r in d.related]}


def from_dict(data: dict[str, Any]) -> Diagnostic:
    def span(v: Any) -> Span | None:
        return None if v is None else Span(str(v[0]), *(int(x) for x in v[1:]))

    related = tuple(Related(s, str(m)) for v, m in data["related"] if (s := span(v)) is not None)
    return Diagnostic(str(data["code"]), str(data["name"]), Severity(data["severity"]), str(data["message"]),
                      span(data["span"]), str(data["help"]), str(data["detail"]), related)
