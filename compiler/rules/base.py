"""What a rule is: a code, a name, a severity, a check function, and its docstring as its docs."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ftc.compiler.diagnostics import FRONTEND_CODES, Diagnostic, Related, Severity
from ftc.compiler.source import Span

if TYPE_CHECKING:
    from ftc.compiler.checked import CheckedSpec

ERROR = Severity.ERROR
WARNING = Severity.WARNING


@dataclass(frozen=True)
class Hit:
    """What a check function yields; the table adds code, name and severity."""

    message: str
    span: Span | None
    help: str = ""
    detail: str = ""
    related: tuple[Related, ...] = ()


def related(span: Span | None, message: str) -> tuple[Related, ...]:
    """A related location, or none when the span is unknown (a default value has no span)."""
    return (Related(span, message),) if span is not None else ()


Check = Callable[["CheckedSpec"], Iterable[Hit]]


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    severity: Severity
    doc: str
    check: Check | None  # None: emitted by the parser or resolver (the front end)
    stage: str  # frontend | spec | data | target
    guard: bool  # an error that may be waived, with a written reason kept in the record
    status: str = "active"

    @property
    def summary(self) -> str:
        """The docstring's first paragraph, on one line."""
        first = self.doc.strip().split("\n\n")[0]
        return " ".join(line.strip() for line in first.splitlines()) if first else self.name

    @property
    def suppressible(self) -> str:
        if self.stage == "frontend":
            return "no"
        if self.severity is WARNING:
            return "with a reason"
        return "with a written reason (kept in the record)" if self.guard else "no"

    def section(self, title: str) -> str:
        """A docstring section ('Why', 'Example', 'Use instead') as text, dedented."""
        return doc_sections(self.doc).get(title, "")

    def run(self, spec: CheckedSpec) -> Iterator[Diagnostic]:
        if self.check is None:
            return
        for hit in self.check(spec):
            yield Diagnostic(self.code, self.name, self.severity, hit.message, hit.span, hit.help,
                             hit.detail, hit.related)


def cleandoc(doc: str) -> str:
    """inspect.cleandoc without importing inspect (costly at start-up): first line as is, the rest
    dedented, blank lines at both ends removed."""
    lines = doc.expandtabs().splitlines()
    if not lines:
        return ""
    rest = textwrap.dedent("\n".join(lines[1:]))
    return (lines[0].strip() + "\n" + rest).strip("\n")


_SECTION = re.compile(r"^(Why|Example|Use instead|Fires with):\s*$", re.MULTILINE)


def doc_sections(doc: str) -> dict[str, str]:
    text = cleandoc(doc)
    parts = _SECTION.split(text)
    out = {"Summary": parts[0].strip()}
    for title, body in zip(parts[1::2], parts[2::2]):
        lines = body.strip("\n").splitlines()
        out[title] = cleandoc("\n".join(lines)) if lines else ""
    return out


def fires_with(doc: str) -> frozenset[str]:
    """Codes that the Example and Use instead sections also fire, by design (a docstring's
    `Fires with:` section: FT134's conflicting strategies are also refused by FT127 while ftc
    runs one process)."""
    return frozenset(re.findall(r"FT\d{3}", doc_sections(doc).get("Fires with", "")))


def rule(code: str, name: str, severity: Severity, *, guard: bool = False,
         stage: str = "spec") -> Callable[[Check], Rule]:
    def wrap(fn: Check) -> Rule:
        return Rule(code, name, severity, cleandoc(fn.__doc__ or ""), fn, stage, guard)
    return wrap


def frontend(code: str, doc: str) -> Rule:
    """A code of the language, named in diagnostics.FRONTEND_CODES (where `make` reads it)."""
    name, severity = FRONTEND_CODES[code]
    return Rule(code, name, severity, cleandoc(doc), None, "frontend", False)
