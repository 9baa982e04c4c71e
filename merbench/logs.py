"""Progress lines for logs: one line per finished fold and every few epochs, when stderr is not
a terminal (a terminal gets progress bars instead).

The library logs them at INFO on the ``merbench.progress`` logger and configures nothing; the
``merbench`` command shows them (:func:`show_progress_lines`), in its worker processes too.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator

PROGRESS = logging.getLogger("merbench.progress")
_ENV = "MERBENCH_PROGRESS_LINES"  # set by the command, read by spawned worker processes
_context = ""


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (tests swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self):  # type: ignore[no-untyped-def]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # type: ignore[no-untyped-def]
        pass


def show_progress_lines(enabled: bool = True) -> None:
    """Print progress lines (bare messages) on stderr, here and in worker processes started
    later; ``enabled=False`` stops them."""
    ours = [h for h in PROGRESS.handlers if isinstance(h, _StderrHandler)]
    for handler in ours:
        PROGRESS.removeHandler(handler)
    if not enabled:
        os.environ.pop(_ENV, None)
        if ours:  # undo what enabling did, nothing else
            PROGRESS.propagate = True
            PROGRESS.setLevel(logging.NOTSET)
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    PROGRESS.addHandler(handler)
    PROGRESS.setLevel(logging.INFO)
    PROGRESS.propagate = False
    os.environ[_ENV] = "1"


def worker_setup() -> None:
    """In a worker process: show progress lines if the command that started it does."""
    if os.environ.get(_ENV):
        show_progress_lines()


@contextlib.contextmanager
def progress_context(label: str) -> Iterator[None]:
    """What the progress lines logged inside are about (e.g. ``fold s03``)."""
    global _context
    previous, _context = _context, label
    try:
        yield
    finally:
        _context = previous


def context() -> str:
    """The current context as a line prefix (``"fold s03: "``), or ``""``."""
    return f"{_context}: " if _context else ""
