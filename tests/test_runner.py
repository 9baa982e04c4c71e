"""The runner: protocol + method -> folds -> results store, resumable and deterministic."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import merbench
from merbench import Clip, MethodSpec, Model, Step, hookimpl
from merbench.errors import ConfigError
from merbench.leaderboard import leaderboard_rows
from merbench.metrics import score
from merbench.plugins import register_plugin, unregister_plugin
from merbench.provenance import fold_seed
from merbench.store import Store

CLASSES = ["negative", "positive", "surprise"]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Preprocessed arrays are content-addressed, so tests may share one cache."""
    return str(tmp_path_factory.mktemp("runner-cache"))


# -- a spy plugin: features carry the sample id, the model records what it is fitted on --------
SPY: dict[str, list] = {"fit": [], "predict": []}
FAIL_ON: set[str] = set()


class SampleIdStep(Step):
    """Encodes a synthetic sample id (subject, class, clip) as the feature; reads no frame."""

    name = "spy-id"

    def __call__(self, clip: Clip) -> np.ndarray:
        _, subject, clip_name = clip.sample_id.split("/")
        cls, k = clip_name.split("_")
        return np.array([int(subject[1:]), ["neg", "pos", "sur"].index(cls), int(k)], float)


def _ids(X: np.ndarray) -> list[str]:
    return [f"synthetic/s{int(a):02d}/{['neg', 'pos', 'sur'][int(b)]}_{int(c):02d}" for a, b, c in X]


class SpyModel(Model):
    """Records the sample ids it is fitted on and asked about; predicts subject number mod 3."""

    def __init__(self, num_classes: int = 3, seed: int = 0) -> None:
        self.num_classes = num_classes
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> SpyModel:
        ids = _ids(X)
        if FAIL_ON & {i.rsplit("/", 1)[0] for i in ids} != FAIL_ON:
            raise RuntimeError("spy told to fail on this fold")
        SPY["fit"].append({"ids": ids, "y": y.tolist(), "groups": list(groups), "seed": self.seed})
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        SPY["predict"].append(_ids(X))
        return np.eye(self.num_classes)[X[:, 0].astype(int) % self.num_classes]


@hookimpl
def _spy_steps(register):  # type: ignore[no-untyped-def]
    register("spy-id", SampleIdStep)


@hookimpl
def _spy_models(register):  # type: ignore[no-untyped-def]
    register("spy", SpyModel)


@hookimpl
def _spy_methods(register):  # type: ignore[no-untyped-def]
    register("spy-method", MethodSpec((("spy-id", {}),), ("spy", {}), "records what it sees"))


@pytest.fixture()
def spy() -> Iterator[dict[str, list]]:
    register_plugin(types.SimpleNamespace(register_preprocessors=_spy_steps,
                                          register_models=_spy_models,
                                          register_methods=_spy_methods), name="spy-plugin")
    SPY["fit"].clear()
    SPY["predict"].clear()
    FAIL_ON.clear()
    try:
        yield SPY
    finally:
        FAIL_ON.clear()
        unregister_plugin("spy-plugin")


