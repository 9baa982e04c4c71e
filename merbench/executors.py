"""Where tasks run: in this process, or in local worker processes (same results everywhere).

An executor's :meth:`Executor.map` calls ``fn(*task)`` for every task and yields ``(task
index, result)`` as tasks finish, so the driver stores each finished fold at once and stays the
only writer of the results store (an interrupted run keeps what finished). Large arrays every
task of a run reads (the preprocessed inputs) go through :meth:`Executor.share` once; tasks
carry the returned handle, which the worker resolves: the array itself in-process, a temporary
.npy that workers memory-map for local processes. A cluster executor implements the same
methods (``share``, ``map``, ``release``, ``close``).

``--workers auto`` (the default) is one worker process per physical core, started only when a
run has work that gains from it: folds of small deep models (``Model.parallel_folds``), one
torch thread each, and preprocessing that takes the driver more than a few CPU seconds. Big
deep models train in the driver with every core's threads, and cheap models (one BLAS thread)
never pay for a pool (:func:`fold_placement`).
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import math
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

log = logging.getLogger(__name__)


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
    threads: int | None = None  # the fold's torch / BLAS threads (None: left as they are)


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
    deep = method.uses_device()
    with fold_threads_set(job.threads, deep):
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
        with fold_threads_set(job.threads, deep):
            info["_artifacts"] = {k: np.asarray(v)
                                  for k, v in model.fold_artifacts(X_test).items()}
    if job.threads is not None:
        info["threads"] = job.threads
    if getattr(model, "micro_batch_", None):  # samples per forward/backward pass
        info["micro_batch"] = model.micro_batch_
    info["seconds"] = round(time.time() - started, 3)
    info["started"] = started_at
    return proba, info


# -- threads and where folds run ---------------------------------------------------------------
def physical_cores(sys_root: str | os.PathLike = "/sys") -> int:
    """Physical cores this process may use: its CPU affinity, hyper-threads of one core
    counted once, capped by a cgroup CPU quota (containers)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
    root = Path(sys_root)
    cores = set()
    for cpu in cpus:
        topo = root / f"devices/system/cpu/cpu{cpu}/topology"
        try:
            cores.add(((topo / "physical_package_id").read_text().strip(),
                       (topo / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    n = len(cores)
    try:
        quota, period = (root / "fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def fold_threads(small: bool, workers: int) -> int:
    """Threads of one fold: one for a small model (its batches cannot keep more busy: on 2
    cores STSTNet runs an epoch slower on 2 threads than on 1, and far slower beside other
    load), the physical cores shared among ``workers`` processes for a big one.
    ``MERBENCH_THREADS`` overrides both."""
    forced = os.environ.get("MERBENCH_THREADS", "").strip()
    if forced:
        if not forced.isdigit() or int(forced) < 1:
            raise ConfigError(f"MERBENCH_THREADS must be a positive integer, got {forced!r}",
                              "unset it, or set e.g. MERBENCH_THREADS=1")
        return int(forced)
    return 1 if small else max(1, physical_cores() // max(1, workers))


_interop_set = False


@contextlib.contextmanager
def fold_threads_set(threads: int | None, deep: bool) -> Iterator[None]:
    """A fold's threads, restored afterwards (so a run in the driver leaves the caller's
    setting as it was): BLAS / OpenMP pools of numpy, scipy and scikit-learn (threadpoolctl),
    and for a deep model torch's intra-op threads, with inter-op threads set to the same
    number once per process (torch refuses that after its first parallel work)."""
    if threads is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - comes with scikit-learn
        limits: Any = contextlib.nullcontext()
    else:
        limits = threadpool_limits(threads)
    with limits:
        if deep:
            with torch_threads(threads):
                yield
        else:
            yield


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Torch's intra-op threads (restored afterwards) and, once per process, inter-op ones."""
    global _interop_set
    import torch

    if not _interop_set:
        _interop_set = True
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError as exc:  # this process already did parallel work
            log.debug("inter-op threads stay at %d (%s)", torch.get_num_interop_threads(), exc)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def shippable(method: Method, datasets: Mapping[str, Any]) -> bool:
    """Whether worker processes can run this method's tasks: its plugins reach them and the
    datasets' classes can be imported there (not so for a plugin object made in a notebook,
    which ``--workers auto`` then runs here instead)."""
    return method.reaches_workers() and all(
        getattr(sys.modules.get(type(ds).__module__), "__spec__", None) is not None
        for ds in datasets.values())


def fold_placement(parallel: bool, deep: bool, executor: "Executor", ships: bool = True
                   ) -> tuple[bool, int]:
    """Where a run's folds go and on how many threads: (on the executor's workers, threads
    per fold). An ``auto`` executor keeps folds that gain nothing from worker processes
    (cheap or big models) in the driver, and those the workers cannot run (``ships`` false,
    see :func:`shippable`)."""
    remote = executor.workers > 1 and ((parallel and ships) or not executor.auto)
    # a model without torch: one BLAS thread (its small products gain nothing from more, and
    # spinning BLAS threads waste the cores other folds or other load need)
    return remote, fold_threads(parallel or not deep, executor.workers if remote else 1)


#: CPU seconds it costs to start a worker pool (spawned workers import numpy, torch and the
#: plugins), weighed by :func:`map_driver_first` against what the workers would save.
POOL_START_SECONDS = 3.0


def map_driver_first(executor: "Executor", fn: Callable[..., Any],
                     tasks: Sequence[tuple[Any, ...]], start_cost: float | None = None
                     ) -> Iterator[tuple[int, Any]]:
    """Like ``executor.map``, for an ``auto`` executor whose workers may not be worth their
    start: the tasks run here, one after the other, until the time the rest would still
    take here (the mean task so far × the tasks left) shrinks on the workers by more than
    their start costs (``start_cost``, default :data:`POOL_START_SECONDS`); then the rest
    go to the executor. Started workers cost nothing: everything goes to them at once. So
    a short training (a test, a few epochs) never starts a pool, a long one runs one fold
    here and the rest side by side."""
    cost = POOL_START_SECONDS if start_cost is None else start_cost
    start = time.thread_time()
    for i, task in enumerate(tasks):
        if executor.started or (i and (time.thread_time() - start) / i * (len(tasks) - i)
                                * (1 - 1 / executor.workers) > cost):
            for j, result in executor.map(fn, tasks[i:]):
                yield i + j, result
            return
        yield i, _call(fn, task)


# -- executors --------------------------------------------------------------------------------
class Executor:
    """Runs tasks in this process, one after the other."""

    name = "serial"
    workers = 1
    #: tasks that gain nothing from the workers may run in the driver instead (--workers auto)
    auto = False

    @property
    def started(self) -> bool:
        """Whether its workers are running (using them costs no start any more)."""
        return False

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


def _worker_init(runtime_plugins: Mapping[str, str], workers: int) -> None:
    """Torch is not imported here (seconds per worker): a deep model's fold sets its threads
    itself (:func:`fold_threads_set`). The workers share the memory budget of training."""
    import importlib

    from . import training
    from .plugins import register_plugin

    training.MEMORY_SHARE = workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    for name, module in runtime_plugins.items():  # plugins registered at run time, by import
        register_plugin(importlib.import_module(module), name=name)


class ProcessExecutor(Executor):
    """Local worker processes (spawned, so CUDA and torch threads start clean), created on
    first use and reused for every run the executor serves. ``auto``: see
    :attr:`Executor.auto`."""

    name = "processes"

    def __init__(self, workers: int, auto: bool = False) -> None:
        if workers < 2:
            raise ConfigError(f"a process executor needs at least 2 workers, got {workers}")
        self.workers = workers
        self.auto = auto
        self._pool: cf.ProcessPoolExecutor | None = None
        self._tmp: str | None = None
        self._count = 0

    def _get_pool(self) -> cf.ProcessPoolExecutor:
        from .plugins import runtime_plugin_modules

        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(
                max_workers=self.workers, mp_context=self._mp_context(),
                initializer=_worker_init, initargs=(runtime_plugin_modules(), self.workers))
        return self._pool

    @property
    def started(self) -> bool:
        return self._pool is not None

    def _mp_context(self) -> Any:
        """How workers start: spawned (a fork would inherit torch's and OpenCV's thread
        pools, which a child cannot use safely)."""
        return multiprocessing.get_context("spawn")

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


def parse_workers(workers: int | str) -> int | str:
    """``"auto"`` or a positive worker count (``--workers`` gives a string)."""
    if isinstance(workers, str) and workers.strip().isdigit():
        workers = int(workers)
    if isinstance(workers, str) and workers.strip().lower() == "auto":
        return "auto"
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be auto or a positive integer, got {workers!r}",
                          "use --workers auto (default), 1 (serial) or more")
    return workers


def make_executor(workers: int | str = "auto") -> Executor:
    """``auto``: one worker process per physical core, started only for work that gains from
    it (serial on one core); 1: serial, in this process; N: N local worker processes."""
    workers = parse_workers(workers)
    if workers == "auto":
        cores = physical_cores()
        return ProcessExecutor(cores, auto=True) if cores > 1 else SerialExecutor()
    return SerialExecutor() if workers == 1 else ProcessExecutor(workers)
