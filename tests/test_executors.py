"""Where folds run and on how many threads (merbench/executors.py): ``--workers auto``, physical
cores, per-fold torch threads, and parallel runs that give exactly the serial results (fork-
started workers here: the spawn-started ones of the real executor are the slow tests)."""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import merbench
from merbench import MethodSpec, Model, hookimpl
from merbench.errors import ConfigError
from merbench.executors import (Executor, ProcessExecutor, SerialExecutor, fold_placement,
                                fold_threads, fold_threads_set, make_executor, parse_workers,
                                physical_cores)
from merbench.plugins import register_plugin, unregister_plugin
from merbench.store import Store
from merbench.training import TorchClassifier


# -- a test plugin: a small and a big deep model, a cheap model that can be slowed down ---------
class Small(TorchClassifier):
    parallel_folds = True
    defaults = {"epochs": 3, "batch_size": 8, "lr": 0.05}

    def build(self, num_classes: int, input_shape: tuple[int, ...]) -> Any:
        from torch import nn

        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), num_classes))


class Big(Small):
    parallel_folds = False


SLEEP = {"seconds": 0.0}


class Sleepy(Model):
    """Nearest class mean, after sleeping ``SLEEP`` seconds in fit (a fold to kill)."""

    def __init__(self, num_classes: int = 3, seed: int = 0) -> None:
        self.num_classes, self.seed = num_classes, seed

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> "Sleepy":
        time.sleep(SLEEP["seconds"])
        X = X.reshape(len(X), -1)
        self.means_ = np.stack([X[y == c].mean(0) for c in range(self.num_classes)])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        d = ((X.reshape(len(X), -1)[:, None] - self.means_[None]) ** 2).sum(-1)
        return np.eye(self.num_classes)[d.argmin(1)]


@hookimpl(specname="register_models")
def _models(register):  # type: ignore[no-untyped-def]
    register("test-small", Small)
    register("test-big", Big)
    register("test-sleepy", Sleepy)


@hookimpl(specname="register_methods")
def _methods(register):  # type: ignore[no-untyped-def]
    for name in ("small", "big", "sleepy"):
        register(f"test-{name}", MethodSpec((("apex-diff", {"size": 8}),), (f"test-{name}", {})))


@pytest.fixture()
def models() -> Iterator[None]:
    """This module as a run-time plugin (importable, so it reaches worker processes)."""
    register_plugin(sys.modules[__name__], name="test-executors")
    SLEEP["seconds"] = 0.0
    try:
        yield
    finally:
        unregister_plugin("test-executors")


class Recording(Executor):
    """An ``auto`` executor with two "workers" that runs its tasks here and counts them."""

    workers = 2
    auto = True
    started = False  # type: ignore[assignment]

    def __init__(self) -> None:
        self.tasks = 0

    def map(self, fn, tasks, errors=False):  # type: ignore[no-untyped-def]
        self.tasks += len(tasks)
        return super().map(fn, tasks, errors)


class ForkExecutor(ProcessExecutor):
    """The process executor with fork-started workers: the same tasks, shared arrays and
    completion-order results, without a second of imports per spawned worker."""

    def _mp_context(self) -> Any:
        return multiprocessing.get_context("fork")


def _probas(store: Path, run_id: str) -> dict[str, dict[str, float]]:
    return {p.sample_id: p.proba for p in Store(store).predictions(run_id)}


# -- the policy --------------------------------------------------------------------------------
def test_workers_are_auto_or_a_positive_count() -> None:
    assert parse_workers("auto") == "auto" and parse_workers(" AUTO ") == "auto"
    assert parse_workers("3") == 3 and parse_workers(2) == 2
    for bad in (0, -1, "x", True, 1.5):
        with pytest.raises(ConfigError, match="--workers must be auto or a positive integer"):
            parse_workers(bad)


