"""The syntax tree: frozen dataclasses, every node with its span.

This layer knows the shape of a file (blocks, statements, literals) and nothing of the schema;
compiler/resolve.py gives statements their meaning.
"""

from __future__ import annotations

from ftc.compiler.record import record
from ftc.compiler.source import Span


@record
class Str:
    value: str
    span: Span

    def show(self) -> str:
        return '"' + self.value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@record
class Num:
    value: float
    text: str
    is_int: bool
    span: Span

    def show(self) -> str:
        return self.text


@record
class Quantity:
    """A number with a unit: 24GB, 50ms, 2h, 7B, 4bit."""

    value: float
    unit: str
    text: str
    span: Span

    def show(self) -> str:
        return self.text


@record
class Percent:
    value: float  # 80% -> 80.0
    text: str
    span: Span

    def show(self) -> str:
        return self.text


@record
class Ratio:
    parts: tuple[float, ...]
    text: str
    span: Span

    def show(self) -> str:
        return self.text


@record
class Name:
    """A bare or dotted name: lora, val.loss, test.email."""

    parts: tuple[str, ...]
    span: Span

    @property
    def text(self) -> str:
        return ".".join(self.parts)

    def show(self) -> str:
        return self.text


@record
class ListV:
    items: tuple[Value, ...]
    span: Span

    def show(self) -> str:
        return "[" + ", ".join(item.show() for item in self.items) + "]"


@record
class Compare:
    left: Value
    op: str
    right: Value
    span: Span

    def show(self) -> str:
        return f"{self.left.show()} {self.op} {self.right.show()}"


Value = Str | Num | Quantity | Percent | Ratio | Name | ListV | Compare


@record
class Stmt:
    key: str
    key_span: Span
    args: tuple[Value, ...]
    body: Body | None
    override: bool
    span: Span


@record
class Body:
    stmts: tuple[Stmt, ...]
    span: Span


@record
class Comment:
    text: str
    span: Span


@record
class SpecFile:
    path: str
    kind: str  # "spec" | "defaults"
    name: Str | None
    extends: tuple[Str, ...]
    body: Body
    span: Span
    comments: tuple[Comment, ...]


def describe(value: Value) -> str:
    """How a diagnostic names the kind of a value ("a string", "a list", ...)."""
    return {
        Str: "a string",
        Num: "a number",
        Quantity: "a quantity",
        Percent: "a percentage",
        Ratio: "a ratio",
        Name: "a name",
        ListV: "a list",
        Compare: "a comparison",
    }[type(value)]
