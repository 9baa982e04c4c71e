"""Contract checks for plugin steps and models, in the spirit of scikit-learn's
``check_estimator``: what the runner, the cache and ``merbench train``/``predict`` rely on.

- parameters: ``get_params()`` is plain JSON, rebuilding from it gives the same parameters, every
  reported name is a valid ``--set`` key, and a mistyped keyword is refused;
- models: ``fit``/``predict_proba`` give an (n, classes) array of probabilities (finite, in
  [0, 1], rows summing to 1), the same numbers twice under one seed, and ``get_state`` /
  ``set_state`` survive the checkpoint format (no pickle) with identical predictions;
- steps: a ``name`` and a string ``version``, the same output twice for one clip, and a cache
  key that is stable (twice, and when rebuilt from ``get_params()``).

``merbench check-plugin MODULE_OR_NAME`` runs them on every step and model a plugin registers,
with inputs from its methods on a small synthetic set; the built-in plugins' tests use them.
"""
from __future__ import annotations

import importlib
import io
import json
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .base import accepts_any, jsonable
from .errors import ConfigError, MerbenchError
from .methods import RUNTIME, Method, check_params
from .types import Clip, MethodSpec

#: The synthetic set check inputs come from: 18 clips, faces large enough for dlib.
CHECK_DATA = {"subjects": 3, "clips_per_class": 2, "size": 64, "frames": 20}


@dataclass(frozen=True)
class CheckResult:
    target: str  # "model ststnet", "step face-crop"
    check: str
    ok: bool | None  # None: not applicable (skipped)
    detail: str = ""


