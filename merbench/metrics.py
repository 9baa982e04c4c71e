"""UF1, UAR, accuracy and confusion, exactly as MEGC2019 defines them.

Headline figures pool the per-class TP/FP/FN over all folds (then F1_c = 2TP/(2TP+FP+FN),
UF1 = mean_c F1_c, UAR = mean_c TP_c/N_c). Per-fold mean ± std is a secondary figure.
A class with no true sample in a subset has an undefined recall (and an undefined F1 when it
is never predicted either): it is reported in ``undefined``, never silently dropped, and the
means are taken over the defined classes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import PredictionsError


def _nan_to_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


@dataclass(frozen=True)
class Scores:
    """Metrics of one set of predictions over a fixed class list."""

    labels: tuple[str, ...]
    n: int
    uf1: float
    uar: float
    accuracy: float
    macro_precision: float
    confusion: np.ndarray  # rows = true class, columns = predicted class
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    f1: tuple[float, ...]
    support: tuple[int, ...]
    undefined: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n, "UF1": _nan_to_none(self.uf1), "UAR": _nan_to_none(self.uar),
            "accuracy": _nan_to_none(self.accuracy),
            "macro_precision": _nan_to_none(self.macro_precision),
            "labels": list(self.labels),
            "per_class": {c: {"precision": _nan_to_none(p), "recall": _nan_to_none(r),
                              "f1": _nan_to_none(f), "support": s}
                          for c, p, r, f, s in zip(self.labels, self.precision, self.recall,
                                                   self.f1, self.support)},
            "confusion": self.confusion.tolist(),
            "undefined": self.undefined,
        }


def _mean_defined(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def confusion(y_true: Sequence[Any], y_pred: Sequence[Any], labels: Sequence[Any]) -> np.ndarray:
    index = {lab: i for i, lab in enumerate(labels)}
    bad = [v for v in list(y_true) + list(y_pred) if v not in index]
    if bad:
        raise PredictionsError(f"label {bad[0]!r} is not one of the protocol's classes "
                               f"{list(labels)}", "map predictions to the protocol's label space")
    t = np.fromiter((index[v] for v in y_true), dtype=np.int64, count=len(y_true))
    p = np.fromiter((index[v] for v in y_pred), dtype=np.int64, count=len(y_pred))
    k = len(labels)
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def from_confusion(cm: np.ndarray, labels: Sequence[Any]) -> Scores:
    """All metrics from a (pooled) confusion matrix."""
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    fp = predicted - tp
    fn = support - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        denom = 2 * tp + fp + fn
        f1 = np.where(denom > 0, 2 * tp / denom, np.nan)
    names = [str(c) for c in labels]
    undefined = {}
    if np.isnan(recall).any():
        undefined["recall"] = [c for c, r in zip(names, recall) if math.isnan(r)]
    if np.isnan(f1).any():
        undefined["f1"] = [c for c, f in zip(names, f1) if math.isnan(f)]
    if np.isnan(precision).any():
        undefined["precision"] = [c for c, p in zip(names, precision) if math.isnan(p)]
    n = int(cm.sum())
    return Scores(tuple(names), n, _mean_defined(f1), _mean_defined(recall),
                  float(tp.sum() / n) if n else float("nan"), _mean_defined(precision), cm,
                  tuple(precision.tolist()), tuple(recall.tolist()), tuple(f1.tolist()),
                  tuple(int(s) for s in support), undefined)


def score(y_true: Sequence[Any], y_pred: Sequence[Any], labels: Sequence[Any]) -> Scores:
    """UF1, UAR, accuracy, per-class figures and confusion for one set of predictions."""
    if len(y_true) != len(y_pred):
        raise PredictionsError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    return from_confusion(confusion(y_true, y_pred, labels), labels)


@dataclass(frozen=True)
class Prediction:
    """One scored prediction, joined to its ground truth by sample id."""

    sample_id: str
    fold: str
    true: str
    pred: str

    @property
    def dataset(self) -> str:
        return self.sample_id.split("/", 1)[0]


def report(predictions: Sequence[Prediction], labels: Sequence[str],
           by_dataset: bool = True) -> dict[str, Any]:
    """The full report: pooled headline, per-fold mean ± std, per source dataset."""
    pooled = score([p.true for p in predictions], [p.pred for p in predictions], labels)
    folds: dict[str, list[Prediction]] = {}
    for p in predictions:
        folds.setdefault(p.fold, []).append(p)
    per_fold = {name: score([p.true for p in ps], [p.pred for p in ps], labels)
                for name, ps in folds.items()}
    out: dict[str, Any] = {"pooled": pooled, "per_fold": per_fold,
                           "fold_mean_std": fold_mean_std(per_fold.values())}
    datasets = sorted({p.dataset for p in predictions})
    if by_dataset and len(datasets) > 1:
        out["per_dataset"] = {d: score([p.true for p in predictions if p.dataset == d],
                                       [p.pred for p in predictions if p.dataset == d], labels)
                              for d in datasets}
    return out


def fold_mean_std(fold_scores: Any) -> dict[str, dict[str, float | None]]:
    """Mean ± std over folds (the secondary figure; folds missing a class use defined classes)."""
    fold_scores = list(fold_scores)
    out = {}
    for key in ("uf1", "uar", "accuracy"):
        vals = np.array([getattr(s, key) for s in fold_scores], dtype=np.float64)
        vals = vals[~np.isnan(vals)]
        out[key] = {"mean": _nan_to_none(float(vals.mean())) if vals.size else None,
                    "std": _nan_to_none(float(vals.std())) if vals.size else None,
                    "folds": int(vals.size)}
    return out


def report_to_dict(rep: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"pooled": rep["pooled"].to_dict(),
                           "fold_mean_std": rep["fold_mean_std"]}
    if "per_dataset" in rep:
        out["per_dataset"] = {d: s.to_dict() for d, s in rep["per_dataset"].items()}
    out["per_fold"] = {f: {"n": s.n, "UF1": _nan_to_none(s.uf1), "UAR": _nan_to_none(s.uar),
                           "accuracy": _nan_to_none(s.accuracy), "undefined": s.undefined}
                       for f, s in rep["per_fold"].items()}
    return out
