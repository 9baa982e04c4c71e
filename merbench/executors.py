"""Where tasks run: in this process, or in local worker processes (same results everywhere).

An executor's :meth:`Executor.map` calls ``fn(*task)`` for every task and yields ``(task
index, result)`` as tasks finish, so the driver stores each finished fold at once and stays the
only writer of the results store (an interrupted run keeps what finished). Large arrays every
task of a run reads (the preprocessed inputs) go through :meth:`Executor.share` once; tasks
carry the returned handle, which the worker resolves: the array itself in-process, a temporary
.npy that workers memory-map for local processes, an object in Ray's object store
(:class:`RayExecutor`, imported only when chosen: ``pip install "merbench[ray]"``). With
``map(..., errors=True)`` a failed task is yielded as a :class:`TaskFailure` and the other tasks
go on (a grid isolates a run's failure from the other runs).

``--workers auto`` (the default) is one worker process per physical core, started only when a
run has work that gains from it: folds of small deep models (``Model.parallel_folds``), one
torch thread each, and preprocessing that takes the driver more than a few CPU seconds. Big
deep models train in the driver with every core's threads, and cheap models (one BLAS thread)
never pay for a pool (:func:`fold_placement`).
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import importlib
import logging
import math
import multiprocessing
import os
import platform
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .atomic import temp_dir
from .errors import CheckpointError, ConfigError, MerbenchError
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
    info["host"] = platform.node()  # where it ran (a cluster has many machines)
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
    cpus = getattr(executor, "cpus_per_fold", None)
    if cpus:  # a cluster task's torch threads follow the CPUs it asked for
        return True, max(1, int(cpus))
    remote = executor.workers > 1 and ((parallel and ships) or not executor.auto)
    # a model without torch: one BLAS thread (its small products gain nothing from more, and
    # spinning BLAS threads waste the cores other folds or other load need)
    return remote, fold_threads(parallel or not deep, executor.workers if remote else 1)


#: CPU seconds it costs to start a worker pool (spawned workers import numpy, torch and the
#: plugins), weighed by :func:`map_driver_first` against what the workers would save.
POOL_START_SECONDS = 3.0


def map_driver_first(executor: "Executor", fn: Callable[..., Any],
                     tasks: Sequence[tuple[Any, ...]], start_cost: float | None = None,
                     errors: bool = False) -> Iterator[tuple[int, Any]]:
    """Like ``executor.map``, for an ``auto`` executor whose workers may not be worth their
    start: the tasks run here, one after the other, until the time the rest would still
    take here (the mean task so far × the tasks left) shrinks on the workers by more than
    their start costs (``start_cost``, default :data:`POOL_START_SECONDS`); then the rest
    go to the executor. Started workers cost nothing: everything goes to them at once. So
    a short training (a test, a few epochs) never starts a pool, a long one runs one fold
    here and the rest side by side. ``errors`` as in :meth:`Executor.map`."""
    cost = POOL_START_SECONDS if start_cost is None else start_cost
    start = time.thread_time()
    for i, task in enumerate(tasks):
        if executor.started or (i and (time.thread_time() - start) / i * (len(tasks) - i)
                                * (1 - 1 / executor.workers) > cost):
            for j, result in executor.map(fn, tasks[i:], errors):
                yield i + j, result
            return
        yield i, _attempt(fn, task, errors)


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

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]],
            errors: bool = False) -> Iterator[tuple[int, Any]]:
        """``(index, fn(*task))`` as tasks finish; the first failure is raised, or with
        ``errors`` yielded as a :class:`TaskFailure` while the other tasks go on."""
        for index, task in enumerate(tasks):
            yield index, _attempt(fn, task, errors)

    def close(self) -> None:
        """Release workers and temporary files (an executor may serve several runs)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


SerialExecutor = Executor


@dataclass(frozen=True)
class TaskFailure:
    """A task that failed, yielded by ``map(..., errors=True)`` in place of its result."""

    error: BaseException

    def __str__(self) -> str:
        if isinstance(self.error, MerbenchError):
            return str(self.error)
        return f"{type(self.error).__name__}: {self.error}"


