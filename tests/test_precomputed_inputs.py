"""Precomputed inputs (`merbench run --inputs INDEX`): STSTNet LOSO on flow images, per-fold
published weights evaluated without training (`--checkpoints DIR`), unusable samples skipped
only with `--skip-bad` and recorded on the run."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

import merbench
from merbench.errors import CheckpointError
from merbench.store import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PLACES = {"negative": (4, 10), "positive": (17, 3), "surprise": (17, 17)}
SUBJECTS = ("s01", "s02", "s03", "s04")


def write_index(root: Path) -> Path:
    """28x28x3 'flow images' (noise + a class-dependent bright blob) as .npy, indexed for the
    folder dataset under synthetic sample ids."""
    rng = np.random.default_rng(0)
    index = root / "index.csv"
    with open(index, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["dataset", "subject", "clip", "label", "path"])
        for subject in SUBJECTS:
            for label, (r, c) in PLACES.items():
                for k in range(3):
                    image = rng.integers(0, 90, (28, 28, 3)).astype(np.uint8)
                    dr, dc = rng.integers(-2, 3, 2)
                    image[r + dr:r + dr + 7, c + dc:c + dc + 7] = rng.integers(160, 256, 3)
                    name = f"{subject}_{label[:3]}_{k}.npy"
                    np.save(root / name, image)
                    out.writerow(["synthetic", subject, f"{label[:3]}_{k:02d}", label, name])
    return index


FAST = {"model.epochs": 40, "model.lr": 0.01, "model.batch_size": 16}


def test_ststnet_loso_on_precomputed_inputs_beats_chance(tmp_path: Path) -> None:
    index = write_index(tmp_path)
    result = merbench.run(protocol="synthetic-loso", method="ststnet", inputs=str(index),
                          overrides=FAST, store=str(tmp_path / "s.sqlite"),
                          cache_dir=str(tmp_path / "cache"))
    assert len(result.predictions) == 36 and len({p.fold for p in result.predictions}) == 4
    assert result.uf1 > 0.7  # chance is 1/3


def test_published_checkpoints_are_evaluated_without_training(tmp_path: Path) -> None:
    index = write_index(tmp_path)
    folder = merbench.dataset("folder", root=str(index))
    classes = ["negative", "positive", "surprise"]
    weights = tmp_path / "weights"
    weights.mkdir()
    expected = {}
    for k, subject in enumerate(SUBJECTS):
        train = [s for s in folder.samples if s.subject != subject]
        test = [s for s in folder.samples if s.subject == subject]
        model = merbench.model("ststnet", epochs=5, lr=0.01, device="cpu", seed=k)
        model.fit(np.stack([folder.load(s) for s in train]),
                  np.array([classes.index(s.label) for s in train]))
        state = model.module_.state_dict()
        # one legacy (pre-zip) file, as the published STSTNet weights are
        torch.save(state, weights / f"{subject}.pth", _use_new_zipfile_serialization=k != 0)
        proba = model.predict_proba(np.stack([folder.load(s) for s in test]))
        expected.update({s.id: p for s, p in zip(test, proba)})
    store = merbench.store.Store(tmp_path / "s.sqlite")
    result = merbench.run(protocol="synthetic-loso", method="ststnet", inputs=str(index),
                          checkpoints=str(weights), store=store, cache_dir=str(tmp_path / "c"))
    assert result.info["trained"] is False and result.info["checkpoints"] == str(weights)
    infos = store.fold_info(result.run_id)
    assert all(i["trained"] is False and i["checkpoint"].endswith(".pth") for i in infos.values())
    stored = {p.sample_id: p.proba for p in store.predictions(result.run_id)}
    for sid, proba in expected.items():
        assert np.allclose([stored[sid][c] for c in classes], proba, atol=1e-5)

    (weights / "s03.pth").unlink()
    with pytest.raises(CheckpointError, match="synthetic/s03"):
        merbench.run(protocol="synthetic-loso", method="ststnet", inputs=str(index),
                     checkpoints=str(weights), store=store, rerun=True)


def test_checkpoint_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    index = write_index(tmp_path)
    weights = tmp_path / "weights"
    weights.mkdir()
    module = merbench.model("ststnet", num_classes=5).init_module((3, 28, 28))
    for subject in SUBJECTS:
        torch.save(module.state_dict(), weights / f"{subject}.pth")
    with pytest.raises(CheckpointError, match=r"fc\.weight"):
        merbench.run(protocol="synthetic-loso", method="ststnet", inputs=str(index),
                     checkpoints=str(weights), store=str(tmp_path / "s.sqlite"))


def test_unusable_samples_are_skipped_only_when_allowed(tmp_path: Path) -> None:
    from merbench.errors import DataError

    index = write_index(tmp_path)
    (tmp_path / "s02_pos_1.npy").write_bytes(b"not an array")
    kwargs = dict(protocol="synthetic-loso", method="ststnet", inputs=str(index),
                  overrides={**FAST, "model.epochs": 2}, cache_dir=str(tmp_path / "c"))
    with pytest.raises(DataError, match="synthetic/s02/pos_01"):
        merbench.run(store=str(tmp_path / "a.sqlite"), **kwargs)
    result = merbench.run(store=str(tmp_path / "b.sqlite"), skip_bad=True, **kwargs)
    assert list(result.info["skipped"]) == ["synthetic/s02/pos_01"]
    assert len(result.predictions) == 35
    assert "synthetic/s02/pos_01" not in {p.sample_id for p in result.predictions}


def test_fold_training_state_is_removed_once_the_fold_is_stored(
        tmp_path: Path, tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    from merbench.training import TorchClassifier

    written: set[str] = set()
    save = TorchClassifier._save_train_state

    def recording(self, *args, **kw):  # type: ignore[no-untyped-def]
        save(self, *args, **kw)
        written.add(self.train_state)

    monkeypatch.setattr(TorchClassifier, "_save_train_state", recording)
    index = write_index(tmp_path)
    store = Store(tmp_path / "runs" / "s.sqlite")
    merbench.run(protocol="synthetic-loso", method="ststnet", inputs=str(index), store=store,
                 overrides={"model.epochs": 2})
    state_dir = tmp_path / "runs" / "training-state"
    assert len(written) == 4 and all(Path(p).parent.parent == state_dir for p in written)
    assert not state_dir.exists()  # every fold's state removed, then the empty folders


def test_precomputed_inputs_are_read_afresh(tmp_path: Path) -> None:
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
