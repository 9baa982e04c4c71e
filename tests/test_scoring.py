"""`merbench score`: predictions files joined to the protocol's truth by sample id.

The golden tests reproduce every value of realdata/logs/expected_metrics.json (two published
MEGC2019 logs) through the real command line.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from merbench.errors import PredictionsError
from merbench.protocols import DatasetRef, Protocol
from merbench.scoring import read_predictions, score_file

CLASSES = ("negative", "positive", "surprise")
TRUTH = (("samm/006/006_1_2", "negative"), ("samm/006/006_1_3", "positive"),
         ("smic/s01/s01_ne_01", "negative"), ("smic/s01/s01_po_01", "positive"),
         ("casme2/sub01/EP02_01f", "surprise"), ("casme2/sub02/EP03_02f", "negative"))
TOY = Protocol(name="toy", kind="loso", classes=CLASSES,
               datasets=(DatasetRef("samm"), DatasetRef("smic"), DatasetRef("casme2")),
               sample_list=TRUTH)

# The same six predictions in every format below, spelled the ways files spell them.
# Two are wrong: samm/006/006_1_3 (positive -> negative), casme2/sub02/EP03_02f (negative ->
# surprise). Confusion rows negative 2 0 1 / positive 1 1 0 / surprise 0 0 1:
# F1 = 4/6, 2/3, 2/3 -> UF1 2/3; recall 2/3, 1/2, 1 -> UAR 13/18; accuracy 4/6.
ID_CSV = """id,pred
SAMM/6/6_1_2,negative
samm/006/006_1_3,0
smic/s1/s1_ne_01,Negative
smic/1/s01_po_01,positive
CASMEII/1/EP02_01f,surprise
casme2/sub02/EP03_02f,2
"""
COLUMNS_CSV = """dataset,subject,clip,gt,pred,fold
casme2,2,EP03_02f,negative,surprise,f2
casme2,sub1,EP02_01f,surprise,surprise,f2
smic,s01,s1_po_01,positive,positive,f1
smic,S1,s01_ne_01,negative,negative,f1
samm,006,006_1_3,positive,negative,f1
samm,6,006_1_2,negative,negative,f1
"""
MEGC_LOG = """casme2 sub02
EP03_02f 0 2
samm 6
006_1_2 0 0
006_1_3 1 0
smic 1
s1_ne_01 0 0
s1_po_01 1 1

