"""Progress in logs (a line per stored fold, every few epochs), Ctrl-C in one line with what is
stored, the resume line, and no empty training-state folders left behind."""
from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import merbench
from merbench import MethodSpec, hookimpl
from merbench.metrics import score
from merbench.plugins import register_plugin, unregister_plugin
from merbench.runner import RunInterrupted, plan_run
from merbench.store import Store
from merbench.training import TorchClassifier
from merbench_plugins.baseline import LogReg

STOP: dict[str, str | None] = {"subject": None}  # a fold whose fit is "interrupted" by Ctrl-C


def _stop_here(groups: np.ndarray | None) -> bool:
    """True in the fold that tests on STOP's subject (its training groups lack it)."""
    return STOP["subject"] is not None and groups is not None and \
        STOP["subject"] not in set(np.asarray(groups).tolist())


class CtrlCLogReg(LogReg):
    def fit(self, X, y, groups=None):  # type: ignore[no-untyped-def]
        if _stop_here(groups):
            raise KeyboardInterrupt
        return super().fit(X, y, groups)


class Tiny(TorchClassifier):
    """A two-layer net on flattened inputs (a deep model with training state)."""

    defaults = {"epochs": 2, "lr": 1e-2, "batch_size": 8}

    def build(self, num_classes, input_shape):  # type: ignore[no-untyped-def]
        import torch.nn as nn

        return nn.Sequential(nn.Flatten(), nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, num_classes))

    def fit(self, X, y, groups=None):  # type: ignore[no-untyped-def]
        if _stop_here(groups):
            raise KeyboardInterrupt
        return super().fit(X, y, groups)


@hookimpl
def _models(register):  # type: ignore[no-untyped-def]
    register("ctrlc-logreg", CtrlCLogReg)
    register("tiny-net", Tiny)


@hookimpl
def _methods(register):  # type: ignore[no-untyped-def]
    register("ctrlc-diff", MethodSpec((("apex-diff", {"size": 8}),), ("ctrlc-logreg", {})))
    register("tiny-diff", MethodSpec((("apex-diff", {"size": 8}),), ("tiny-net", {})))


@pytest.fixture()
def plugin() -> Iterator[None]:
    register_plugin(types.SimpleNamespace(register_models=_models, register_methods=_methods),
                    name="progress-plugin")
    STOP["subject"] = None
    try:
        yield
    finally:
        STOP["subject"] = None
        unregister_plugin("progress-plugin")


@pytest.fixture()
def progress_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="merbench.progress")
    return caplog


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "merbench.progress"]


# -- progress lines ---------------------------------------------------------------------------
def test_one_line_per_stored_fold_with_the_running_uf1(progress_log, tmp_path: Path,
                                                      tiny) -> None:
    result = merbench.run(protocol="synthetic-loso", method="diff-logreg", dataset_params=tiny,
                          store=str(tmp_path / "r.sqlite"))
    lines = _lines(progress_log)
    assert len(lines) == 4
    preds = Store(tmp_path / "r.sqlite").predictions(result.run_id)
    for k, line in enumerate(lines, 1):
        assert line.startswith(f"diff-logreg seed 0: fold {k}/4 synthetic/s0{k} stored "
                               "(6 test samples, ")
        so_far = [p for p in preds if p.fold_index < k]  # folds run in order serially
        uf1 = score([p.y_true for p in so_far], [p.y_pred for p in so_far],
                    result.protocol.classes).uf1
        assert line.endswith(f"; running UF1 {uf1:.4f}")
    assert lines[-1].endswith(f"running UF1 {result.uf1:.4f}")


def test_epoch_lines_every_tenth_of_the_epochs(progress_log, one_torch_thread) -> None:
    X = np.random.default_rng(0).random((12, 4, 4)).astype(np.float32)
    y = np.array([0, 1, 2] * 4)
    model = Tiny(num_classes=3, epochs=25).fit(X, y)
    lines = _lines(progress_log)
    epochs = [int(line.split("epoch ")[1].split("/")[0]) for line in lines]
    assert epochs == [1, 4, 7, 10, 13, 16, 19, 22, 25]  # the first, every 3rd, the last
    fourth = model.history_[3]["loss"]
    assert lines[1].startswith(f"Tiny epoch 4/25: loss {fourth:.4f} (")
    assert lines[-1].endswith("~0 s left)")


def test_epoch_lines_at_least_every_30_seconds(progress_log, one_torch_thread,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(0, 10_000, 31))  # every reading 31 s later than the one before
    monkeypatch.setattr("merbench.training.time.monotonic", lambda: float(next(clock)))
    X = np.random.default_rng(0).random((12, 4, 4)).astype(np.float32)
    Tiny(num_classes=3, epochs=5).fit(X, np.array([0, 1, 2] * 4))
    assert [int(ln.split("epoch ")[1].split("/")[0]) for ln in _lines(progress_log)] == \
        [1, 2, 3, 4, 5]


