"""Uncertainty for pooled UF1/UAR: subject-level (cluster) bootstrap, paired comparisons, McNemar.

Why subjects, not samples: under LOSO the samples of one subject share a face, a recording
session and usually a fold's model, so their errors are correlated. Resampling samples as if
independent gives intervals that are too narrow; resampling whole subjects (the cluster
bootstrap, Field & Welsh 2007) keeps that correlation. A resample draws G subjects with
replacement, pools their confusion matrices (MEGC2019 pooling) and recomputes UF1/UAR exactly as
:mod:`merbench.metrics` does (means over the classes defined in that resample). [ours]

Everything is vectorised: each run becomes one confusion matrix per subject (G, K, K); the B
resamples are one (B, G) matrix of draw counts, and ``counts @ per-subject confusions`` gives
every resample's pooled confusion in one matrix product.

The intervals are percentile intervals. Paired comparisons draw the same subjects for both sides;
their p-value is two-sided, ``2 · min(#{Δ* ≤ 0} + 1, #{Δ* ≥ 0} + 1) / (B + 1)`` capped at 1 (so
never 0; its resolution is 2/(B+1)). McNemar's test on per-sample correctness is the exact
binomial test (conservative); the mid-p variant is also given.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import comb
from typing import Any, Sequence

import numpy as np

from .errors import ConfigError

DEFAULT_BOOT = 2000
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class Predictions:
    """One run's per-sample predictions, aligned by sample id (``subject`` = dataset/subject)."""

    ids: tuple[str, ...]
    true: tuple[str, ...]
    pred: tuple[str, ...]

    @property
    def subjects(self) -> list[str]:
        return [subject_of(i) for i in self.ids]


def subject_of(sample_id: str) -> str:
    """``dataset/subject`` of a sample id ``dataset/subject/clip`` (the LOSO fold)."""
    return sample_id.rsplit("/", 1)[0]


def _check(n_boot: int, level: float) -> None:
    if n_boot < 1:
        raise ConfigError(f"the bootstrap needs at least 1 resample, not {n_boot}",
                          "pass --bootstrap 2000 (or 0 to leave intervals out)")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"confidence level {level} is not between 0 and 1", "e.g. 0.95")


def subject_confusions(runs: Sequence[Predictions], labels: Sequence[str],
                       subjects: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Per-run, per-subject confusion matrices (S, G, K, K) over a common subject list."""
    names = sorted({s for r in runs for s in r.subjects}) if subjects is None else list(subjects)
    g_index = {s: k for k, s in enumerate(names)}
    l_index = {c: k for k, c in enumerate(labels)}
    K, G = len(labels), len(names)
    out = np.zeros((len(runs), G, K, K), dtype=np.int64)
    for s, r in enumerate(runs):
        try:
            t = np.fromiter((l_index[v] for v in r.true), np.int64, len(r.true))
            p = np.fromiter((l_index[v] for v in r.pred), np.int64, len(r.pred))
        except KeyError as exc:
            raise ConfigError(f"label {exc.args[0]!r} is not one of {list(labels)}") from None
        g = np.fromiter((g_index[v] for v in r.subjects), np.int64, len(r.ids))
        out[s] = np.bincount((g * K + t) * K + p, minlength=G * K * K).reshape(G, K, K)
    return out, names


def metrics_from_confusions(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """UF1 and UAR of a stack of confusion matrices (..., K, K), as metrics.from_confusion
    computes them: classes with an undefined F1/recall are left out of the mean."""
    cm = cm.astype(np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    predicted = cm.sum(axis=-2)
    denom = support + predicted  # 2TP + FP + FN
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(denom > 0, 2 * tp / denom, np.nan)
        recall = np.where(support > 0, tp / support, np.nan)
    with np.errstate(invalid="ignore"), _quiet_nanmean():
        return np.nanmean(f1, axis=-1), np.nanmean(recall, axis=-1)


class _quiet_nanmean:
    """Silence numpy's 'mean of empty slice' (an all-undefined resample is NaN, on purpose)."""

    def __enter__(self) -> None:
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: Any) -> None:
        self._w.__exit__(*exc)


