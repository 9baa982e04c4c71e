"""Atomic outputs: every file merbench writes appears whole or not at all.

A writer writes to a temporary file in the target's own folder and renames it over the target
(``os.replace`` is atomic on POSIX), so a kill, a full disk or a read-only folder never leaves
half a file and never destroys the previous good one. OS failures become one-line
:class:`~merbench.errors.DataError`\\ s naming the path and the cause.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import DataError

_CAUSES = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
           errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
           errno.EPERM: "permission denied"}


def os_error(path: str | os.PathLike, exc: OSError, doing: str = "write") -> DataError:
    """A one-line error for an OS failure on ``path`` (disk full, read-only, ...)."""
    cause = _CAUSES.get(exc.errno or 0, exc.strerror or type(exc).__name__)
    return DataError(f"cannot {doing} {path}: {cause}",
                     "free some space or choose another folder" if exc.errno in
                     (errno.ENOSPC, errno.EDQUOT) else "choose a writable folder")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on any failure
    it is removed and ``path`` keeps its old content."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        raise os_error(path, exc) from exc
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise os_error(path, exc) from exc
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, OSError) and cause.errno in _CAUSES:  # e.g. torch's "unexpected pos"
            raise os_error(path, cause) from exc
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode())