class _Checks:
    """Collects results; a check that raises fails with the exception's first line."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.results: list[CheckResult] = []

    def run(self, check: str, fn: Callable[[], str | None]) -> bool:
        try:
            detail = fn()
        except _Skip as skip:
            self.results.append(CheckResult(self.target, check, None, str(skip)))
            return True
        except Exception as exc:  # noqa: BLE001 - every failure is a finding
            first = (str(exc).strip().splitlines() or [""])[0]
            where = traceback.extract_tb(exc.__traceback__)[-1]
            self.results.append(CheckResult(
                self.target, check, False,
                f"{type(exc).__name__}: {first} ({where.filename.rsplit('/', 1)[-1]}:"
                f"{where.lineno})"))
            return False
        self.results.append(CheckResult(self.target, check, True, detail or ""))
        return True


class _Skip(Exception):
    pass


def _factory(kind: str, name_or_factory: Any) -> tuple[str, Any]:
    if isinstance(name_or_factory, str):
        from .plugins import entry

        return name_or_factory, entry(kind, name_or_factory).factory
    return getattr(name_or_factory, "__name__", str(name_or_factory)), name_or_factory


def _check_params(checks: _Checks, factory: Any, params: Mapping[str, Any], prefix: str) -> Any:
    """Shared parameter checks; returns the built object (or None if it cannot be built)."""
    built: list[Any] = []

    def construct() -> str:
        built.append(factory(**params))
        return ""

    if not checks.run("constructs with its defaults" + (" and the given parameters"
                                                           if params else ""), construct):
        return None
    obj = built[0]

    def round_trip() -> str:
        if not hasattr(obj, "get_params"):
            raise AssertionError("no get_params(): subclass merbench.Step / merbench.Model")
        got = obj.get_params()
        as_json = json.loads(json.dumps(jsonable(got)))
        if as_json != jsonable(got):
            raise AssertionError(f"get_params() is not plain JSON: {got!r}")
        again = factory(**{k: v for k, v in got.items()}).get_params()
        if jsonable(again) != jsonable(got):
            changed = sorted(k for k in set(got) | set(again) if jsonable(got.get(k)) !=
                             jsonable(again.get(k)))
            raise AssertionError(f"rebuilding from get_params() changes {', '.join(changed)}")
        for k, v in params.items():
            if k in got and jsonable(got[k]) != jsonable(v):
                raise AssertionError(f"{k}={v!r} was given but get_params() reports "
                                     f"{got[k]!r} (store parameters unchanged)")
        check_params(factory, {k: v for k, v in got.items() if k not in RUNTIME},
                     checks.target, prefix, RUNTIME)
        return f"{len(got)} parameters"

    checks.run("get_params round trip (the --set keys)", round_trip)

    def refuses_typos() -> str:
        if accepts_any(factory):
            raise AssertionError("__init__ takes **kwargs that accept anything: a mistyped "
                                 "--set key would pass silently")
        try:
            factory(**params, zz_not_a_parameter=1)
        except (TypeError, ConfigError):
            return ""
        raise AssertionError("an unknown keyword was accepted")

    checks.run("mistyped parameter refused", refuses_typos)
    return obj


# -- models -----------------------------------------------------------------------------------
def _accepts(factory: Any, name: str) -> bool:
    from .base import init_params

    return accepts_any(factory) or name in init_params(factory)


def _build_model(factory: Any, params: Mapping[str, Any], num_classes: int, seed: int) -> Any:
    kw = dict(params)
    for key, value in (("num_classes", num_classes), ("seed", seed), ("device", "cpu")):
        if _accepts(factory, key) and key not in kw:
            kw[key] = value
    return factory(**kw)


def _proba(model: Any, X: np.ndarray, n_classes: int) -> np.ndarray:
    proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    if proba.shape != (len(X), n_classes):
        raise AssertionError(f"predict_proba gave shape {proba.shape}, expected "
                             f"{(len(X), n_classes)}")
    if not np.isfinite(proba).all():
        raise AssertionError("predict_proba gave NaN or infinity")
    if proba.min() < -1e-6 or proba.max() > 1 + 1e-6:
        raise AssertionError(f"probabilities outside [0, 1]: {proba.min():.3g}..{proba.max():.3g}")
    worst = float(np.abs(proba.sum(axis=1) - 1).max())
    if worst > 1e-4:
        raise AssertionError(f"rows do not sum to 1 (off by up to {worst:.3g})")
    return proba


def check_model(model: Any, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None,
                params: Mapping[str, Any] | None = None, num_classes: int | None = None,
                seed: int = 0) -> list[CheckResult]:
    """Check a model (registered name or factory) on inputs ``X`` with class indices ``y``."""
    name, factory = _factory("model", model)
    params = dict(params or {})
    checks = _Checks(f"model {name}")
    X, y = np.asarray(X), np.asarray(y)
    n_classes = int(num_classes if num_classes is not None else y.max() + 1)
    groups = np.asarray(groups) if groups is not None else None
    if _check_params(checks, factory, params, "model.") is None:
        return checks.results
    fitted: dict[str, Any] = {}

    def fit_predict() -> str:
        m = _build_model(factory, params, n_classes, seed)
        out = m.fit(X, y, groups=groups) if groups is not None else m.fit(X, y)
        if out is not m:
            raise AssertionError("fit() must return self")
        fitted["model"], fitted["proba"] = m, _proba(m, X, n_classes)
        return f"{len(X)} samples, {n_classes} classes"

    if not checks.run("fit / predict_proba: (n, classes) probabilities summing to 1",
                      fit_predict):
        return checks.results

    def deterministic() -> str:
        m = _build_model(factory, params, n_classes, seed)
        m.fit(X, y, groups=groups) if groups is not None else m.fit(X, y)
        again = _proba(m, X, n_classes)
        diff = float(np.abs(again - fitted["proba"]).max())
        if diff > 1e-6:
            raise AssertionError(f"two fits with seed {seed} differ by up to {diff:.3g}")
        return ""

    checks.run(f"deterministic under a seed (two fits, seed {seed})", deterministic)

    def state_round_trip() -> str:
        import torch

        from .deploy import _to_numpy, _to_tensors

        m = fitted["model"]
        try:
            state = m.get_state()
        except ConfigError as exc:
            raise _Skip(f"not deployable ({exc.args[0] if exc.args else exc})") from None
        buf = io.BytesIO()
        torch.save({"state": _to_tensors(state)}, buf)
        buf.seek(0)
        loaded = _to_numpy(torch.load(buf, weights_only=True)["state"])
        fresh = _build_model(factory, params, n_classes, seed)
        fresh.set_state(loaded, tuple(m.input_shape(X)))
        diff = float(np.abs(_proba(fresh, X, n_classes) - fitted["proba"]).max())
        if diff > 1e-5:
            raise AssertionError(f"predictions after set_state differ by up to {diff:.3g}")
        return ""

    checks.run("get_state / set_state round trip (merbench train / predict)", state_round_trip)
    return checks.results


# -- steps ------------------------------------------------------------------------------------
def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Clip) and isinstance(b, Clip):
        return np.array_equal(np.asarray(a.frames), np.asarray(b.frames)) and \
            (a.onset, a.apex, a.offset) == (b.onset, b.apex, b.offset)
    return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape \
        and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


def check_step(step: Any, clip: Any, params: Mapping[str, Any] | None = None
               ) -> list[CheckResult]:
    """Check a preprocessing step (registered name or factory) on one input ``clip``."""
    name, factory = _factory("preprocessor", step)
    params = dict(params or {})
    checks = _Checks(f"step {name}")
    obj = _check_params(checks, factory, params, f"{name}.")
    if obj is None:
        return checks.results

    def identity() -> str:
        if not getattr(obj, "name", ""):
            raise AssertionError("no `name` class attribute")
        if not isinstance(getattr(obj, "version", None), str):
            raise AssertionError("`version` must be a string (bump it when the output changes)")
        return f"version {obj.version}"

    checks.run("name and version", identity)

    def deterministic() -> str:
        first = obj(clip)
        if not isinstance(first, (Clip, np.ndarray)):
            raise AssertionError(f"returned {type(first).__name__}, expected a Clip or ndarray")
        if not _same(first, factory(**params)(clip)):
            raise AssertionError("two calls on the same clip give different outputs")
        out = first if isinstance(first, np.ndarray) else np.asarray(first.frames)
        return f"-> {'Clip' if isinstance(first, Clip) else 'array'} {out.shape} {out.dtype}"

    checks.run("same output twice", deterministic)

    def cache_key() -> str:
        registered = isinstance(step, str)
        if not registered:
            raise _Skip("not registered: the cache key needs a registered name")
        models = [e.name for e in _entries("model")]
        spec = MethodSpec(((name, params),), (models[0], {}))
        key = json.dumps(Method.from_spec("check", spec, {}).step_chain_key(), sort_keys=True)
        again = json.dumps(Method.from_spec("check", spec, {}).step_chain_key(), sort_keys=True)
        rebuilt = MethodSpec(((name, obj.get_params()),), (models[0], {}))
        from_params = json.dumps(Method.from_spec("check", rebuilt, {}).step_chain_key(),
                                 sort_keys=True)
        if not key == again == from_params:
            raise AssertionError("the cache key changes between identical builds")
        return ""

    checks.run("cache key stable", cache_key)
    return checks.results


def _entries(kind: str) -> list[Any]:
    from .plugins import entries

    return entries(kind)


# -- a whole plugin ---------------------------------------------------------------------------
def _registrations(module: Any) -> dict[str, dict[str, Any]]:
    """What a plugin module registers, by kind, by calling its hooks with a recording callback."""
    found: dict[str, dict[str, Any]] = {"dataset": {}, "preprocessor": {}, "model": {},
                                        "method": {}}
    for kind, hook in (("dataset", "register_datasets"), ("preprocessor",
                       "register_preprocessors"), ("model", "register_models"),
                       ("method", "register_methods")):
        fn = getattr(module, hook, None)
        if fn is None:
            continue

        def register(name: str, factory: Any, *args: Any, _kind: str = kind, **kw: Any) -> None:
            found[_kind][name] = factory

        fn(register=register)
    return found


def load_plugin(module_or_name: str) -> tuple[str, Any]:
    """(plugin name, module) for an installed plugin's entry-point name or a module path."""
    from .plugins import plugin_manager

    pm = plugin_manager()
    plugin = pm.get_plugin(module_or_name)
    if plugin is not None:
        return module_or_name, plugin
    try:
        return module_or_name, importlib.import_module(module_or_name)
    except ImportError as exc:
        names = sorted(n for n, _ in pm.list_name_plugin() if not n.isdigit())
        raise ConfigError(f"no plugin or importable module {module_or_name!r} ({exc})",
                          f"installed plugins: {', '.join(names)}") from None