def draw_counts(n_subjects: int, n_boot: int, seed: int) -> np.ndarray:
    """(B, G): how often each subject is drawn in each resample (G draws with replacement)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_subjects, size=(n_boot, n_subjects))
    flat = idx + n_subjects * np.arange(n_boot)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * n_subjects).reshape(n_boot, n_subjects)


def resampled_metrics(cms: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """UF1 and UAR (B,) of every resample, averaged over the runs (seeds) of ``cms``."""
    S, G, K, _ = cms.shape
    pooled = np.einsum("bg,sgk->sbk", counts.astype(np.float64),
                       cms.reshape(S, G, K * K).astype(np.float64)).reshape(S, -1, K, K)
    uf1, uar = metrics_from_confusions(pooled)
    with _quiet_nanmean():
        return np.nanmean(uf1, axis=0), np.nanmean(uar, axis=0)


def _interval(values: np.ndarray, level: float) -> list[float] | None:
    values = values[~np.isnan(values)]
    if not values.size:
        return None
    lo, hi = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return [float(lo), float(hi)]


def cluster_bootstrap(runs: Sequence[Predictions] | Predictions, labels: Sequence[str],
                      n_boot: int = DEFAULT_BOOT, seed: int = 0,
                      level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """Percentile interval of pooled UF1/UAR by resampling subjects.

    With several runs (seeds of one method on the same samples) each resample draws the same
    subjects for every run and the statistic is the mean over the runs, so the interval is that
    of the seed-mean the leaderboard shows. Returns ``{"UF1": [lo, hi], "UAR": [lo, hi],
    "level", "n_boot", "seed", "unit": "subject", "subjects": G}``.
    """
    _check(n_boot, level)
    runs = [runs] if isinstance(runs, Predictions) else list(runs)
    cms, names = subject_confusions(runs, labels)
    uf1, uar = resampled_metrics(cms, draw_counts(len(names), n_boot, seed))
    return {"UF1": _interval(uf1, level), "UAR": _interval(uar, level), "level": level,
            "n_boot": n_boot, "seed": seed, "unit": "subject", "subjects": len(names)}


def paired_bootstrap(a: Sequence[Predictions] | Predictions,
                     b: Sequence[Predictions] | Predictions, labels: Sequence[str],
                     n_boot: int = DEFAULT_BOOT, seed: int = 0,
                     level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """ΔUF1 and ΔUAR (A − B) on the same samples: observed value, percentile interval and a
    two-sided bootstrap p-value, the same subjects drawn for both sides in each resample."""
    _check(n_boot, level)
    a = [a] if isinstance(a, Predictions) else list(a)
    b = [b] if isinstance(b, Predictions) else list(b)
    names = sorted({s for r in a + b for s in r.subjects})
    cms_a, _ = subject_confusions(a, labels, names)
    cms_b, _ = subject_confusions(b, labels, names)
    counts = draw_counts(len(names), n_boot, seed)
    observed = np.ones((1, len(names)), dtype=np.int64)
    out: dict[str, Any] = {"level": level, "n_boot": n_boot, "seed": seed, "unit": "subject",
                           "subjects": len(names)}
    obs_a, obs_b = resampled_metrics(cms_a, observed), resampled_metrics(cms_b, observed)
    boot_a, boot_b = resampled_metrics(cms_a, counts), resampled_metrics(cms_b, counts)
    for k, name in enumerate(("UF1", "UAR")):
        delta = boot_a[k] - boot_b[k]
        delta = delta[~np.isnan(delta)]
        below, above = int((delta <= 0).sum()), int((delta >= 0).sum())
        p = min(1.0, 2 * min(below + 1, above + 1) / (delta.size + 1))
        out[name] = {"A": float(obs_a[k][0]), "B": float(obs_b[k][0]),
                     "delta": float(obs_a[k][0] - obs_b[k][0]),
                     "interval": _interval(delta, level), "p": p}
    return out


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict[str, Any]:
    """McNemar's test on paired per-sample correctness: the exact two-sided binomial p-value of
    the discordant pairs (and the mid-p variant, less conservative)."""
    ca, cb = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if ca.shape != cb.shape:
        raise ConfigError(f"McNemar needs paired samples, got {ca.size} and {cb.size}")
    n10, n01 = int((ca & ~cb).sum()), int((~ca & cb).sum())
    n, k = n10 + n01, min(n10, n01)
    if n == 0:
        return {"a_only": n10, "b_only": n01, "p_exact": 1.0, "p_mid": 1.0}
    tail = sum(comb(n, i) for i in range(k + 1))  # exact integers: no underflow at n in 1000s
    p_exact = min(1.0, 2 * tail / 2 ** n)
    p_mid = min(1.0, (2 * tail - comb(n, k)) / 2 ** n)
    return {"a_only": n10, "b_only": n01, "p_exact": float(p_exact), "p_mid": float(p_mid)}
