"""Diagnostics: user mistakes are values, collected and returned; exceptions are bugs."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

from ftc.compiler.source import Span

MAX_MESSAGE_CHARS = 800  # a diagnostic's message and help line
MAX_DETAIL_CHARS = 4000  # its detail (excerpts of data rows)


def clip(text: str, cap: int) -> str:
    """`text` cut to at most `cap` characters, saying how much was left out."""
    if len(text) <= cap:
        return text
    note = f" ... ({len(text) - cap:,} more characters)"
    return text[: max(0, cap - len(note))] + note


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

    def __post_init__(self) -> None:
        # Whatever a rule quotes (a data row, a value from the spec), its text is capped: a
        # diagnostic never carries a file's worth of someone else's content into a CI log.
        for name, cap in (("message", MAX_MESSAGE_CHARS), ("help", MAX_MESSAGE_CHARS),
                          ("detail", MAX_DETAIL_CHARS)):
            text = getattr(self, name)
            if len(text) > cap:
                object.__setattr__(self, name, clip(text, cap))

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


# The codes of the language itself, with their names and severities: the front end emits them
# with `make`, and compiler/rules/frontend.py documents each one (its entries in the rule table).
FRONTEND_CODES: dict[str, tuple[str, Severity]] = {
    "FT001": ("syntax-error", Severity.ERROR),
    "FT002": ("unterminated-string", Severity.ERROR),
    "FT003": ("malformed-number", Severity.ERROR),
    "FT004": ("unexpected-character", Severity.ERROR),
    "FT005": ("unexpected-end-of-file", Severity.ERROR),
    "FT006": ("unreadable-file", Severity.ERROR),
    "FT007": ("invalid-plan", Severity.ERROR),
    "FT010": ("unknown-block", Severity.ERROR),
    "FT011": ("unknown-key", Severity.ERROR),
    "FT012": ("duplicate-key", Severity.ERROR),
    "FT013": ("invalid-value", Severity.ERROR),
    "FT014": ("unknown-choice", Severity.ERROR),
    "FT015": ("wrong-unit", Severity.ERROR),
    "FT016": ("unexpected-argument", Severity.ERROR),
    "FT017": ("extends-error", Severity.ERROR),
    "FT018": ("implicit-override", Severity.ERROR),
    "FT019": ("override-nothing", Severity.ERROR),
    "FT020": ("missing-setting", Severity.ERROR),
    "FT021": ("unused-suppression", Severity.WARNING),
    "FT022": ("invalid-suppression", Severity.ERROR),
    "FT023": ("file-too-large", Severity.ERROR),
    "FT024": ("nesting-too-deep", Severity.ERROR),
    "FT025": ("literal-too-large", Severity.ERROR),
    "FT026": ("list-too-long", Severity.ERROR),
    "FT027": ("not-a-regular-file", Severity.ERROR),
    "FT028": ("path-outside-root", Severity.ERROR),
    "FT029": ("path-unreadable", Severity.ERROR),
}


def make(
    code: str,
    message: str,
    span: Span | None,
    *,
    help: str = "",
    detail: str = "",
    related: tuple[Related, ...] = (),
) -> Diagnostic:
    """A diagnostic of the language (FT0xx: the parser, the resolver, suppressions, plan files),
    named as FRONTEND_CODES names it. Rules' diagnostics are made by the rule table (rules/base.py)."""
    name, severity = FRONTEND_CODES[code]
    return Diagnostic(code, name, severity, message, span, help, detail, related)


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
