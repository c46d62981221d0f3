"""Writing outputs all at once or not at all, without touching process-wide state (and
:func:`check_input_file`, the one check of an input file before it is read).

Every output (an mp4, an avatar, a bundle folder) is written under a temporary name beside
its destination and renamed into place when it is complete, so a failure or a crash never
leaves a half-written file under the real name.

The temporary file or folder is created with the mode a plain ``open``/``mkdir`` would
give (``0o666``/``0o777`` less the umask, applied by the kernel), so the renamed output has
the permissions users expect. ``tempfile.mkstemp`` would make it private to its owner, and
reading the umask to fix that afterwards means setting it, which races with other threads
creating files.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import secrets
import shutil
import sys
from pathlib import Path

from ..errors import IplapError, MediaError

log = logging.getLogger(__name__)


def check_input_file(path: str | Path, what: str, name: str | None = None,
                     error: type[IplapError] = MediaError) -> None:
    """Refuse an input that is a folder, missing or empty, with an ``error`` (a :class:`MediaError`
    by default) naming it (``what``: "audio", "face", "avatar"; ``name``: how to name the file,
    its path by default)."""
    path = Path(path)
    shown = name or path
    if path.is_dir():
        raise error(f"{what} path is a folder: {shown}")
    if not path.is_file():
        raise error(f"{what} file not found: {shown}")
    if path.stat().st_size == 0:
        raise error(f"{what} file is empty: {shown}")


def _temporary_name(directory: Path, prefix: str, suffix: str) -> Path:
    return directory / f"{prefix}{secrets.token_hex(4)}{suffix}"


def create_temp_file(directory: str | Path, prefix: str, suffix: str = "") -> Path:
    """A new empty file in ``directory`` with a unique name, mode ``0o666`` less the umask."""
    directory = Path(directory)
    for _ in range(100):
        path = _temporary_name(directory, prefix, suffix)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return path
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(directory))


def create_temp_dir(parent: str | Path, prefix: str) -> Path:
    """A new empty folder in ``parent`` with a unique name, mode ``0o777`` less the umask."""
    parent = Path(parent)
    for _ in range(100):
        path = _temporary_name(parent, prefix, "")
        try:
            os.mkdir(path, 0o777)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(parent))


def move_into_place(tmp: str | Path, path: str | Path) -> None:
    """Rename a finished temporary file onto ``path`` (atomic on one file system)."""
    os.replace(tmp, path)


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step with Linux's ``renameat2(RENAME_EXCHANGE)``; False where
    the system or the file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:  # glibc < 2.28, or another libc
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_dir(new: str | Path, dest: str | Path) -> None:
    """Put the finished folder ``new`` at ``dest``, replacing what is there, in one step.

    A folder cannot be renamed over a non-empty one. Where the system can swap two paths
    atomically (Linux), it does, and the old folder is removed afterwards: at every moment
    ``dest`` is either the complete old folder or the complete new one. Elsewhere the old
    folder is first renamed aside, then the new one in; a crash between the two renames
    leaves the old folder beside ``dest`` (``.NAME.old-*``), never removed.
    """
    new, dest = Path(new), Path(dest)
    if not dest.exists():
        os.replace(new, dest)
        return
    if _exchange(new, dest):
        shutil.rmtree(new)  # now the old contents
        return
    aside = _temporary_name(dest.parent, f".{dest.name}.old-", "")
    os.replace(dest, aside)
    os.replace(new, dest)
    shutil.rmtree(aside, ignore_errors=True)
