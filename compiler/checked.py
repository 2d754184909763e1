"""The typed hand-off between the front end's stages: CheckOptions in, CheckedSpec out.

Rules, the planner and the runtime read a CheckedSpec; they import it from here, never from the
driver (`check.py`), so that no rule module depends on the module that runs the rules.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ftc.compiler import schema
from ftc.compiler.estimate import is_local
from ftc.compiler.source import Source, Span

if TYPE_CHECKING:
    from ftc.compiler.data.analyze import DataReport


@dataclass(frozen=True)
class CheckOptions:
    no_data: bool = False
    target: str | None = None  # hardware profile, e.g. "cpu", "cuda", "a100"
    tokenize: bool = False  # exact token lengths with a local base's tokenizer


@dataclass(frozen=True)
class CheckedSpec:
    """A spec whose names and types are resolved and defaults filled: what rules and plans read."""

    path: str
    name: str
    spec: schema.Spec
    base_dir: Path  # relative data and model paths resolve against the spec's folder
    sources: Mapping[str, Source]
    options: CheckOptions = field(default_factory=CheckOptions)
    data: DataReport | None = None  # once the data has been read

    @property
    def sizes(self) -> Mapping[str, int]:
        """Realised split sizes when the data was read, else {}."""
        return getattr(self.data, "sizes", {}) if self.data is not None else {}

    def resolve_path(self, path: str, where: Span | None = None) -> Path:
        """A path from the spec, relative to the folder of the file where it was written (a path
        inherited through `extends` is relative to that file, not to the spec)."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.dir_of(where) / p

    def dir_of(self, where: Span | None) -> Path:
        """The folder of the file a span lies in (the spec's folder when unknown)."""
        return Path(where.path).parent if where is not None else self.base_dir



def display_path(path: Path) -> str:
    """Paths in output are relative to the working directory when below it: no machine specifics."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path.as_posix()
    return Path(rel).as_posix() if not rel.startswith("..") else path.as_posix()


def named_files(c: CheckedSpec) -> Iterator[tuple[str, str, Span | None]]:
    """(what, path, span) for every file or folder the spec names."""
    spec = c.spec

    def data_files(data: schema.Data | None, where: str) -> Iterator[tuple[str, str, Span | None]]:
        if data is None:
            return
        for name in ("train", "val", "test", "source"):
            f = getattr(data, name)
            if f is not None:
                yield f"{where}{name} data", f.path, f.span
        if data.image_root is not None:
            yield f"{where}image folder", data.image_root, data.at("image_root")

    yield from data_files(spec.data, "")
    sig = spec.signal
    if sig is not None and sig.kind == "rlhf" and sig.reward is not None:
        yield from data_files(sig.reward.data, "reward stage ")
    m = spec.model
    if m is not None:
        if m.output_schema is not None:
            yield "output schema", m.output_schema, m.at("output_schema")
        if is_local(m.base):
            yield "base model folder", m.base, m.at("base")
    if spec.eval is not None:
        for g in spec.eval.gates:
            if g.dataset is not None:
                yield "regression set", g.dataset, g.span