# -- tests ------------------------------------------------------------------------------------
def test_end_to_end_run_store_and_leaderboard(tmp_path: Path, tiny, shared_cache: str) -> None:
    path = tmp_path / "results.sqlite"
    folds_seen = []
    result = merbench.run(protocol="synthetic-loso", method="diff-logreg", store=path,
                          cache_dir=shared_cache, dataset_params=tiny,
                          on_fold=lambda name, i, n: folds_seen.append((name, i, n)))
    assert sorted(folds_seen) == [(f"synthetic/s0{k}", k - 1, 4) for k in range(1, 5)]
    ids = [p.sample_id for p in result.predictions]
    assert len(ids) == 24 == len(set(ids))
    assert result.report["pooled"].n == 24 and len(result.report["per_fold"]) == 4
    assert result.resumed_folds == 0

    store = Store(path)
    rec = store.run(result.run_id)
    assert (rec.protocol, rec.method, rec.seed, rec.status) == ("synthetic-loso", "diff-logreg", 0,
                                                                "finished")
    assert rec.params["apex-diff.size"] == 32
    assert rec.versions["merbench"] == merbench.__version__ and "baseline" in rec.versions["plugins"]
    assert rec.info["n_folds"] == 4 and rec.info["n_samples"] == 24
    assert rec.info["classes"] == CLASSES and rec.info["dataset_params"] == tiny
    assert rec.started <= rec.ended
    stored = store.predictions(result.run_id)
    assert all(sum(p.proba.values()) == pytest.approx(1, abs=1e-5) for p in stored)
    assert all(p.y_pred == max(p.proba, key=p.proba.get) for p in stored)
    assert all(p.fold == "synthetic/" + p.sample_id.split("/")[1] for p in stored)
    recomputed = score([p.y_true for p in stored], [p.y_pred for p in stored], CLASSES)
    assert recomputed.uf1 == pytest.approx(result.uf1)
    assert result.uf1 > 0.5  # motion is visible even on the tiny set

    (row,) = leaderboard_rows(store, "synthetic-loso", include_published=False)
    assert (row["method"], row["source"], row["seeds"], row["runs"]) == (
        "diff-logreg", "reproduced", [0], [result.run_id])
    assert row["UF1"] == {"mean": pytest.approx(result.uf1), "std": 0.0}


def test_run_records_all_parameters_including_defaults(tmp_path: Path, tiny,
                                                       shared_cache: str) -> None:
    result = merbench.run(protocol="synthetic-loso", method="diff-logreg", dataset_params=tiny,
                          store=tmp_path / "r.sqlite", cache_dir=shared_cache,
                          overrides={"model.C": "0.5"})
    params = Store(tmp_path / "r.sqlite").run(result.run_id).params
    # the recipe sets apex-diff.size; the rest are LogReg's defaults; seed/num_classes are per fold
    assert params == {"apex-diff.size": 32, "model.C": 0.5, "model.class_weight": "balanced",
                      "model.max_iter": 1000}


def test_test_samples_never_reach_fit(spy, tmp_path: Path, tiny) -> None:
    result = merbench.run(protocol="synthetic-loso", method="spy-method", dataset_params=tiny,
                          store=tmp_path / "r.sqlite", cache_dir=str(tmp_path / "cache"))
    samples = merbench.protocol("synthetic-loso").load_samples(dataset_params=tiny)
    folds = merbench.protocol("synthetic-loso").folds(samples)
    labels = {s.id: CLASSES.index(s.label) for s in samples}
    assert len(spy["fit"]) == len(spy["predict"]) == 4
    for fold, fit, asked in zip(folds, spy["fit"], spy["predict"]):
        assert sorted(fit["ids"]) == sorted(fold.train)
        assert not set(fit["ids"]) & set(fold.test)
        assert sorted(asked) == sorted(fold.test)
        assert fit["y"] == [labels[i] for i in fit["ids"]]
        assert fit["groups"] == [i.rsplit("/", 1)[0] for i in fit["ids"]]  # subjects, training only
        assert fit["seed"] == fold_seed(0, fold.name)
    # the spy predicts subject number mod 3: s01 -> positive, s02 -> surprise, s03 -> negative, ...
    assert {p.sample_id.split("/")[1]: p.pred for p in result.predictions} == {
        "s01": "positive", "s02": "surprise", "s03": "negative", "s04": "positive"}


