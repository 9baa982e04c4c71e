"""`merbench grid` (runs scheduled together, one table, a failing run isolated) and the executor
options of `run` and `grid`, on the local executors (the Ray executor: test_ray.py)."""
from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from merbench.errors import ConfigError
from merbench.executors import ProcessExecutor, SerialExecutor, TaskFailure
from merbench.plugins import register_plugin, unregister_plugin
from merbench.store import Store
from merbench.sweep import split_values

from . import ray_probe

TINY_ARGS = ["--data-param", "synthetic.subjects=4", "--data-param", "synthetic.frames=20",
             "--data-param", "synthetic.size=32", "--data-param", "synthetic.clips_per_class=2"]


@pytest.fixture()
def probe() -> Iterator[Any]:
    register_plugin(ray_probe, name="ray-probe")
    try:
        yield ray_probe
    finally:
        unregister_plugin("ray-probe")


def test_set_values_split_at_top_level_commas() -> None:
    assert split_values("0.001,0.01", "k") == ["0.001", "0.01"]
    assert split_values("(64, 64),(32,32)", "k") == ["(64, 64)", "(32,32)"]
    assert split_values("'a,b', c", "k") == ["'a,b'", "c"]
    assert split_values("[1,[2,3]]", "k") == ["[1,[2,3]]"]
    with pytest.raises(ConfigError, match=r"--set k=1,,2 has an empty value"):
        split_values("1,,2", "k")


def test_a_grid_runs_every_combination_a_method_takes(tmp_path: Path, cli: Any) -> None:
    store = tmp_path / "s.sqlite"
    res = cli("grid", "-p", "synthetic-loso", "-m", "chance", "-m", "diff-logreg", "-m", "chance",
              "--set", "model.C=0.1,1.0,.1", "--set", "model.strategy=uniform,prior",
              "--seed", "5", "--store", store, *TINY_ARGS)
    assert res.code == 0, res.err
    assert "grid: 4 runs (0 already finished, 0 resumed), 16 folds to run" in res.err
    runs = Store(store).runs(status=None)
    # model.C is LogReg's, model.strategy the chance model's: each applies where it exists
    assert sorted((r.method, r.params.get("model.C"), r.params.get("model.strategy"), r.seed)
                  for r in runs) == sorted(
        [("chance", None, s, 5) for s in ("uniform", "prior")]
        + [("diff-logreg", c, None, 5) for c in (0.1, 1.0)])
    assert {r.status for r in runs} == {"finished"}
    table = res.out.splitlines()
    assert [ln.split()[1:4] for ln in table[2:]] == [
        ["chance", "model.strategy=uniform", "5"], ["chance", "model.strategy=prior", "5"],
        ["diff-logreg", "model.C=0.1", "5"], ["diff-logreg", "model.C=1.0", "5"]]


def test_a_grid_key_no_method_has_is_refused_before_anything_runs(tmp_path: Path,
                                                                  cli: Any) -> None:
    store = tmp_path / "s.sqlite"
    res = cli("grid", "-p", "synthetic-loso", "-m", "chance", "-m", "diff-logreg",
              "--set", "model.Cee=1,2", "--store", store, *TINY_ARGS)
    assert res.code == 2
    assert res.err.strip() == (
        "Error: --set model.Cee fits none of the grid's methods; method 'chance': model 'chance' "
        "has no parameter 'Cee' (did you mean model.strategy?) (valid keys: model.strategy)")
    assert not store.exists() or Store(store).runs(status=None) == []


