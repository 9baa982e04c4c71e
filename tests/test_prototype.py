"""Prototype network (METHODS §7, seed 001 approach 2): distances, logits and every loss term by
hand, decoder shapes, training reduces each term, decoded-prototype / nearest-prototype / t-SNE
figures, and run-level explanations that read only the run's own test samples."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from merbench_plugins import prototype as pt
from merbench_plugins import prototype_figures as figs

import merbench
from merbench.errors import ConfigError, DataError
from merbench.explain_run import explain_run, load_fold_artifacts
from merbench.methods import Method
from merbench.store import Store

from .test_deploy import SMALL, _write_clip

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# tiny synthetic clips are too small for dlib: the centre crop stands in for the face crop;
# random init without looking for cached ImageNet weights
SMALL_CROP = {"face-crop.size": 32, "face-crop.fallback": "centre", "model.pretrained": False}


def padded(rows: list[list[float]]) -> torch.Tensor:
    """2-D points as 512-d latents (zeros elsewhere): distances stay those of the 2-D case."""
    out = torch.zeros(len(rows), pt.LATENT)
    out[:, :2] = torch.tensor(rows)
    return out


def built(num_classes: int = 2, shape: tuple[int, ...] = (1, 32, 32), **params) -> pt.PrototypeNet:
    torch.manual_seed(0)
    model = pt.PrototypeNet(num_classes=num_classes, pretrained=False, device="cpu", **params)
    model.init_module(shape)
    model.criterion_ = torch.nn.CrossEntropyLoss()
    return model


def blobs(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Grey uint8 images: noise plus a bright square whose place is the class."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    y = np.arange(n) % 3
    places = [(4, 4), (4, 18), (18, 11)]
    for i in range(n):
        r, c = (p + rng.integers(-2, 3) for p in places[y[i]])
        X[i, r:r + 10, c:c + 10] = 230
    return X, y


# --------------------------------------------------------------------------- by hand

def test_distances_and_logits_by_hand_two_prototypes_in_2d():
    z = torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    p = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    d = pt.squared_distances(z, p)
    assert d.tolist() == [[9.0, 16.0], [0.0, 25.0]]
    assert pt.per_class_logits(d, 2, 1).tolist() == [[-9.0, -16.0], [0.0, -25.0]]
    # k = 2 per class: each class's logit is minus its nearest prototype's distance
    assert pt.per_class_logits(torch.tensor([[5.0, 1.0, 7.0, 3.0]]), 2, 2).tolist() == [[-1.0, -3.0]]

    # the same case through the module, seed mode and Li et al.'s free mode (logits = dᵀW)
    seed = built(mode="per_class")
    free = built(mode="free", m=2)
    W = torch.tensor([[1.0, -1.0], [-2.0, 0.5]])  # (prototypes, classes)
    with torch.no_grad():
        for model in (seed, free):
            model.module_.prototypes.copy_(padded(p.tolist()))
        free.module_.last.weight.copy_(W.t())
        zz = padded(z.tolist())
        assert seed.module_.distances(zz).tolist() == [[9.0, 16.0], [0.0, 25.0]]
        assert seed.module_.classify(seed.module_.distances(zz)).tolist() == [[-9.0, -16.0],
                                                                              [0.0, -25.0]]
        # row 1: 9·1 + 16·(−2), 9·(−1) + 16·0.5; row 2: 25·(−2), 25·0.5
        assert free.module_.classify(free.module_.distances(zz)).tolist() == [[-23.0, -1.0],
                                                                              [-50.0, 12.5]]
    # free prototypes are labelled by the class their distance counts for most (most negative W)
    assert free.prototype_classes().tolist() == [1, 0]
    assert seed.prototype_classes().tolist() == [0, 1]


def test_each_loss_term_by_hand():
    model = built(lambda_r1=0.5, lambda_r2=2.0, margin=10.0)
    d = torch.tensor([[1.0, 16.0], [4.0, 9.0], [25.0, 2.0]])
    target = torch.tensor([0, 1, 1])
    x = torch.zeros(3, 1, 2, 2)
    rec = torch.tensor([0.1, 0.2, 0.3, 0.4]).view(1, 1, 2, 2).repeat(3, 1, 1, 1)
    out = pt.ProtoOutput(pt.per_class_logits(d, 2, 1), None, rec, d, x)
    total, terms = model.loss(out, target)
    # logits −d; −log softmax of the target = log(1 + e^(other − own logit))
    ce = np.mean([math.log(1 + math.exp(-16 + 1)), math.log(1 + math.exp(-4 + 9)),
                  math.log(1 + math.exp(-25 + 2))])
    expected = {"ce": ce, "rec": (0.01 + 0.04 + 0.09 + 0.16) / 4,
                "cohesion": (1 + 9 + 2) / 3,  # own-class distances
                "separation": (0 + (10 - 4) + 0) / 3,  # hinge on the other class's distance
                "r1": (1 + 2) / 2,  # each prototype's nearest latent
                "r2": (1 + 4 + 2) / 3}  # each latent's nearest prototype
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert float(terms[name]) == pytest.approx(value, rel=1e-6), name
    weights = {"ce": 20, "rec": 1, "cohesion": 1, "separation": 1, "r1": 0.5, "r2": 2.0}
    assert float(total) == pytest.approx(sum(weights[k] * v for k, v in expected.items()),
                                         rel=1e-6)
    # the defaults: per_class = CE, rec, cohesion, separation; free = CE, rec, R1, R2 (Li et al.)
    assert set(built().loss(out, target)[1]) == {"ce", "rec", "cohesion", "separation"}
    free = built(mode="free", m=2)
    assert set(free.loss(out, target)[1]) == {"ce", "rec", "r1", "r2"}
    assert free.loss_weights() == {"ce": 20.0, "rec": 1.0, "cohesion": 0.0, "separation": 0.0,
                                   "r1": 1.0, "r2": 1.0}


@pytest.mark.parametrize("shape", [(1, 32, 32), (3, 28, 28), (1, 40, 56), (3, 112, 112)])
def test_decoder_reconstructs_the_input_shape(shape):
    model = built(shape=shape)
    model.module_.eval()
    with torch.no_grad():
        out = model.module_(torch.rand(2, *shape))
    assert out.reconstruction.shape == (2, *shape)
    assert out.latent.shape == (2, 512) and out.distances.shape == (2, 2)
    assert 0 <= float(out.reconstruction.min()) and float(out.reconstruction.max()) <= 1
    assert model.decoded_prototypes().shape == (2, shape[1], shape[2], 3)


def test_latent_at_a_prototype_is_predicted_as_its_class():
    model = built(num_classes=3, k=2)
    module = model.module_
    assert module.prototype_class.tolist() == [0, 0, 1, 1, 2, 2]
    with torch.no_grad():
        logits = module.classify(module.distances(module.prototypes))
    assert logits.argmax(1).tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.all(logits.max(1).values == 0)  # distance 0 to itself


def test_parameters_checked_and_snapshot_epochs_parsed():
    with pytest.raises(ConfigError, match="unknown mode"):
        pt.PrototypeNet(mode="kmeans")
    with pytest.raises(ConfigError, match="is for mode free"):
        pt.PrototypeNet(m=4)
    with pytest.raises(ConfigError, match="is for mode per_class"):
        pt.PrototypeNet(mode="free", k=2)
    with pytest.raises(ConfigError, match="cohesion and separation need class prototypes"):
        pt.PrototypeNet(mode="free", lambda_cohesion=1.0)
    with pytest.raises(ConfigError, match="loss weights"):
        pt.PrototypeNet(lambda_rec=-1.0)
    with pytest.raises(ConfigError, match="snapshot_epochs"):
        pt.PrototypeNet(snapshot_epochs="ten")
    model = Method.named("apex-prototype", {"model.snapshot_epochs": "10,50"}).build_model()
    assert model.snapshot_epochs == (10, 50)
    assert pt.parse_epochs(5) == (5,) and pt.parse_epochs("50,10") == (10, 50)
    assert pt.PrototypeNet(mode="free", num_classes=5).n_prototypes == 10
    assert pt.PrototypeNet(k=3, num_classes=5).n_prototypes == 15


# --------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def fitted() -> tuple[pt.PrototypeNet, np.ndarray, np.ndarray]:
    torch.set_num_threads(1)
    X, y = blobs(18, 0)
    model = pt.PrototypeNet(num_classes=3, pretrained=False, epochs=6, batch_size=6, lr=1e-3,
                            lambda_r1=1.0, lambda_r2=1.0, snapshot_epochs=(1, 5), seed=0,
                            device="cpu")
    model.fit(X, y)
    return model, X, y


def test_training_reduces_every_loss_term(fitted):
    model, X, y = fitted
    first, last = model.history_[0], model.history_[-1]
    for name in ("loss", "loss_ce", "loss_rec", "loss_cohesion", "loss_r1", "loss_r2"):
        assert last[name] < 0.5 * first[name], (name, first[name], last[name])
    # at the default margin (10) the hinge never bites here: same-class latents gather at their
    # prototype while other classes' prototypes stay further away
    assert first["loss_separation"] == last["loss_separation"] == 0
    assert (model.predict(X) == y).mean() >= 0.9


@pytest.mark.parametrize("term", ["ce", "rec", "cohesion", "separation", "r1", "r2"])
def test_each_loss_term_alone_is_reduced(term):
    """Each term, trained alone, goes down: its gradient reaches what it is meant to move.
    (The separation margin is set above the initial distances so that its hinge is active.)"""
    X, y = blobs(12, 2)
    weights = {f"lambda_{t}": float(t == term) for t in
               ("ce", "rec", "cohesion", "separation", "r1", "r2")}
    model = pt.PrototypeNet(num_classes=3, pretrained=False, epochs=3, batch_size=6,
                            margin=5000.0, seed=0, device="cpu", **weights).fit(X, y)
    first, last = model.history_[0][f"loss_{term}"], model.history_[-1][f"loss_{term}"]
    assert last < first, (term, first, last)


def test_free_mode_training_reduces_its_terms_and_draws_run_figures(tmp_path):
    from merbench.explain_run import FoldArtifacts

    X, y = blobs(18, 1)
    model = pt.PrototypeNet(mode="free", num_classes=3, pretrained=False, epochs=5,
                            batch_size=6, seed=0, device="cpu").fit(X, y)
    first, last = model.history_[0], model.history_[-1]
    for name in ("loss", "loss_ce", "loss_rec", "loss_r1", "loss_r2"):
        assert last[name] < first[name], name
    assert "loss_cohesion" not in first
    arrays = model.fold_artifacts(X[:9])
    assert arrays["latents"].shape == (9, 512) and arrays["prototypes"].shape == (6, 512)
    assert arrays["prototype_images"].shape == (6, 32, 32, 3) and "snapshot_epochs" not in arrays
    labels = ["a", "b", "c"]
    pred = model.predict(X[:9])
    fold = FoldArtifacts(0, "f", [f"s{i}" for i in range(9)], [labels[k] for k in y[:9]],
                         [labels[k] for k in pred], arrays)
    paths = pt.PrototypeNet.explain_run([fold], labels, tmp_path)
    assert sorted(p.name for p in paths) == ["nearest.png", "nearest.txt", "prototypes.png",
                                             "tsne.png"]
    for p in paths:
        if p.suffix == ".png":
            readable(p)


def test_snapshots_kept_and_saved_with_the_state(fitted):
    model, X, _ = fitted
    assert sorted(model.snapshots_) == [1, 5]
    assert model.snapshots_[1].shape == (3, 32, 32, 3) and model.snapshots_[1].dtype == np.uint8
    assert not np.array_equal(model.snapshots_[1], model.snapshots_[5])
    copy = pt.PrototypeNet(num_classes=3, pretrained="/no/such/file", device="cpu")
    copy.set_state(model.get_state(), model.input_shape(X))
    assert copy.init_ == "saved-state"
    assert np.array_equal(copy.snapshots_[5], model.snapshots_[5])
    assert np.allclose(copy.predict_proba(X), model.predict_proba(X), atol=1e-6)


def test_resumed_fit_says_which_snapshots_it_lost(tmp_path, monkeypatch, caplog):
    from merbench.training import TorchClassifier

    X, y = blobs(12, 3)
    params = dict(num_classes=3, pretrained=False, epochs=3, batch_size=6, snapshot_epochs=(1, 3),
                  train_state=str(tmp_path / "state.pt"), device="cpu")
    save = TorchClassifier._save_train_state

    monkeypatch.setenv("MERBENCH_STATE_SECONDS", "0")  # a state after every epoch

    def interrupt_after_two(self, opt, sched, gen, epoch, *rest, **kw):
        save(self, opt, sched, gen, epoch, *rest, **kw)
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(TorchClassifier, "_save_train_state", interrupt_after_two)
    with pytest.raises(KeyboardInterrupt):
        pt.PrototypeNet(**params).fit(X, y)
    monkeypatch.setattr(TorchClassifier, "_save_train_state", save)
    model = pt.PrototypeNet(**params).fit(X, y)
    assert sorted(model.snapshots_) == [3] and len(model.history_) == 3
    assert "resumed at epoch 3: the snapshots of epochs 1 were not kept" in caplog.text


# --------------------------------------------------------------------------- figures

def readable(path: Path) -> None:
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 50 and image.shape[1] > 50, path


def test_explain_writes_prototype_nearest_and_gradcam_figures(fitted, tmp_path):
    model, X, _ = fitted
    labels = ["negative", "positive", "surprise"]
    paths = model.explain(X[:2], tmp_path, names=["a", "b"], labels=labels)
    assert sorted(p.name for p in paths) == sorted([
        "gradcam_a.png", "gradcam_b.png", "gradcam_grid.png", "prototypes.png",
        "snapshots.png", "nearest_a.png", "nearest_a.txt", "nearest_b.png", "nearest_b.txt"])
    for p in paths:
        if p.suffix == ".png":
            readable(p)
    idx, dist = model.nearest_prototypes(X[:1])
    _, d_all = model.latents(X[:1])
    assert np.allclose(np.sort(d_all[0])[:3], dist[0]) and idx.shape == (1, 3)
    text = (tmp_path / "nearest_a.txt").read_text()
    assert f"p{idx[0, 0]} · {labels[idx[0, 0]]} d²={dist[0, 0]:.4g}" in text


def test_tsne_embeds_latents_then_prototypes():
    rng = np.random.default_rng(0)
    xy = figs.tsne_embedding(rng.normal(size=(7, 512)), rng.normal(size=(3, 512)))
    assert xy.shape == (10, 2) and np.isfinite(xy).all()
    assert figs.tsne_embedding(rng.normal(size=(1, 512)), rng.normal(size=(2, 512))).shape == (3, 2)


# --------------------------------------------------------------------------- runs

def run_tiny(tmp_path: Path, tiny, protocol: str, **overrides):
    return merbench.run(protocol=protocol, method="apex-prototype", dataset_params=tiny,
                        overrides={**SMALL_CROP, "model.epochs": 2, **overrides},
                        store=tmp_path / "results.sqlite", cache_dir=str(tmp_path / "cache"))


def test_run_artifacts_hold_only_the_runs_test_samples(tmp_path, tiny, monkeypatch):
    result = run_tiny(tmp_path, tiny, "synthetic-holdout", **{"model.snapshot_epochs": "1"})
    st = Store(tmp_path / "results.sqlite")
    info = st.fold_info(result.run_id)[0]
    assert info["history"][-1]["epoch"] == 2
    assert {"loss_ce", "loss_rec", "loss_cohesion", "loss_separation"} <= set(info["history"][0])
    with np.load(info["artifacts"]) as z:
        ids = [str(s) for s in z["sample_ids"]]
        latents = z["latents"]
        assert z["snapshot_epochs"].tolist() == [1]
    predicted = sorted(p.sample_id for p in st.predictions(result.run_id))
    assert sorted(ids) == predicted and len(ids) == info["n_test"] == latents.shape[0]
    proto = merbench.protocol("synthetic-holdout")
    samples = proto.load_samples({}, tiny)
    (fold,) = proto.folds(samples)
    assert not set(ids) & set(fold.train)

    seen = []
    real = figs.tsne_embedding
    monkeypatch.setattr(figs, "tsne_embedding",
                        lambda z, p, seed=0: (seen.append((z, p)), real(z, p, seed))[1])
    paths = explain_run(result.run_id, tmp_path / "results.sqlite", tmp_path / "ex")
    assert sorted(p.name for p in paths) == ["nearest.png", "nearest.txt", "prototypes.png",
                                             "snapshots.png", "tsne.png"]
    (z, p), = seen
    assert np.array_equal(z, latents) and p.shape == (3, 512)
    table = (tmp_path / "ex" / "nearest.txt").read_text()
    assert all(i in table for i in ids)

    # an artifacts file that names a training sample is refused
    arrays = dict(np.load(info["artifacts"]))
    arrays["sample_ids"] = np.array([fold.train[0]] + ids[1:])
    np.savez(info["artifacts"], **arrays)
    with pytest.raises(DataError, match="other samples than the fold's"):
        load_fold_artifacts(st, st.run(result.run_id))


def test_cli_loso_run_leaderboard_and_explain_run(tmp_path, cli):
    store = tmp_path / "results.sqlite"
    params = ["--data-param", "synthetic.subjects=3", "--data-param",
              "synthetic.clips_per_class=1", "--data-param", "synthetic.size=32",
              "--data-param", "synthetic.frames=20"]
    sets = [a for k, v in SMALL_CROP.items() for a in ("--set", f"{k}={v}")]
    r = cli("run", "--protocol", "synthetic-loso", "--method", "apex-prototype", "--set",
            "model.epochs=3", *sets, *params, "--store", store, "--cache-dir", tmp_path / "c",
            "--json")
    assert r.code == 0, r.err
    import json

    run_id = json.loads(r.out)["run"]
    board = cli("leaderboard", "--store", store, "--protocol", "synthetic-loso", "--no-published")
    assert board.code == 0 and "apex-prototype" in board.out
    r = cli("explain-run", run_id[:6], "--store", store, "-o", tmp_path / "ex")
    assert r.code == 0, r.err
    for name in ("tsne.png", "prototypes.png", "nearest.png"):
        assert f"wrote {tmp_path / 'ex' / name}" in r.out
        readable(tmp_path / "ex" / name)
    assert len(Store(store).fold_info(run_id)) == 3


def test_explain_run_refuses_models_without_run_figures(tmp_path, tiny, cli):
    result = merbench.run(protocol="synthetic-holdout", method="diff-logreg", dataset_params=tiny,
                          store=tmp_path / "r.sqlite", cache_dir=str(tmp_path / "cache"))
    r = cli("explain-run", result.run_id, "--store", tmp_path / "r.sqlite")
    assert r.code == 2
    assert "draws no run-level explanations" in r.err and "\n" not in r.err.strip()
    r = cli("explain-run", "abc", "--store", tmp_path / "missing.sqlite")
    assert r.code == 2 and "does not exist" in r.err


def test_train_then_explain_a_clip_prints_nearest_prototypes(tmp_path, cli):
    ckpt = tmp_path / "proto.pt"
    sets = [a for k, v in {**SMALL_CROP, "face-crop.size": 48, "model.epochs": 2,
                           "model.snapshot_epochs": 1}.items() for a in ("--set", f"{k}={v}")]
    params = [a for k, v in {**SMALL, "subjects": 2, "clips_per_class": 1}.items()
              for a in ("--param", f"{k}={v}")]
    r = cli("train", "-m", "apex-prototype", "-d", "synthetic", *params, *sets, "-o", ckpt)
    assert r.code == 0, r.err
    _, folder = _write_clip(tmp_path / "clip", 0)
    r = cli("explain", ckpt, folder, "-o", tmp_path / "ex")
    assert r.code == 0, r.err
    for name in ("prototypes.png", "snapshots.png", "nearest_clip.png", "gradcam_clip.png"):
        readable(tmp_path / "ex" / name)
    assert "nearest: p" in r.out and "d²=" in r.out and "negative" in r.out