def test_finished_run_is_returned_as_it_is(spy, tmp_path: Path, tiny) -> None:
    kwargs = {"protocol": "synthetic-loso", "method": "spy-method", "dataset_params": tiny,
              "store": tmp_path / "r.sqlite", "cache_dir": str(tmp_path / "cache")}
    first = merbench.run(**kwargs)
    assert len(spy["fit"]) == 4
    second = merbench.run(**kwargs)
    assert len(spy["fit"]) == 4  # nothing fitted again
    assert second.run_id == first.run_id
    assert [(p.sample_id, p.pred) for p in second.predictions] == \
        [(p.sample_id, p.pred) for p in first.predictions]
    third = merbench.run(**kwargs, rerun=True)
    assert len(spy["fit"]) == 8 and third.run_id != first.run_id
    assert len(Store(tmp_path / "r.sqlite").runs()) == 2


def test_failed_run_resumes_without_redoing_finished_folds(spy, tmp_path: Path, tiny) -> None:
    kwargs = {"protocol": "synthetic-loso", "method": "spy-method", "dataset_params": tiny,
              "store": tmp_path / "r.sqlite", "cache_dir": str(tmp_path / "cache")}
    FAIL_ON.add("synthetic/s03")  # fitting fold s03 (train = s01, s02, s04) fails
    with pytest.raises(RuntimeError, match="spy told to fail"):
        merbench.run(**kwargs)
    store = Store(tmp_path / "r.sqlite")
    (run,) = store.runs(status="failed")
    assert store.done_folds(run.id) == {0: "synthetic/s01", 1: "synthetic/s02"}
    FAIL_ON.clear()
    spy["fit"].clear()
    result = merbench.run(**kwargs)
    assert result.run_id == run.id and result.resumed_folds == 2
    assert [f["seed"] for f in spy["fit"]] == [fold_seed(0, "synthetic/s03"),
                                               fold_seed(0, "synthetic/s04")]
    assert store.run(run.id).status == "finished" and len(result.predictions) == 24


def test_fold_seeds_derive_from_run_seed_and_fold(tmp_path: Path, tiny, shared_cache: str) -> None:
    assert fold_seed(0, "synthetic/s01") == 393151419  # stable across runs and machines
    assert fold_seed(1, "synthetic/s01") == 1809496607
    assert fold_seed(0, "synthetic/s02") == 709383088
    path = tmp_path / "r.sqlite"
    runs = merbench.run_seeds(protocol="synthetic-loso", method="chance", dataset_params=tiny,
                              seed=0, seeds=2, store=path, cache_dir=shared_cache)
    assert [r.seed for r in runs] == [0, 1]
    with sqlite3.connect(path) as con:
        rows = con.execute("SELECT r.seed, f.name, f.seed FROM folds f JOIN runs r "
                           "ON r.id = f.run_id").fetchall()
    assert len(rows) == 8
    assert all(fs == fold_seed(rs, name) for rs, name, fs in rows)
    assert len({fs for _, _, fs in rows}) == 8
    preds = [{p.sample_id: p.pred for p in r.predictions} for r in runs]
    assert preds[0] != preds[1]  # the chance model draws from its fold seed


def test_same_seed_gives_identical_predictions(tmp_path: Path, tiny, shared_cache: str) -> None:
    path = tmp_path / "r.sqlite"
    for method in ("chance", "diff-logreg"):
        runs = [merbench.run(protocol="synthetic-loso", method=method, dataset_params=tiny,
                             store=path, cache_dir=shared_cache, rerun=True) for _ in range(2)]
        assert runs[0].run_id != runs[1].run_id
        probas = [{p.sample_id: p.proba for p in Store(path).predictions(r.run_id)} for r in runs]
        assert probas[0] == probas[1]


@pytest.mark.slow
def test_two_workers_give_the_same_predictions(tmp_path: Path, tiny, shared_cache: str) -> None:
    path = tmp_path / "r.sqlite"
    runs = [merbench.run(protocol="synthetic-loso", method="diff-logreg", dataset_params=tiny,
                         store=path, cache_dir=shared_cache, workers=w, rerun=True)
            for w in (1, 2)]
    probas = [{p.sample_id: p.proba for p in Store(path).predictions(r.run_id)} for r in runs]
    assert len(probas[1]) == 24
    assert probas[0] == probas[1]