def test_a_failing_run_does_not_stop_the_others_and_resumes(probe: Any, tmp_path: Path,
                                                            cli: Any) -> None:
    store = tmp_path / "s.sqlite"
    flag = tmp_path / "broken"
    flag.write_text("")
    args = ["grid", "-p", "synthetic-loso", "-m", "probe-logreg", "-m", "chance",
            "--set", "model.fail=synthetic/s02", "--set", f"model.fail_while={flag}",
            "--set", f"model.log_dir={tmp_path}", "--store", store, *TINY_ARGS]
    res = cli(*args)
    assert res.code == 2
    (failed,) = Store(store).runs(status="failed")
    assert res.err.strip().splitlines()[-1] == (
        f"Error: 1 of 2 runs failed; first: run {failed.id[:8]} (probe-logreg, seed 0): fold "
        "synthetic/s02: probe: bad data for synthetic/s02 (fix the probe) (fix it and run the "
        "same command again: finished runs are reused, failed ones resume at their unfinished "
        "folds)")
    assert failed.info["error"] == "fold synthetic/s02: probe: bad data for synthetic/s02 " \
                                   "(fix the probe)"
    # the other folds of the failed run and the other run went on and were stored
    assert sorted(Store(store).done_folds(failed.id).values()) == [
        "synthetic/s01", "synthetic/s03", "synthetic/s04"]
    (chance,) = Store(store).runs(status="finished")
    assert chance.method == "chance"
    rows = {ln.split()[1]: ln for ln in res.out.splitlines()[2:]}
    assert rows["chance"].rstrip().endswith("1/1")
    assert rows["probe-logreg"].rstrip().endswith(f"0/1 (failed: {failed.id[:8]})")

    flag.unlink()  # the cause is fixed: the same command resumes the failed run's last fold
    for path in tmp_path.glob("synthetic_*"):
        path.unlink()
    again = cli(*args)
    assert again.code == 0, again.err
    assert "grid: 2 runs (1 already finished, 1 resumed), 1 folds to run" in again.err
    assert sorted(ray_probe.fits(tmp_path)) == ["synthetic/s02"]
    rec = Store(store).run(failed.id)
    assert rec.status == "finished" and rec.info["error"] is None
    assert len(Store(store).predictions(failed.id)) == 24


def test_fail_fast_stops_the_grid_at_the_first_failure(probe: Any, tmp_path: Path,
                                                       cli: Any) -> None:
    store = tmp_path / "s.sqlite"
    res = cli("grid", "-p", "synthetic-loso", "-m", "probe-logreg", "-m", "chance",
              "--set", "model.fail=synthetic/s02", "--fail-fast", "--store", store, *TINY_ARGS)
    assert res.code == 2
    assert res.err.strip().splitlines()[-1] == \
        "Error: probe: bad data for synthetic/s02 (fix the probe)"
    assert {r.status for r in Store(store).runs(status=None)} == {"failed"}


def test_ray_options_need_the_ray_executor(tmp_path: Path, cli: Any) -> None:
    res = cli("run", "-p", "synthetic-loso", "-m", "chance", "--gpus-per-fold", "0.5",
              "--store", tmp_path / "s.sqlite", *TINY_ARGS)
    assert res.code == 2
    assert res.err.strip() == ("Error: --gpus-per-fold is an option of the Ray executor (add "
                               "--executor ray (or set MERBENCH_EXECUTOR=ray))")
    res = cli("run", "-p", "synthetic-loso", "-m", "chance", "--executor", "ray", "--device",
              "cuda", "--store", tmp_path / "s.sqlite", *TINY_ARGS)
    assert res.code == 2
    assert res.err.strip() == ("Error: --device cuda under Ray needs GPUs for the folds (add "
                               "--gpus-per-fold (e.g. 1, or 0.25 to share a GPU))")


def test_without_ray_the_ray_executor_says_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cli: Any) -> None:
    from merbench.executors import RayExecutor

    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    res = cli("run", "-p", "synthetic-loso", "-m", "chance", "--executor", "ray",
              "--store", tmp_path / "s.sqlite", *TINY_ARGS)
    assert res.code == 2
    assert res.err.strip() == ('Error: the Ray executor needs Ray, which is not installed '
                               '(pip install "merbench[ray]")')
    with pytest.raises(ConfigError, match="not installed"):
        RayExecutor()


def test_map_yields_failures_in_place_of_results_when_asked() -> None:
    tasks = [(4.0,), (-1.0,), (9.0,)]
    with SerialExecutor() as ex:
        with pytest.raises(ValueError, match="math domain error"):
            dict(ex.map(math.sqrt, tasks))
        out = dict(ex.map(math.sqrt, tasks, errors=True))
    assert out[0] == 2.0 and out[2] == 3.0
    assert isinstance(out[1], TaskFailure) and str(out[1]) == "ValueError: math domain error"


@pytest.mark.slow
def test_process_map_yields_failures_in_place_of_results_when_asked() -> None:
    with ProcessExecutor(2) as ex:
        out = dict(ex.map(math.sqrt, [(4.0,), (-1.0,), (9.0,)], errors=True))
        assert out[0] == 2.0 and out[2] == 3.0 and str(out[1]) == "ValueError: math domain error"
        assert dict(ex.map(math.sqrt, [(16.0,)])) == {0: 4.0}  # the workers go on serving
