"""The content-addressed artifact store beside the registry: `.ftc/store/objects/<aa>/<sha256>/`.

An object is a finished model folder (a peft adapter, a full or merged model), named by the sha256
of its tree (`tree_digest`: each file's relative path and the sha256 of its bytes, in sorted
order; the same digest as executor.sha256_tree). `put` moves a folder in with renames only:
into `store/tmp/` (os.replace, atomic within one filesystem; a copy when the run folder lives on
another one), then onto its final name (one more rename: a reader sees the whole object or none).
When the object already exists, the new copy is dropped (identical artifacts are stored once).
Files in the store are made read-only; the folder still loads with plain
`PeftModel.from_pretrained` / `AutoModel*.from_pretrained`, without ftc (adapter configs name
their base by an absolute path).

A lock file (`store/.lock`, fcntl) keeps `ftc gc` from deciding what is unreferenced while a run
is creating its folder or storing its artifact and recording it: runs take it shared, gc
exclusive (for the short time it decides and renames what goes into its trash).
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ftc.runtime.registry import RegistryError, timeout_seconds


def tree_digest(path: Path) -> str:
    """sha256 over a folder's files (relative path, then the file's sha256), read in blocks."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        fh = hashlib.sha256()
        with f.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                fh.update(block)
        h.update(fh.digest())
    return h.hexdigest()


def tree_size(path: Path) -> int:
    """Bytes under a path (symlinks counted as links, never followed)."""
    try:
        st = path.lstat()
    except OSError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _read_only(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                os.chmod(p, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


def remove_tree(path: Path) -> None:
    """Remove a file, a link (never its target) or a folder."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


class Store:
    def __init__(self, registry_root: Path) -> None:
        self.root = registry_root / "store"
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"

    def path_for(self, digest: str) -> Path:
        return self.objects / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self.path_for(digest).is_dir()

    def all_objects(self) -> list[Path]:
        if not self.objects.is_dir():
            return []
        return sorted(obj for prefix in self.objects.iterdir() if prefix.is_dir() for obj in prefix.iterdir())

    def put(self, src: Path, digest: str | None = None) -> tuple[Path, str, bool]:
        """Move a finished folder into the store: (its path there, its digest, whether it is new)."""
        digest = digest or tree_digest(src)
        dest = self.path_for(digest)
        if dest.is_dir():
            remove_tree(src)
            os.utime(dest)
            return dest, digest, False
        self.tmp.mkdir(parents=True, exist_ok=True)
        staging = self.tmp / f"{digest[:16]}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            os.replace(src, staging)
        except OSError as err:
            if err.errno != errno.EXDEV:
                raise
            try:  # another filesystem: copy, then drop the source
                shutil.copytree(src, staging, symlinks=True)
            except OSError:  # a full disk: no half copy is left in the store; the source stays as it was
                remove_tree(staging)
                raise
            remove_tree(src)
        _read_only(staging)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(staging, dest)
        except OSError:
            if not dest.is_dir():
                raise
            remove_tree(staging)  # another run stored the same bytes a moment ago
            return dest, digest, False
        return dest, digest, True

    @contextmanager
    def lock(self, *, exclusive: bool, wait: float | None = None) -> Iterator[None]:
        """Shared (runs) or exclusive (gc) lock on the store; RegistryError after `wait` seconds."""
        import fcntl

        wait = timeout_seconds() if wait is None else wait
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:  # a full disk, a read-only folder: a message, not a traceback
            full = err.errno in (errno.ENOSPC, errno.EDQUOT)
            raise RegistryError(f"cannot create the artifact store's lock {self.root / '.lock'} ({err.strerror or err})"
                                "; nothing was changed",
                                f"free space on the disk of {self.root}" if full else
                                f"check that {self.root} is writable, or point FTC_HOME at another folder") from err
        try:
            deadline = time.monotonic() + wait
            mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
            while True:
                try:
                    fcntl.flock(fd, mode)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        who = "a running `ftc run` or `ftc gc`"
                        raise RegistryError(f"the artifact store {self.root} is locked by {who} "
                                            f"(waited {wait:g} s); nothing was changed",
                                            "run the command again when the other one has finished, or wait "
                                            "longer with FTC_REGISTRY_TIMEOUT=<seconds>") from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # releases the lock
