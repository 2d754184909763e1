"""Argument signatures: how a statement's arguments become typed values.

A statement's key names a signature; the signature consumes arguments from the left and returns a
typed value. What it leaves over may start the next statement on the same line (`rank 8 alpha 16`),
so settings can share a line the way the spec reads best, and each key still has one meaning.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ftc.compiler import ast
from ftc.compiler.diagnostics import Diagnostic, make
from ftc.compiler.source import Span


class SigError(Exception):
    """Raised inside a signature; the resolver turns it into its diagnostic."""

    def __init__(self, diag: Diagnostic) -> None:
        super().__init__(diag.message)
        self.diag = diag


Args = Sequence[ast.Value]


@dataclass(frozen=True)
class Parsed:
    value: Any
    used: int
    span: Span


Sig = Callable[[Args, Span, str], Parsed]
"""(args, key span, key name) -> Parsed; raises SigError."""


def suggest(word: str, choices: Sequence[str]) -> str:
    """'did you mean `x`? ' for the closest choice (a prefix either way counts: evaluation -> eval)."""
    import difflib  # only when there is something to suggest

    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not match and len(word) >= 3:
        match = [c for c in choices if len(c) >= 3 and (word.startswith(c) or c.startswith(word))][:1]
    return f"did you mean `{match[0]}`? " if match else ""


def _choices(choices: Sequence[str]) -> str:
    return ", ".join(f"`{c}`" for c in choices)


def _need(args: Args, key_span: Span, key: str, what: str) -> ast.Value:
    if not args:
        raise SigError(make("FT013", f"`{key}` needs {what}", key_span, help=f"write `{key}` followed by {what}"))
    return args[0]


def _wrong(value: ast.Value, key: str, what: str, example: str = "") -> SigError:
    help_ = f"write {example}" if example else f"give {what}"
    return SigError(make("FT013", f"`{key}` expects {what}, found {ast.describe(value)} `{value.show()}`",
                         value.span, help=help_))


def _join(a: Span, b: Span) -> Span:
    return Span(a.path, a.start, b.end, a.line, a.column, b.end_line, b.end_column)


# --- scalar signatures ---------------------------------------------------------------------------

def string(example: str = '"text"') -> Sig:
    def sig(args: Args, key_span: Span, key: str) -> Parsed:
        v = _need(args, key_span, key, "a string")
        if not isinstance(v, ast.Str):
            raise _wrong(v, key, "a string in double quotes", f'`{key} {example}`')
        return Parsed(v.value, 1, v.span)
    return sig


def integer(lo: int | None = None, hi: int | None = None) -> Sig:
    def sig(args: Args, key_span: Span, key: str) -> Parsed:
        v = _need(args, key_span, key, "a whole number")
        if not isinstance(v, ast.Num) or not v.is_int:
            raise _wrong(v, key, "a whole number", f"`{key} 8`")
        _finite(v.value, v, key)
        n = int(v.value)
        _bounds(n, lo, hi, v, key)
        return Parsed(n, 1, v.span)
    return sig


def number(lo: float | None = None, hi: float | None = None, percent: bool = False) -> Sig:
    def sig(args: Args, key_span: Span, key: str) -> Parsed:
        v = _need(args, key_span, key, "a number")
        if isinstance(v, ast.Percent) and percent:
            x = v.value / 100
        elif isinstance(v, ast.Num):
            x = v.value
        else:
            raise _wrong(v, key, "a number", f"`{key} 0.1`")
        _finite(x, v, key)
        _bounds(x, lo, hi, v, key)
        return Parsed(x, 1, v.span)
    return sig


def _finite(x: float, v: ast.Value, key: str) -> None:
    """A number too large for a float (a literal the lowerer let through with a raised limit)."""
    if not math.isfinite(x):
        raise SigError(make("FT025", f"`{key}`: `{v.show()[:40]}` is too large to represent", v.span,
                            help=f"give `{key}` a value it can use"))


def _bounds(x: float, lo: float | None, hi: float | None, v: ast.Value, key: str) -> None:
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        rng = f"between {lo:g} and {hi:g}" if lo is not None and hi is not None else (
            f"at least {lo:g}" if lo is not None else f"at most {hi:g}")
        raise SigError(make("FT013", f"`{key}` must be {rng}, found `{v.show()}`", v.span,
                            help=f"give a value {rng}"))


def boolean() -> Sig:
    def sig(args: Args, key_span: Span, key: str) -> Parsed:
        v = _need(args, key_span, key, "`true` or `false`")
        if isinstance(v, ast.Name) and v.text in ("true", "false"):
            return Parsed(v.text == "true", 1, v.span)
        raise _wrong(v, key, "`true` or `false`", f"`{key} true`")
    return sig


def enum(*choices: str, aliases: dict[str, str] | None = None) -> Sig:
    aliases = aliases or {}

    def sig(args: Args, key_span: Span, key: str) -> Parsed:
        v = _need(args, key_span, key, f"one of {_choices(choices)}")
        return Parsed(enum_value(v, key, choices, aliases), 1, v.span)
    return sig


def enum_value(v: ast.Value, key: str, choices: Sequence[str], aliases: dict[str, str] | None = None) -> str:
    aliases = aliases or {}
    word = v.text if isinstance(v, ast.Name) else v.value if isinstance(v, ast.Str) else v.show()
    if isinstance(v, (ast.Name, ast.Str)) and (word in choices or word in aliases):
        return aliases.get(word, word)
    if isinstance(v, ast.Quantity) and word in choices:
        return word
    raise SigError(make("FT014", f"`{word}` is not a valid value for `{key}`", v.span,
                        help=f"{suggest(str(word), [*choices, *aliases])}choose one of {_choices(choices)}"))


UNITS: dict[str, dict[str, float]] = {
    "memory": {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
               "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4},
    "time": {"ms": 1e-3, "s": 1, "min": 60, "h": 3600, "d": 86400},
    "count": {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12},
}
_EXAMPLE = {"memory": "24GB", "time": "2h", "count": "7B"}


def quantity(dimension: str, allow_plain: bool = False) -> Sig:
    def sig(args: Args, key_span: Span, key: str) -> Parsed:
        v = _need(args, key_span, key, f"a {dimension} such as `{_EXAMPLE[dimension]}`")
        return Parsed(quantity_value(v, key, dimension, allow_plain), 1, v.span)
    return sig


def quantity_value(v: ast.Value, key: str, dimension: str, allow_plain: bool = False) -> float:
    units = UNITS[dimension]
    if isinstance(v, ast.Num) and allow_plain:
        _finite(v.value, v, key)
        return v.value
    if not isinstance(v, ast.Quantity):
        raise _wrong(v, key, f"a {dimension} with a unit, e.g. `{_EXAMPLE[dimension]}`",
                     f"`{key} {_EXAMPLE[dimension]}`")
    if v.unit not in units:
        other = [d for d, us in UNITS.items() if v.unit in us]
        why = f"`{v.unit}` is a unit of {other[0]}, not {dimension}" if other else f"unknown unit `{v.unit}`"
        raise SigError(make("FT015", f"{why} in `{v.show()}`", v.span,
                            help=f"{suggest(v.unit, list(units))}units of {dimension}: {', '.join(units)}"))
    value = v.value * units[v.unit]
    _finite(value, v, key)
    return value


def list_of(item: Sig, what: str, example: str, nonempty: bool = True) -> Sig:
    def sig(args: Args, key_span: Span, key: str) -> Parsed:
        v = _need(args, key_span, key, f"a list of {what}")
        if not isinstance(v, ast.ListV):
            raise _wrong(v, key, f"a list of {what}", f"`{key} {example}`")
        if nonempty and not v.items:
            raise SigError(make("FT013", f"`{key}` is an empty list", v.span, help=f"write `{key} {example}`"))
        values = [item([x], v.span, key).value for x in v.items]
        return Parsed(tuple(values), 1, v.span)
    return sig


def one_of_kinds(*sigs: Sig) -> Sig:
    """The first signature that accepts the first argument; errors from the last."""
    def sig(args: Args, key_span: Span, key: str) -> Parsed:
        err: SigError | None = None
        for s in sigs:
            try:
                return s(args, key_span, key)
            except SigError as e:
                err = err or e
        assert err is not None
        raise err
    return sig


def keyword(args: Args, index: int, word: str) -> bool:
    return index < len(args) and isinstance(args[index], ast.Name) and args[index].text == word  # type: ignore[union-attr]


def span_of(args: Args, used: int, key_span: Span) -> Span:
    return _join(args[0].span, args[used - 1].span) if used else key_span
