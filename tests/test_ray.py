"""The Ray executor on a local Ray instance (2 CPUs, 1 declared GPU, a small object store),
started once for the module: the same predictions as serial runs, retries of killed workers,
one clear error for a fold that keeps failing, grids, resume."""
from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import merbench
from merbench.errors import ConfigError, DataError
from merbench.executors import FoldJob, RayExecutor
from merbench.plugins import register_plugin, unregister_plugin
from merbench.provenance import fold_seed
from merbench.store import Store
from merbench.types import Fold

from . import ray_probe
from .test_precomputed_inputs import write_index

ray = pytest.importorskip("ray", reason="the Ray executor's tests need the ray extra")
pytestmark = pytest.mark.slow  # a Ray instance takes ~15-20 s to start on 2 shared cores


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, object_store_memory=100 * 2**20,
             logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture()
def probe(ray_session: None) -> Iterator[Any]:
    register_plugin(ray_probe, name="ray-probe")
    try:
        yield ray_probe
    finally:
        unregister_plugin("ray-probe")


def _probas(store: Path | str, run_id: str) -> dict[str, dict[str, float]]:
    return {p.sample_id: p.proba for p in Store(store).predictions(run_id)}


def _fold_rows(store: Path | str, run_id: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(store) as con:
        return con.execute("SELECT fold_index, name, seed, started FROM folds WHERE run_id=? "
                           "ORDER BY fold_index", (run_id,)).fetchall()


def test_sklearn_methods_give_the_serial_predictions_exactly(ray_session: None, tmp_path: Path,
                                                             tiny) -> None:
    common = dict(protocol="synthetic-loso", dataset_params=tiny,
                  cache_dir=str(tmp_path / "cache"))
    for method in ("diff-logreg", "chance"):  # a fitted model and a seeded random one
        serial = merbench.run(method=method, store=tmp_path / "serial.sqlite", **common)
        with RayExecutor() as ex:
            on_ray = merbench.run(method=method, store=tmp_path / "ray.sqlite", executor=ex,
                                  **common)
        assert len(on_ray.predictions) == 24
        assert _probas(tmp_path / "ray.sqlite", on_ray.run_id) == \
            _probas(tmp_path / "serial.sqlite", serial.run_id)
        assert [r[:3] for r in _fold_rows(tmp_path / "ray.sqlite", on_ray.run_id)] == \
            [(k, f"synthetic/s0{k + 1}", fold_seed(0, f"synthetic/s0{k + 1}")) for k in range(4)]
        info = Store(tmp_path / "ray.sqlite").fold_info(on_ray.run_id)
        assert all(i["host"] and i["n_train"] == 18 for i in info.values())
    assert ray.is_initialized()  # the executor left the session it did not start running


def test_preprocessing_runs_on_the_cluster_or_in_the_driver(probe: Any, tmp_path: Path,
                                                           tiny) -> None:
    import os

    pids = {}
    for where in ("cluster", "driver"):
        logs = tmp_path / where
        logs.mkdir()
        with RayExecutor(preprocess=where) as ex:
            result = merbench.run(protocol="synthetic-loso", method="probe-logreg",
                                  dataset_params=tiny, store=tmp_path / "s.sqlite", executor=ex,
                                  use_cache=False, overrides={"probe-diff.log_dir": str(logs)})
        assert len(result.predictions) == 24
        pids[where] = [int(p.name.split(".")[1]) for p in logs.glob("step.*")]
        assert len(pids[where]) == 24  # each sample preprocessed once
    assert os.getpid() not in pids["cluster"] and set(pids["driver"]) == {os.getpid()}


def test_a_deep_model_gives_the_serial_predictions_exactly(ray_session: None, tmp_path: Path,
                                                           one_torch_thread: None) -> None:
    index = write_index(tmp_path)  # 28x28x3 inputs, 4 subjects x 3 classes x 3 clips
    common = dict(protocol="synthetic-loso", method="ststnet", inputs=str(index),
                  overrides={"model.epochs": 2, "model.batch_size": 8},
                  cache_dir=str(tmp_path / "cache"))
    serial = merbench.run(store=tmp_path / "serial.sqlite", **common)
    with RayExecutor(cpus_per_fold=1) as ex:  # one torch thread per fold, as serial here
        on_ray = merbench.run(store=tmp_path / "ray.sqlite", executor=ex, **common)
    got = _probas(tmp_path / "ray.sqlite", on_ray.run_id)
    assert len(got) == 36 and got == _probas(tmp_path / "serial.sqlite", serial.run_id)
    # trained, not constant: the probabilities differ between samples
    assert len({tuple(p.values()) for p in got.values()}) > 3
    losses = [i["final_loss"] for i in Store(tmp_path / "ray.sqlite").fold_info(
        on_ray.run_id).values()]
    assert len(losses) == 4 and all(np.isfinite(losses))


def test_tasks_read_the_shared_array_zero_copy_with_the_resources_they_asked_for(
        probe: Any) -> None:
    X = np.arange(24 * 5, dtype=np.float32).reshape(24, 5)
    jobs = [FoldJob(Fold(k, f"f{k}", (), ()), 0, np.arange(0), np.arange(6 * k, 6 * k + 6),
                    np.zeros(24), np.zeros(24), None) for k in range(4)]
    with RayExecutor(cpus_per_fold=2) as ex:
        handle = ex.share(X)
        out = dict(ex.map(probe.inspect_task, [(handle, job) for job in jobs]))
        ex.release(handle)
    assert sorted(out) == [0, 1, 2, 3]
    for k, seen in out.items():
        assert (seen["writeable"], seen["owndata"]) == (False, False)  # a view of the store
        assert seen["test_sum"] == float(X[6 * k:6 * k + 6].sum())
        assert seen["threads"] == 2 and seen["gpus"] == [] and seen["cuda_visible"] == ""
    # 2 CPUs per fold on a 2-CPU instance: one fold at a time
    spans = sorted((s["start"], s["end"]) for s in out.values())
    assert all(b[0] >= a[1] - 0.05 for a, b in zip(spans, spans[1:]))

    with RayExecutor(gpus_per_fold=0.5) as ex:  # two folds share the one GPU
        handle = ex.share(X)
        out = dict(ex.map(probe.inspect_task, [(handle, job) for job in jobs[:2]]))
    assert [(s["gpus"], s["cuda_visible"]) for s in out.values()] == [([0], "0"), ([0], "0")]
    assert [s["threads"] for s in out.values()] == [1, 1]


def test_tasks_no_node_can_run_are_refused_not_left_waiting(ray_session: None, tmp_path: Path,
                                                            tiny) -> None:
    with RayExecutor(gpus_per_fold=2) as ex, pytest.raises(
            ConfigError, match=r"no node of the Ray cluster has 1 CPU\(s\) and 2 GPU\(s\) .*"
                               r"largest node: 2 CPUs, 1 GPUs"):
        merbench.run(protocol="synthetic-loso", method="chance", dataset_params=tiny,
                     store=tmp_path / "s.sqlite", executor=ex)


def test_a_killed_worker_is_retried_and_the_run_finishes(probe: Any, tmp_path: Path,
                                                         tiny) -> None:
    logs = tmp_path / "fits"
    logs.mkdir()
    common = dict(protocol="synthetic-loso", method="probe-logreg", dataset_params=tiny,
                  cache_dir=str(tmp_path / "cache"))
    with RayExecutor(max_retries=2) as ex:
        result = merbench.run(store=tmp_path / "ray.sqlite", executor=ex,
                              overrides={"model.kill": "synthetic/s02",
                                         "model.log_dir": str(logs)}, **common)
    fits = probe.fits(logs)
    killed = int((logs / "killed_synthetic_s02").read_text())
    assert fits["synthetic/s02"][0] == killed and len(fits["synthetic/s02"]) == 2
    assert fits["synthetic/s02"][1] != killed  # run again, in another worker process
    assert all(len(fits[f"synthetic/s0{k}"]) == 1 for k in (1, 3, 4))
    assert len(result.predictions) == 24
    assert Store(tmp_path / "ray.sqlite").run(result.run_id).status == "finished"
    serial = merbench.run(store=tmp_path / "serial.sqlite", **common)
    assert _probas(tmp_path / "ray.sqlite", result.run_id) == \
        _probas(tmp_path / "serial.sqlite", serial.run_id)


def test_a_fold_that_keeps_killing_its_worker_fails_the_run_naming_it(
        probe: Any, tmp_path: Path, tiny, cli: Any) -> None:
    logs = tmp_path / "fits"
    logs.mkdir()
    store = tmp_path / "s.sqlite"
    res = cli("run", "-p", "synthetic-loso", "-m", "probe-logreg", "--store", store,
              "--data-param", "synthetic.subjects=4", "--data-param", "synthetic.frames=20",
              "--data-param", "synthetic.size=32", "--data-param", "synthetic.clips_per_class=2",
              "--set", "model.kill=synthetic/s03", "--set", "model.kill_always=True",
              "--set", f"model.log_dir={logs}", "--executor", "ray", "--max-retries", "1")
    assert res.code == 2
    assert res.err.strip().splitlines()[-1] == (
        "Error: fold synthetic/s03 failed after 2 attempts: worker died (see the Ray logs "
        "(/tmp/ray/session_latest/logs on its node))")
    assert len(probe.fits(logs)["synthetic/s03"]) == 2  # the first try and one retry
    (run,) = Store(store).runs(status=None)
    assert run.status == "failed" and 2 not in Store(store).done_folds(run.id)


def test_a_user_error_in_a_fold_is_not_retried_and_reads_the_same(probe: Any, tmp_path: Path,
                                                                  tiny) -> None:
    logs = tmp_path / "fits"
    logs.mkdir()
    with RayExecutor(max_retries=3) as ex, pytest.raises(DataError) as raised:
        merbench.run(protocol="synthetic-loso", method="probe-logreg", dataset_params=tiny,
                     store=tmp_path / "s.sqlite", executor=ex,
                     overrides={"model.fail": "synthetic/s04", "model.log_dir": str(logs)})
    assert str(raised.value) == "probe: bad data for synthetic/s04 (fix the probe)"
    assert "ray_probe.py" in raised.value.__notes__[0]  # the worker's traceback, for --debug
    assert len(probe.fits(logs)["synthetic/s04"]) == 1


def test_a_grid_of_two_methods_and_two_seeds_stores_four_runs(
        ray_session: None, tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERBENCH_EXECUTOR", "ray")
    store = tmp_path / "s.sqlite"
    args = ["grid", "-p", "synthetic-loso", "-m", "chance", "-m", "diff-logreg", "--seeds", "2",
            "--store", store, "--data-param", "synthetic.subjects=4",
            "--data-param", "synthetic.frames=20", "--data-param", "synthetic.size=32",
            "--data-param", "synthetic.clips_per_class=2", "--cache-dir", tmp_path / "cache"]
    res = cli(*args)
    assert res.code == 0, res.err
    assert "grid: 4 runs (0 already finished, 0 resumed), 16 folds to run" in res.err
    runs = Store(store).runs(status=None)
    assert sorted((r.method, r.seed, r.status) for r in runs) == [
        ("chance", 0, "finished"), ("chance", 1, "finished"),
        ("diff-logreg", 0, "finished"), ("diff-logreg", 1, "finished")]
    assert all(len(Store(store).done_folds(r.id)) == 4 for r in runs)
    lines = res.out.splitlines()
    assert lines[0].split() == ["protocol", "method", "settings", "seeds", "UF1", "UAR",
                                "finished"]
    assert [ln.split()[1] for ln in lines[2:]] == ["chance", "diff-logreg"]
    assert all(ln.split()[-1] == "2/2" and " ± " in ln for ln in lines[2:])
    again = cli(*args)  # every run is stored: nothing runs a second time
    assert "grid: 4 runs (4 already finished, 0 resumed), 0 folds to run" in again.err
    assert len(Store(store).runs(status=None)) == 4


def test_a_run_interrupted_after_some_folds_resumes_under_ray(probe: Any, tmp_path: Path,
                                                               tiny) -> None:
    logs = tmp_path / "fits"
    logs.mkdir()
    store = tmp_path / "s.sqlite"
    common = dict(protocol="synthetic-loso", method="probe-logreg", dataset_params=tiny,
                  overrides={"model.log_dir": str(logs)}, cache_dir=str(tmp_path / "cache"))
    stored: list[str] = []

    def stop_after_two(name: str, index: int, n: int) -> None:
        stored.append(name)
        if len(stored) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        merbench.run(store=store, on_fold=stop_after_two, **common)
    (run,) = Store(store).runs(status="interrupted")
    before = _fold_rows(store, run.id)
    assert [r[1] for r in before] == ["synthetic/s01", "synthetic/s02"]
    for path in list(logs.iterdir()):
        path.unlink()
    with RayExecutor() as ex:
        result = merbench.run(store=store, executor=ex, **common)
    assert result.run_id == run.id and result.resumed_folds == 2
    assert sorted(ray_probe.fits(logs)) == ["synthetic/s03", "synthetic/s04"]  # only these ran
    assert _fold_rows(store, run.id)[:2] == before  # the stored folds were left as they were
    assert Store(store).run(run.id).status == "finished" and len(result.predictions) == 24
    whole = merbench.run(store=tmp_path / "whole.sqlite", **common)
    assert _probas(store, run.id) == _probas(tmp_path / "whole.sqlite", whole.run_id)
