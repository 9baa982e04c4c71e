"""Small base classes shared by steps and models: parameters live in ``__init__`` (sklearn style)."""
from __future__ import annotations

import inspect
from typing import Any

import numpy as np


def init_params(factory: Any) -> dict[str, inspect.Parameter]:
    """The keyword parameters a factory (class or function) accepts, by name."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    sig = inspect.signature(target)
    return {n: p for n, p in sig.parameters.items() if n != "self" and p.kind in
            (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def accepts_any(factory: Any) -> bool:
    target = factory.__init__ if inspect.isclass(factory) else factory
    return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(target).parameters.values())


def jsonable(value: Any) -> Any:
    """Parameters as plain JSON values (tuples become lists, numpy scalars become numbers)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class Configurable:
    """Anything whose parameters are exactly its ``__init__`` arguments, stored as attributes."""

    def get_params(self) -> dict[str, Any]:
        return {name: jsonable(getattr(self, name)) for name in init_params(type(self))
                if hasattr(self, name)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


class Step(Configurable):
    """A preprocessing step: ``step(clip)`` returns a Clip or an ndarray.

    ``version`` is part of the cache key: bump it whenever the output for the same input
    and parameters changes.
    """

    name: str = ""
    version: str = "1"

    def __call__(self, clip: Any) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


class Model(Configurable):
    """A classifier over preprocessed arrays: ``fit(X, y)`` then ``predict_proba(X)``.

    ``y`` holds class indices 0..num_classes-1. ``fit`` may take ``groups`` (the subject of
    each training sample) to carve a subject-disjoint validation split; it never sees test data.
    """

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> "Model":
        raise NotImplementedError  # pragma: no cover - interface

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover - interface

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.predict_proba(X)).argmax(axis=1)

    def input_shape(self, X: np.ndarray) -> tuple[int, ...]:
        """The per-sample shape the fitted state is built for (what ``set_state`` needs)."""
        return tuple(np.shape(X)[1:])

    def get_state(self) -> dict[str, Any]:
        """The fitted state as numpy arrays and plain values (saved without pickle by
        ``merbench train``); models that can be deployed override this and ``set_state``."""
        from .errors import ConfigError

        raise ConfigError(f"model {type(self).__name__} cannot be saved for deployment",
                          "its plugin does not implement get_state/set_state")

    def set_state(self, state: dict[str, Any], input_shape: tuple[int, ...]) -> "Model":
        from .errors import ConfigError

        raise ConfigError(f"model {type(self).__name__} cannot be loaded from a checkpoint")
