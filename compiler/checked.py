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

from ftc.compiler import paths, schema
from ftc.compiler.diagnostics import Diagnostic, make
from ftc.compiler.estimate import is_local
from ftc.compiler.source import Source, Span

if TYPE_CHECKING:
    from ftc.compiler.data.analyze import DataReport


@dataclass(frozen=True)
class CheckOptions:
    no_data: bool = False
    target: str | None = None  # hardware profile, e.g. "cpu", "cuda", "a100"
    tokenize: bool = False  # exact token lengths with a local base's tokenizer
    root: str | None = None  # the project root declared with `--root DIR` (else FTC_ROOT, the repository, ...)


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
    roots: paths.Roots | None = None  # where its paths may resolve (compiler/paths.py); None: unconfined

    @property
    def sizes(self) -> Mapping[str, int]:
        """Realised split sizes when the data was read, else {}."""
        return getattr(self.data, "sizes", {}) if self.data is not None else {}

    def resolve_path(self, path: str, where: Span | None = None) -> Path:
        """A path from the spec, relative to the folder of the file where it was written (a path
        inherited through `extends` is relative to that file, not to the spec)."""
        return paths.spec_path(path, self.dir_of(where))

    def contains(self, path: Path, hub: bool = False) -> bool:
        """Whether `path` (resolved: `..` and links followed) lies inside the project root, or
        with `hub`, inside the Hugging Face cache too (for an `hf:` base's files). Readers of files
        found inside a named folder (images, a base's weights) call this before opening one."""
        if self.roots is None:
            return True
        roots = paths.hub_roots(self.roots) if hub else self.roots
        return roots.contains(path)

    def path_problem(self, what: str, path: str, where: Span | None, want: str | None = None) -> Diagnostic | None:
        """The diagnostic for a path the spec names, or None when it may be read: outside the root
        (FT028, checked always, nothing opened); with the data read, a symlink loop or no permission
        (FT029), a device, FIFO or socket, or a folder where a file is meant (`want` "file" or
        "folder", FT027). A missing file is left to FT180."""
        at = where or self.spec.span or Span(self.path, 0, 0, 1, 1, 1, 1)
        p = self.resolve_path(path, where)
        if not self.contains(p):
            assert self.roots is not None
            return make("FT028", f"{what} `{path}` lies outside the project root", at, help=self.roots.help())
        if self.options.no_data:
            return None
        return _kind_problem(what, path, paths.kind_of(p), want, at)

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


def _kind_problem(what: str, path: str, kind: paths.Kind, want: str | None, at: Span) -> Diagnostic | None:
    if kind.kind == paths.LOOP:
        return make("FT029", f"{what} `{path}` is a symlink loop: following its links leads back to a link "
                    "already followed", at, help="point the link at the real file (`ls -l` shows where each link leads)")
    if kind.kind == paths.DENIED:
        return make("FT029", f"cannot read {what} `{path}`: permission denied", at,
                    help="give the user running ftc read access to it and its folders (`ls -ld`, `chmod`)")
    if kind.kind == paths.SPECIAL:
        return make("FT027", f"{what} `{path}` is {kind.words}, not a regular file", at,
                    help="name a regular file: ftc reads only regular files and folders (a device or a pipe never ends)")
    if want == paths.FILE and kind.kind == paths.FOLDER or want == paths.FOLDER and kind.kind == paths.FILE:
        return make("FT027", f"{what} `{path}` is {kind.words}, not {'a file' if want == paths.FILE else 'a folder'}",
                    at, help=f"name the {what} itself")
    return None


WANTS = {"output schema": paths.FILE, "base model folder": paths.FOLDER, "image folder": paths.FOLDER}


def path_problems(c: CheckedSpec) -> list[Diagnostic]:
    """Every named path's problem (CheckedSpec.path_problem), and an `hf:` revision that would
    name a file outside the Hugging Face cache: judged before any rule opens a file."""
    out = [d for what, path, at in named_files(c)
           if (d := c.path_problem(what, path, at, WANTS.get(what.split("stage ")[-1]))) is not None]
    m = c.spec.model
    if m is not None and isinstance(m.revision, str) and isinstance(m.base, str) and m.base.startswith("hf:"):
        rev = Path(m.revision)
        if rev.is_absolute() or ".." in rev.parts or m.revision.startswith("~"):
            out.append(make("FT028", f"revision `{m.revision}` names a path, not a branch, tag or commit",
                            m.at("revision") or m.span, help="pin the base with its commit sha, e.g. `revision \"3f2a9c1\"`"))
    return out


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
        if isinstance(m.base, str) and is_local(m.base):  # None in a spec built with errors
            yield "base model folder", m.base, m.at("base")
    if spec.eval is not None:
        for g in spec.eval.gates:
            if g.dataset is not None:
                yield "regression set", g.dataset, g.span
