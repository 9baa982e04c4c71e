"""UF1, UAR, accuracy and confusion against values worked out by hand (MEGC2019 definitions)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from merbench.errors import PredictionsError
from merbench.metrics import (
    Prediction,
    fold_mean_std,
    from_confusion,
    report,
    report_to_dict,
    score,
)

LABELS = ["a", "b", "c"]

# 10 samples, 3 classes. By hand:
#   confusion (rows true a, b, c; columns predicted a, b, c)
#       a: 2 1 1     b: 1 2 0     c: 0 0 3
#   TP = 2, 2, 3; support = 4, 3, 3; predicted = 3, 3, 4
#   recall    = 1/2, 2/3, 1          -> UAR = 13/18
#   precision = 2/3, 2/3, 3/4        -> macro precision = 25/36
#   F1 = 2TP/(2TP+FP+FN) = 4/7, 4/6, 6/7 -> UF1 = 44/63
#   accuracy = 7/10
Y_TRUE = ["a", "a", "a", "a", "b", "b", "b", "c", "c", "c"]
Y_PRED = ["a", "a", "b", "c", "b", "b", "a", "c", "c", "c"]


def test_hand_computed_three_class_case() -> None:
    s = score(Y_TRUE, Y_PRED, LABELS)
    assert s.confusion.tolist() == [[2, 1, 1], [1, 2, 0], [0, 0, 3]]
    assert s.n == 10
    assert s.support == (4, 3, 3)
    assert s.recall == pytest.approx((1 / 2, 2 / 3, 1.0))
    assert s.precision == pytest.approx((2 / 3, 2 / 3, 3 / 4))
    assert s.f1 == pytest.approx((4 / 7, 2 / 3, 6 / 7))
    assert s.uf1 == pytest.approx(44 / 63)
    assert s.uar == pytest.approx(13 / 18)
    assert s.macro_precision == pytest.approx(25 / 36)
    assert s.accuracy == pytest.approx(0.7)
    assert s.undefined == {}


def test_order_of_samples_does_not_matter_but_label_order_does() -> None:
    perm = np.random.default_rng(0).permutation(10)
    shuffled = score([Y_TRUE[i] for i in perm], [Y_PRED[i] for i in perm], LABELS)
    assert shuffled.uf1 == pytest.approx(44 / 63)
    reordered = score(Y_TRUE, Y_PRED, ["c", "a", "b"])
    assert reordered.confusion.tolist() == [[3, 0, 0], [1, 2, 1], [0, 1, 2]]
    assert reordered.f1 == pytest.approx((6 / 7, 4 / 7, 2 / 3))


def test_perfect_and_all_wrong() -> None:
    assert score(["a", "b", "c"], ["a", "b", "c"], LABELS).uf1 == 1.0
    wrong = score(["a", "b", "c"], ["b", "c", "a"], LABELS)
    assert (wrong.uf1, wrong.uar, wrong.accuracy) == (0.0, 0.0, 0.0)


def test_to_dict_uses_the_published_keys() -> None:
    d = score(Y_TRUE, Y_PRED, LABELS).to_dict()
    assert d["n"] == 10 and d["UF1"] == pytest.approx(44 / 63) and d["UAR"] == pytest.approx(13 / 18)
    assert d["per_class"]["c"] == {"precision": 0.75, "recall": 1.0, "f1": pytest.approx(6 / 7),
                                   "support": 3}
    assert d["confusion"] == [[2, 1, 1], [1, 2, 0], [0, 0, 3]]


def _fold_predictions() -> list[Prediction]:
    # fold A: true a a b, predicted a a a ; fold B: true b c c, predicted b c b
    return [Prediction("x/s1/1", "A", "a", "a"), Prediction("x/s1/2", "A", "a", "a"),
            Prediction("x/s1/3", "A", "b", "a"), Prediction("x/s2/1", "B", "b", "b"),
            Prediction("x/s2/2", "B", "c", "c"), Prediction("x/s2/3", "B", "c", "b")]


def test_pooled_and_per_fold_average_differ() -> None:
    """By hand. Fold A: F1 a = 4/5, b = 0, c undefined -> UF1 2/5; recall a 1, b 0 -> UAR 1/2.
    Fold B: F1 b = 2/3, c = 2/3, a undefined -> UF1 2/3; recall b 1, c 1/2 -> UAR 3/4.
    Per-fold mean UF1 = 8/15 (std 2/15). Pooled confusion a: 2 0 0 / b: 1 1 0 / c: 0 1 1:
    F1 = 4/5, 1/2, 2/3 -> UF1 59/90; UAR = (1 + 1/2 + 1/2)/3 = 2/3."""
    rep = report(_fold_predictions(), LABELS)
    assert rep["pooled"].uf1 == pytest.approx(59 / 90)
    assert rep["pooled"].uar == pytest.approx(2 / 3)
    assert rep["per_fold"]["A"].uf1 == pytest.approx(2 / 5)
    assert rep["per_fold"]["A"].undefined == {"recall": ["c"], "f1": ["c"], "precision": ["b", "c"]}
    assert rep["per_fold"]["B"].uf1 == pytest.approx(2 / 3)
    fm = rep["fold_mean_std"]
    assert fm["uf1"]["mean"] == pytest.approx(8 / 15)
    assert fm["uf1"]["std"] == pytest.approx(2 / 15)
    assert fm["uar"]["mean"] == pytest.approx(5 / 8)
    assert fm["uf1"]["folds"] == 2
    assert abs(rep["pooled"].uf1 - fm["uf1"]["mean"]) > 0.1
    assert "per_dataset" not in rep  # one source dataset only


def test_report_splits_by_source_dataset() -> None:
    preds = [Prediction("smic/s01/1", "f", "a", "a"), Prediction("smic/s01/2", "f", "b", "a"),
             Prediction("samm/006/1", "g", "b", "b"), Prediction("samm/006/2", "g", "c", "c")]
    rep = report(preds, LABELS)
    assert sorted(rep["per_dataset"]) == ["samm", "smic"]
    assert rep["per_dataset"]["samm"].uf1 == 1.0 and rep["per_dataset"]["samm"].n == 2
    # smic: a row 1 0 0, b row 1 0 0 -> F1 a 2/3, b 0, c undefined; recall a 1, b 0
    assert rep["per_dataset"]["smic"].uf1 == pytest.approx(1 / 3)
    assert rep["per_dataset"]["smic"].undefined["recall"] == ["c"]
    d = report_to_dict(rep)
    assert d["per_dataset"]["smic"]["UAR"] == pytest.approx(0.5)
    assert d["per_fold"]["g"]["UF1"] == 1.0


def test_class_with_no_true_sample_is_undefined_not_dropped() -> None:
    # c never true, never predicted: recall, precision and F1 of c are undefined.
    s = score(["a", "b", "a"], ["a", "b", "b"], LABELS)
    assert s.undefined == {"recall": ["c"], "f1": ["c"], "precision": ["c"]}
    assert s.labels == ("a", "b", "c") and s.support == (2, 1, 0)
    assert math.isnan(s.f1[2]) and math.isnan(s.recall[2])
    assert s.uf1 == pytest.approx((2 / 3 + 2 / 3) / 2)  # mean over the defined classes a, b
    assert s.uar == pytest.approx((1 / 2 + 1) / 2)
    d = s.to_dict()
    assert d["per_class"]["c"] == {"precision": None, "recall": None, "f1": None, "support": 0}


def test_class_never_true_but_predicted_has_f1_zero() -> None:
    # c is predicted once but never true: recall undefined, but F1 = 0/(0+1+0) = 0 counts.
    s = score(["a", "b", "a"], ["a", "b", "c"], LABELS)
    assert s.undefined == {"recall": ["c"]}
    assert s.f1 == pytest.approx((2 / 3, 1.0, 0.0))
    assert s.uf1 == pytest.approx(5 / 9)
    assert s.uar == pytest.approx(3 / 4)
    assert s.macro_precision == pytest.approx((1 + 1 + 0) / 3)


def test_all_folds_undefined_gives_none_in_fold_summary() -> None:
    empty = from_confusion(np.zeros((3, 3), dtype=int), LABELS)
    assert math.isnan(empty.uf1) and math.isnan(empty.accuracy) and empty.n == 0
    assert fold_mean_std([empty])["uf1"] == {"mean": None, "std": None, "folds": 0}
    assert empty.to_dict()["UF1"] is None


def test_label_outside_the_classes_is_refused() -> None:
    with pytest.raises(PredictionsError, match="'d' is not one of the protocol's classes"):
        score(["a", "b"], ["a", "d"], LABELS)
    with pytest.raises(PredictionsError, match="'z'"):
        score(["z"], ["a"], LABELS)


def test_length_mismatch_is_refused() -> None:
    with pytest.raises(PredictionsError, match="3 true labels but 2 predictions"):
        score(["a", "b", "c"], ["a", "b"], LABELS)