def test_a_run_without_a_deep_model_never_imports_torch(tmp_path: Path, tiny) -> None:
    """torch costs seconds per command: a chance or logistic-regression run must not pay."""
    code = ("import sys, merbench; r = merbench.run(protocol='synthetic-loso', method='chance', "
            f"dataset_params={tiny!r}, store=sys.argv[1]); print(len(r.predictions), "
            "'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r.sqlite")],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["24", "False"]
    (rec,) = Store(tmp_path / "r.sqlite").runs()
    assert rec.device.startswith("cpu")


def test_sample_level_holdout_run_is_labelled(tmp_path: Path, tiny, shared_cache: str) -> None:
    result = merbench.run(protocol="synthetic-holdout-samples", method="chance",
                          dataset_params=tiny, store=tmp_path / "r.sqlite", cache_dir=shared_cache)
    rec = Store(tmp_path / "r.sqlite").run(result.run_id)
    assert rec.protocol == "synthetic-holdout-samples [leaks identity]"
    assert rec.info["leaks_identity"] is True
    assert result.report["pooled"].n == 6  # round(0.3 * 8) = 2 test clips per class
    (row,) = leaderboard_rows(Store(tmp_path / "r.sqlite"), "synthetic-holdout-samples",
                              include_published=False)
    assert row["protocol"] == "synthetic-holdout-samples [leaks identity]"


def test_editing_a_protocol_file_does_not_return_the_old_run(spy, tmp_path: Path) -> None:
    body = ('kind = "holdout"\nclasses = ["negative", "positive", "surprise"]\n'
            'split_seed = {seed}\ntest_fraction = {fraction}\n[[datasets]]\nname = "synthetic"\n')
    path = tmp_path / "my-holdout.toml"
    params = {"synthetic": {"subjects": 6, "clips_per_class": 1}}
    kwargs = {"protocol": str(path), "method": "spy-method", "dataset_params": params,
              "store": tmp_path / "r.sqlite", "cache_dir": str(tmp_path / "cache")}
    path.write_text(body.format(seed=0, fraction=0.3))
    first = merbench.run(**kwargs)
    assert len(first.predictions) == 6  # round(0.3 * 6) = 2 of 6 subjects, 3 clips each
    path.write_text(body.format(seed=1, fraction=0.5))
    second = merbench.run(**kwargs)
    assert len(second.predictions) == 9  # 3 of 6 subjects now
    assert second.run_id != first.run_id


def test_overrides_need_a_method_name(tmp_path: Path, tiny) -> None:
    method = merbench.method("chance")
    with pytest.raises(ConfigError, match="pass overrides with a method name"):
        merbench.run(protocol="synthetic-loso", method=method, overrides={"model.seed": 1},
                     dataset_params=tiny, store=tmp_path / "r.sqlite")


def test_motion_baseline_beats_appearance_and_chance(tmp_path: Path, shared_cache: str) -> None:
    """Measured on this set: diff-logreg UF1 0.82, apex-logreg 0.56, chance UAR 0.36."""
    params = {"synthetic": {"subjects": 8, "clips_per_class": 3, "size": 48, "frames": 24}}
    uf1, uar = {}, {}
    for method in ("diff-logreg", "apex-logreg", "chance"):
        r = merbench.run(protocol="synthetic-loso", method=method, dataset_params=params,
                         store=tmp_path / "r.sqlite", cache_dir=shared_cache)
        assert r.report["pooled"].n == 72
        uf1[method], uar[method] = r.uf1, r.uar
    assert uf1["diff-logreg"] > 0.65
    assert uf1["diff-logreg"] > uf1["apex-logreg"] + 0.1
    assert abs(uar["chance"] - 1 / 3) < 0.15