def check_plugin(module_or_name: str, overrides: Mapping[str, Any] | None = None,
                 dataset_params: Mapping[str, Any] | None = None, seed: int = 0,
                 progress: Callable[[str], None] | None = None) -> list[CheckResult]:
    """Check every step and model a plugin registers. Inputs come from the plugin's methods
    run on a small synthetic set (``dataset_params`` change it): each step gets the clip its
    method feeds it, each model its method's preprocessed arrays. ``overrides`` are method-style
    keys (``model.epochs=1``, ``face-crop.fallback='centre'``); deep models train one epoch
    unless told otherwise."""
    from . import dataset as open_dataset
    from .plugins import register_plugin

    name, module = load_plugin(module_or_name)
    found = _registrations(module)
    if not any(found[k] for k in ("preprocessor", "model")):
        raise ConfigError(f"plugin {name!r} registers no step and no model",
                          "check-plugin checks steps and models")
    from .plugins import plugin_manager

    unregister = not plugin_manager().is_registered(module)
    if unregister:  # a module that is not installed as a plugin: registered for the check
        register_plugin(module, name=f"check:{name}")
    try:
        return _check_registered(found, dict(overrides or {}),
                                 {**CHECK_DATA, **dict(dataset_params or {})}, seed,
                                 progress or (lambda s: None), open_dataset)
    finally:
        if unregister:
            from .plugins import unregister_plugin

            unregister_plugin(f"check:{name}")


