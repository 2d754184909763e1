"""Open data files safely: only regular files, with a located reason when a path cannot be read.

`problem(path, display, folder)` looks at a path before any reader opens it and says, in the words
a user can act on, why it cannot be read: it does not exist, it is a symlink loop (the OS's ELOOP,
which `Path.exists()` reports as "does not exist"), a link to nothing, permission denied, or it is
a device, a FIFO or a socket (reading `/dev/zero` or a pipe never ends). `open_regular` opens a
file non-blocking and checks what it opened, so a path swapped for a FIFO after the check is
refused rather than waited on; `read_regular` reads a small file whole, up to a byte limit.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import IO

from ftc.compiler.data.limits import LimitExceeded, raise_help, show

_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


class NotRegular(OSError):
    """What `open_regular` raises for a device, FIFO or socket (an OSError: readers catch those)."""


def special_kind(mode: int) -> str | None:
    """What a non-regular, non-folder file is, in words; None for a regular file or a folder."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((word for test, word in _KINDS if test(mode)), "not a regular file")


def problem(path: Path, display: str, folder: bool) -> tuple[str, str, str] | None:
    """(kind, message, help) when `path` cannot be read as a data file (or, with `folder`, a
    data folder); None when it can be opened."""
    try:
        st = os.stat(path)
    except OSError as e:
        return _stat_problem(path, display, folder, e)
    kind = special_kind(st.st_mode)
    if kind is not None:
        return ("not_regular", f"`{display}` is {kind}, not a regular file",
                "name a data file: ftc reads only regular files and folders (a device or a pipe never ends)")
    return _open_problem(path, display, stat.S_ISDIR(st.st_mode))


def _stat_problem(path: Path, display: str, folder: bool, e: OSError) -> tuple[str, str, str]:
    what = "folder" if folder else "file"
    if e.errno == errno.ELOOP:
        return ("loop", f"`{display}` is a symlink loop: following its links leads back to a link already followed",
                "point the link at the real data file (`ls -l` shows where each link leads)")
    if e.errno in (errno.EACCES, errno.EPERM):
        return ("permission", f"cannot read `{display}`: permission denied (on a folder on its path)",
                "give the user running ftc access to the folders on the path (`ls -ld`, `chmod`)")
    if e.errno == errno.ENOENT and path.is_symlink():
        return ("missing", f"`{display}` is a symbolic link to `{os.readlink(path)}`, which does not exist",
                "point the link at the data file, or name the file itself")
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return "missing", f"no such {what}: `{display}`", "paths are relative to the spec's folder"
    return "unreadable", f"cannot read `{display}`: {e.strerror or e}", "check that the path names a readable file"


def _open_problem(path: Path, display: str, is_dir: bool) -> tuple[str, str, str] | None:
    try:
        if is_dir:
            os.listdir(path)
        else:
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)))
    except PermissionError:
        what = "list the folder" if is_dir else "read"
        return ("permission", f"cannot {what} `{display}`: permission denied",
                (f"give the user running ftc read access (`ls -l{'d' if is_dir else ''}` shows who may read it; "
                f"`chmod u+r{'x' if is_dir else ''}`)"))
    except OSError as e:
        return "unreadable", f"cannot read `{display}`: {e.strerror or e}", "check that the file is readable"
    return None


def open_regular(path: Path) -> IO[bytes]:
    """A regular file opened for reading (buffered). Raises NotRegular for anything else, or the
    OSError of the open: never blocks on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegular(errno.EINVAL, f"{special_kind(mode) or 'a folder'}, not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_regular(path: Path, limit: int, name: str) -> bytes:
    """A regular file's bytes, at most `limit` (else LimitExceeded for the limit `name`)."""
    with open_regular(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise LimitExceeded(name, limit, f"`{path.name}` is over the {show(name, limit)} `{name}` limit")
    return data


__all__ = ["NotRegular", "open_regular", "problem", "raise_help", "read_regular", "special_kind"]
