"""What a run records about where it ran: versions, the git commit, the device, per-fold seeds.

Kept apart from the runner so every executor (serial, processes, Ray) derives per-fold seeds the
same way and the run identity stays one function (:func:`merbench.runner.run_key`).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np


def fold_seed(seed: int, fold_name: str) -> int:
    """Per-fold seed derived from the run seed and the fold (stable across runs and machines)."""
    digest = hashlib.sha256(f"{seed}:{fold_name}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def versions() -> dict[str, Any]:
    from . import __version__
    from .plugins import plugin_versions

    out: dict[str, Any] = {"merbench": __version__, "python": platform.python_version(),
                           "numpy": np.__version__, "plugins": plugin_versions()}
    for package in ("torch", "scikit-learn", "opencv-contrib-python-headless"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    """The commit of the merbench checkout, when it runs from one."""
    here = Path(__file__).resolve().parent.parent
    try:
        top = subprocess.run(["git", "-C", str(here), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, timeout=5)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != here:
            return None  # installed inside someone else's repository: not our commit
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def describe_device(device: str) -> str:
    """The device a run's models use; ``"cpu"`` does not import torch (seconds per command for
    a method without a deep model, which runs on the CPU whatever ``--device`` says)."""
    if device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


# -- code fingerprint -------------------------------------------------------------------------
# What ran is part of a run's identity: an edited plugin (a Dropout added to a model) is a new
# run, never a stored result of the old code. Hashing a few dozen source files costs a few ms;
# digests are kept per process and recomputed when a file's size or mtime changes.
_FILE_DIGESTS: dict[str, tuple[tuple[int, int], str, tuple[str, ...]]] = {}


@functools.cache
def _library_dirs() -> tuple[Path, ...]:
    """Where the standard library and installed third-party packages live (their code is
    covered by the versions a run records)."""
    import site
    import sysconfig

    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.update(site.getsitepackages() if hasattr(site, "getsitepackages") else ())
    return tuple(Path(p).resolve() for p in paths if p)


def _module_file(name: str) -> Path | None:
    import sys

    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    parent = sys.modules.get(name.rpartition(".")[0])
    if module is None and parent is not None and not hasattr(parent, "__path__"):
        return None  # `from package.module import name`: an attribute, not a module
    if path is None:
        import importlib.util

        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
        path = spec.origin if spec is not None else None
    if not path or not str(path).endswith(".py"):
        return None
    return Path(path).resolve()


_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#]*)", re.M)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([^\n#]+)", re.M)


def _imports(source: str, name: str, is_package: bool) -> set[str]:
    """Absolute names a module's source imports, lazy imports inside functions included
    (a line scan: a docstring that looks like an import only adds a module to hash)."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for match in _IMPORT.finditer(source):
        found.update(part.split(" as ")[0].strip() for part in match.group(1).split(","))
    for base, names in _FROM.findall(source):
        level = len(base) - len(base.lstrip("."))
        base = base.lstrip(".")
        if level:
            parts = package.split(".")
            parent = ".".join(parts[:len(parts) - level + 1])
            base = f"{parent}.{base}" if base else parent
        found.add(base)
        for item in names.strip("()").replace("\n", " ").split(","):
            item = item.split(" as ")[0].strip()
            if item.isidentifier():
                found.add(f"{base}.{item}")  # `from package import module`
    return found


def _file_digest(name: str, path: Path, scan: bool = True) -> tuple[str, tuple[str, ...]]:
    """(sha256 of the source, modules of the same top-level package it imports), cached."""
    st = path.stat()
    stamp = (st.st_size, st.st_mtime_ns)
    cached = _FILE_DIGESTS.get(str(path))
    if cached is not None and cached[0] == stamp:
        return cached[1], cached[2]
    source = path.read_bytes()
    top = name.split(".")[0]
    own: tuple[str, ...] = ()
    if scan:
        imports = _imports(source.decode("utf-8", "replace"), name, path.name == "__init__.py")
        own = tuple(sorted(m for m in imports if m.split(".")[0] == top and m != name))
    digest = hashlib.sha256(source).hexdigest()[:16]
    _FILE_DIGESTS[str(path)] = (stamp, digest, own)
    return digest, own


def _package_digest(package: str) -> str:
    """One digest over every .py file of an installed package (merbench itself)."""
    import importlib

    root = Path(importlib.import_module(package).__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest, _ = _file_digest(f"{package}.{path.stem}", path, scan=False)
        h.update(f"{path.relative_to(root)}:{digest}\n".encode())
    return h.hexdigest()[:16]


def code_fingerprint(objects: Any) -> dict[str, str]:
    """Digests of the source that computes a run: merbench itself (every file of the package),
    and for each object (step, model and dataset classes or factory functions) the modules
    that define it and its base classes, plus the modules of the same package they import
    (transitively). Standard-library and installed third-party code is left to the recorded
    versions; the plugin's own module always counts, wherever it is installed."""
    import inspect
    import sys

    libraries = _library_dirs()
    roots: set[str] = set()
    seeds: list[str] = []
    for obj in objects:
        cls = obj if inspect.isclass(obj) else type(obj) if not inspect.isroutine(obj) else None
        own = getattr(obj, "__module__", None) if cls is None else cls.__module__
        if own:
            roots.add(own)
            seeds.append(own)
        for klass in (cls.__mro__ if cls is not None else ()):
            if klass.__module__ not in ("builtins", None):
                seeds.append(klass.__module__)
    out: dict[str, str] = {"merbench": _package_digest("merbench")}
    todo, seen = list(dict.fromkeys(seeds)), set()
    while todo:
        name = todo.pop()
        if name in seen or name == "__main__" and name not in roots:
            continue
        seen.add(name)
        top = name.split(".")[0]
        if top == "merbench" or top in sys.stdlib_module_names:
            continue
        path = _module_file(name)
        if path is None:
            continue
        if name not in roots and any(path.is_relative_to(d) for d in libraries) and \
                top not in {r.split(".")[0] for r in roots}:
            continue  # an installed library: its version is recorded
        out[name], imported = _file_digest(name, path)
        todo.extend(imported)
    return dict(sorted(out.items()))


def code_digest(fingerprint: dict[str, str]) -> str:
    """A short digest of a whole code fingerprint, for messages."""
    import json

    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]
