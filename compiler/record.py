"""`record`: frozen dataclasses without code generation at import time.

`dataclasses.dataclass` compiles __init__, __repr__, __eq__, __hash__, __setattr__ and __delattr__
with `exec` for every class: about 1.5 ms each on Python 3.11, which for the ~45 classes of the
AST and the schema was a quarter of a cold `ftc check`. `record` builds the same behaviour from
generic methods that read a per-class field table, and registers real `dataclasses.Field`
objects, so `dataclasses.fields()`, `dataclasses.replace()` and type checkers (PEP 681) work as
with a frozen dataclass. Instances are a little slower to construct; the compiler makes few.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import MISSING, Field, FrozenInstanceError
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T")
_FIELD = getattr(dataclasses, "_FIELD")  # noqa: B009 (private; mypy does not know it)


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    table: tuple[Field[Any], ...] = type(self).__record_fields__
    if len(args) > len(table):
        raise TypeError(f"{type(self).__name__}() takes {len(table)} positional arguments")
    for f, value in zip(table, args):
        if f.name in kwargs:
            raise TypeError(f"{type(self).__name__}() got multiple values for {f.name!r}")
        kwargs[f.name] = value
    for f in table[len(args):]:
        if f.name in kwargs:
            continue
        if f.default is not MISSING:
            kwargs[f.name] = f.default
        elif f.default_factory is not MISSING:
            kwargs[f.name] = f.default_factory()
        else:
            raise TypeError(f"{type(self).__name__}() missing required argument {f.name!r}")
    if len(kwargs) != len(table):
        extra = sorted(set(kwargs) - {f.name for f in table})
        raise TypeError(f"{type(self).__name__}() got unexpected arguments {extra}")
    for name, value in kwargs.items():
        object.__setattr__(self, name, value)


def _setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def _key(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, f.name) for f in type(self).__record_fields__ if f.compare)


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _key(self) == _key(other)


def _hash(self: Any) -> int:
    return hash(_key(self))


def _repr(self: Any) -> str:
    parts = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in type(self).__record_fields__ if f.repr)
    return f"{type(self).__name__}({parts})"


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, Field))
def record(cls: type[T]) -> type[T]:
    """Make `cls` a frozen record from its annotations (including those of record base classes)."""
    table: dict[str, Field[Any]] = {}
    for base in reversed(cls.__mro__[1:]):
        table.update(getattr(base, "__dataclass_fields__", {}))
    own = cls.__dict__.get("__annotations__", {})  # noqa: RUF063 (inspect costs ~8 ms to import)
    for name, annotation in own.items():
        default = cls.__dict__.get(name, MISSING)
        f: Field[Any] = default if isinstance(default, Field) else dataclasses.field(default=default)
        f.name, f.type = name, annotation
        setattr(f, "_field_type", _FIELD)  # noqa: B010 (what dataclasses.fields() looks for; mypy: private)
        table[name] = f
        if isinstance(default, Field):
            if f.default is MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
    setattr(cls, "__dataclass_fields__", table)  # noqa: B010 (mypy: type[T] has no such attribute)
    setattr(cls, "__record_fields__", tuple(table.values()))  # noqa: B010
    methods: dict[str, Callable[..., Any]] = {"__init__": _init, "__setattr__": _setattr, "__delattr__": _delattr,
                                              "__eq__": _eq, "__hash__": _hash, "__repr__": _repr}
    for name, fn in methods.items():
        setattr(cls, name, fn)
    return cls
