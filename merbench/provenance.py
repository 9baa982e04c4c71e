"""What a run records about where it ran: versions, the git commit, the device, per-fold seeds.

Kept apart from the runner so every executor (serial, processes, Ray) derives per-fold seeds the
same way and the run identity stays one function (:func:`merbench.runner.run_key`).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
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
