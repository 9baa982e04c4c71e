"""A run-time plugin for the executor tests, importable by worker processes (Ray workers import
it by name, as they would a user's plugin module): a logistic regression on apex differences
that logs every fit to a folder and, when told, kills its own worker process (``kill -9``) or
raises a user error while fitting one fold. A fold is named by its test subject, the one
subject missing from the training groups."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from merbench import MethodSpec, hookimpl
from merbench.errors import DataError
from merbench_plugins.baseline import ApexDiff, LogReg

SUBJECTS = ("synthetic/s01", "synthetic/s02", "synthetic/s03", "synthetic/s04")


class LoggedDiff(ApexDiff):
    """Apex differences that leave a file ``step.<pid>.<ns>`` in ``log_dir`` per sample."""

    name = "probe-diff"

    def __init__(self, size: int | None = 16, log_dir: str = "") -> None:
        super().__init__(size)
        self.log_dir = log_dir

    def __call__(self, clip: Any) -> np.ndarray:
        if self.log_dir:
            (Path(self.log_dir) / f"step.{os.getpid()}.{time.time_ns()}").write_text("")
        return super().__call__(clip)


class Probe(LogReg):
    """``kill``: the fold (test subject) whose first fit kills its worker (every fit with
    ``kill_always``); ``fail``: the fold whose fit raises a DataError (only while the file
    ``fail_while`` exists, when given); ``log_dir``: one file per fit, named
    ``<fold>.<pid>.<ns>``."""

    def __init__(self, num_classes: int = 3, C: float = 0.1, max_iter: int = 1000,
                 class_weight: str | None = "balanced", seed: int = 0, log_dir: str = "",
                 kill: str = "", kill_always: bool = False, fail: str = "",
                 fail_while: str = "") -> None:
        super().__init__(num_classes, C, max_iter, class_weight, seed)
        self.log_dir = log_dir
        self.kill = kill
        self.kill_always = kill_always
        self.fail = fail
        self.fail_while = fail_while

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> "Probe":
        (fold,) = set(SUBJECTS) - set(np.asarray(groups).tolist())
        if self.log_dir:
            name = f"{fold.replace('/', '_')}.{os.getpid()}.{time.time_ns()}"
            (Path(self.log_dir) / name).write_text("fit")
        if self.fail == fold and (not self.fail_while or Path(self.fail_while).exists()):
            raise DataError(f"probe: bad data for {fold}", "fix the probe")
        if self.kill == fold:
            marker = Path(self.log_dir) / f"killed_{fold.replace('/', '_')}"
            if self.kill_always or not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
        return super().fit(X, y, groups)


def fits(log_dir: str | Path) -> dict[str, list[int]]:
    """Fold -> the pids that fitted it, in order."""
    out: dict[str, list[tuple[int, int]]] = {}
    for path in Path(log_dir).iterdir():
        if path.name.startswith("synthetic_"):
            fold, pid, ns = path.name.split(".")
            out.setdefault(fold.replace("_", "/"), []).append((int(ns), int(pid)))
    return {fold: [pid for _, pid in sorted(v)] for fold, v in out.items()}


def inspect_task(X: np.ndarray, job: Any) -> dict[str, Any]:
    """What a fold task sees: its array (read-only view of the object store?), its threads,
    its GPUs."""
    import ray
    import torch

    start = time.time()
    time.sleep(1.0)
    return {"writeable": X.flags.writeable, "owndata": X.flags.owndata,
            "test_sum": float(np.asarray(X[job.test_idx]).sum()),
            "threads": torch.get_num_threads(), "gpus": list(ray.get_gpu_ids()),
            "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "pid": os.getpid(), "start": start, "end": time.time()}


@hookimpl
def register_preprocessors(register):  # type: ignore[no-untyped-def]
    register("probe-diff", LoggedDiff)


@hookimpl
def register_models(register):  # type: ignore[no-untyped-def]
    register("ray-probe", Probe)


@hookimpl
def register_methods(register):  # type: ignore[no-untyped-def]
    register("probe-logreg", MethodSpec((("probe-diff", {"size": 16}),), ("ray-probe", {})))
