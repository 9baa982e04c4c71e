"""Support vector machine over feature vectors (LBP histograms and the like), METHODS.md §4.

Probabilities are a softmax of the SVM's own one-vs-rest decision scores, not Platt scaling:

- ``SVC(probability=True)`` fits a second model by internal 5-fold cross-validation: slow,
  random (it depends on the seed), and its argmax can disagree with ``predict``;
  ``CalibratedClassifierCV`` needs several samples of every class per internal fold, which
  small LOSO training sets do not always have, and its argmax can disagree too.
- The softmax is deterministic, costs nothing, and its argmax is exactly the SVM's decision
  (``SVC(break_ties=True).predict``), which is what the metrics score. The values are scores
  (monotone in the margin), not calibrated probabilities.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from merbench import Model, hookimpl
from merbench.errors import ConfigError, DataError


def _softmax(scores: np.ndarray) -> np.ndarray:
    z = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class SVM(Model):
    """SVM classifier: linear or χ² kernel, optional standardisation, softmax scores.

    ``num_classes``: columns of ``predict_proba`` (a class absent from the training fold gets
    probability 0); by default max(y) + 1. ``seed`` is accepted for the runner; the SVM is
    deterministic.

    :param kernel: "linear" or "chi2" (exp(-gamma * Σ (x-y)²/(x+y)), the usual kernel for
        histograms; features must be non-negative)
    :param C: the margin penalty
    :param standardize: zero mean, unit variance per feature, fitted on the training fold; None
        means on for "linear" and off for "chi2" (centred features are negative)
    :param class_weight: None or "balanced"
    :param gamma: χ² only: a number, or "auto" = 1 / mean χ² distance between training samples
        [ours: sklearn's default of 1 makes the kernel vanish on concatenated block histograms]
    """

    def __init__(self, kernel: str = "linear", C: float = 1.0, standardize: bool | None = None,
                 class_weight: str | None = None, gamma: float | str = "auto",
                 num_classes: int | None = None, seed: int = 0) -> None:
        if kernel not in ("linear", "chi2"):
            raise ConfigError(f"svm.kernel must be 'linear' or 'chi2', got {kernel!r}")
        if isinstance(C, bool) or not isinstance(C, (int, float)) or not C > 0:
            raise ConfigError(f"svm.C must be a positive number, got {C!r}")
        if standardize not in (None, True, False):
            raise ConfigError(f"svm.standardize must be True, False or None (auto), "
                              f"got {standardize!r}")
        if kernel == "chi2" and standardize:
            raise ConfigError("svm.standardize=True cannot go with kernel='chi2': standardised "
                              "features are negative and the χ² kernel needs histograms",
                              "leave standardize unset (auto) or set it to False")
        if class_weight not in (None, "balanced"):
            raise ConfigError(f"svm.class_weight must be None or 'balanced', got {class_weight!r}")
        if gamma != "auto" and (isinstance(gamma, bool) or not isinstance(gamma, (int, float))
                                or not gamma > 0):
            raise ConfigError(f"svm.gamma must be 'auto' or a positive number, got {gamma!r}")
        self.kernel = kernel
        self.C = C
        self.standardize = standardize
        self.class_weight = class_weight
        self.gamma = gamma
        self.num_classes = num_classes
        self.seed = seed

    # -- helpers --------------------------------------------------------------------------

    def _prepare(self, X: Any, fitting: bool) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            X = X.reshape(len(X), -1)
        if not np.isfinite(X).all():
            raise DataError("svm: features contain NaN or infinity",
                            "check the preprocessing step that produced them")
        use_scaler = self.standardize if self.standardize is not None else self.kernel == "linear"
        if use_scaler:
            if fitting:
                from sklearn.preprocessing import StandardScaler

                self.scaler_ = StandardScaler().fit(X)
            X = self.scaler_.transform(X)
        if self.kernel == "chi2" and X.min(initial=0.0) < 0:
            raise DataError("svm: the χ² kernel needs non-negative features (histograms)",
                            "use kernel='linear' for signed features")
        return X

    def _gram(self, X: np.ndarray) -> np.ndarray:
        """Kernel between ``X`` and the training rows."""
        if self.kernel == "linear":
            return X @ self.train_.T
        from sklearn.metrics.pairwise import chi2_kernel

        return chi2_kernel(X, self.train_, gamma=self.gamma_)

    def _train_gram(self, X: np.ndarray) -> np.ndarray:
        """Kernel of the training rows; for χ² the distances also give gamma="auto"."""
        if self.kernel == "linear":
            return X @ X.T
        from sklearn.metrics.pairwise import additive_chi2_kernel

        dist = -additive_chi2_kernel(X)  # Σ (x - y)² / (x + y), the same sum chi2_kernel uses
        if self.gamma == "auto":
            mean = dist[np.triu_indices(len(X), k=1)].mean() if len(X) > 1 else 0.0
            self.gamma_ = 1.0 / mean if mean > 0 else 1.0
        else:
            self.gamma_ = float(self.gamma)
        return np.exp(-self.gamma_ * dist)

    # -- Model API ----------------------------------------------------------------------

    def fit(self, X: Any, y: Any, groups: Any = None) -> SVM:
        """Fit on the training fold; ``groups`` is not needed (no validation split)."""
        X = self._prepare(X, fitting=True)
        y = np.asarray(y).astype(np.int64)
        if len(X) != len(y) or len(y) == 0:
            raise DataError(f"svm: {len(X)} feature rows but {len(y)} labels")
        n_classes = self.num_classes if self.num_classes is not None else int(y.max()) + 1
        if y.min() < 0 or y.max() >= n_classes:
            raise DataError(f"svm: labels must be 0..{n_classes - 1}, got {y.min()}..{y.max()}")
        self.n_classes_ = n_classes
        self.classes_ = np.unique(y)
        self.train_ = X
        gram = self._train_gram(X)
        from sklearn.svm import SVC

        self.svc_: Any = None
        if len(self.classes_) > 1:
            # A precomputed Gram matrix: one code path for both kernels, and the χ² distances
            # are computed once (they also give gamma="auto").
            self.svc_ = SVC(kernel="precomputed", C=self.C, class_weight=self.class_weight,
                            decision_function_shape="ovr", break_ties=True,
                            random_state=self.seed)
            self.svc_.fit(gram, y)
        return self

    def decision_scores(self, X: Any) -> np.ndarray:
        """One score per class present in training (``svc_.classes_`` order); the argmax is
        the SVM's decision (``svc_.predict`` with ``break_ties=True``)."""
        if getattr(self, "svc_", None) is None:
            raise DataError("svm: no decision scores before fit or with one training class")
        d = self.svc_.decision_function(self._gram(self._prepare(X, fitting=False)))
        if d.ndim == 1:  # two classes: d > 0 means the second
            d = np.stack([np.zeros_like(d), d], axis=1)
        return d

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, num_classes) softmax of the decision scores; absent classes get 0."""
        if not hasattr(self, "classes_"):
            raise DataError("svm: predict_proba called before fit")
        n = len(X)
        out = np.zeros((n, self.n_classes_))
        if self.svc_ is None:  # one class in training: it is the only possible answer
            out[:, self.classes_[0]] = 1.0
            return out
        out[:, self.svc_.classes_] = _softmax(self.decision_scores(X))
        return out


@hookimpl
def register_models(register: Any) -> None:
    register("svm", SVM, description="SVM (linear or χ² kernel) with softmax decision scores")
