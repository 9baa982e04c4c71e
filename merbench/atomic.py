"""Atomic outputs: every file merbench writes appears whole or not at all.

A writer writes to a temporary file in the target's own folder and renames it over the target
(``os.replace`` is atomic on POSIX), so a kill, a full disk or a read-only folder never leaves
half a file and never destroys the previous good one. OS failures become one-line
:class:`~merbench.errors.DataError`\\ s naming the path and the cause, also when a library
hides the OSError (torch reports a full disk as "RuntimeError: ... unexpected pos"): then the
folder's free space tells.

Temporary names carry the writer's process id (``.model.pt.<pid>-xxxx.tmp``), so the
leftovers of a killed writer are recognised and removed by the next run
(:func:`remove_leftovers`).
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

from .errors import DataError

log = logging.getLogger(__name__)

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
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-",
                                   suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make outputs private
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
        full = isinstance(exc, Exception) and free_bytes(path.parent) < _FULL
        Path(tmp).unlink(missing_ok=True)
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, OSError) and cause.errno in _CAUSES:
            raise os_error(path, cause) from exc
        if full:  # a writer that hides the OSError, e.g. torch's "unexpected pos"
            raise os_error(path, OSError(errno.ENOSPC, "No space left on device")) from exc
        raise


def _umask() -> int:
    """The process umask (read by setting and restoring it: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FULL = 1 << 20  # a write that fails with less free space than this failed on a full disk


def free_bytes(folder: str | os.PathLike) -> int:
    """Bytes an unprivileged writer may still use in ``folder``'s file system."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return _FULL
    return st.f_bavail * st.f_frsize


def make_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """``mkdir -p`` with a one-line error (read-only, disk full, a file in the way)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise DataError(f"cannot create {what} {path}: a file of that name is in the way",
                        "choose another folder") from exc
    except OSError as exc:
        raise os_error(path, exc, f"create {what}") from exc
    return path


_TEMP = re.compile(r"^\..+\.(\d+)-[^.]+\.tmp$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _stale(path: Path, pid: int, grace: float, now: float) -> bool:
    """A leftover: its writer's process is gone (and ``grace`` seconds have passed, for a file
    system shared with other hosts), or it is a day old."""
    try:
        age = now - path.stat().st_mtime
    except OSError:
        return False
    return age > 86400 or (age > grace and not _alive(pid))


def remove_leftovers(folders: list[Path], grace: float = 60.0) -> int:
    """Remove the temporary files that killed writers left in ``folders`` (not recursive);
    returns how many. A live writer's files are never touched."""
    now, removed = time.time(), 0
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            match = _TEMP.match(entry.name)
            if match and entry.is_file() and _stale(Path(entry.path), int(match.group(1)), grace,
                                                     now):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def temp_dir(prefix: str = "merbench") -> Path:
    """A private temporary folder named by this process (``merbench-<pid>-xxxx``); folders of
    killed processes (a kill -9 skips their clean-up) are removed first."""
    base = Path(tempfile.gettempdir())
    now = time.time()
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)-[^.]+$")
    with contextlib.suppress(OSError):
        for entry in os.scandir(base):
            match = pattern.match(entry.name)
            if match and entry.is_dir(follow_symlinks=False) and int(match.group(1)) != os.getpid() \
                    and _stale(Path(entry.path), int(match.group(1)), 0.0, now):
                log.info("removing %s, left by a killed merbench", entry.path)
                shutil.rmtree(entry.path, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-{os.getpid()}-"))


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode())