def test_epoch_bar_shows_the_loss(one_torch_thread) -> None:
    shown: list[str] = []

    class Bar:
        def set_postfix(self, refresh: bool = True, **kw: str) -> None:
            shown.append(kw["loss"])

    model = Tiny(num_classes=3)
    model._epoch_clock = [0.0, 0.0, 0, 0]
    model._report_epoch({"epoch": 1, "loss": 0.123456}, Bar())
    assert shown == ["0.1235"]


def test_epoch_lines_of_a_run_name_their_fold(progress_log, plugin, one_torch_thread,
                                             tmp_path: Path, tiny) -> None:
    merbench.run(protocol="synthetic-loso", method="tiny-diff", dataset_params=tiny,
                 store=str(tmp_path / "r.sqlite"))
    epoch_lines = [ln for ln in _lines(progress_log) if " epoch " in ln]
    assert epoch_lines[0].startswith("fold synthetic/s01: Tiny epoch 1/2: loss ")
    assert epoch_lines[-1].startswith("fold synthetic/s04: Tiny epoch 2/2: loss ")


def test_cli_prints_progress_lines_when_stderr_is_not_a_terminal(cli, in_tmp: Path) -> None:
    args = ["run", "-p", "synthetic-loso", "-m", "diff-logreg", "--data-param",
            "synthetic.subjects=4", "--data-param", "synthetic.size=32", "--data-param",
            "synthetic.frames=20", "--data-param", "synthetic.clips_per_class=2"]
    loud = cli(*args)
    assert loud.code == 0
    folds = [ln for ln in loud.err.splitlines() if " stored (" in ln]
    assert [ln.split(": fold ")[1][:3] for ln in folds] == ["1/4", "2/4", "3/4", "4/4"]
    quiet = cli(*args, "--rerun", "-q")
    assert quiet.code == 0 and quiet.err == ""
    assert not logging.getLogger("merbench.progress").handlers  # nothing left configured


# -- Ctrl-C and resume ------------------------------------------------------------------------
def test_ctrl_c_marks_the_run_and_says_what_is_stored(plugin, tmp_path: Path, tiny) -> None:
    store = Store(tmp_path / "r.sqlite")
    common = dict(protocol="synthetic-loso", method="ctrlc-diff", dataset_params=tiny,
                  store=store)
    STOP["subject"] = "synthetic/s03"
    with pytest.raises(RunInterrupted) as info:
        merbench.run(**common)
    assert (info.value.stored, info.value.total) == (2, 4)
    assert isinstance(info.value, KeyboardInterrupt)
    rec = store.runs(status=None)[0]
    assert rec.status == "interrupted" and len(store.done_folds(rec.id)) == 2
    STOP["subject"] = None
    plan = plan_run(**common)
    assert plan.run_id == rec.id and plan.resumed == 2
    assert plan.notice() == f"resuming run {rec.id}: 2 of 4 folds already stored"
    result = merbench.run(**common)
    assert result.run_id == rec.id and result.resumed_folds == 2
    assert sorted(store.done_folds(rec.id)) == [0, 1, 2, 3]


def test_cli_ctrl_c_is_one_line_and_resume_is_announced(plugin, cli, in_tmp: Path) -> None:
    args = ["run", "-p", "synthetic-loso", "-m", "ctrlc-diff", "-q", "--data-param",
            "synthetic.subjects=4", "--data-param", "synthetic.size=32", "--data-param",
            "synthetic.frames=20", "--data-param", "synthetic.clips_per_class=2"]
    STOP["subject"] = "synthetic/s02"
    out = cli(*args)
    assert out.code == 130
    assert out.err == "Interrupted: 1 of 4 folds stored; run the same command to resume.\n"
    assert out.out == ""
    STOP["subject"] = None
    again = cli(*args)
    assert again.code == 0
    run_id = Store(in_tmp / "merbench-results" / "results.sqlite").runs()[0].id
    assert again.err == f"resuming run {run_id}: 1 of 4 folds already stored\n"


def test_ctrl_c_outside_a_run_is_one_line(cli, in_tmp: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*a, **k):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr("merbench.protocols.describe", interrupted)
    out = cli("list", "protocol")
    assert out.code == 130 and out.err == "Interrupted.\n"


def test_no_empty_training_state_folders_are_left(plugin, one_torch_thread, tmp_path: Path,
                                                  tiny) -> None:
    store = tmp_path / "results.sqlite"
    state = tmp_path / "training-state"
    common = dict(protocol="synthetic-loso", method="tiny-diff", dataset_params=tiny,
                  store=str(store))
    STOP["subject"] = "synthetic/s03"  # two folds stored (their states removed), then Ctrl-C
    with pytest.raises(RunInterrupted):
        merbench.run(**common)
    assert not state.exists()
    STOP["subject"] = None
    merbench.run(**common)
    assert not state.exists()
    # a fold interrupted mid-training keeps its state for the resume
    from merbench.runner import _tidy_state

    folder = state / "abc"
    folder.mkdir(parents=True)
    (folder / "fold002.pt").write_bytes(b"x")
    batch = types.SimpleNamespace(state_dir=folder)
    _tidy_state([batch])  # type: ignore[list-item]
    assert (folder / "fold002.pt").exists()
    (folder / "fold002.pt").unlink()
    _tidy_state([batch])  # type: ignore[list-item]
    assert not state.exists()


