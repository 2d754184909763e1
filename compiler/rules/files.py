"""Rules that look at the files a spec names (skipped by `--no-data`): data, schemas, local models."""

from __future__ import annotations

from collections.abc import Iterator

from ftc.compiler import schema as s
from ftc.compiler.checked import CheckedSpec
from ftc.compiler.estimate import _is_local
from ftc.compiler.rules.base import ERROR, Hit, rule
from ftc.compiler.source import Span


def named_files(c: CheckedSpec) -> Iterator[tuple[str, str, Span | None]]:
    """(what, path, span) for every file or folder the spec names."""
    spec = c.spec

    def data_files(data: s.Data | None, where: str) -> Iterator[tuple[str, str, Span | None]]:
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
        if _is_local(m.base):
            yield "base model folder", m.base, m.at("base")
    if spec.eval is not None:
        for g in spec.eval.gates:
            if g.dataset is not None:
                yield "regression set", g.dataset, g.span


@rule("FT180", "file-not-found", ERROR, stage="files")
def file_not_found(c: CheckedSpec) -> Iterator[Hit]:
    """A data file, schema or local base model that the spec names does not exist.

    Why:
    A run must not start only to fail when it reaches a missing file. Paths are relative to the
    spec's folder. `ftc check --no-data` skips this rule (for pre-commit without the data).
    """
    for what, path, span in named_files(c):
        if not c.resolve_path(path, span).exists():
            folder = c.dir_of(span).as_posix()
            yield Hit(f"{what} `{path}` does not exist", span,
                      help=f"paths are relative to the folder of the file that names them ({folder})")
