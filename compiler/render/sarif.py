"""SARIF 2.1.0: one run, tool.driver "ftc", its rules, and one result per diagnostic.

Every result has ruleId, ruleIndex (into driver.rules: the `rules` given, then any code they lack),
level (error/warning/note), message.text (message, then detail, then `help: ...`), a physical
location (relative URI with forward slashes; region lines and columns 1-based, endColumn exclusive,
counted in Unicode code points as run.columnKind says) and relatedLocations. Suppressed diagnostics
are kept, with `suppressions: [{"kind": "inSource", "justification": reason}]`. No timestamps and no
absolute paths are added, so the output is deterministic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from ftc import __version__
from ftc.compiler.diagnostics import Diagnostic, Severity
from ftc.compiler.render import RuleInfo
from ftc.compiler.source import Source, Span

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://pypi.org/project/ftc/"


def uri(path: str) -> str:
    """A URI reference for a path: relative stays relative; absolute becomes file://."""
    p = path.replace("\\", "/")
    if re.match(r"[A-Za-z]:/", p):
        return "file:///" + quote(p, safe="/:")
    if p.startswith("/"):
        return "file://" + quote(p)
    return quote(p)


def _level(severity: Severity | str) -> str:
    return str(getattr(severity, "value", severity))


def _physical(span: Span) -> dict[str, Any]:
    return {
        "artifactLocation": {"uri": uri(span.path)},
        "region": {
            "startLine": span.line,
            "startColumn": span.column,
            "endLine": span.end_line,
            "endColumn": span.end_column,
        },
    }


def _rule(code: str, name: str, summary: str, level: str) -> dict[str, Any]:
    return {
        "id": code,
        "name": name,
        "shortDescription": {"text": summary or name},
        "defaultConfiguration": {"level": level},
    }


def _rules(diags: Sequence[Diagnostic], rules: Sequence[RuleInfo] | None) -> list[dict[str, Any]]:
    out = [_rule(r.code, r.name, r.summary, _level(r.severity)) for r in rules or ()]
    known = {r["id"] for r in out}
    for d in sorted(diags, key=lambda d: d.code):
        if d.code not in known:
            known.add(d.code)
            out.append(_rule(d.code, d.name, d.name, _level(d.severity)))
    return out


def result(d: Diagnostic, index: int) -> dict[str, Any]:
    text = "\n".join(
        [d.message] + ([d.detail] if d.detail else []) + ([f"help: {d.help}"] if d.help else [])
    )
    out: dict[str, Any] = {
        "ruleId": d.code,
        "ruleIndex": index,
        "level": _level(d.severity),
        "message": {"text": text},
    }
    if d.span is not None:
        out["locations"] = [{"physicalLocation": _physical(d.span)}]
    if d.related:
        out["relatedLocations"] = [
            {"id": i, "physicalLocation": _physical(r.span), "message": {"text": r.message}}
            for i, r in enumerate(d.related)
        ]
    if d.suppressed_reason is not None:
        out["suppressions"] = [{"kind": "inSource", "justification": d.suppressed_reason}]
    return out


def render(
    diags: Sequence[Diagnostic],
    sources: Mapping[str, Source],
    *,
    color: bool = False,
    files_checked: int = 0,
    rules: Sequence[RuleInfo] | None = None,
) -> str:
    driver_rules = _rules(diags, rules)
    index = {r["id"]: i for i, r in enumerate(driver_rules)}
    driver = {
        "name": "ftc",
        "informationUri": INFORMATION_URI,
        "version": __version__,
        "rules": driver_rules,
    }
    run = {
        "tool": {"driver": driver},
        "columnKind": "unicodeCodePoints",
        "results": [result(d, index[d.code]) for d in diags],
    }
    doc = {"$schema": SCHEMA, "version": "2.1.0", "runs": [run]}
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
