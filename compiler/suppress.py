"""In-source suppressions: `# ftc: ignore[CODE] reason` on a line, `ignore-file[...]` for a file.

A warning may be suppressed with a reason. An error may be waived only if its rule guards
evaluation (no test split, too little data, leakage) and a reason is written; that reason is kept
as a Waiver for the plan and the registry. An unused suppression is reported (FT021).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ftc.compiler import ast
from ftc.compiler.diagnostics import Diagnostic, make
from ftc.compiler.source import Span

_PATTERN = re.compile(r"#\s*ftc:\s*(?P<kind>ignore-file|ignore)\s*\[(?P<codes>[^\]]*)\]\s*(?P<reason>.*)$")


@dataclass(frozen=True)
class Waiver:
    code: str
    reason: str
    span: Span  # where the suppression comment is


@dataclass
class _Suppression:
    code: str
    reason: str
    file_wide: bool
    span: Span
    used: bool = False


def _parse(comments: list[ast.Comment], out: list[Diagnostic]) -> list[_Suppression]:
    from ftc.compiler.rules import rule_for_or_none

    found: list[_Suppression] = []
    for comment in comments:
        m = _PATTERN.search(comment.text)
        if m is None:
            if re.match(r"#\s*ftc:", comment.text):
                out.append(make("FT022", "malformed suppression comment", comment.span,
                                help="write `# ftc: ignore[FT150] the reason`"))
            continue
        reason = m.group("reason").strip()
        for code in (c.strip() for c in m.group("codes").split(",")):
            rule = rule_for_or_none(code)
            if rule is None:
                out.append(make("FT022", f"unknown code `{code}` in suppression", comment.span,
                                help="`ftc rules` lists the codes"))
            elif rule.suppressible == "no":
                out.append(make("FT022", f"{code} ({rule.name}) cannot be suppressed", comment.span,
                                help="fix the spec instead; only warnings and evaluation guards can be waived"))
            elif not reason:
                out.append(make("FT022", f"suppression of {code} has no reason", comment.span,
                                help=f"write why after the code: `# ftc: ignore[{code}] <reason>`"))
            else:
                found.append(_Suppression(code, reason, m.group("kind") == "ignore-file", comment.span))
    return found


def apply_suppressions(diags: list[Diagnostic], comments: list[ast.Comment]) -> tuple[list[Diagnostic], list[Waiver]]:
    extra: list[Diagnostic] = []
    sups = _parse(comments, extra)
    out: list[Diagnostic] = []
    waivers: list[Waiver] = []
    for d in diags:
        match = next((s for s in sups if _covers(s, d)), None)
        if match is None:
            out.append(d)
            continue
        match.used = True
        out.append(replace(d, suppressed_reason=match.reason))
        waivers.append(Waiver(d.code, match.reason, match.span))
    for s in sups:
        if not s.used:
            extra.append(make("FT021", f"suppression of {s.code} is unused", s.span,
                              help="remove the comment: nothing here triggers that code"))
    return out + extra, waivers


def _covers(s: _Suppression, d: Diagnostic) -> bool:
    if d.code != s.code or d.span is None or d.span.path != s.span.path:
        return False
    return s.file_wide or d.span.line == s.span.line
