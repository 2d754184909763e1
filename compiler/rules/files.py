"""Rules that look at the files a spec names (skipped by `--no-data`): data, schemas, local models."""

from __future__ import annotations

from collections.abc import Iterator

from ftc.compiler.checked import CheckedSpec, named_files
from ftc.compiler.rules.base import ERROR, Hit, rule


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
