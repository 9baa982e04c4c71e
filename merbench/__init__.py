"""merbench: one audited protocol for micro-expression recognition benchmarks.

Public surface (see DESIGN.md)::

    merbench.names(kind)
    merbench.dataset(name, root=..., **params)
    merbench.Clip.from_array(frames, onset=0, apex=None, offset=None)
    merbench.preprocessor(name, **params)
    merbench.model(name, **params)
    merbench.method(name, overrides={"model.epochs": 5})
    merbench.protocol(name)
    merbench.run(protocol=..., method=..., data_roots={...}, seed=0)
    merbench.metrics.score(y_true, y_pred, labels=[...])
"""
from __future__ import annotations

from typing import Any

from . import errors
from .base import Model, Step
from .datasets import Dataset
from .errors import MerbenchError
from .hookspecs import hookimpl
from .types import Clip, Fold, MethodSpec, Sample

__version__ = "0.1.0"


def names(kind: str) -> list[str]:
    """Registered names of one kind: dataset, preprocessor, model, method or protocol."""
    if kind == "protocol":
        from .protocols import protocol_names

        return protocol_names()
    from .plugins import entries

    return [e.name for e in entries(kind)]


def _build(kind: str, name: str, params: dict[str, Any]) -> Any:
    from .plugins import entry
    from .methods import check_params, config_errors

    factory = entry(kind, name).factory
    check_params(factory, params, f"{kind} {name!r}")
    with config_errors(f"{kind} {name!r}", {k: v for k, v in params.items() if k != "root"},
                       "fix the parameter values"):
        return factory(**params)


def dataset(name: str, root: str | None = None, **params: Any) -> Dataset:
    """Open a registered dataset (``root`` is the release folder, where one is needed)."""
    if root is not None:
        params["root"] = root
    return _build("dataset", name, params)


def preprocessor(name: str, **params: Any) -> Step:
    return _build("preprocessor", name, params)


def model(name: str, **params: Any) -> Model:
    return _build("model", name, params)


def method(name: str, overrides: dict[str, Any] | None = None) -> Any:
    """A named recipe with optional ``{"step.param": value, "model.param": value}`` overrides."""
    from .methods import Method

    return Method.named(name, overrides or {})


def protocol(name: str) -> Any:
    from .protocols import load_protocol

    return load_protocol(name)


def run(**kwargs: Any) -> Any:
    """Run a protocol with a method; see :func:`merbench.runner.run`."""
    from .runner import run as _run

    return _run(**kwargs)


def run_seeds(**kwargs: Any) -> Any:
    """Several seeds of one run, as a list; see :func:`merbench.runner.run_seeds`."""
    from .runner import run_seeds as _run_seeds

    return _run_seeds(**kwargs)


def __getattr__(name: str) -> Any:  # lazy submodules: merbench.metrics, merbench.store, ...
    import importlib

    if name in {"metrics", "protocols", "runner", "store", "leaderboard", "cache", "video",
                "training", "plugins", "methods", "executors", "preprocess", "provenance"}:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(name)


__all__ = ["Clip", "Dataset", "Fold", "MerbenchError", "MethodSpec", "Model", "Sample", "Step",
           "dataset", "errors", "hookimpl", "method", "model", "names", "preprocessor",
           "protocol", "run", "run_seeds"]
