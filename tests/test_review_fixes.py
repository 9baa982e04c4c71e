"""Regressions found in review: training-state files per fold, runner-owned parameters,
precomputed inputs never served stale from the cache, apex checks on load, leaderboards of
runs under protocol files, run-time plugins in worker processes."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import merbench
from merbench.errors import ConfigError, DataError
from merbench.store import Store
from merbench.types import Sample

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("key", ["model.seed", "model.train_state", "model.num_classes"])
def test_runner_owned_parameters_cannot_be_set(key: str) -> None:
    with pytest.raises(ConfigError, match="set by the runner"):
        merbench.method("ststnet", {key: 1})


def _data(n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    X = rng.integers(0, 90, (n, 28, 28, 3)).astype(np.uint8)
    for k, label in enumerate(y):
        X[k, 4 + 8 * label:10 + 8 * label, 4:10] = 250
    return X, y


def test_interrupted_training_resumes_exactly(tmp_path: Path) -> None:
    X, y = _data()
    params = dict(epochs=6, lr=0.01, batch_size=16, device="cpu", seed=3)
    straight = merbench.model("ststnet", **params).fit(X, y)

    state = tmp_path / "fold000.pt"
    interrupted = merbench.model("ststnet", train_state=str(state), **params)
    calls = {"n": 0}

    def stop_after_three_epochs(batch):  # 3 batches per epoch
        calls["n"] += 1
        if calls["n"] > 9:
            raise KeyboardInterrupt
        return batch

    interrupted.augment = stop_after_three_epochs
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(X, y)
    assert torch.load(state, weights_only=True)["epoch"] == 3

    resumed = merbench.model("ststnet", train_state=str(state), **params).fit(X, y)
    assert [h["epoch"] for h in resumed.history_] == [1, 2, 3, 4, 5, 6]
    for (k, a), b in zip(straight.module_.state_dict().items(),
                         resumed.module_.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k

    other = merbench.model("ststnet", train_state=str(state), **{**params, "lr": 0.02}).fit(X, y)
    assert [h["epoch"] for h in other.history_] == [1, 2, 3, 4, 5, 6]  # another config: fresh


def test_fold_training_state_is_removed_once_the_fold_is_stored(tmp_path: Path, tiny) -> None:
    from tests.test_precomputed_inputs import write_index

    index = write_index(tmp_path)
    store = Store(tmp_path / "runs" / "s.sqlite")
    merbench.run(protocol="synthetic-loso", method="ststnet", inputs=str(index), store=store,
                 overrides={"model.epochs": 2})
    state_dir = tmp_path / "runs" / "training-state"
    assert state_dir.is_dir() and not list(state_dir.rglob("*.pt"))


def test_precomputed_inputs_are_read_afresh(tmp_path: Path) -> None:
    from tests.test_precomputed_inputs import write_index

    index = write_index(tmp_path)
    kwargs = dict(protocol="synthetic-loso", method="ststnet", inputs=str(index),
                  overrides={"model.epochs": 2}, store=str(tmp_path / "s.sqlite"),
                  cache_dir=str(tmp_path / "cache"), rerun=True)
    first = merbench.run(**kwargs)
    for path in tmp_path.glob("*.npy"):
        np.save(path, np.zeros((28, 28, 3), np.uint8))
    second = merbench.run(**kwargs)
    store = Store(tmp_path / "s.sqlite")
    p1 = {p.sample_id: p.proba for p in store.predictions(first.run_id)}
    p2 = {p.sample_id: p.proba for p in store.predictions(second.run_id)}
    assert p1 != p2
    assert len({tuple(v.values()) for v in p2.values()}) <= 4  # all-zero inputs: one per fold
    assert not (tmp_path / "cache").exists()


def test_apex_outside_the_clip_is_a_data_error(tmp_path: Path) -> None:
    import cv2

    from merbench.video import load_clip

    for k in range(1, 11):
        cv2.imwrite(str(tmp_path / f"img{k}.png"), np.full((8, 8, 3), k, np.uint8))
    for apex in (0, 12):
        sample = Sample("casme2", "sub01", "EP01", "x", onset=3, apex=apex, offset=10,
                        path=str(tmp_path))
        with pytest.raises(DataError, match="casme2/sub01/EP01: apex"):
            load_clip(sample)


def test_leaderboard_of_a_run_under_a_protocol_file(tmp_path: Path, tiny, cli) -> None:
    path = tmp_path / "custom.toml"
    path.write_text('name = "my-loso"\nkind = "loso"\nclasses = ["negative", "positive", '
                    '"surprise"]\n[[datasets]]\nname = "synthetic"\n')
    store = tmp_path / "s.sqlite"
    merbench.run(protocol=str(path), method="chance", store=str(store), dataset_params=tiny)
    res = cli("leaderboard", "--store", store, "--format", "csv")
    assert res.code == 0, res.err
    assert "my-loso,chance,reproduced,1" in res.out
    res = cli("leaderboard", "--store", tmp_path / "typo.sqlite")
    assert res.code != 0 and "does not exist" in res.err


def test_run_time_plugin_works_in_worker_processes(tmp_path: Path, tiny,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from merbench.plugins import register_plugin, unregister_plugin

    (tmp_path / "my_runtime_plugin.py").write_text('''
import numpy as np
from merbench import MethodSpec, Step, hookimpl


class Mean(Step):
    name = "my-mean"

    def __call__(self, clip):
        return np.array([clip.frames.mean()], dtype=np.float32)


@hookimpl
def register_preprocessors(register):
    register("my-mean", Mean)


@hookimpl
def register_methods(register):
    register("my-mean-chance", MethodSpec((("my-mean", {}),), ("chance", {})))
''')
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_runtime_plugin

    register_plugin(my_runtime_plugin, name="my_runtime_plugin")
    try:
        result = merbench.run(protocol="synthetic-loso", method="my-mean-chance", workers=2,
                              dataset_params=tiny, store=str(tmp_path / "s.sqlite"),
                              cache_dir=str(tmp_path / "cache"))
        assert len(result.predictions) == 24
    finally:
        unregister_plugin("my_runtime_plugin")
        sys.modules.pop("my_runtime_plugin", None)