def task_label(fn: Callable[..., Any], task: Sequence[Any]) -> str:
    """What a task is, for messages: its fold, else a preprocessing chunk."""
    for arg in task:
        if isinstance(arg, FoldJob):
            return f"fold {arg.fold.name}"
    samples = task[2] if len(task) > 2 and isinstance(task[2], (list, tuple)) else ()
    first = getattr(samples[0], "id", None) if samples else None
    if first is not None:
        return f"preprocessing of {len(samples)} samples from {first}"
    return f"task {getattr(fn, '__name__', fn)}"


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


def _attempt(fn: Callable[..., Any], task: tuple[Any, ...], errors: bool) -> Any:
    """``fn(*task)`` here; with ``errors`` a failure is returned as a :class:`TaskFailure`
    instead of raised (see :meth:`Executor.map`)."""
    try:
        return _call(fn, task)
    except Exception as exc:
        if not errors:
            raise
        return TaskFailure(exc)


def _worker_init(runtime_plugins: Mapping[str, str], workers: int) -> None:
    """Torch is not imported here (seconds per worker): a deep model's fold sets its threads
    itself (:func:`fold_threads_set`). The workers share the memory budget of training."""
    import importlib

    from . import training
    from .logs import worker_setup
    from .plugins import register_plugin

    training.MEMORY_SHARE = workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    worker_setup()
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
        if self._tmp is None:  # named by this process: a later run removes it after a kill -9
            self._tmp = str(temp_dir("merbench"))
        self._count += 1
        path = Path(self._tmp) / f"X{self._count}.npy"
        np.save(path, array, allow_pickle=False)
        return SharedArray(str(path))

    def release(self, handle: Any) -> None:
        if isinstance(handle, SharedArray):
            Path(handle.path).unlink(missing_ok=True)

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]],
            errors: bool = False) -> Iterator[tuple[int, Any]]:
        pool = self._get_pool()
        futures = {pool.submit(_call, fn, task): i for i, task in enumerate(tasks)}
        broken = False
        try:
            for fut in cf.as_completed(futures):
                exc = fut.exception() if errors else None
                if exc is not None:  # with errors: yielded; a dead worker breaks the pool
                    broken = broken or isinstance(exc, cf.BrokenExecutor)
                    yield futures[fut], TaskFailure(exc)
                else:
                    yield futures[fut], fut.result()
            if broken:
                self._terminate()  # the next map starts new workers
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
        shown = workers.strip() if isinstance(workers, str) else repr(workers)
        raise ConfigError(f"--workers must be auto or a positive integer, got {shown}",
                          "use --workers auto (default), 1 (serial) or more")
    return workers


# -- Ray ---------------------------------------------------------------------------------------
def import_ray() -> Any:
    """Ray, or one line saying how to install it (it is an optional extra)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("the Ray executor needs Ray, which is not installed",
                          'pip install "merbench[ray]"') from None
    return ray


@dataclass(frozen=True)
class RayShared:
    """A task's handle on an array the :class:`RayExecutor` put in the object store."""

    key: int


_RAY_PLUGINS: set[str] = set()  # run-time plugins this Ray worker process has registered


@dataclass(frozen=True)
class _Slot:
    """Where a shared array goes back into a Ray task's arguments."""

    position: int


