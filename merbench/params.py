"""What a step, model, dataset or method takes: every parameter with its default, type and
one-line meaning, for ``merbench show`` and ``merbench list --verbose``.

Meanings come from ``:param name: meaning`` lines in the factory's docstring (the class, its
``__init__`` or a base class: the first that documents a name wins) and, for deep models, from
the shared training settings (:data:`merbench.training.TRAINING_SETTINGS`).
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .base import init_params, jsonable
from .methods import RUNTIME

_PARAM = re.compile(r"^[ \t]*:param[ \t]+(?:[^:\n]*[ \t])?(\w+):[ \t]*(.*(?:\n(?![ \t]*:)"
                    r"[ \t]*\S.*)*)", re.M)

#: What the runner supplies per fold (never a ``--set`` key).
RUNTIME_HELP = {"num_classes": "the protocol's classes", "seed": "--seed and the fold",
                "device": "--device", "train_state": "the run's training-state file",
                "progress": "progress bars on a terminal"}


@dataclass(frozen=True)
class ParamInfo:
    name: str
    default: Any  # inspect.Parameter.empty when required
    type: str
    help: str

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


def param_docs(factory: Any) -> dict[str, str]:
    """``:param name: meaning`` lines of the factory's docstrings (one line each)."""
    docs: dict[str, str] = {}
    sources = [factory]
    if inspect.isclass(factory):
        sources = [k for klass in factory.__mro__ if klass is not object
                   for k in (klass, klass.__dict__.get("__init__"))]
    for obj in sources:
        doc = inspect.getdoc(obj) if obj is not None and getattr(obj, "__doc__", None) else ""
        for name, text in _PARAM.findall(doc or ""):
            docs.setdefault(name, " ".join(text.split()))
    if inspect.isclass(factory):
        from .training import TRAINING_SETTINGS, TorchClassifier

        if issubclass(factory, TorchClassifier):
            for name, setting in TRAINING_SETTINGS.items():
                docs.setdefault(name, setting.help)
    return docs


def _type_name(p: inspect.Parameter) -> str:
    ann = p.annotation
    if ann is inspect.Parameter.empty:
        return "" if p.default in (None, inspect.Parameter.empty) else type(p.default).__name__
    if isinstance(ann, str):
        return ann
    if isinstance(ann, tuple):
        return " | ".join(getattr(a, "__name__", str(a)) for a in ann)
    return getattr(ann, "__name__", str(ann))


def describe_params(factory: Any, runtime: bool = False) -> list[ParamInfo]:
    """Every keyword parameter of ``factory`` with its effective default, type and meaning;
    runner-supplied ones (num_classes, seed, ...) only when ``runtime``."""
    docs = param_docs(factory)
    return [ParamInfo(name, p.default, _type_name(p), docs.get(name, ""))
            for name, p in init_params(factory).items()
            if name not in ("root", "self") and (runtime or name not in RUNTIME)]


def format_value(value: Any) -> str:
    """A value as a user types it after ``--set key=``."""
    if value is inspect.Parameter.empty:
        return "(required)"
    value = jsonable(value)
    if isinstance(value, list):
        return "(" + ", ".join(format_value(v) for v in value) + ("," if len(value) == 1 else "") \
            + ")"
    return repr(value) if isinstance(value, str) else str(value)


def method_parts(method: Any) -> list[tuple[str, str, Any, list[tuple[str, Any, ParamInfo]]]]:
    """(kind, name, factory, [(--set key, value in this method, info)]) per step and the model
    of a resolved :class:`merbench.methods.Method`."""
    from .plugins import entry

    values: Mapping[str, Any] = method.params()
    parts = []
    for name, _ in method.steps:
        factory = entry("preprocessor", name).factory
        rows = [(f"{name}.{p.name}", values.get(f"{name}.{p.name}", p.default), p)
                for p in describe_params(factory)]
        parts.append(("step", name, factory, rows))
    factory = entry("model", method.model_name).factory
    rows = [(f"model.{p.name}", values.get(f"model.{p.name}", p.default), p)
            for p in describe_params(factory)]
    parts.append(("model", method.model_name, factory, rows))
    return parts