def _check_registered(found: dict[str, dict[str, Any]], overrides: dict[str, Any],
                      data: dict[str, Any], seed: int, say: Callable[[str], None],
                      open_dataset: Callable[..., Any]) -> list[CheckResult]:
    from .plugins import entries

    results: list[CheckResult] = []
    ds = open_dataset("synthetic", **data)
    samples = ds.labelled("native")
    classes = ds.classes("native")
    methods = [e for e in entries("method")]
    for step_name in sorted(found["preprocessor"]):
        say(f"checking step {step_name}")
        meth = _method_with(methods, lambda spec: step_name in [s for s, _ in spec.steps])
        params = {}
        clip: Any = ds.load(samples[0])
        if meth is not None:
            m = Method.from_spec(meth.name, meth.factory, _for(meth.factory, overrides))
            chain = [s for s, _ in m.steps]
            params = dict(m.steps[chain.index(step_name)][1])
            try:
                for prior in m.build_steps()[:chain.index(step_name)]:
                    clip = prior(clip)
            except MerbenchError as exc:
                results.append(CheckResult(f"step {step_name}", "input from method "
                                           f"{meth.name}", False, str(exc)))
                continue
        else:
            params = {k.split(".", 1)[1]: v for k, v in overrides.items()
                      if k.startswith(step_name + ".")}
        results += check_step(step_name, clip, params)
    for model_name in sorted(found["model"]):
        say(f"checking model {model_name}")
        meth = _method_with(methods, lambda spec: spec.model[0] == model_name and spec.steps)
        if meth is None:
            results.append(CheckResult(f"model {model_name}", "inputs", None,
                                       "no registered method computes its inputs: call "
                                       "merbench.checks.check_model(name, X, y) with your own"))
            continue
        m = Method.from_spec(meth.name, meth.factory, _for(meth.factory, overrides,
                                                           deep=model_name))
        try:
            steps = m.build_steps()
            X = np.stack([m.preprocess(ds.load(s), steps) for s in samples])
        except MerbenchError as exc:
            results.append(CheckResult(f"model {model_name}", f"inputs from method {m.name}",
                                       False, str(exc)))
            continue
        y = np.array([classes.index(s.label) for s in samples])
        groups = np.array([s.group for s in samples])
        results += check_model(model_name, X, y, groups, m.model_params, len(classes), seed)
    return results


def _method_with(methods: Sequence[Any], test: Callable[[MethodSpec], bool]) -> Any:
    return next((e for e in methods if test(e.factory)), None)


def _for(spec: MethodSpec, overrides: Mapping[str, Any], deep: str | None = None
         ) -> dict[str, Any]:
    """The overrides that apply to a method's parts; one epoch for a deep model unless set."""
    from .base import init_params
    from .plugins import entry

    parts = {s for s, _ in spec.steps} | {"model"}
    out = {k: v for k, v in overrides.items() if k.rpartition(".")[0] in parts}
    if deep is not None and "model.epochs" not in out and \
            "epochs" in init_params(entry("model", deep).factory):
        out["model.epochs"] = 1
    return out


def format_results(results: Sequence[CheckResult]) -> str:
    from tabulate import tabulate

    mark = {True: "ok", False: "FAIL", None: "skip"}
    return tabulate([[r.target, r.check, mark[r.ok], r.detail] for r in results],
                    headers=["target", "check", "", "detail"], tablefmt="simple",
                    disable_numparse=True)


__all__ = ["CHECK_DATA", "CheckResult", "check_model", "check_plugin", "check_step",
           "format_results", "load_plugin"]
