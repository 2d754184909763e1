"""Path confinement: every path a spec names resolves inside its project root, or is refused.

A spec is reviewed like code, and `ftc check` runs in pre-commit and CI on specs from pull requests;
a path that leaves the project (`train "../../../../etc/shadow"`, `extends "/etc/shadow"`, a link
inside the repository to a file outside it) would have ftc read a runner's files and print them in
the log. So one function, `spec_path`, turns a string written in a spec into a path (`~` expanded,
relative to the folder of the file that wrote it), and `confine` decides whether that path, with
`..` and symbolic links resolved, lies inside an allowed root, before anything opens it.

The project root, in order (`project_root`):
  1. a root the user declares: `ftc check --root DIR` / `ftc run --root DIR` (CheckOptions.root),
     else the environment variable FTC_ROOT (several folders joined by the path separator, `:`);
  2. the git repository holding the spec: the nearest parent folder with a `.git`;
  3. the working folder, when the spec lies below it (and it is neither `/` nor the home folder);
  4. the spec's own folder.
The Hugging Face cache (compiler/hub.py's HF_HUB_CACHE / HF_HOME) is a second root for `hf:` bases
only (`hub_roots`): their snapshots link into the cache's blobs.

`kind_of` says what a path is without opening it (a file, a folder, a device, a FIFO, a socket, a
symlink loop, a permission error), so that only regular files and folders are ever read.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

ROOT_ENV = "FTC_ROOT"


@dataclass(frozen=True)
class Roots:
    """The folders a spec's paths may resolve into (resolved, absolute), and where they came from."""

    folders: tuple[Path, ...]
    origin: str  # "--root", "FTC_ROOT", "the git repository", "the working folder", "the spec's folder"

    def contains(self, path: Path) -> bool:
        return any(inside(path, root) for root in self.folders)

    def help(self) -> str:
        """Where the root is and how to declare another; nothing outside it is named."""
        shown = ", ".join(_relative(r) for r in self.folders)
        return (f"paths must stay inside the project root, {shown} ({self.origin}); move the file inside it, "
                f"or declare a root that holds it with `--root DIR` or {ROOT_ENV}")


def _relative(folder: Path) -> str:
    """A root as output shows it: relative to the working folder (deterministic in tests)."""
    try:
        return Path(os.path.relpath(folder)).as_posix()
    except ValueError:
        return folder.as_posix()


def spec_path(text: str, folder: Path) -> Path:
    """The one way a string written in a spec becomes a path: `~` expanded, a relative path taken
    against `folder` (the folder of the file that wrote it). Nothing is resolved or opened."""
    p = Path(os.path.expanduser(text))  # `~nobody` stays as written (Path.expanduser raises)
    return p if p.is_absolute() else folder / p


def real(path: Path) -> Path:
    """`path` absolute with `..` and symbolic links resolved as far as they exist (a loop stops
    resolving: its location is still judged)."""
    try:
        return Path(os.path.realpath(os.path.abspath(path)))
    except (OSError, ValueError):  # a NUL byte, a name too long: judged as written
        return Path(os.path.abspath(path))


def inside(path: Path, root: Path) -> bool:
    """Whether `path`, resolved, lies in `root` (itself resolved by the caller) or is `root`."""
    target = real(path)
    return target == root or root in target.parents


def _git_root(folder: Path) -> Path | None:
    for parent in (folder, *folder.parents):
        if (parent / ".git").exists():
            return parent
    return None


def declared_roots(declared: Path | None = None) -> Roots | None:
    """A root the user declared (`--root`, then FTC_ROOT), or None."""
    if declared is not None:
        return Roots((real(declared),), "--root")
    env = os.environ.get(ROOT_ENV, "")
    folders = tuple(real(Path(p).expanduser()) for p in env.split(os.pathsep) if p.strip())
    return Roots(folders, ROOT_ENV) if folders else None


def project_root(spec: Path, declared: Path | None = None) -> Roots:
    """The root a spec's paths must stay in (the order is in the module docstring)."""
    chosen = declared_roots(declared)
    if chosen is not None:
        return chosen
    folder = real(spec).parent
    repo = _git_root(folder)
    if repo is not None:
        return Roots((repo,), "the git repository")
    cwd = real(Path.cwd())
    if cwd not in (Path(cwd.anchor), real(Path.home())) and inside(folder, cwd):
        return Roots((cwd,), "the working folder")
    return Roots((folder,), "the spec's folder")


def hub_roots(project: Roots) -> Roots:
    """The roots of an `hf:` base: the project's and the Hugging Face cache."""
    from ftc.compiler.hub import cache_dir

    return Roots((*project.folders, real(cache_dir())), project.origin)


# --- what a path is, without opening it --------------------------------------------------------

FILE, FOLDER, MISSING, LOOP, DENIED, SPECIAL = "file", "folder", "missing", "loop", "denied", "special"

_SPECIAL = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
            (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


@dataclass(frozen=True)
class Kind:
    kind: str  # FILE, FOLDER, MISSING, LOOP, DENIED or SPECIAL
    words: str  # what it is, in words ("a FIFO (named pipe)")
    size: int = 0


def kind_of(path: Path) -> Kind:
    """What `path` is (links followed): a regular file, a folder, missing, a symlink loop, not
    reachable for permissions, or special (a device, a FIFO, a socket)."""
    try:
        st = os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return Kind(LOOP, "a symlink loop")
        if err.errno in (errno.EACCES, errno.EPERM):
            return Kind(DENIED, "not readable (permission denied)")
        return Kind(MISSING, "missing")
    except ValueError:  # an embedded NUL byte
        return Kind(MISSING, "missing")
    if stat.S_ISREG(st.st_mode):
        return Kind(FILE, "a file", st.st_size)
    if stat.S_ISDIR(st.st_mode):
        return Kind(FOLDER, "a folder")
    words = next((w for test, w in _SPECIAL if test(st.st_mode)), "not a regular file")
    return Kind(SPECIAL, words)


def read_regular(path: Path, limit: int) -> bytes:
    """Read a regular file whole, at most `limit + 1` bytes (the caller refuses more). Opened
    non-blocking and checked again once open, so a file swapped for a FIFO is refused, not waited
    on. Raises OSError (IsADirectoryError for a folder, OSError(ENODEV-like) for a special file)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a folder")
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
