"""Baselines that need nothing but numpy and scikit-learn.

- ``apex-diff``: the apex - onset grey difference image (motion-aware, appearance cancels);
- ``apex-frame``: the apex grey frame alone (appearance-only, the control);
- ``logreg``: standardised multinomial logistic regression;
- ``chance``: seeded predictions that ignore the input (uniform or by class prior), the floor
  every table should show.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from merbench import Clip, MethodSpec, Model, Step, hookimpl
from merbench.clips import check_size, resize_image, resolve_apex, to_grey
from merbench.errors import ConfigError


class ApexDiff(Step):
    """Grey apex frame minus grey onset frame, resized to ``size`` (float32, signed).

    :param size: output side in pixels (None keeps the frame size)
    """

    name = "apex-diff"
    version = "1"

    def __init__(self, size: int | None = 32) -> None:
        check_size(size, self.name)
        self.size = size

    def __call__(self, clip: Clip) -> np.ndarray:
        apex, onset = clip.take([resolve_apex(clip)[0], clip.onset])  # reads just these two
        diff = to_grey(apex).astype(np.float32) - to_grey(onset)
        return resize_image(diff, self.size).astype(np.float32)


class ApexFrame(Step):
    """The grey apex frame resized to ``size`` (appearance only: no motion information).

    :param size: output side in pixels (None keeps the frame size)
    """

    name = "apex-frame"
    version = "1"

    def __init__(self, size: int | None = 32) -> None:
        check_size(size, self.name)
        self.size = size

    def __call__(self, clip: Clip) -> np.ndarray:
        apex = clip.frame(resolve_apex(clip)[0])
        return resize_image(to_grey(apex).astype(np.float32), self.size)


def full_proba(proba: np.ndarray, seen: np.ndarray, num_classes: int) -> np.ndarray:
    """Spread a classifier's columns (for the classes it saw) over all protocol classes."""
    out = np.zeros((proba.shape[0], num_classes), dtype=np.float64)
    out[:, seen] = proba
    return out


class LogReg(Model):
    """Standardised multinomial logistic regression (scikit-learn, lbfgs).

    :param C: inverse L2 regularisation strength (smaller: stronger)
    :param max_iter: lbfgs iterations at most
    :param class_weight: "balanced" (inverse class frequency) or None
    """

    def __init__(self, num_classes: int = 3, C: float = 0.1, max_iter: int = 1000,
                 class_weight: str | None = "balanced", seed: int = 0) -> None:
        self.num_classes = num_classes
        self.C = C
        self.max_iter = max_iter
        self.class_weight = class_weight
        self.seed = seed

    def _estimator(self) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.C, max_iter=self.max_iter,
                                  class_weight=self.class_weight, random_state=self.seed)

    def validate(self) -> None:
        """scikit-learn's own parameter validation, before any fold is fitted."""
        self._estimator()._validate_params()

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> "LogReg":
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        self.pipeline_ = make_pipeline(StandardScaler(), self._estimator())
        self.pipeline_.fit(X, y)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        seen = self.pipeline_[-1].classes_
        return full_proba(self.pipeline_.predict_proba(X), seen, self.num_classes)

    def get_state(self) -> dict[str, np.ndarray]:
        scaler, lr = self.pipeline_[0], self.pipeline_[-1]
        return {"mean": scaler.mean_, "scale": scaler.scale_, "coef": lr.coef_,
                "intercept": lr.intercept_, "classes": lr.classes_}

    def set_state(self, state: dict[str, np.ndarray], input_shape: tuple[int, ...]) -> "LogReg":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        scaler, lr = StandardScaler(), LogisticRegression()
        scaler.mean_, scaler.scale_ = np.asarray(state["mean"]), np.asarray(state["scale"])
        scaler.var_ = scaler.scale_ ** 2
        scaler.n_features_in_ = len(scaler.mean_)
        lr.coef_, lr.intercept_ = np.asarray(state["coef"]), np.asarray(state["intercept"])
        lr.classes_ = np.asarray(state["classes"])
        lr.n_features_in_ = lr.coef_.shape[1]
        self.pipeline_ = make_pipeline(scaler, lr)
        return self


class Chance(Model):
    """Ignores the input: one-hot random labels, uniform or drawn from the training prior.

    :param strategy: "uniform" or "prior" (the training fold's class frequencies)
    """

    def __init__(self, num_classes: int = 3, strategy: str = "uniform", seed: int = 0) -> None:
        if strategy not in ("uniform", "prior"):
            raise ConfigError(f"chance.strategy must be 'uniform' or 'prior', got {strategy!r}")
        self.num_classes = num_classes
        self.strategy = strategy
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> "Chance":
        counts = np.bincount(np.asarray(y), minlength=self.num_classes).astype(np.float64)
        self.prior_ = counts / counts.sum() if self.strategy == "prior" else \
            np.full(self.num_classes, 1.0 / self.num_classes)
        return self

    def get_state(self) -> dict[str, np.ndarray]:
        return {"prior": self.prior_}

    def set_state(self, state: dict[str, np.ndarray], input_shape: tuple[int, ...]) -> "Chance":
        self.prior_ = np.asarray(state["prior"])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        labels = rng.choice(self.num_classes, size=len(X), p=self.prior_)
        return np.eye(self.num_classes)[labels]


@hookimpl
def register_preprocessors(register):  # type: ignore[no-untyped-def]
    register("apex-diff", ApexDiff)
    register("apex-frame", ApexFrame)


@hookimpl
def register_models(register):  # type: ignore[no-untyped-def]
    register("logreg", LogReg)
    register("chance", Chance)


@hookimpl
def register_methods(register):  # type: ignore[no-untyped-def]
    register("diff-logreg", MethodSpec((("apex-diff", {"size": 32}),), ("logreg", {}),
             "Apex - onset grey difference image + logistic regression (motion baseline)",
             demo={}))
    register("apex-logreg", MethodSpec((("apex-frame", {"size": 32}),), ("logreg", {}),
             "Apex frame alone + logistic regression (appearance-only control)", demo={}))
    register("chance", MethodSpec((("apex-frame", {"size": 4}),), ("chance", {}),
             "Uniform random predictions: the chance floor", demo={}))