def test_auto_is_one_worker_per_physical_core(monkeypatch: pytest.MonkeyPatch) -> None:
    import merbench.executors as ex

    monkeypatch.setattr(ex, "physical_cores", lambda: 4)
    auto = make_executor("auto")
    assert isinstance(auto, ProcessExecutor) and (auto.workers, auto.auto) == (4, True)
    assert auto._pool is None  # started on first use only
    assert make_executor().workers == 4  # auto is the default
    three = make_executor(3)
    assert (three.workers, three.auto) == (3, False)
    assert isinstance(make_executor(1), SerialExecutor)
    monkeypatch.setattr(ex, "physical_cores", lambda: 1)
    assert isinstance(make_executor("auto"), SerialExecutor)


def test_physical_cores_count_hyperthreads_once_and_follow_the_cgroup_quota(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 5})
    for cpu, (package, core) in {0: (0, 0), 1: (0, 0), 2: (0, 1), 3: (0, 1), 4: (0, 2),
                                 5: (1, 0)}.items():
        topo = tmp_path / f"devices/system/cpu/cpu{cpu}/topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text(f"{package}\n")
        (topo / "core_id").write_text(f"{core}\n")
    assert physical_cores(tmp_path) == 3  # (0,0) twice, (0,1) twice, (1,0); cpu 4 not allowed
    (tmp_path / "fs/cgroup").mkdir(parents=True)
    (tmp_path / "fs/cgroup/cpu.max").write_text("max 100000\n")
    assert physical_cores(tmp_path) == 3
    (tmp_path / "fs/cgroup/cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    assert physical_cores(tmp_path) == 2


def test_fold_placement_and_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import merbench.executors as ex

    monkeypatch.setattr(ex, "physical_cores", lambda: 4)
    monkeypatch.delenv("MERBENCH_THREADS", raising=False)
    auto, four, serial = ProcessExecutor(4, auto=True), ProcessExecutor(4), SerialExecutor()
    # (parallel_folds, deep): small deep, big deep, cheap
    assert fold_placement(True, True, auto) == (True, 1)
    assert fold_placement(False, True, auto) == (False, 4)  # in the driver, every core
    assert fold_placement(False, False, auto) == (False, 1)  # no pool for a cheap model
    assert fold_placement(True, True, four) == (True, 1)
    assert fold_placement(False, True, four) == (True, 1)  # --workers 4 asked for: 4 // 4
    assert fold_placement(False, True, ProcessExecutor(2)) == (True, 2)
    assert fold_placement(False, False, four) == (True, 1)  # one BLAS thread without torch
    assert fold_placement(True, True, serial) == (False, 1)  # never 4 threads on a small net
    assert fold_placement(False, True, serial) == (False, 4)
    assert fold_placement(True, True, auto, ships=False) == (False, 1)  # small, but stays here
    assert fold_placement(True, True, four, ships=False) == (True, 1)  # asked for: tried there
    # a cluster executor (Ray): every fold is a task, its threads are the CPUs it asked for
    cluster = type("Cluster", (SerialExecutor,), {"workers": 8, "cpus_per_fold": 4.0})()
    assert fold_placement(False, True, cluster) == (True, 4)
    assert fold_placement(True, True, cluster) == (True, 4)
    monkeypatch.setenv("MERBENCH_THREADS", "3")
    assert fold_threads(True, 4) == 3 and fold_placement(False, True, serial) == (False, 3)
    monkeypatch.setenv("MERBENCH_THREADS", "zero")
    with pytest.raises(ConfigError, match="MERBENCH_THREADS"):
        fold_threads(True, 1)


def test_a_folds_threads_apply_to_it_and_are_restored(one_torch_thread) -> None:
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    with threadpool_limits(2):
        with fold_threads_set(1, deep=False):  # BLAS only
            assert {p["num_threads"] for p in threadpool_info()} == {1}
            assert torch.get_num_threads() == 1
        assert {p["num_threads"] for p in threadpool_info() if p["internal_api"] != "openmp"
                } == {2}
    with fold_threads_set(2, deep=True):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1
    with fold_threads_set(None, deep=True):
        assert torch.get_num_threads() == 1


def test_auto_sends_only_small_deep_models_to_the_workers(models, tmp_path: Path, tiny,
                                                          one_torch_thread,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("merbench.preprocess.DRIVER_SECONDS", 1e9)  # preprocessing stays here
    store = tmp_path / "r.sqlite"
    runs = {}
    for name in ("small", "big", "sleepy"):
        executor = Recording()
        executor.started = True  # type: ignore[misc]  # workers running: no start to weigh
        runs[name] = merbench.run(protocol="synthetic-loso", method=f"test-{name}",
                                  dataset_params=tiny, store=store, executor=executor)
        info = Store(store).fold_info(runs[name].run_id)
        threads = {i.get("threads") for i in info.values()}
        # 8 preprocessing chunks (running workers take them), and the small model's 4 folds
        assert executor.tasks == (12 if name == "small" else 8), name
        assert threads == {"small": {1}, "big": {physical_cores()}, "sleepy": {1}}[name]
    assert {i["micro_batch"] for i in Store(store).fold_info(runs["small"].run_id).values()} \
        == {8}


def test_auto_preprocesses_in_the_driver_until_that_proves_slow(
        tmp_path: Path, tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    method = merbench.method("diff-logreg")
    datasets = {"synthetic": merbench.dataset("synthetic", **tiny["synthetic"])}
    samples = datasets["synthetic"].samples
    from merbench.preprocess import preprocess

    monkeypatch.setattr("merbench.preprocess.DRIVER_SECONDS", 0.0)  # slow: after one sample
    executor = Recording()
    cold = preprocess(method, datasets, samples, cache_root=str(tmp_path), executor=executor)
    assert executor.tasks == 8  # 23 samples left, in 2 workers × 4 chunks
    monkeypatch.setattr("merbench.preprocess.DRIVER_SECONDS", 2.0)
    executor = Recording()
    warm = preprocess(method, datasets, samples, cache_root=str(tmp_path), executor=executor)
    assert executor.tasks == 0  # a warm cache never starts the workers
    executor.started = True  # type: ignore[misc]  # ... but running workers take the work
    preprocess(method, datasets, samples, cache_root=str(tmp_path), executor=executor)
    assert executor.tasks == 8
    assert np.array_equal(warm.X, cold.X) and [s.id for s in warm.kept] == [s.id for s in samples]


def test_auto_runs_folds_in_the_driver_until_the_workers_would_save_their_start(
        models, tmp_path: Path, tiny, one_torch_thread, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("merbench.preprocess.DRIVER_SECONDS", 1e9)
    # the driver's CPU clock reads 0 at the start, then 1, 2, 3 before folds 2, 3, 4: a fold
    # takes 1 s, and after fold k the 4 - k left would take 4 - k s here, half that on 2 workers
    clock = {"now": -1.0}

    def tick() -> float:
        clock["now"] += 1
        return clock["now"]

    monkeypatch.setattr("merbench.executors.time.thread_time", tick)
    store = tmp_path / "r.sqlite"
    shipped, probas = [], []
    for start_cost in (2.0, 1.0):
        clock["now"] = -1.0
        monkeypatch.setattr("merbench.executors.POOL_START_SECONDS", start_cost)
        executor = Recording()
        result = merbench.run(protocol="synthetic-loso", method="test-small",
                              dataset_params=tiny, store=store, executor=executor, rerun=True)
        shipped.append(executor.tasks)
        probas.append(_probas(store, result.run_id))
    # a start of 2 s is never saved (1.5 s at best): all here; one of 1 s is after fold 1
    assert shipped == [0, 3]
    assert probas[0] == probas[1]
    executor = Recording()
    executor.started = True  # type: ignore[misc]  # workers already running: all go there
    merbench.run(protocol="synthetic-loso", method="test-small", dataset_params=tiny,
                 store=store, executor=executor, rerun=True)
    assert executor.tasks == 8 + 4  # preprocessing chunks and folds


def test_auto_keeps_a_plugin_the_workers_cannot_import_here(tmp_path: Path, tiny,
                                                            one_torch_thread) -> None:
    register_plugin(types.SimpleNamespace(register_models=_models, register_methods=_methods),
                    name="test-object")  # a plugin object, as made in a notebook
    try:
        executor = Recording()
        result = merbench.run(protocol="synthetic-loso", method="test-small",
                              dataset_params=tiny, store=tmp_path / "r.sqlite",
                              executor=executor)
    finally:
        unregister_plugin("test-object")
    assert executor.tasks == 0
    assert {i["threads"] for i in Store(tmp_path / "r.sqlite").fold_info(result.run_id).values()
            } == {1}


# -- parallel = serial ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["diff-logreg", "test-small"])
def test_parallel_folds_give_exactly_the_serial_predictions(models, method: str, tmp_path: Path,
                                                            tiny, one_torch_thread) -> None:
    store = tmp_path / "r.sqlite"
    serial = merbench.run(protocol="synthetic-loso", method=method, dataset_params=tiny,
                          store=store, workers=1)
    with ForkExecutor(2) as executor:  # every fold in a worker (not auto)
        parallel = merbench.run(protocol="synthetic-loso", method=method, dataset_params=tiny,
                                store=store, executor=executor, rerun=True)
        assert executor._pool is not None
    assert parallel.run_id != serial.run_id
    assert len(_probas(store, serial.run_id)) == 24
    assert _probas(store, parallel.run_id) == _probas(store, serial.run_id)
    info = Store(store).fold_info(parallel.run_id)
    assert sorted(info) == list(range(4))


def test_a_killed_run_resumes_at_its_first_unfinished_fold(models, tmp_path: Path,
                                                           tiny) -> None:
    """kill -9 of a running command (a forked copy of this process) between folds, then the
    same run again: every fold once, the stored ones untouched."""
    store = tmp_path / "r.sqlite"
    kwargs = dict(protocol="synthetic-loso", method="test-sleepy", dataset_params=tiny,
                  store=store, workers=1)
    # preprocessed once here, so the forked copy only reads the cache (no OpenCV after fork)
    merbench.run(**{**kwargs, "store": tmp_path / "warm.sqlite"})
    SLEEP["seconds"] = 1.0
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child is killed
        try:
            merbench.run(**kwargs)
        finally:
            os._exit(0)
    deadline = time.time() + 60
    try:
        while not (store.exists() and any(Store(store).fold_info(r.id) for r in
                                           Store(store).runs(status=None))):
            assert time.time() < deadline, "no fold finished in time"
            time.sleep(0.05)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    (rec,) = Store(store).runs(status=None)
    before = Store(store).fold_info(rec.id)
    assert rec.status == "running" and 1 <= len(before) < 4
    SLEEP["seconds"] = 0.0
    result = merbench.run(**kwargs)
    assert result.run_id == rec.id and result.resumed_folds == len(before)
    after = Store(store).fold_info(rec.id)
    assert sorted(after) == [0, 1, 2, 3]
    assert {k: after[k] for k in before} == before  # the stored folds were not recomputed
    assert Store(store).run(rec.id).status == "finished"
    assert len(Store(store).predictions(rec.id)) == 24


def test_a_worker_registers_the_run_time_plugins_by_importing_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a spawned worker does first (the slow test runs it in real worker processes)."""
    import merbench.training as training
    from merbench.executors import _worker_init
    from merbench.plugins import runtime_plugin_modules

    (tmp_path / "my_rt_plugin.py").write_text(
        "from merbench import MethodSpec, hookimpl\n\n\n@hookimpl\ndef register_methods(register):"
        "\n    register('rt-chance', MethodSpec((('apex-frame', {'size': 4}),), ('chance', {})))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_rt_plugin  # type: ignore[import-not-found]

    register_plugin(my_rt_plugin, name="rt")
    handler = signal.getsignal(signal.SIGINT)
    try:
        modules = runtime_plugin_modules()
        assert modules["rt"] == "my_rt_plugin"
        unregister_plugin("rt")  # a fresh worker process does not know it
        assert "rt-chance" not in merbench.names("method")
        _worker_init(modules, 3)
        assert "rt-chance" in merbench.names("method")
        assert training.MEMORY_SHARE == 3  # the workers share the training memory budget
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # Ctrl-C is the driver's
    finally:
        signal.signal(signal.SIGINT, handler)
        training.MEMORY_SHARE = 1
        unregister_plugin("rt")
        sys.modules.pop("my_rt_plugin", None)
