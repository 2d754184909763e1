"""Build a Hugging Face hub cache in a test folder, laid out as huggingface_hub writes it:
models--org--name/{blobs/<sha256>, snapshots/<commit>/<file> -> ../../blobs/<sha256>, refs/<name>}.

Nothing is downloaded: the files come from a local model folder (a tiny model a test saved, or a
shipped example's base).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_model(cache: Path, repo: str, source: Path, commit: str, refs: tuple[str, ...] = ("main",)) -> Path:
    """Put the files of `source` in `cache` as `repo` at `commit`; returns the snapshot folder."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    snapshot = folder / "snapshots" / commit
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / ref).write_text(commit, encoding="utf-8")  # no newline, as huggingface_hub writes it
    return snapshot
