"""One error family for everything a user can get wrong.

Every error carries the problem and, where we know it, the fix; the CLI prints
``str(error)`` as one line and exits non-zero (``--debug`` shows the traceback).
"""
from __future__ import annotations


class MerbenchError(Exception):
    """Base of every error merbench raises on purpose."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem} ({fix})")


class UnknownNameError(MerbenchError, KeyError):
    """A plugin, protocol or label-space name that is not registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return Exception.__str__(self)


class ConfigError(MerbenchError, ValueError):
    """Bad parameters: a --set key that does not exist, a value of the wrong type."""


class DataError(MerbenchError):
    """Missing or malformed data: a root, an annotation file, a frame, a sample."""


class ProtocolError(MerbenchError):
    """A protocol file or a fold that cannot be used as written."""


class PredictionsError(MerbenchError):
    """A predictions file that cannot be scored as it is."""


class CheckpointError(MerbenchError):
    """A model checkpoint that does not fit the model or method asked for."""
