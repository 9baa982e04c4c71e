"""Small base classes shared by steps and models: parameters live in ``__init__`` (sklearn style)."""
from __future__ import annotations

import inspect
from typing import Any, ClassVar, Mapping

import numpy as np


_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _chain(cls: type) -> tuple[dict[str, inspect.Parameter], bool]:
    """Parameters along the MRO: a class's own ``__init__`` parameters, then, while an
    ``__init__`` passes ``**kwargs`` on, its parents'. A class that declares what its
    ``**kwargs`` take (``keyword_params``) closes the chain. Returns (parameters, open) where
    ``open`` means some ``**kwargs`` accept anything."""
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if klass is object:
            return params, False
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        sig = inspect.signature(init)
        for name, p in sig.parameters.items():
            if name != "self" and p.kind in _NAMED:
                params.setdefault(name, p)
        if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            return params, False
        declared = klass.__dict__.get("keyword_params")
        if declared is not None:
            for name, p in declared.items():
                params.setdefault(name, p)
            return params, False
    return params, True  # pragma: no cover - the MRO always ends with object


def init_params(factory: Any) -> dict[str, inspect.Parameter]:
    """The keyword parameters a factory (class or function) accepts, by name, with their
    effective defaults (a class's ``defaults`` replace inherited ones)."""
    if not inspect.isclass(factory):
        return {n: p for n, p in inspect.signature(factory).parameters.items() if p.kind in _NAMED}
    params, _ = _chain(factory)
    defaults = merged_defaults(factory)
    return {n: p.replace(default=defaults[n]) if n in defaults else p for n, p in params.items()}


def merged_defaults(cls: type) -> dict[str, Any]:
    """``defaults`` class attributes along the MRO, the subclass's winning."""
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        out.update(klass.__dict__.get("defaults", {}))
    return out


def accepts_any(factory: Any) -> bool:
    """True when the factory takes arbitrary keyword arguments (so no name can be checked)."""
    if inspect.isclass(factory):
        return _chain(factory)[1]
    return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values())


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
    """Anything whose parameters are exactly its ``__init__`` arguments (inherited ones
    included, see :func:`init_params`), stored as attributes.

    ``keyword_params`` (name -> inspect.Parameter) declares what a class's ``**kwargs`` accept;
    ``defaults`` (name -> value) lets a subclass change the default of such an inherited
    parameter without re-declaring it."""

    keyword_params: ClassVar[Mapping[str, inspect.Parameter] | None] = None
    defaults: ClassVar[Mapping[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("defaults", {})
        if declared:
            open_ = _chain(cls)[1]
            inherited = {n for k in cls.__mro__ for n in (k.__dict__.get("keyword_params") or {})}
            wrong = [n for n in declared if n not in inherited and not open_]
            if wrong:
                raise TypeError(f"{cls.__name__}.defaults names {wrong[0]!r}, which is not a "
                                f"setting it inherits; inherited settings: "
                                f"{', '.join(sorted(inherited)) or 'none'}")

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

    ``parallel_folds``: whether folds of this model gain from running side by side in worker
    processes with one thread each (``--workers auto``): true for small deep models, whose
    batches are too small to keep several threads busy; false for cheap models (a worker pool
    costs more than it saves) and big ones (one process with every core's threads, one copy
    in memory).
    """

    parallel_folds: ClassVar[bool] = False

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> "Model":
        raise NotImplementedError  # pragma: no cover - interface

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError  # pragma: no cover - interface

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.predict_proba(X)).argmax(axis=1)

    def validate(self) -> None:
        """Check parameter values that ``__init__`` leaves to ``fit`` (e.g. those of a wrapped
        scikit-learn estimator); called once when a method is resolved, before any work."""

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