# -- a real Ctrl-C on `merbench run --workers 2` ------------------------------------------------
SLOW_PLUGIN = '''
import os, time
from merbench import MethodSpec, hookimpl
from merbench_plugins.baseline import LogReg


class SlowLogReg(LogReg):
    def fit(self, X, y, groups=None):
        time.sleep(float(os.environ.get("FIT_SLEEP", "0")))
        return super().fit(X, y, groups)


@hookimpl
def register_models(register):
    register("slow-logreg", SlowLogReg)


@hookimpl
def register_methods(register):
    register("slow-diff", MethodSpec((("apex-diff", {"size": 16}),), ("slow-logreg", {})))
'''

MAIN = '''
import importlib, sys

if __name__ == "__main__":  # spawned workers import this file too
    from merbench.plugins import register_plugin

    register_plugin(importlib.import_module("slowplug"), name="slowplug")
    from merbench.cli import main

    main(sys.argv[1:])
'''


def _stored(store: Path) -> list[tuple[str, int]]:
    try:
        with sqlite3.connect(store, timeout=5) as con:
            return con.execute("SELECT run_id, fold_index FROM folds").fetchall()
    except sqlite3.OperationalError:
        return []


@pytest.mark.slow
def test_ctrl_c_with_two_workers_prints_one_line_and_resumes(tmp_path: Path) -> None:
    (tmp_path / "slowplug.py").write_text(textwrap.dedent(SLOW_PLUGIN))
    (tmp_path / "main.py").write_text(textwrap.dedent(MAIN))
    store = tmp_path / "r.sqlite"
    cmd = [sys.executable, "main.py", "run", "-p", "synthetic-loso", "-m", "slow-diff",
           "--workers", "2", "-q", "--store", str(store), "--cache-dir", str(tmp_path / "c"),
           "--data-param", "synthetic.subjects=6", "--data-param", "synthetic.clips_per_class=1",
           "--data-param", "synthetic.size=32", "--data-param", "synthetic.frames=20"]
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "FIT_SLEEP": "2"}
    # a terminal's Ctrl-C reaches the whole foreground process group: driver and workers
    # ... with SIGINT's default disposition, as in a terminal: a test run started in the
    # background of a non-interactive shell inherits SIGINT ignored, and Python then never
    # turns it into KeyboardInterrupt
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    try:
        while not _stored(store):
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "no fold finished in time"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    stored = _stored(store)
    assert proc.returncode == 130, err
    assert err == f"Interrupted: {len(stored)} of 6 folds stored; run the same command to " \
                  "resume.\n"
    assert 1 <= len(stored) < 6 and out == ""
    rec = Store(store).runs(status=None)[0]
    assert rec.status == "interrupted"

    done = subprocess.run(cmd, cwd=tmp_path, env={**env, "FIT_SLEEP": "0"}, text=True,
                          capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"resuming run {rec.id}: {len(stored)} of 6 folds already stored\n"
    after = _stored(store)
    assert sorted(f for _, f in after) == [0, 1, 2, 3, 4, 5]  # every fold once, one run
    assert {r for r, _ in after} == {rec.id}
    assert set(stored) <= set(after)
    assert Store(store).run(rec.id).status == "finished"
    assert not (tmp_path / "training-state").exists()


def test_train_prints_epoch_lines_when_stderr_is_not_a_terminal(plugin, cli, in_tmp: Path,
                                                                one_torch_thread) -> None:
    out = cli("train", "-m", "tiny-diff", "-d", "synthetic", "--param", "subjects=4",
              "--param", "size=32", "--param", "frames=20", "--param", "clips_per_class=2",
              "--set", "model.epochs=3", "-o", "m.pt")
    assert out.code == 0, out.err
    epochs = [ln for ln in out.err.splitlines() if " epoch " in ln]
    assert [ln.split(": loss")[0] for ln in epochs] == ["Tiny epoch 1/3", "Tiny epoch 2/3",
                                                        "Tiny epoch 3/3"]


def test_fold_bar_shows_an_eta_only_once_every_worker_finished_a_fold(
        tmp_path: Path, tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    from merbench.executors import SerialExecutor

    seen: list[tuple[int, str | None]] = []

    class Bar:  # what the runner uses of tqdm, recorded
        disable, n, smoothing, bar_format = False, 0, 0.3, None

        def update(self, k: int) -> None:
            self.n += k
            seen.append((self.n, self.bar_format))

        def close(self) -> None:
            pass

    bar = Bar()
    monkeypatch.setattr("merbench.runner.progress_bar", lambda *a: bar)

    class TwoWorkers(SerialExecutor):
        workers = 2

    merbench.run(protocol="synthetic-loso", method="chance", dataset_params=tiny,
                 store=str(tmp_path / "r.sqlite"), executor=TwoWorkers())
    hidden = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}]"
    # (fold n, the bar's format while it ran): until both workers finished a fold the rate
    # covers one worker's output only, so no ETA is shown; then tqdm's usual one
    assert seen == [(1, hidden), (2, hidden), (3, None), (4, None)]
    assert bar.smoothing == 0  # the mean rate since the start, not the last few folds