# -- resume after kill -9 ------------------------------------------------------------------------
SLOW_SCRIPT = r"""
import os, sys, time, types
from merbench import MethodSpec, hookimpl
from merbench.plugins import register_plugin
from merbench_plugins.baseline import LogReg

class SlowLogReg(LogReg):
    def fit(self, X, y, groups=None):
        with open(os.environ["FIT_LOG"], "a") as fh:
            fh.write(f"{self.seed}\n")
        time.sleep(float(os.environ["FIT_SLEEP"]))
        return super().fit(X, y, groups)

@hookimpl
def register_models(register):
    register("slow-logreg", SlowLogReg)

@hookimpl
def register_methods(register):
    register("slow-diff", MethodSpec((("apex-diff", {"size": 16}),), ("slow-logreg", {})))

register_plugin(types.SimpleNamespace(register_models=register_models,
                                      register_methods=register_methods), name="slow")
from merbench.cli import main
main(sys.argv[1:])
"""


def _folds_table(path: Path) -> list[tuple]:
    if not path.exists():
        return []
    try:
        with sqlite3.connect(path, timeout=5) as con:
            return con.execute("SELECT run_id, fold_index, name, seed, started, ended, info "
                               "FROM folds ORDER BY fold_index").fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []


@pytest.mark.slow
def test_killed_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    store = tmp_path / "results.sqlite"
    fit_log = tmp_path / "fits.txt"
    cmd = [sys.executable, "-c", SLOW_SCRIPT, "run", "-p", "synthetic-loso", "-m", "slow-diff",
           "--data-param", "synthetic.subjects=5", "--data-param", "synthetic.clips_per_class=2",
           "--data-param", "synthetic.size=32", "--data-param", "synthetic.frames=20",
           "--store", str(store), "--cache-dir", str(tmp_path / "cache"), "--json"]
    env = {**os.environ, "FIT_LOG": str(fit_log), "FIT_SLEEP": "0.8"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 120
    try:
        while not _folds_table(store):
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "no fold finished in time"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    before = _folds_table(store)
    assert 1 <= len(before) < 5, "the run must be killed mid-way"
    first_fits = fit_log.read_text().split()
    fit_log.write_text("")

    done = subprocess.run(cmd, cwd=tmp_path, env={**env, "FIT_SLEEP": "0"}, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    after = _folds_table(store)
    assert [row[1] for row in after] == [0, 1, 2, 3, 4]  # every fold, exactly once
    assert len({row[0] for row in after}) == 1  # one run, resumed
    assert after[:len(before)] == before  # the finished folds were not recomputed
    rec = Store(store).run(after[0][0])
    assert rec.status == "finished"
    assert len(Store(store).predictions(rec.id)) == 30
    resumed_seeds = {row[3] for row in after[len(before):]}
    assert set(map(int, fit_log.read_text().split())) == resumed_seeds
    assert len(fit_log.read_text().split()) == 5 - len(before)
    assert {row[3] for row in before} <= set(map(int, first_fits))
    assert '"n": 30' in done.stdout


def test_planned_runs_execute_together_like_one_by_one(tmp_path: Path, tiny,
                                                       shared_cache: str) -> None:
    from merbench.runner import execute, plan_run

    common = dict(protocol="synthetic-loso", dataset_params=tiny, cache_dir=shared_cache)
    alone = [merbench.run(method=m, store=str(tmp_path / f"{m}.sqlite"), **common)
             for m in ("chance", "diff-logreg")]
    store = Store(tmp_path / "together.sqlite")
    plans = [plan_run(method=m, store=store, **common) for m in ("chance", "diff-logreg")]
    together = execute(plans)
    for a, b in zip(alone, together):
        assert [(p.sample_id, p.pred) for p in a.predictions] == \
            [(p.sample_id, p.pred) for p in b.predictions]
    assert [r.status for r in store.runs()] == ["finished", "finished"]
    again = execute([plan_run(method="chance", store=store, **common)])  # reused, not rerun
    assert again[0].run_id == together[0].run_id