def _ray_task(payload: bytes, threads: int, gpus: float, plugins: Mapping[str, tuple[str, str]],
              *arrays: Any) -> Any:
    """One Ray task: register the driver's run-time plugins (once per worker process), give
    torch the CPUs the task asked for (workers are reused by tasks of other sizes) and no GPU
    unless it asked for one (Ray leaves them visible), then unpickle ``(fn, args)`` (only now:
    they may name a run-time plugin's classes) and run ``fn(*args)``. Shared arrays arrive as
    top-level arguments, which Ray resolves to read-only, zero-copy views of the object
    store."""
    import pickle

    from .plugins import register_plugin

    if not gpus:  # Ray sets CUDA_VISIBLE_DEVICES for GPU tasks only; keep the others off GPUs
        os.environ["CUDA_VISIBLE_DEVICES"] = ""

    for name, (module, path) in plugins.items():
        if name not in _RAY_PLUGINS:
            if path and path not in sys.path:  # a module beside the driver, not installed
                sys.path.append(path)
            register_plugin(importlib.import_module(module), name=name)
            _RAY_PLUGINS.add(name)
    import torch

    torch.set_num_threads(threads)
    fn, args = pickle.loads(payload)
    return fn(*(arrays[a.position] if isinstance(a, _Slot) else a for a in args))


def _plugin_paths() -> dict[str, tuple[str, str]]:
    """Run-time plugins as (module, the sys.path entry it is imported from) for Ray workers,
    which do not share the driver's sys.path."""
    from .plugins import runtime_plugin_modules

    out = {}
    for name, module in runtime_plugin_modules().items():
        file = getattr(sys.modules.get(module), "__file__", None)
        root = Path(file).resolve().parent if file else None
        if root is not None:
            for _ in range(module.count(".") + (Path(file).name == "__init__.py")):
                root = root.parent
        out[name] = (module, str(root) if root is not None else "")
    return out


def _absolute(job: FoldJob) -> FoldJob:
    """The job with its paths absolute: a worker's working directory is not the driver's."""
    import dataclasses

    def resolve(path: str | None) -> str | None:
        return str(Path(path).absolute()) if path else path

    return dataclasses.replace(job, checkpoint=resolve(job.checkpoint),
                               train_state=resolve(job.train_state))


def _death(exc: BaseException) -> str:
    """Why a Ray task's worker is gone, in a few words."""
    ray = import_ray()
    if isinstance(exc, ray.exceptions.OutOfMemoryError):
        return "out of memory (Ray's memory monitor stopped it; give each fold more memory " \
               "with a larger --cpus-per-fold)"
    if isinstance(exc, ray.exceptions.WorkerCrashedError):
        return "worker died"
    if isinstance(exc, ray.exceptions.NodeDiedError):
        return "node lost"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


