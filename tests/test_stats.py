"""Subject-level bootstrap, paired bootstrap and McNemar on hand-made predictions."""
from __future__ import annotations

import time

import numpy as np
import pytest

from merbench.errors import ConfigError
from merbench.metrics import score
from merbench.stats import (Predictions, cluster_bootstrap, draw_counts, mcnemar,
                            metrics_from_confusions, paired_bootstrap, resampled_metrics,
                            subject_confusions)

L = ["a", "b"]


def _preds(rows: list[tuple[str, str, str]]) -> Predictions:
    ids, true, pred = zip(*rows)
    return Predictions(ids, true, pred)


def _two_subjects(per_sample: bool) -> Predictions:
    """Subject A: 10 samples all right; subject B: 10 samples all wrong (5 per class each).
    With ``per_sample`` every sample is its own subject (= the ordinary sample bootstrap)."""
    rows = []
    for subject, right in (("A", True), ("B", False)):
        for k in range(10):
            t = L[k % 2]
            p = t if right else L[1 - k % 2]
            rows.append((f"d/{subject}{k if per_sample else ''}/c{k}", t, p))
    return _preds(rows)


def test_all_correct_gives_the_interval_1_1() -> None:
    rows = [(f"d/s{g}/c{k}", c, c) for g in range(5) for k, c in enumerate(L * 3)]
    ci = cluster_bootstrap(_preds(rows), L, n_boot=500, seed=3)
    assert ci["UF1"] == [1.0, 1.0] and ci["UAR"] == [1.0, 1.0]
    assert (ci["subjects"], ci["n_boot"], ci["unit"], ci["level"]) == (5, 500, "subject", 0.95)


def test_subjects_not_samples_are_resampled() -> None:
    # two subjects: a resample is AA (UF1 1), AB (UF1 1/2) or BB (UF1 0), each AA/BB with
    # probability 1/4, so the 95 % interval is exactly [0, 1]
    clustered = _two_subjects(per_sample=False)
    cms, names = subject_confusions([clustered], L)
    assert names == ["d/A", "d/B"]
    uf1, uar = resampled_metrics(cms, draw_counts(2, 2000, 0))
    assert set(np.round(uf1, 12)) == {0.0, 0.5, 1.0} and set(np.round(uar, 12)) == {0.0, 0.5, 1.0}
    assert abs((uf1 == 1).mean() - 0.25) < 0.04
    ci = cluster_bootstrap(clustered, L, n_boot=2000, seed=0)
    assert ci["UF1"] == [0.0, 1.0] and ci["UAR"] == [0.0, 1.0]
    # the same predictions resampled sample by sample: a much narrower interval around 1/2
    naive = cluster_bootstrap(_two_subjects(per_sample=True), L, n_boot=2000, seed=0)
    assert naive["subjects"] == 20
    lo, hi = naive["UF1"]
    assert 0.15 < lo < 0.5 < hi < 0.85


def test_resample_metrics_match_metrics_score() -> None:
    rng = np.random.default_rng(1)
    classes = ["n", "p", "s"]
    ids = [f"d/s{g}/c{k}" for g in range(7) for k in range(5)]
    true = [classes[i] for i in rng.integers(0, 3, len(ids))]
    pred = [classes[i] for i in rng.integers(0, 3, len(ids))]
    cms, _ = subject_confusions([Predictions(tuple(ids), tuple(true), tuple(pred))], classes)
    uf1, uar = resampled_metrics(cms, np.ones((1, 7), dtype=np.int64))
    expected = score(true, pred, classes)
    assert uf1[0] == pytest.approx(expected.uf1) and uar[0] == pytest.approx(expected.uar)
    # a class never true nor predicted is left out of the mean, as metrics.from_confusion does
    f1, rec = metrics_from_confusions(np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]]))
    assert f1 == pytest.approx((6 / 7 + 4 / 5) / 2) and rec == pytest.approx((3 / 4 + 1) / 2)
    counts = draw_counts(7, 50, 0)
    assert counts.shape == (50, 7) and (counts.sum(axis=1) == 7).all()


def test_several_seeds_give_the_interval_of_the_seed_mean() -> None:
    run = _two_subjects(per_sample=False)
    one = cluster_bootstrap(run, L, n_boot=300, seed=5)
    assert cluster_bootstrap([run, run], L, n_boot=300, seed=5)["UF1"] == one["UF1"]


def test_bootstrap_is_fast_for_442_samples() -> None:
    rng = np.random.default_rng(0)
    ids = tuple(f"d/s{g:02d}/c{k}" for g in range(68) for k in range(7))[:442]
    true = tuple(["n", "p", "s"][i] for i in rng.integers(0, 3, 442))
    run = Predictions(ids, true, tuple(t if rng.random() < 0.7 else "n" for t in true))
    start = time.perf_counter()
    ci = cluster_bootstrap(run, ["n", "p", "s"], n_boot=2000, seed=0)
    paired_bootstrap(run, run, ["n", "p", "s"], n_boot=2000)
    assert time.perf_counter() - start < 1.0
    point = score(run.true, run.pred, ["n", "p", "s"]).uf1
    assert ci["UF1"][0] < point < ci["UF1"][1] and ci["subjects"] == 64  # 442 samples, 7 a subject


def test_paired_bootstrap_identical_runs_and_run_vs_chance() -> None:
    rng = np.random.default_rng(2)
    ids = tuple(f"d/s{g:02d}/c{k}" for g in range(20) for k in range(6))
    true = tuple(L[i] for i in rng.integers(0, 2, len(ids)))
    good = Predictions(ids, true, tuple(t if rng.random() < 0.9 else L[1 - L.index(t)]
                                        for t in true))
    chance = Predictions(ids, true, tuple(L[i] for i in rng.integers(0, 2, len(ids))))
    same = paired_bootstrap(good, good, L, n_boot=1000)
    assert same["UF1"]["p"] == 1.0 and same["UAR"]["p"] == 1.0
    assert same["UF1"]["interval"] == [0.0, 0.0] and same["UF1"]["delta"] == 0.0
    diff = paired_bootstrap(good, chance, L, n_boot=1000)
    assert diff["UF1"]["p"] == pytest.approx(2 / 1001)  # no resample has Δ <= 0
    assert diff["UF1"]["delta"] == pytest.approx(score(true, good.pred, L).uf1
                                                 - score(true, chance.pred, L).uf1)
    assert 0 < diff["UF1"]["interval"][0] < diff["UF1"]["delta"] < diff["UF1"]["interval"][1]


def test_mcnemar_exact_and_mid_p() -> None:
    a = [True] * 13 + [False] * 1 + [True] * 5
    b = [False] * 13 + [True] * 1 + [True] * 5
    out = mcnemar(a, b)
    # 14 discordant pairs, 1 against A: p = 2 * (C(14,0) + C(14,1)) / 2^14
    assert (out["a_only"], out["b_only"]) == (13, 1)
    assert out["p_exact"] == pytest.approx(2 * 15 / 2 ** 14)
    assert out["p_mid"] == pytest.approx((2 * 15 - 14) / 2 ** 14)
    assert mcnemar(a, a) == {"a_only": 0, "b_only": 0, "p_exact": 1.0, "p_mid": 1.0}
    assert mcnemar([True, False], [False, True])["p_exact"] == 1.0


def test_bad_bootstrap_settings_are_refused() -> None:
    run = _two_subjects(per_sample=False)
    with pytest.raises(ConfigError, match="at least 1 resample"):
        cluster_bootstrap(run, L, n_boot=0)
    with pytest.raises(ConfigError, match="not between 0 and 1"):
        cluster_bootstrap(run, L, level=95)
