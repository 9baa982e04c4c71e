"""The plugin manager: loads the ``merbench`` entry-point group and keeps the registries.

Built-in plugins are registered through the very same entry points as third-party ones
(see pyproject.toml), so nothing here knows any dataset, step, model or method.
"""
from __future__ import annotations

import importlib.metadata
import logging
import sys
import threading
import types
import warnings
from dataclasses import dataclass
from typing import Any

import pluggy

from . import hookspecs
from .errors import UnknownNameError

log = logging.getLogger(__name__)

KINDS = ("dataset", "preprocessor", "model", "method")
_HOOKS = {"dataset": "register_datasets", "preprocessor": "register_preprocessors",
          "model": "register_models", "method": "register_methods"}


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    factory: Any  # a callable for datasets/steps/models, a MethodSpec for methods
    description: str
    distribution: str
    version: str
    plugin: str
    ids: Any = None  # datasets: their IdSpelling (merbench.ids)
    reads_inputs: bool = False  # datasets: reads precomputed inputs from an index (--inputs)


class PluginWarning(UserWarning):
    """A plugin failed to load; everything else keeps working."""


_lock = threading.Lock()
_pm: pluggy.PluginManager | None = None
_registry: dict[str, dict[str, Entry]] | None = None


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0].strip() if (text or "").strip() else ""


def _load_entry_points(pm: pluggy.PluginManager) -> dict[str, tuple[str, str]]:
    """Register every entry point of group ``merbench``; a broken one warns and is skipped."""
    origin: dict[str, tuple[str, str]] = {}
    named: dict[Any, tuple[str, str]] = {}  # each distribution's metadata is parsed once
    for ep in sorted(importlib.metadata.entry_points(group="merbench"), key=lambda e: e.name):
        where = getattr(ep.dist, "_path", id(ep.dist))
        if where not in named:
            named[where] = (ep.dist.name, ep.dist.version) if ep.dist is not None else ("?", "?")
        dist, version = named[where]
        if pm.has_plugin(ep.name):
            continue
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:  # noqa: BLE001 - any import failure must not break the rest
            warnings.warn(f"merbench plugin {ep.name!r} (from {dist}) failed to load and is "
                          f"skipped: {type(exc).__name__}: {exc}", PluginWarning, stacklevel=2)
            continue
        origin[ep.name] = (dist, version)
    return origin


def plugin_manager() -> pluggy.PluginManager:
    global _pm
    with _lock:
        if _pm is None:
            pm = pluggy.PluginManager("merbench")
            pm.add_hookspecs(hookspecs)
            pm._merbench_origin = _load_entry_points(pm)  # type: ignore[attr-defined]
            _pm = pm
        return _pm


def _build() -> dict[str, dict[str, Entry]]:
    pm = plugin_manager()
    origin: dict[str, tuple[str, str]] = pm._merbench_origin  # type: ignore[attr-defined]
    registry: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
    for kind, hook_name in _HOOKS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            dist, version = origin.get(impl.plugin_name, ("(registered at run time)", "?"))

            def register(name: str, factory: Any, description: str | None = None,
                         ids: Any = None, inputs: bool = False, _kind: str = kind,
                         _impl: Any = impl,
                         _dist: str = dist, _version: str = version) -> None:
                if name in registry[_kind]:
                    other = registry[_kind][name]
                    warnings.warn(f"{_kind} {name!r} from plugin {_impl.plugin_name!r} replaces the "
                                  f"one from {other.plugin!r}", PluginWarning, stacklevel=2)
                desc = description or _first_line(getattr(factory, "description", "")) \
                    or _first_line(getattr(factory, "__doc__", ""))
                if (ids is not None or inputs) and _kind != "dataset":
                    raise TypeError(f"{_kind} {name!r}: only datasets declare ids or inputs")
                registry[_kind][name] = Entry(_kind, name, factory, desc, _dist, _version,
                                              _impl.plugin_name, ids, inputs)

            try:
                impl.function(register=register)
            except Exception as exc:  # noqa: BLE001
                warnings.warn(f"merbench plugin {impl.plugin_name!r} failed in {hook_name} and is "
                              f"skipped: {type(exc).__name__}: {exc}", PluginWarning, stacklevel=2)
    return registry


def registry() -> dict[str, dict[str, Entry]]:
    global _registry
    if _registry is None:
        reg = _build()
        with _lock:
            _registry = reg
    return _registry


_runtime: dict[str, str] = {}  # plugin name -> importable module, for worker processes


def register_plugin(module: Any, name: str | None = None) -> None:
    """Register a plugin object at run time (tests, notebooks); rebuilds the registries.

    Worker processes (``--workers``) re-register it by importing its module, so a plugin that
    must work there is an importable module, not an object made in ``__main__``."""
    global _registry
    pm = plugin_manager()
    if name is not None and pm.get_plugin(name) is not None:
        return  # already registered (e.g. a worker re-registering)
    registered = pm.register(module, name=name)
    modname = getattr(module, "__name__", "")
    if isinstance(module, types.ModuleType) and modname not in ("", "__main__") and \
            modname in sys.modules:
        _runtime[registered or modname] = modname
    _registry = None


def runtime_plugin_modules() -> dict[str, str]:
    return dict(_runtime)


def reaches_workers(kind: str, name: str) -> bool:
    """Whether worker processes know this entry: its plugin is installed (an entry point) or
    was registered at run time from an importable module (see :func:`register_plugin`)."""
    plugin = entry(kind, name).plugin
    origin: dict[str, Any] = plugin_manager()._merbench_origin  # type: ignore[attr-defined]
    return plugin in origin or plugin in _runtime


def unregister_plugin(name: str) -> None:
    global _registry
    pm = plugin_manager()
    plugin = pm.get_plugin(name)
    if plugin is not None:
        pm.unregister(plugin)
    _runtime.pop(name, None)
    _registry = None


def entry(kind: str, name: str) -> Entry:
    if kind not in KINDS:
        raise UnknownNameError(f"unknown kind {kind!r}", f"use one of {', '.join(KINDS)}")
    table = registry()[kind]
    if name not in table:
        import difflib

        close = difflib.get_close_matches(name, table, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see `merbench list " + kind + "`"
        raise UnknownNameError(f"unknown {kind} {name!r}", hint)
    return table[name]


def entries(kind: str | None = None) -> list[Entry]:
    kinds = KINDS if kind is None else (kind,)
    out: list[Entry] = []
    for k in kinds:
        if k not in KINDS:
            raise UnknownNameError(f"unknown kind {k!r}", f"use one of {', '.join(KINDS)}")
        out.extend(sorted(registry()[k].values(), key=lambda e: e.name))
    return out


def call_command_hooks(cli: Any) -> None:
    plugin_manager().hook.register_commands(cli=cli)


def plugin_versions() -> dict[str, str]:
    """Distribution versions of every loaded plugin, for run records."""
    pm = plugin_manager()
    origin: dict[str, tuple[str, str]] = pm._merbench_origin  # type: ignore[attr-defined]
    return {name: f"{dist} {ver}" for name, (dist, ver) in sorted(origin.items())}