casme2 1
EP02_01f 2 2
"""


def _write(tmp_path: Path, text: str, name: str = "preds.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _check_toy_scores(rep: dict) -> None:
    p = rep["pooled"]
    assert p.n == 6
    assert p.confusion.tolist() == [[2, 0, 1], [1, 1, 0], [0, 0, 1]]
    assert p.uf1 == pytest.approx(2 / 3)
    assert p.uar == pytest.approx(13 / 18)
    assert p.accuracy == pytest.approx(4 / 6)
    assert rep["per_dataset"]["samm"].confusion.tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 0]]
    assert rep["per_dataset"]["smic"].uf1 == 1.0
    assert rep["coverage"] == {"scored": 6, "total": 6, "missing": []}


@pytest.mark.parametrize("text, name", [(ID_CSV, "ids.csv"), (COLUMNS_CSV, "cols.csv"),
                                        (MEGC_LOG, "log.txt")])
def test_every_format_gives_the_hand_computed_scores(tmp_path: Path, text: str, name: str) -> None:
    _check_toy_scores(score_file(_write(tmp_path, text, name), TOY))


def test_join_is_by_sample_id_not_by_row_position(tmp_path: Path) -> None:
    header, *rows = ID_CSV.strip().splitlines()
    reversed_file = _write(tmp_path, "\n".join([header] + rows[::-1]) + "\n")
    _check_toy_scores(score_file(reversed_file, TOY))
    # the same predictions in protocol order but a truth in another order: still the same
    shuffled = Protocol(**{**TOY.__dict__, "sample_list": TRUTH[::-1]})
    _check_toy_scores(score_file(reversed_file, shuffled))


def test_spellings_are_normalised(tmp_path: Path) -> None:
    rows = read_predictions(_write(tmp_path, ID_CSV), CLASSES)
    assert [r.sample_id for r in rows] == [
        "samm/006/006_1_2", "samm/006/006_1_3", "smic/s01/s01_ne_01", "smic/s01/s01_po_01",
        "casme2/sub01/EP02_01f", "casme2/sub02/EP03_02f"]
    assert [r.pred for r in rows] == ["negative", "negative", "negative", "positive", "surprise",
                                      "surprise"]
    assert [r.line for r in rows] == [2, 3, 4, 5, 6, 7]
    log = read_predictions(_write(tmp_path, MEGC_LOG, "log.txt"), CLASSES)
    assert {r.sample_id: r.fold for r in log}["smic/s01/s01_ne_01"] == "smic/s01"
    assert {r.sample_id: r.gt for r in log}["samm/006/006_1_3"] == "positive"


def test_fold_column_and_default_fold_per_subject(tmp_path: Path) -> None:
    rep = score_file(_write(tmp_path, COLUMNS_CSV), TOY)
    assert sorted(rep["per_fold"]) == ["f1", "f2"]
    assert rep["per_fold"]["f2"].n == 2
    rep = score_file(_write(tmp_path, ID_CSV), TOY)
    assert sorted(rep["per_fold"]) == ["casme2/sub01", "casme2/sub02", "samm/006", "smic/s01"]


def test_duplicate_predictions_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "id,pred\nsamm/6/006_1_2,negative\nsamm/006/6_1_2,positive\n")
    with pytest.raises(PredictionsError,
                       match=r"samm/006/006_1_2 is predicted twice \(lines 2 and 3\)"):
        score_file(path, TOY, partial=True)


def test_unknown_samples_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, ID_CSV + "samm/006/006_9_9,negative\n")
    with pytest.raises(PredictionsError, match=r"1 sample\(s\) not in protocol toy: samm/006/006_9_9"):
        score_file(path, TOY)


@pytest.mark.parametrize("text, message", [
    ("samm 6\n006_1_2 0 0\n006_1_3 1 0 0\n", r"line 3: expected '<dataset> <subject>'"),
    ("006_1_2 0 0\n", r"line 1: expected"),
    ("samm 6\n006_1_2 0 5\n", r"line 2: class index 5 is outside 0\.\.2"),
    ("samm 6\n006_1_2 0 happy\n", r"line 2: label 'happy' is not one of"),
    ("id,pred\nsamm/006/006_1_2,negative\nsamm/006,negative\n",
     r"line 3: id 'samm/006' is not dataset/subject/clip"),
    ("id,pred\nsamm/006/006_1_2,disgust\n", r"line 2: label 'disgust' is not one of"),
    ("sample,pred\nsamm/006/006_1_2,negative\n", r"needs a header with 'pred'"),
    ("\n\n", r"no predictions found"),
])
def test_malformed_files_are_refused_with_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PredictionsError, match=message):
        score_file(_write(tmp_path, text, "bad.txt"), TOY, partial=True)


@pytest.mark.parametrize("text, message", [
    ("samm 6\n006_1_2 0\n006_1_3 1 0\n", r"line 2\b"),  # a sample line without its prediction
    ("samm 6\n006_1_2 0 0\n006_1_3 1\nsmic s01\ns01_ne_01 0 0\n", r"line 3\b"),  # before a header
    ("id,label\nsamm/006/006_1_2,negative\n", r"line 1\b|needs a header with 'pred'"),  # CSV, no pred
])
def test_sample_line_without_prediction_is_refused_with_its_line(tmp_path: Path, text: str,
                                                                 message: str) -> None:
    with pytest.raises(PredictionsError, match=message):
        score_file(_write(tmp_path, text, "bad.txt"), TOY, partial=True)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PredictionsError, match="does not exist"):
        score_file(tmp_path / "nope.csv", TOY)


def test_missing_samples_refused_unless_partial(tmp_path: Path) -> None:
    header, *rows = ID_CSV.strip().splitlines()
    path = _write(tmp_path, "\n".join([header] + rows[2:]) + "\n")  # drops both samm samples
    with pytest.raises(PredictionsError, match=r"2 of the protocol's 6 samples have no prediction: "
                                               r"samm/006/006_1_2, samm/006/006_1_3 \(pass --partial"):
        score_file(path, TOY)
    rep = score_file(path, TOY, partial=True)
    assert rep["coverage"] == {"scored": 4, "total": 6,
                               "missing": ["samm/006/006_1_2", "samm/006/006_1_3"]}
    # left: negative 1 0 1 / positive 0 1 0 / surprise 0 0 1
    assert rep["pooled"].confusion.tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 1]]
    assert rep["pooled"].uar == pytest.approx((1 / 2 + 1 + 1) / 3)


def test_gt_disagreement_file_versus_protocol(tmp_path: Path) -> None:
    # the file says EP02_01f is positive (protocol: surprise) and predicts surprise
    path = _write(tmp_path, COLUMNS_CSV.replace("EP02_01f,surprise,surprise",
                                                "EP02_01f,positive,surprise"))
    # by default the protocol's labels are the truth and a disagreeing gt column is an error
    with pytest.raises(PredictionsError, match=r"gt column disagrees with protocol .*labels for 1 "
                       r"sample\(s\), e.g. casme2/sub01/EP02_01f \(line 3\): gt 'positive', "
                       r"protocol 'surprise' \(.*--truth file"):
        score_file(path, TOY)
    rep = score_file(path, TOY, truth_from="file")
    assert rep["truth_from"] == "file"
    assert rep["gt_disagreements"] == [{"sample": "casme2/sub01/EP02_01f", "file": "positive",
                                        "protocol": "surprise"}]
    # against the file: negative 2 0 1 / positive 1 1 1 / surprise 0 0 0 -> 3 of 6 correct
    assert rep["pooled"].confusion.tolist() == [[2, 0, 1], [1, 1, 1], [0, 0, 0]]
    assert rep["pooled"].accuracy == pytest.approx(3 / 6)
    assert rep["pooled"].undefined["recall"] == ["surprise"]
    official = score_file(_write(tmp_path, COLUMNS_CSV), TOY)  # gt agrees: scored
    assert official["truth_from"] == "protocol" and official["gt_disagreements"] == []
    _check_toy_scores(official)
    with pytest.raises(PredictionsError, match="truth_from must be 'file' or 'protocol'"):
        score_file(path, TOY, truth_from="paper")


def test_protocol_without_sample_list_needs_gt(tmp_path: Path) -> None:
    open_list = Protocol(**{**TOY.__dict__, "sample_list": None})
    with pytest.raises(PredictionsError, match="has no official sample list, so no labels to "
                                               "score .* --truth file"):
        score_file(_write(tmp_path, COLUMNS_CSV), open_list)
    with pytest.raises(PredictionsError, match="has no official sample list .* no gt for "
                                               "samm/006/006_1_2"):
        score_file(_write(tmp_path, ID_CSV), open_list, truth_from="file")
    _check_toy_scores(score_file(_write(tmp_path, COLUMNS_CSV), open_list, truth_from="file"))


# -- golden tests on the two published MEGC2019 logs ------------------------------------------
def _expected(realdata: Path, name: str) -> dict:
    return json.loads((realdata / "logs" / "expected_metrics.json").read_text())[name]["expected"]


def _assert_reproduces(report: dict, expected: dict) -> None:
    keys = {"n": "n", "UF1": "UF1", "UAR": "UAR", "macro_precision": "macro_precision",
            "acc": "accuracy"}
    sections = {"Full": report["pooled"], **report["per_dataset"]}
    assert set(sections) == set(expected)
    for part, values in expected.items():
        for key, value in values.items():
            got = sections[part][keys[key]]
            assert round(got, 4) == pytest.approx(value, abs=1e-9), (part, key, got, value)


def test_golden_ststnet_log(realdata: Path, cli) -> None:
    log = realdata / "logs" / "ststnet_megc2019_log.txt"
    res = cli("score", log, "--protocol", "megc2019-composite", "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    _assert_reproduces(out, _expected(realdata, "ststnet_megc2019_log.txt"))
    assert out["coverage"] == {"scored": 442, "total": 442, "missing": []}
    assert out["gt_disagreements"] == []
    assert len(out["per_fold"]) == 68
    # the paper printed this log's macro precision as its UAR
    assert round(out["pooled"]["macro_precision"], 4) == 0.7605
    assert round(out["pooled"]["UAR"], 4) == 0.7186


def test_golden_capsulenet_log(realdata: Path, cli) -> None:
    log = realdata / "logs" / "capsulenet_megc2019_log.csv"
    refused = cli("score", log, "--protocol", "megc2019-composite", "--json")
    assert refused.code == 2 and refused.out == ""
    assert refused.err.count("\n") == 1 and "Traceback" not in refused.err
    assert "7 of the protocol's 442 samples have no prediction: smic/s01/s01_ne_02" in refused.err
    assert "--partial" in refused.err

    # its gt column calls s18_sur_03 negative: refused against the protocol's labels ...
    refused = cli("score", log, "--protocol", "megc2019-composite", "--partial")
    assert refused.code == 2 and refused.err.count("\n") == 1
    assert "gt column disagrees with protocol megc2019-composite's labels for 1 sample(s), " \
           "e.g. smic/s18/s18_sur_03" in refused.err and "--truth file" in refused.err
    # ... and scored against it on request: the published numbers
    res = cli("score", log, "--protocol", "megc2019-composite", "--partial", "--truth", "file",
              "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    _assert_reproduces(out, _expected(realdata, "capsulenet_megc2019_log.csv"))
    assert out["coverage"]["scored"] == 435 and out["coverage"]["total"] == 442
    assert len(out["coverage"]["missing"]) == 7
    assert all(m.startswith("smic/") for m in out["coverage"]["missing"])
    assert out["truth_from"] == "file"
    assert out["gt_disagreements"] == [{"sample": "smic/s18/s18_sur_03", "file": "negative",
                                        "protocol": "surprise"}]

    text = cli("score", log, "--protocol", "megc2019-composite", "--partial", "--truth", "file")
    assert "warning: smic/s18/s18_sur_03: the file's gt is 'negative', the protocol's is " \
           "'surprise'" in text.out
