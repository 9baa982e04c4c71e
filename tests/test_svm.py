"""The `svm` model: kernels, softmax scores, absent classes, determinism."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics.pairwise import chi2_kernel

import merbench
from merbench.errors import ConfigError, DataError
from merbench_plugins.svm import SVM


def blobs(n_per_class: int, centres: list[list[float]], seed: int = 0, scale: float = 0.5):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(c, scale, (n_per_class, len(c))) for c in centres])
    y = np.repeat(np.arange(len(centres)), n_per_class)
    return X, y


def test_linear_svm_separates_two_blobs():
    X, y = blobs(30, [[0, 0, 0], [4, 4, 4]])
    Xt, yt = blobs(20, [[0, 0, 0], [4, 4, 4]], seed=1)
    model = merbench.model("svm", kernel="linear", num_classes=2).fit(X, y)
    proba = model.predict_proba(Xt)
    assert proba.shape == (40, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (proba.argmax(axis=1) == yt).all()
    # softmax of [0, d]: class 1 has probability sigmoid(d) of the SVM's margin d
    d = model.svc_.decision_function(model._gram(model._prepare(Xt, fitting=False)))
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-d)))


def test_argmax_is_the_svm_decision_with_three_classes():
    X, y = blobs(25, [[0, 0], [2, 0], [1, 2]], scale=0.9)  # overlapping: some errors
    Xt, _ = blobs(30, [[0, 0], [2, 0], [1, 2]], seed=3, scale=0.9)
    model = SVM(C=0.5, num_classes=3).fit(X, y)
    proba = model.predict_proba(Xt)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    gram = model._gram(model._prepare(Xt, fitting=False))
    np.testing.assert_array_equal(proba.argmax(axis=1), model.svc_.predict(gram))
    assert len(np.unique(proba.argmax(axis=1))) == 3


def histograms(n: int, alpha: np.ndarray, seed: int) -> np.ndarray:
    """n rows of 4 concatenated 10-bin histograms (like blocks), each from Dirichlet(alpha)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.dirichlet(alpha, n) for _ in range(4)], axis=1)


def test_chi2_kernel_on_histograms():
    a = np.array([5, 4, 3, 2, 1, 1, 1, 1, 1, 1], dtype=float)
    X = np.concatenate([histograms(20, a, 0), histograms(20, a[::-1], 1)])
    y = np.repeat([0, 1], 20)
    Xt = np.concatenate([histograms(10, a, 2), histograms(10, a[::-1], 3)])
    model = SVM(kernel="chi2", C=10, num_classes=2).fit(X, y)
    assert not hasattr(model, "scaler_")  # standardisation is off for chi2 by default
    # gamma="auto": 1 / mean χ² distance Σ (x - y)² / (x + y) over training pairs
    i, j = np.triu_indices(len(X), k=1)
    dist = (((X[i] - X[j]) ** 2) / (X[i] + X[j])).sum(axis=1)
    assert model.gamma_ == pytest.approx(1 / dist.mean())
    np.testing.assert_allclose(model._gram(Xt), chi2_kernel(Xt, X, gamma=model.gamma_))
    assert (model.predict(Xt) == np.repeat([0, 1], 10)).all()
    with pytest.raises(DataError, match="non-negative"):
        model.predict_proba(Xt - 1)


def test_absent_class_gets_zero_columns():
    X, y = blobs(20, [[0, 0], [5, 5]])
    y = np.where(y == 1, 3, 0)  # classes 0 and 3 of 5; 1, 2, 4 absent from this fold
    model = SVM(num_classes=5).fit(X, y)
    proba = model.predict_proba(X)
    assert proba.shape == (40, 5)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (proba[:, [1, 2, 4]] == 0).all()
    assert (proba.argmax(axis=1) == y).all()
    one = SVM(num_classes=3).fit(X[:20], np.full(20, 2))  # a single training class
    np.testing.assert_array_equal(one.predict_proba(X), np.tile([0.0, 0.0, 1.0], (40, 1)))


def test_deterministic_and_balanced_weights():
    X, y = blobs(40, [[0, 0, 0], [1.5, 1.5, 0], [0, 1.5, 1.5]], scale=1.0)
    keep = np.r_[0:40, 40:48, 80:120]  # class 1 is rare
    X, y = X[keep], y[keep]
    p1 = SVM(num_classes=3, seed=1).fit(X, y).predict_proba(X)
    p2 = SVM(num_classes=3, seed=2).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(p1, p2)
    plain = SVM(num_classes=3).fit(X, y).predict(X)
    balanced = SVM(num_classes=3, class_weight="balanced").fit(X, y).predict(X)
    assert (balanced == 1).sum() > (plain == 1).sum()


def test_standardize_switch():
    X, y = blobs(20, [[0, 0], [3, 3]])
    X = X * [1.0, 1000.0]
    on = SVM(num_classes=2).fit(X, y)
    np.testing.assert_allclose(on._prepare(X, fitting=False).std(axis=0), 1.0)
    off = SVM(standardize=False, num_classes=2).fit(X, y)
    assert not hasattr(off, "scaler_")


@pytest.mark.parametrize("params", [
    {"kernel": "rbf"}, {"C": 0}, {"class_weight": "auto"}, {"gamma": -1},
    {"kernel": "chi2", "standardize": True},
])
def test_bad_parameters(params):
    with pytest.raises(ConfigError):
        SVM(**params)


def test_registered_and_runner_params():
    assert "svm" in merbench.names("model")
    model = merbench.model("svm", num_classes=3, seed=7, C=2.0)
    assert model.get_params()["num_classes"] == 3
    with pytest.raises(DataError, match="labels must be 0..2"):
        model.fit(np.zeros((4, 2)), np.array([0, 1, 2, 3]))
