"""Where tasks run: in this process, or in local worker processes (same results everywhere).

An executor's :meth:`Executor.map` calls ``fn(*task)`` for every task and yields ``(task
index, result)`` as tasks finish, so the driver stores each finished fold at once and stays the
only writer of the results store (an interrupted run keeps what finished). Large arrays every
task of a run reads (the preprocessed inputs) go through :meth:`Executor.share` once; tasks
carry the returned handle, which the worker resolves: the array itself in-process, a temporary
.npy that workers memory-map for local processes. A cluster executor implements the same
methods (``share``, ``map``, ``release``, ``close``).
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .errors import CheckpointError, ConfigError
from .methods import Method
from .store import now
from .types import Fold


@dataclass(frozen=True)
class FoldJob:
    fold: Fold
    seed: int
    train_idx: np.ndarray
    test_idx: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    checkpoint: str | None  # published weights to evaluate instead of training (--checkpoints)
    train_state: str | None = None  # where a deep model keeps its resumable training state


def run_fold(X: np.ndarray, method: Method, job: FoldJob, num_classes: int, device: str,
             progress: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit on the fold's training samples only, predict its test samples -> (proba, info)."""
    from .training import seed_everything

    started = time.time()
    started_at = now()
    seed_everything(job.seed) if "torch" in sys.modules else np.random.seed(job.seed)
    model = method.build_model(num_classes=num_classes, seed=job.seed, device=device,
                               progress=progress, train_state=job.train_state)
    info: dict[str, Any] = {"n_train": int(len(job.train_idx)), "n_test": int(len(job.test_idx))}
    X_test = np.asarray(X[job.test_idx])
    if job.checkpoint is not None:
        if not hasattr(model, "load_weights"):
            raise CheckpointError(f"model {method.model_name!r} cannot load checkpoints")
        model.load_weights(job.checkpoint, model.input_shape(X_test))
        info.update(trained=False, checkpoint=job.checkpoint)
    else:
        model.fit(np.asarray(X[job.train_idx]), job.y[job.train_idx],
                  groups=job.groups[job.train_idx])
        info["trained"] = True
    proba = np.asarray(model.predict_proba(X_test), dtype=np.float64)
    if proba.shape != (len(job.test_idx), num_classes):
        raise ConfigError(f"model {method.model_name!r} returned probabilities of shape "
                          f"{proba.shape}, expected {(len(job.test_idx), num_classes)}")
    if hasattr(model, "init_"):
        info["init"] = model.init_
    if getattr(model, "history_", None):
        info["final_loss"] = model.history_[-1].get("loss")
        info["history"] = list(model.history_)
    if hasattr(model, "fold_artifacts"):  # arrays the driver stores beside the fold
        info["_artifacts"] = {k: np.asarray(v) for k, v in model.fold_artifacts(X_test).items()}
    info["seconds"] = round(time.time() - started, 3)
    info["started"] = started_at
    return proba, info


class Executor:
    """Runs tasks in this process, one after the other."""

    name = "serial"
    workers = 1

    def share(self, array: np.ndarray) -> Any:
        """A handle on ``array`` that tasks carry instead of the array."""
        return array

    def release(self, handle: Any) -> None:
        """The tasks that read ``handle`` are done."""

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]]
            ) -> Iterator[tuple[int, Any]]:
        for index, task in enumerate(tasks):
            yield index, fn(*task)

    def close(self) -> None:
        """Release workers and temporary files (an executor may serve several runs)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


SerialExecutor = Executor


@dataclass(frozen=True)
class SharedArray:
    """A worker's handle on the shared array: a .npy file it memory-maps."""

    path: str


_WORKER_X: dict[str, np.ndarray] = {}


def _resolve(arg: Any) -> Any:
    if isinstance(arg, SharedArray):
        if arg.path not in _WORKER_X:
            if len(_WORKER_X) > 4:
                _WORKER_X.clear()
            _WORKER_X[arg.path] = np.load(arg.path, mmap_mode="r")
        return _WORKER_X[arg.path]
    return arg


def _call(fn: Callable[..., Any], task: tuple[Any, ...]) -> Any:
    return fn(*(_resolve(a) for a in task))


def _worker_init(threads: int, runtime_plugins: Mapping[str, str]) -> None:
    import importlib

    from .logs import worker_setup
    from .plugins import register_plugin

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    worker_setup()
    for name, module in runtime_plugins.items():  # plugins registered at run time, by import
        register_plugin(importlib.import_module(module), name=name)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover
        pass


class ProcessExecutor(Executor):
    """Local worker processes (spawned, so CUDA and torch threads start clean), created on
    first use and reused for every run the executor serves."""

    name = "processes"

    def __init__(self, workers: int) -> None:
        if workers < 2:
            raise ConfigError(f"a process executor needs at least 2 workers, got {workers}")
        self.workers = workers
        self._pool: cf.ProcessPoolExecutor | None = None
        self._tmp: str | None = None
        self._count = 0

    def _get_pool(self) -> cf.ProcessPoolExecutor:
        from .plugins import runtime_plugin_modules

        if self._pool is None:
            threads = max(1, (os.cpu_count() or 1) // self.workers)
            self._pool = cf.ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init, initargs=(threads, runtime_plugin_modules()))
        return self._pool

    def share(self, array: np.ndarray) -> Any:
        """The array as a .npy file that the workers memory-map (removed on release)."""
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="merbench-")
        self._count += 1
        path = Path(self._tmp) / f"X{self._count}.npy"
        np.save(path, array, allow_pickle=False)
        return SharedArray(str(path))

    def release(self, handle: Any) -> None:
        if isinstance(handle, SharedArray):
            Path(handle.path).unlink(missing_ok=True)

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]]
            ) -> Iterator[tuple[int, Any]]:
        pool = self._get_pool()
        futures = {pool.submit(_call, fn, task): i for i, task in enumerate(tasks)}
        try:
            for fut in cf.as_completed(futures):
                yield futures[fut], fut.result()
        except BaseException:
            for f in futures:
                f.cancel()
            self._terminate()
            raise

    def _terminate(self) -> None:
        """Stop the workers now (a failed or interrupted map): running tasks are abandoned."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def make_executor(workers: int = 1) -> Executor:
    """Serial for one worker, local processes for more."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be a positive integer, got {workers!r}",
                          "use --workers 1 (serial) or more")
    return SerialExecutor() if workers == 1 else ProcessExecutor(workers)
