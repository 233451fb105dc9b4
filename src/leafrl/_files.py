"""Atomic file writes (stdlib only): a reader never sees a half-written file; and in one line what
an OSError of the machine (a full disk, a read-only directory) means, or why a path cannot be read."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import uuid
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) under a temporary name beside ``path``, then rename it over ``path``;
    creates the parent directory. A failed write leaves ``path`` as it was and no temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8", newline="\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


CAUSES = {errno.ENOSPC: "no space left on the disk", errno.EDQUOT: "the disk quota is used up",
          errno.EROFS: "a read-only file system", errno.EACCES: "permission denied",
          errno.EPERM: "operation not permitted", errno.EFBIG: "the file is over the size this system allows",
          errno.ELOOP: "a symlink loop", errno.ENOTDIR: "a file where a directory should be"}
"""The causes of an OSError that lie in the machine, not in leafrl: said in one line, not a traceback."""


def os_problem(err: OSError) -> str | None:
    """An OSError the environment caused (a full disk, a read-only directory, ...) as one line
    naming the path and the cause, with the disk's free space where the disk filled up; None for
    any other error."""
    cause = CAUSES.get(err.errno)
    if cause is None:
        return None
    if not err.filename:
        return cause
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        cause += f" ({free_space(Path(err.filename))} free there)"
    return f"{err.filename}: {cause}"


def free_space(path: Path) -> str:
    """The free space on the disk of ``path`` (or of its nearest existing parent), as "1.2 GB"."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    free = shutil.disk_usage(path).free
    return f"{free / 1e9:.1f} GB" if free >= 1e8 else f"{free / 1e6:.1f} MB"


def path_problem(path: str | os.PathLike, *, directory: bool = False) -> str | None:
    """Why ``path`` cannot be read as a file (as a directory when ``directory``), in words that
    follow its name: "not found", "is a directory", "is a file", "is a symlink loop", "is a broken
    symlink (to 'x')", "cannot be read (permission denied)", ...; None when it can be read.

    ``Path.is_file()`` and ``exists()`` answer False to all of these alike, so a message built on
    them says "not found" for a directory or a symlink loop as well.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "is a symlink loop" if os.path.islink(path) else "goes through a symlink loop"
        if err.errno == errno.ENOTDIR:
            return "not found (part of its path is a file)"
        if err.errno in (errno.EACCES, errno.EPERM):
            return "cannot be read (permission denied)"
        if os.path.islink(path):
            return f"is a broken symlink (to {os.readlink(path)!r})"
        return "not found" if err.errno == errno.ENOENT else f"cannot be read ({err.strerror})"
    if directory and not stat.S_ISDIR(mode):
        return "is a file" if stat.S_ISREG(mode) else "is not a directory"
    if not directory and stat.S_ISDIR(mode):
        return "is a directory"
    if not directory and not stat.S_ISREG(mode):
        return "is not a regular file"
    readable = os.access(path, os.R_OK | (os.X_OK if directory else 0))
    return None if readable else "cannot be read (permission denied)"