class RayExecutor(Executor):
    """Tasks on a Ray cluster, or on a local Ray instance started for the run.

    Preprocessing chunks and folds become Ray tasks; a shared array is put in the object store
    once and every task reads it zero-copy. Fold tasks ask for ``cpus_per_fold`` CPUs (torch
    gets that many threads) and ``gpus_per_fold`` GPUs (fractions share a GPU); preprocessing
    chunks ask for one CPU, or run in the driver with ``preprocess="driver"`` (when only the
    driver sees the data). A task whose worker dies (killed, node lost, out of memory) is run
    again up to ``max_retries`` times, then fails with its fold named; a task that raised is
    not retried (its error is the user's, the same on every attempt) and its error reaches the
    driver as it was raised. Results come back to the driver as each task finishes, so the
    driver stays the only writer of the results store.

    ``address``: None starts a local instance (``num_cpus`` CPUs, default all; RAY_ADDRESS is
    used when set), "auto" joins the cluster started on this machine with ``ray start``,
    HOST:PORT joins that one. If Ray is already initialised in this process (a notebook, a
    test), that session is used and left running."""

    name = "ray"

    def __init__(self, address: str | None = None, *, cpus_per_fold: float = 1.0,
                 gpus_per_fold: float = 0.0, max_retries: int = 3, preprocess: str = "cluster",
                 num_cpus: int | None = None) -> None:
        def number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        if not number(cpus_per_fold) or cpus_per_fold <= 0:
            raise ConfigError(f"--cpus-per-fold must be a positive number, got {cpus_per_fold!r}",
                              "e.g. 1, 4 or 0.5")
        if not number(gpus_per_fold) or gpus_per_fold < 0:
            raise ConfigError(f"--gpus-per-fold must be 0 or more, got {gpus_per_fold!r}",
                              "e.g. 1, 0.5 or 0.25")
        if gpus_per_fold > 1 and gpus_per_fold != int(gpus_per_fold):
            raise ConfigError(f"--gpus-per-fold {gpus_per_fold}: above 1 it must be a whole "
                              "number", "Ray shares a GPU only in fractions of one")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError(f"--max-retries must be a non-negative integer, got {max_retries!r}")
        if preprocess not in ("cluster", "driver"):
            raise ConfigError(f"preprocess must be 'cluster' or 'driver', got {preprocess!r}")
        import_ray()  # say now, not after planning, that it is missing
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.cpus_per_fold = float(cpus_per_fold)
        self.gpus_per_fold = float(gpus_per_fold)
        self.max_retries = max_retries
        self.preprocess = preprocess
        self.num_cpus = num_cpus
        self._ray: Any = None
        self._started = False
        self._remote: Any = None
        self._objects: dict[int, Any] = {}
        self._count = 0
        self._workers: int | None = None

    # -- connection -------------------------------------------------------------------------
    def _connect(self) -> Any:
        if self._ray is not None:
            return self._ray
        ray = import_ray()
        if not ray.is_initialized():
            address = self.address or "local"
            kwargs: dict[str, Any] = {"address": address, "logging_level": logging.WARNING}
            if address == "local":
                kwargs.update(num_cpus=self.num_cpus, include_dashboard=False)
            # the driver owns the tasks and decides their retries: bound those after an
            # out-of-memory kill too (some Ray versions retry them for ever: a hang)
            os.environ.setdefault("RAY_task_oom_retries", str(self.max_retries))
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise ConfigError(f"cannot reach a Ray cluster at {address!r}: "
                                  f"{str(exc).splitlines()[0]}",
                                  "start one with `ray start --head`, check --ray-address / "
                                  "RAY_ADDRESS, or leave both out for a local Ray instance"
                                  ) from None
            self._started = True
        self._ray = ray
        self._remote = ray.remote(_ray_task)
        self._check_fits()
        return ray

    @property  # type: ignore[override]
    def workers(self) -> int:
        """CPUs in the cluster (sizes preprocessing chunks; at least 2, so per-fold progress
        bars never run inside workers)."""
        if self._workers is None:
            ray = self._connect()
            self._workers = max(2, int(ray.cluster_resources().get("CPU", 1)))
        return self._workers

    def _check_fits(self) -> None:
        """Refuse, before anything runs, tasks no node can run (Ray would wait for such a node
        for ever): fold tasks, and the one-CPU preprocessing tasks."""
        nodes = [n.get("Resources", {}) for n in self._ray.nodes() if n.get("Alive")]
        needs = [(self.cpus_per_fold, self.gpus_per_fold)]
        if self.preprocess == "cluster":
            needs.append((1.0, 0.0))
        for cpus, gpus in needs:
            if not any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes):
                largest = max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)),
                              default={})
                raise ConfigError(
                    f"no node of the Ray cluster has {cpus:g} CPU(s) and {gpus:g} GPU(s) for "
                    f"one task (largest node: {largest.get('CPU', 0):g} CPUs, "
                    f"{largest.get('GPU', 0):g} GPUs)",
                    "lower --cpus-per-fold / --gpus-per-fold, or add such a node to the cluster")
        gpus = sum(r.get("GPU", 0) for r in nodes)
        if gpus and not self.gpus_per_fold:
            log.warning("the Ray cluster has %g GPUs but folds ask for none: they run on CPUs "
                        "(--gpus-per-fold 1, or 0.25 to share a GPU, puts them on GPUs)", gpus)

    # -- the executor interface -------------------------------------------------------------
    def share(self, array: np.ndarray) -> Any:
        """The array in the object store, put there once; tasks get it zero-copy."""
        ray = self._connect()
        self._count += 1
        self._objects[self._count] = ray.put(array)
        return RayShared(self._count)

    def release(self, handle: Any) -> None:
        """Drop the executor's reference: Ray frees the object once no task needs it."""
        if isinstance(handle, RayShared):
            self._objects.pop(handle.key, None)

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]],
            errors: bool = False) -> Iterator[tuple[int, Any]]:
        if not tasks:
            return
        folds = any(isinstance(a, FoldJob) for a in tasks[0])
        if not folds and self.preprocess == "driver":  # only the driver sees the data
            yield from Executor.map(self, fn, tasks, errors)
            return
        ray = self._connect()
        cpus, gpus = (self.cpus_per_fold, self.gpus_per_fold) if folds else (1.0, 0.0)
        threads = max(1, int(cpus))
        plugins = _plugin_paths()
        pending: dict[Any, int] = {}
        try:
            for index, task in enumerate(tasks):
                shared = [self._objects[a.key] for a in task if isinstance(a, RayShared)]
                slots = iter(range(len(shared)))
                args = [_Slot(next(slots)) if isinstance(a, RayShared) else
                        _absolute(a) if isinstance(a, FoldJob) else a for a in task]
                payload = ray.cloudpickle.dumps((fn, args))
                ref = self._remote.options(
                    num_cpus=cpus, num_gpus=gpus, max_retries=self.max_retries,
                    retry_exceptions=False, name=task_label(fn, task)[:100],
                ).remote(payload, threads, gpus, plugins, *shared)
                pending[ref] = index
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    index = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - sorted out by _task_error
                        error = self._task_error(exc, fn, tasks[index])
                        if not errors:
                            raise error from None
                        result = TaskFailure(error)
                    yield index, result
        except BaseException:  # an interruption, a failure, or the consumer stopped reading
            for ref in pending:
                ray.cancel(ref, force=True)
            raise

    def _task_error(self, exc: Exception, fn: Callable[..., Any], task: Sequence[Any]
                    ) -> BaseException:
        """The error a failed task raises in the driver: what the task itself raised (with
        the worker's traceback as a note for --debug), or one line naming the task whose
        worker kept dying."""
        ray = self._ray
        if isinstance(exc, ray.exceptions.RayTaskError):
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                detail = getattr(exc, "traceback_str", None) or str(exc)
                cause.add_note(f"raised in a Ray worker:\n{detail}")
                return cause
            return exc
        if isinstance(exc, ray.exceptions.TaskCancelledError):
            return exc
        return MerbenchError(f"{task_label(fn, task)} failed after {self.max_retries + 1} "
                             f"attempts: {_death(exc)}",
                             "see the Ray logs (/tmp/ray/session_latest/logs on its node)")

    def close(self) -> None:
        """Drop the shared arrays; shut Ray down if this executor started it."""
        self._objects.clear()
        if self._started and self._ray is not None and self._ray.is_initialized():
            self._ray.shutdown()
        self._ray, self._remote, self._started, self._workers = None, None, False, None


def make_executor(workers: int | str = "auto", executor: str = "local", *,
                  ray_address: str | None = None,
                  cpus_per_fold: float = 1.0, gpus_per_fold: float = 0.0, max_retries: int = 3,
                  ray_preprocess: str = "cluster") -> Executor:
    """``local`` executor: ``auto``, one worker process per physical core, started only for
    work that gains from it (serial on one core); 1: serial, in this process; N: N local worker
    processes. ``ray``: a :class:`RayExecutor` (a number of ``workers`` sizes a local Ray
    instance; a cluster has its own)."""
    workers = parse_workers(workers)
    if executor == "ray":
        return RayExecutor(ray_address, cpus_per_fold=cpus_per_fold, gpus_per_fold=gpus_per_fold,
                           max_retries=max_retries, preprocess=ray_preprocess,
                           num_cpus=workers if workers != "auto" and workers > 1 else None)
    if executor != "local":
        raise ConfigError(f"unknown executor {executor!r}", "use --executor local or ray")
    if workers == "auto":
        cores = physical_cores()
        return ProcessExecutor(cores, auto=True) if cores > 1 else SerialExecutor()
    return SerialExecutor() if workers == 1 else ProcessExecutor(workers)
