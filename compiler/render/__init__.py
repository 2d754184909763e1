"""Diagnostic renderers: one small stdlib-only module per output format.

`render(diags, sources, fmt)` sorts the diagnostics (path, offset, code, message; exact duplicates
dropped) and hands them to `ftc.compiler.render.<fmt>`, imported only when that format is asked for.

Formats (every non-empty output ends with a newline; `concise` and `github` print nothing when there
is nothing to report):

- ``text``: compiler-style blocks (header, ``-->`` location, source line with carets, ``= note:``,
  ``= help:``, related ``note:`` blocks), then one summary line. ANSI colour only when ``color``.
- ``concise``: ``path:line:col: CODE [severity] message``, one line per diagnostic, no summary.
- ``json``: one versioned object (``format_version`` 1) with every diagnostic, suppressed ones too.
- ``sarif``: SARIF 2.1.0, one run; suppressed diagnostics carry ``suppressions``.
- ``github``: GitHub Actions workflow commands (``::error file=...::message``).

Suppressed diagnostics (``suppressed_reason`` set) are left out of text, concise and github, and
kept (marked) in json and sarif. Summary counts never include suppressed diagnostics.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Protocol

from ftc.compiler.diagnostics import Diagnostic, Severity, sort_diagnostics
from ftc.compiler.source import Source

__all__ = ["FORMATS", "RuleInfo", "counts", "render", "visible"]

FORMATS: tuple[str, ...] = ("text", "concise", "json", "sarif", "github")


class RuleInfo(Protocol):
    """What SARIF needs of a rule: the rule table's `Rule` satisfies it."""

    @property
    def code(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def summary(self) -> str: ...

    @property
    def severity(self) -> Severity: ...


def render(
    diags: Sequence[Diagnostic],
    sources: Mapping[str, Source],
    fmt: str,
    *,
    color: bool = False,
    files_checked: int = 0,
    rules: Sequence[RuleInfo] | None = None,
) -> str:
    """Render `diags` in format `fmt` (one of FORMATS); `sources` maps span paths to their text."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
    module = importlib.import_module(f"{__name__}.{fmt}")
    ordered = sort_diagnostics(list(diags))
    out: str = module.render(
        ordered, sources, color=color, files_checked=files_checked, rules=rules
    )
    return out


def visible(diags: Sequence[Diagnostic]) -> list[Diagnostic]:
    """The diagnostics a human sees: those not suppressed."""
    return [d for d in diags if d.suppressed_reason is None]


def counts(diags: Sequence[Diagnostic]) -> dict[str, int]:
    """Unsuppressed errors, warnings and notes, and how many were suppressed."""
    shown = visible(diags)
    return {
        "errors": sum(d.severity is Severity.ERROR for d in shown),
        "warnings": sum(d.severity is Severity.WARNING for d in shown),
        "notes": sum(d.severity is Severity.NOTE for d in shown),
        "suppressed": len(diags) - len(shown),
    }
