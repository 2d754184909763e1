"""Content-addressed cache for data-aware checks, under the project's `.ftc/cache/`.

Two layers:
- file hashes: sha256 of a file, remembered with its size and mtime (like git's index), so an
  unchanged file is not read again just to learn that it is unchanged;
- results: JSON payloads keyed by a hash of everything they depend on (ftc version, the spec's
  sources, the data files' hashes, options).
Writes are atomic (temporary file, then rename); a corrupt or unreadable cache entry is a miss.
Set FTC_CACHE_DIR to move the cache, or FTC_NO_CACHE=1 to disable it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ftc import __version__


def cache_dir() -> Path | None:
    if os.environ.get("FTC_NO_CACHE"):
        return None
    return Path(os.environ.get("FTC_CACHE_DIR") or Path.cwd() / ".ftc" / "cache")


def _atomic_write(path: Path, text: str) -> None:
    """Write a whole file or nothing: a temporary file in the same folder, then os.replace, so a
    concurrent reader (another `ftc` process) sees the old bytes or the new ones, never a part."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        # a cache that cannot be written is only slower


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _files_to_hash(path: Path) -> list[Path]:
    try:
        if path.is_dir():
            return sorted(p for p in path.rglob("*") if p.is_file())
    except OSError:  # a folder that cannot be listed: the readers report it
        return []
    return [path]


def _digest_of(f: Path) -> str | None:
    """sha256 of a regular file's bytes; None for a device, FIFO or socket (never opened
    blocking, never read: `/dev/zero` never ends) or a file that cannot be read."""
    from ftc.compiler.data.access import open_regular

    h = hashlib.sha256()
    try:
        with open_regular(f) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file or of a folder's files (paths and bytes), reusing hashes of unchanged files."""
    root = cache_dir()
    index_path = root / "files.json" if root else None
    index: dict[str, list[Any]] = (_read_json(index_path) or {}) if index_path else {}
    changed = False
    total = hashlib.sha256()
    for f in _files_to_hash(path):
        try:
            st = f.stat()
            key = str(f.resolve())
        except (OSError, RuntimeError):  # gone, a symlink loop: the readers say which
            continue
        entry = index.get(key)
        if entry and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
            digest = entry[2]
        else:
            digest = _digest_of(f)
            if digest is None:
                continue  # not a regular file, or unreadable: the readers report it, located
            index[key] = [st.st_size, st.st_mtime_ns, digest]
            changed = True
        if path.is_dir():
            total.update(f.relative_to(path).as_posix().encode() + b"\0")
        total.update(digest.encode())
    if changed and index_path:
        _atomic_write(index_path, json.dumps(index, sort_keys=True))
    return total.hexdigest()


def key_of(*parts: Any) -> str:
    h = hashlib.sha256(__version__.encode())
    for part in parts:
        h.update(b"\0" + json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def load(kind: str, key: str) -> Any:
    root = cache_dir()
    return _read_json(root / kind / f"{key}.json") if root else None


def store(kind: str, key: str, payload: Any) -> None:
    root = cache_dir()
    if root:
        _atomic_write(root / kind / f"{key}.json", json.dumps(payload, sort_keys=True))
