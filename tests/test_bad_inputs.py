"""Hostile inputs (issue 17): every bad input is one clean line (exit 2, no traceback, never
"Internal error"), nothing is silently wrong, and the store and earlier outputs stay intact.

The data cases run on a small fake CASME II release written here (an xlsx coding file and
48x48 JPEG frames); the run cases on the tiny synthetic set.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import openpyxl
import pytest

import merbench
from merbench.errors import DataError
from merbench.store import Store

EMOTIONS = ("happiness", "surprise", "disgust", "repression", "others")
HEADER = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units",
          "Estimated Emotion"]
TINY = ["--data-param", "synthetic.subjects=4", "--data-param", "synthetic.clips_per_class=2",
        "--data-param", "synthetic.size=32", "--data-param", "synthetic.frames=20"]


def one_line(res: Any, *needles: str, code: int = 2) -> None:
    """Exit ``code``, one line on stderr naming the problem, no traceback, no internal error."""
    assert res.code == code, (res.code, res.out, res.err)
    assert res.err.startswith("Error: ") and res.err.count("\n") == 1, res.err
    assert "Traceback" not in res.err + res.out and "Internal error" not in res.err
    for needle in needles:
        assert needle in res.err, res.err


# -- a small CASME II release ------------------------------------------------------------------
def frame(seed: int, size: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def rows() -> list[list[Any]]:
    """Two subjects x five classes (onset 10, apex 13, offset 16) and one fear clip (left out
    of the 5-class space on purpose)."""
    out = [[s, f"EP0{k + 1}", 10, 13, 16, "4", emotion]
           for s in (1, 2) for k, emotion in enumerate(EMOTIONS)]
    return out + [[2, "EP09", 10, 13, 16, "1", "fear"]]


def write_release(root: Path, table: list[list[Any]], header: list[str] = HEADER,
                  size: int = 48) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(header)
    for row in table:
        sheet.append(row)
    book.save(root / "CASME2-coding-20140508.xlsx")
    for k, (subject, clip, onset, _, offset, _, _) in enumerate(table):
        folder = root / "CASME2_RAW_selected" / f"sub{int(subject):02d}" / str(clip)
        if "/" in str(clip) or not str(onset).isdigit():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(int(onset), int(offset) + 1):
            cv2.imwrite(str(folder / f"img{n}.jpg"), frame(100 * k + n, size))
    return root


@pytest.fixture()
def release(tmp_path: Path) -> Path:
    return write_release(tmp_path / "CASME2", rows())


def apex_path(root: Path, subject: str = "sub01", clip: str = "EP01") -> Path:
    return root / "CASME2_RAW_selected" / subject / clip / "img13.jpg"


# -- data check: each problem named, once, the check going on ----------------------------------
def test_a_clean_release_checks_ok_and_names_what_the_5class_space_leaves_out(release: Path,
                                                                              cli) -> None:
    res = cli("data", "check", "casme2", "--root", release)
    assert res.code == 0, res.err
    assert "casme2: 11 samples, 2 subjects" in res.out and "ok: no problems found" in res.out
    assert "label space 5class leaves out 1 samples: fear 1" in res.out
    summary = cli("data", "summary", "casme2", "--root", release, "--labels", "5class")
    assert summary.code == 0 and "left out by label space 5class: fear 1" in summary.out


def _edit_rows(change: Callable[[list[list[Any]]], None]) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        table = rows()
        change(table)
        write_release(root, table)
    return setup


def _truncate_apex(root: Path) -> None:
    path = apex_path(root)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * 0.6)])


def _placeholders(root: Path) -> None:
    for path in (root / "CASME2_RAW_selected").rglob("*.jpg"):
        cv2.imwrite(str(path), np.full((8, 8, 3), 128, np.uint8))


def _other_size(root: Path) -> None:
    cv2.imwrite(str(apex_path(root)), frame(0, 40))


def _missing_frame(root: Path) -> None:
    apex_path(root).unlink()


def _renamed_column(root: Path) -> None:
    write_release(root, rows(), [h if h != "OnsetFrame" else "Onset" for h in HEADER])


CHECK_CASES = [
    # (id, setup, needles in one problem line, what the exit line says)
    ("duplicate-row", _edit_rows(lambda t: t.append([1, "EP01", 10, 13, 16, "4", "surprise"])),
     [], "rows 2 and 13 both describe casme2/sub01/EP01"),
    ("duplicate-spelling", _edit_rows(lambda t: t.append(["01", "EP02", 10, 13, 16, "4",
                                                          "happiness"])),
     [], "rows 3 and 13 both describe casme2/sub01/EP02 (subject written '01' and '1')"),
    ("dotdot-cell", _edit_rows(lambda t: t.append([1, "../../../etc", 10, 13, 16, "4",
                                                   "others"])),
     [], "row 13: clip '../../../etc' is not a plain name"),
    ("absolute-cell", _edit_rows(lambda t: t.append([1, "/etc", 10, 13, 16, "4", "others"])),
     [], "clip '/etc' is not a plain name"),
    ("renamed-column", _renamed_column, [], "has no column 'OnsetFrame'"),
    ("truncated-jpeg", _truncate_apex,
     ["casme2/sub01/EP01:", "img13.jpg is truncated (no JPEG end-of-image marker)"],
     "1 problem(s) found"),
    ("placeholder-frames", _placeholders,
     ["casme2/sub01/EP01: frames are 8x8 pixels, too small to hold a face"],
     "11 problem(s) found"),
    ("frame-of-another-size", _other_size,
     ["casme2/sub01/EP01: frame img13.jpg is 40x40, the first frame is 48x48"],
     "1 problem(s) found"),
    ("missing-frame", _missing_frame, ["casme2/sub01/EP01: 1 frame(s) missing", ": 13"],
     "1 problem(s) found"),
    ("onset-after-offset", _edit_rows(lambda t: t[0].__setitem__(4, 5)),
     ["casme2/sub01/EP01: onset 10 is after offset 5"], "1 problem(s) found"),
    ("apex-outside", _edit_rows(lambda t: t[0].__setitem__(3, 30)),
     ["casme2/sub01/EP01: apex 30 is outside onset..offset 10..16"], "1 problem(s) found"),
    ("unknown-label", _edit_rows(lambda t: t[0].__setitem__(6, "happyness")),
     ["casme2/sub01/EP01: label 'happyness' is unknown: label space(s) 5class, megc2019 leave "
      "it out"], "1 problem(s) found"),
    ("empty-label", _edit_rows(lambda t: t[0].__setitem__(6, None)),
     ["casme2/sub01/EP01: empty label: label space(s) native, 5class, megc2019 leave it out"],
     "1 problem(s) found"),
]


@pytest.mark.parametrize("case, setup, problems, error", CHECK_CASES, ids=[c[0] for c in CHECK_CASES])
def test_data_check_names_each_problem_once(tmp_path: Path, cli, case: str,
                                            setup: Callable[[Path], None], problems: list[str],
                                            error: str) -> None:
    root = write_release(tmp_path / "CASME2", rows())
    setup(root)
    res = cli("data", "check", "casme2", "--root", root)
    one_line(res, error)
    lines = [ln for ln in res.out.splitlines() if ln.startswith("  problem: ")]
    assert len(lines) == len(set(lines)), "a problem printed twice"
    for needle in problems:
        assert sum(needle in ln for ln in lines) >= 1, res.out
    if problems and error == "1 problem(s) found":
        assert len(lines) == 1, res.out  # the other samples were checked and are fine


def test_an_unknown_label_is_a_warning_on_run_naming_the_sample(
        tmp_path: Path, cli, in_tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    table = rows() + [[1, "EP07", 10, 13, 16, "4", "happyness"]]
    root = write_release(tmp_path / "CASME2", table)
    res = cli("run", "-p", "casme2-5class-loso", "-m", "diff-logreg", "--data-root",
              f"casme2={root}", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["pooled"]["n"] == 10
    assert "casme2: 1 sample(s) left out of label space 5class: unknown label 'happyness' " \
           "(casme2/sub01/EP07)" in caplog.text


def test_a_smic_folder_named_joy_is_reported(tmp_path: Path, cli) -> None:
    for emotion, clip in (("negative", "s1_ne_01"), ("joy", "s1_jo_01")):
        folder = tmp_path / "SMIC" / "HS" / "s1" / "micro" / emotion / clip
        folder.mkdir(parents=True)
        for n in range(1, 4):
            cv2.imwrite(str(folder / f"image{n:06d}.bmp"), frame(n))
    res = cli("data", "check", "smic", "--root", tmp_path / "SMIC")
    one_line(res, "1 problem(s) found")
    assert "smic/s01/s01_jo_01: label 'joy' is unknown: label space(s) megc2019 leave it out" \
        in res.out


def test_truncated_frames_are_named_by_run_and_skip_bad_names_the_skipped(
        release: Path, cli, in_tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    _truncate_apex(release)
    args = ["run", "-p", "casme2-5class-loso", "-m", "diff-logreg", "--data-root",
            f"casme2={release}"]
    one_line(cli(*args), "casme2/sub01/EP01: frame", "img13.jpg is truncated")
    res = cli(*args, "--skip-bad")
    assert res.code == 0, res.err
    assert "skipped 1 unusable sample(s) (--skip-bad): casme2/sub01/EP01: frame" in caplog.text
    assert "img13.jpg is truncated" in caplog.text
    rec = Store(in_tmp / "merbench-results" / "results.sqlite").runs()[-1]
    assert list(rec.info["skipped"]) == ["casme2/sub01/EP01"]
    assert "truncated" in rec.info["skipped"]["casme2/sub01/EP01"]


def test_skip_bad_with_nothing_usable_gives_the_reason(tmp_path: Path, cli, in_tmp: Path) -> None:
    root = write_release(tmp_path / "CASME2", rows())
    _placeholders(root)
    res = cli("run", "-p", "casme2-5class-loso", "-m", "lbptop-svm", "--data-root",
              f"casme2={root}", "--skip-bad")
    one_line(res, "no sample could be preprocessed: all 10 failed, e.g. casme2/sub01/EP01",
             "no face found")


def test_data_check_faces_counts_onset_frames_with_a_face(tmp_path: Path, cli) -> None:
    from skimage import data

    table = [[1, "EP01", 1, 2, 3, "4", "happiness"], [1, "EP02", 1, 2, 3, "4", "others"]]
    root = write_release(tmp_path / "CASME2", table)
    face = cv2.resize(data.astronaut()[:, :, ::-1], (256, 256))
    for n in (1, 2, 3):
        cv2.imwrite(str(root / "CASME2_RAW_selected" / "sub01" / "EP01" / f"img{n}.jpg"), face)
    res = cli("data", "check", "casme2", "--root", root, "--faces")
    one_line(res, "1 problem(s) found")
    assert "faces: found on the onset frame of 1 of 2 samples" in res.out
    assert "problem: casme2/sub01/EP02: no face found" in res.out


# -- run options that would be ignored -------------------------------------------------------
RUN_CASES = [
    (["--data-param", "nosuch.x=1"], "--data-param nosuch: protocol synthetic-loso does not use"),
    (["--data-root", "nosuch=/tmp"], "--data-root nosuch: protocol synthetic-loso does not use"),
    (["--workers", "0"], "--workers must be auto or a positive integer, got 0"),
    (["--workers", "-1"], "--workers must be auto or a positive integer, got -1"),
    (["--seeds", "0"], "--seeds must be a positive integer, got 0"),
    (["-m", "chance", "--set", "model.strategy=anything"],
     "chance.strategy must be 'uniform' or 'prior', got 'anything'"),
    (["--set", "model.C=abc"], "The 'C' parameter of LogisticRegression must be a float"),
    (["--set", "model.C=-1"], "The 'C' parameter of LogisticRegression must be a float"),
    (["--set", "model.max_iter=abc"], "The 'max_iter' parameter"),
    (["--set", "apex-diff.size=-1"], "step 'apex-diff': size must be a positive int"),
    (["--set", "apex-diff.size=True"], "got True"),
    (["--set", "apex-diff.size=100000000"], "at most 4096"),
    (["--set", "apex-diff.size=abc"], "got 'abc'"),
    (["--set", "model.nosuch=1"], "has no parameter 'nosuch'"),
    (["-m", "lbptop-svm", "--set", "face-crop.margin=abc"], "margin 'abc' is out of range"),
    (["-m", "flow-ststnet", "--set", "flow-image.tau=abc"], "tau must be a positive number"),
    (["--data-param", "synthetic.subjects=abc"], "synthetic: subjects must be an integer"),
    (["--data-param", "synthetic.noise=abc"], "synthetic: noise must be a number"),
]


@pytest.mark.parametrize("args, needle", RUN_CASES, ids=[" ".join(c[0]) for c in RUN_CASES])
def test_bad_run_options_are_refused_before_any_work(cli, in_tmp: Path, args: list[str],
                                                     needle: str) -> None:
    base = ["run", "-p", "synthetic-loso", "-m", "diff-logreg", *TINY]
    if "-m" in args:
        k = args.index("-m")
        base[base.index("-m") + 1] = args[k + 1]
        args = args[:k] + args[k + 2:]
    one_line(cli(*base, *args), needle)
    store = in_tmp / "merbench-results" / "results.sqlite"
    assert not store.exists() or Store(store).runs(status=None) == []


# -- precomputed inputs ------------------------------------------------------------------------
def _index(folder: Path, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "x.png"), frame(1, 28))
    (folder / "index.csv").write_text("dataset,subject,clip,label,path\n" + "\n".join(lines) + "\n")
    return folder / "index.csv"


@pytest.mark.parametrize("lines, needle", [
    (["samm,6,006_1_2,0,x.png"], "the index has no rows for dataset 'synthetic' of protocol "
                                 "synthetic-loso (it holds samm)"),
    (["synthetic,s01,neg_01,0,../x.png"], "row 2: path '../x.png' leads outside the index's "
                                          "folder"),
    (["synthetic,s01,neg_01,0,/etc/passwd"], "row 2: path '/etc/passwd' leads outside"),
    (["synthetic,s01,neg_01,0,x.png", "synthetic,s01,neg_01,1,x.png"],
     "rows 2 and 3 both describe synthetic/s01/neg_01"),
])
def test_bad_input_indexes(tmp_path: Path, cli, in_tmp: Path, lines: list[str],
                           needle: str) -> None:
    index = _index(tmp_path / "inputs", lines)
    one_line(cli("run", "-p", "synthetic-loso", "-m", "ststnet", "--inputs", index), needle)


def test_inputs_folder_without_index_names_what_it_holds(tmp_path: Path, cli, in_tmp: Path) -> None:
    folder = tmp_path / "flow"
    folder.mkdir()
    (folder / "flow28.csv").write_text("dataset,subject,clip,label,path\n")
    one_line(cli("run", "-p", "synthetic-loso", "-m", "ststnet", "--inputs", folder),
             "holds no index.csv (CSV files there: flow28.csv)", "flow28.csv")


def test_inputs_and_data_roots_do_not_mix(tmp_path: Path, cli, in_tmp: Path) -> None:
    index = _index(tmp_path / "inputs", ["synthetic,s01,neg_01,0,x.png"])
    one_line(cli("run", "-p", "synthetic-loso", "-m", "ststnet", "--inputs", index,
                 "--data-param", "synthetic.subjects=4"), "are not used with --inputs")


# -- protocol files through the command ------------------------------------------------------
@pytest.mark.parametrize("body, needle", [
    ('kind = "loso"\nclasses = ["a", "a"]\n[[datasets]]\nname = "synthetic"\n',
     "class 'a' is listed twice"),
    ('kind = "holdout"\ntest_fraction = "abc"\nclasses = ["a", "b"]\n[[datasets]]\n'
     'name = "synthetic"\n', "test_fraction = 'abc' is not a number in (0, 1)"),
    ('kind = "loso"\nclasses = ["a", "b"]\ndatasets = ["synthetic"]\n',
     "datasets entry 'synthetic' is not a table"),
    ('kind = "loso"\nfolds = 5\nclasses = ["a", "b"]\n[[datasets]]\nname = "synthetic"\n',
     "unknown key 'folds'"),
])
def test_bad_protocol_files_through_the_command(tmp_path: Path, cli, in_tmp: Path, body: str,
                                               needle: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(body)
    one_line(cli("run", "-p", path, "-m", "diff-logreg"), needle, str(path))


def test_binary_protocol_file(tmp_path: Path, cli, in_tmp: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    one_line(cli("run", "-p", path, "-m", "diff-logreg"), f"protocol file {path} is a binary file")


# -- score -----------------------------------------------------------------------------------
def _megc_ids() -> list[tuple[str, str]]:
    proto = merbench.protocol("megc2019-composite")
    return list(proto.sample_list)


def test_score_never_takes_answers_from_the_file(tmp_path: Path, cli, in_tmp: Path) -> None:
    # gt = pred everywhere, so a file-truth score would be 1.0000
    lines = ["id,gt,pred"] + [f"{sid},surprise,surprise" for sid, _ in _megc_ids()]
    (in_tmp / "p.csv").write_text("\n".join(lines) + "\n")
    one_line(cli("score", "p.csv", "-p", "megc2019-composite"), "gt column disagrees",
             "--truth file")


@pytest.mark.parametrize("encoding, quoted", [("utf-8-sig", False), ("utf-16", False),
                                              ("utf-8", True), ("utf-16", True)])
def test_score_reads_spreadsheet_csvs(in_tmp: Path, cli, encoding: str, quoted: bool) -> None:
    q = '"' if quoted else ""
    lines = [f"{q}id{q},{q}pred{q},{q}note{q}"]
    lines += [f"{sid},{label},{'x' * 200_000 if k == 0 else ''}"
              for k, (sid, label) in enumerate(_megc_ids())]  # one field over 131,072 chars
    (in_tmp / "p.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))
    res = cli("score", "p.csv", "-p", "megc2019-composite", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["pooled"]["UF1"] == pytest.approx(1.0)


def test_score_names_an_unreadable_encoding(in_tmp: Path, cli) -> None:
    (in_tmp / "p.csv").write_bytes("id,pred\nsamm/006/006_1_2,négative\n".encode("latin-1"))
    one_line(cli("score", "p.csv", "-p", "megc2019-composite"), "p.csv is not UTF-8 text",
             "save it as UTF-8")


# -- the store -------------------------------------------------------------------------------
RUN = ["run", "-p", "synthetic-loso", "-m", "diff-logreg", *TINY]


def _stored(in_tmp: Path) -> Path:
    return in_tmp / "merbench-results" / "results.sqlite"


def test_a_finished_run_with_a_fold_missing_is_damaged_and_rerun_on_request(
        cli, in_tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = cli(*RUN, "--json")
    assert first.code == 0, first.err
    store = _stored(in_tmp)
    with sqlite3.connect(store) as con:
        con.execute("DELETE FROM predictions WHERE fold_index=1")
        con.execute("DELETE FROM folds WHERE fold_index=1")
    one_line(cli(*RUN), "is damaged: 1 of its 4 folds are missing (fold index 1)", "--rerun")
    board = cli("leaderboard", "--format", "json", "--no-published")
    assert board.code == 0 and json.loads(board.out) == []
    assert "is left out: it is damaged" in caplog.text
    again = cli(*RUN, "--rerun", "--json")
    assert again.code == 0, again.err
    assert json.loads(again.out)["pooled"]["n"] == 24
    assert json.loads(again.out) == {**json.loads(first.out), "run": json.loads(again.out)["run"]}


def test_a_fold_with_predictions_missing_is_damaged(cli, in_tmp: Path) -> None:
    assert cli(*RUN).code == 0
    with sqlite3.connect(_stored(in_tmp)) as con:
        sid = con.execute("SELECT sample_id FROM predictions LIMIT 1").fetchone()[0]
        con.execute("DELETE FROM predictions WHERE sample_id=?", (sid,))
    one_line(cli(*RUN), "has 5 of its 6 predictions")


@pytest.mark.parametrize("damage, needle", [
    (lambda p: p.write_bytes(b"SQLite format 3\x00" + os.urandom(4000)), "is damaged or not a "
                                                                         "merbench store"),
    (lambda p: p.write_bytes(b"not a database at all" * 100), "is damaged or not a merbench store"),
])
def test_a_malformed_store_is_named(cli, in_tmp: Path, damage: Callable[[Path], None],
                                    needle: str) -> None:
    store = in_tmp / "bad.sqlite"
    damage(store)
    before = store.read_bytes()
    one_line(cli("leaderboard", "--store", store), str(store), needle)
    one_line(cli(*RUN, "--store", store), str(store), needle)
    assert store.read_bytes() == before


def test_bad_json_in_a_store_row_is_named(cli, in_tmp: Path) -> None:
    assert cli(*RUN).code == 0
    with sqlite3.connect(_stored(in_tmp)) as con:
        con.execute("UPDATE runs SET info='{broken'")
    one_line(cli("leaderboard"), "column info is not valid JSON", "restore it from a backup")


def test_leaderboard_reads_a_store_without_writing_it(cli, in_tmp: Path) -> None:
    assert cli(*RUN).code == 0
    store = _stored(in_tmp)
    with sqlite3.connect(store) as con:  # fold the WAL into the file, as on archived media
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.execute("PRAGMA journal_mode=DELETE")
    before = {p.name: p.read_bytes() for p in store.parent.iterdir() if p.is_file()}
    res = cli("leaderboard", "--no-published")
    assert res.code == 0 and "diff-logreg" in res.out
    after = {p.name: p.read_bytes() for p in store.parent.iterdir() if p.is_file()}
    assert after == before
    readonly = Store(store, readonly=True)
    assert len(readonly.runs()) == 1
    with pytest.raises(DataError, match="cannot write results store .*: it is read-only"):
        readonly.set_status(readonly.runs()[0].id, "failed")


# -- disk full and read-only folders: the old outputs stay -----------------------------------
def test_train_on_a_full_disk_keeps_the_old_model(cli, in_tmp: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    train = ["train", "-m", "chance", "-d", "synthetic", "--param", "subjects=2",
             "--param", "size=16", "--param", "frames=12", "-o", "model.pt"]
    assert cli(*train).code == 0
    good = (in_tmp / "model.pt").read_bytes()

    def full(obj: Any, f: Any, *a: Any, **k: Any) -> None:  # torch hides the OSError
        Path(f).write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr("merbench.atomic.free_bytes", lambda folder: 0)
    one_line(cli(*train), "cannot write model.pt: the disk is full")
    assert (in_tmp / "model.pt").read_bytes() == good
    assert sorted(p.name for p in in_tmp.iterdir() if p.name.startswith(".model.pt")) == []


@pytest.mark.parametrize("code, cause, fix", [
    (errno.ENOSPC, "the disk is full", "free some space"),
    (errno.EROFS, "the file system is read-only", "choose a writable folder"),
    (errno.EACCES, "permission denied", "choose a writable folder"),
])
def test_leaderboard_output_that_cannot_be_written_keeps_the_old_table(
        cli, in_tmp: Path, monkeypatch: pytest.MonkeyPatch, code: int, cause: str,
        fix: str) -> None:
    assert cli("leaderboard", "-o", "board.md").code == 0
    good = (in_tmp / "board.md").read_text()

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(Path, "write_bytes", fail)
    one_line(cli("leaderboard", "-o", "board.md"), f"cannot write board.md: {cause}", fix)
    assert (in_tmp / "board.md").read_text() == good
    assert [p.name for p in in_tmp.iterdir() if p.suffix == ".tmp"] == []


@pytest.mark.parametrize("args, needle", [
    (["leaderboard", "-o", "afile/board.md"], "cannot write afile/board.md"),
    (RUN + ["--store", "afile/results.sqlite"], "cannot create the store folder afile"),
    (["demo", "-o", "afile/tables", "--store", "afile/demo.sqlite"], "afile"),
])
def test_a_file_in_the_way_of_an_output_folder(cli, in_tmp: Path, args: list[str],
                                               needle: str) -> None:
    (in_tmp / "afile").write_text("keep me")
    one_line(cli(*args), needle)
    assert (in_tmp / "afile").read_text() == "keep me"


def test_a_full_cache_degrades_to_no_caching(cli, in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    import merbench.cache

    monkeypatch.setattr(merbench.cache, "_UNWRITABLE", set())
    monkeypatch.setattr(merbench.cache, "write_bytes", lambda path, data: (_ for _ in ()).throw(
        merbench.atomic.os_error(path, OSError(errno.ENOSPC, "full"))))
    res = cli(*RUN, "--cache-dir", in_tmp / "cache", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["pooled"]["n"] == 24
    assert caplog.text.count("continuing without the preprocessing cache") == 1
    assert "the disk is full" in caplog.text


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_store_folder_is_one_line(cli, in_tmp: Path) -> None:
    folder = in_tmp / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        one_line(cli(*RUN, "--store", folder / "results.sqlite"), str(folder))
    finally:
        folder.chmod(0o700)


# -- leftovers of killed runs ------------------------------------------------------------------
DEAD_PID = 99_999_999  # above any pid_max: no such process


def test_cache_temporaries_of_a_killed_writer_are_removed(cli, in_tmp: Path) -> None:
    cache = in_tmp / "cache"
    assert cli(*RUN, "--cache-dir", cache).code == 0
    folder = next(p for p in (cache / "arrays").iterdir() if p.is_dir())
    stale = folder / f".abc.npy.{DEAD_PID}-x1y2.tmp"  # its writer was killed
    live = folder / f".abd.npy.{os.getpid()}-x1y2.tmp"  # a writer at work
    for path in (stale, live):
        path.write_bytes(b"half")
    os.utime(stale, (1_000, 1_000))
    assert cli(*RUN, "--cache-dir", cache, "--rerun").code == 0
    assert not stale.exists() and live.exists()


def test_shared_arrays_of_a_killed_run_are_removed(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from merbench.executors import ProcessExecutor

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale = tmp_path / f"merbench-{DEAD_PID}-abcd"
    stale.mkdir()
    (stale / "X1.npy").write_bytes(b"x" * 100)
    os.utime(stale, (1_000, 1_000))
    other = tmp_path / "merbench-cache-notours"
    other.mkdir()
    ex = ProcessExecutor(2)
    handle = ex.share(np.arange(6.0))
    assert not stale.exists() and other.exists()
    assert Path(handle.path).parent.name.startswith(f"merbench-{os.getpid()}-")
    np.testing.assert_array_equal(np.load(handle.path), np.arange(6.0))
    ex.close()
    assert not Path(handle.path).parent.exists()


# -- messages that used to mislead ------------------------------------------------------------
def test_a_foreign_checkpoint_is_one_line_without_torch_advice(tmp_path: Path, cli) -> None:
    import torch

    import argparse

    path = tmp_path / "foreign.pt"
    torch.save({"format": argparse.Namespace(x=1)}, path)  # needs unpickling to load
    res = cli("predict", path, tmp_path)
    one_line(res, "is not a merbench checkpoint: it holds Python objects that only unpickling "
                  "could load, which merbench refuses")
    assert "weights_only" not in res.err


def test_a_truncated_video_is_not_blamed_on_the_annotation(tmp_path: Path, cli,
                                                           in_tmp: Path) -> None:
    assert cli("train", "-m", "diff-logreg", "-d", "synthetic", "--param", "subjects=2",
               "--param", "size=32", "--param", "frames=12", "-o", "model.pt").code == 0
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    for k in range(80):
        writer.write(np.full((48, 64, 3), 3 * k, np.uint8))
    writer.release()
    data = video.read_bytes()
    video.write_bytes(data[:len(data) // 2])  # the apex (frame 39) is in the lost half
    res = cli("predict", "model.pt", video)
    one_line(res, "is truncated or damaged", "restore the file")
    assert "offset annotation" not in res.err


def test_leaderboard_rows_differing_only_in_inputs_are_told_apart(tmp_path: Path, cli,
                                                                  in_tmp: Path) -> None:
    from merbench.leaderboard import reproduced

    store = merbench.store.Store(in_tmp / "s.sqlite")
    for name in ("flow-a", "flow-b"):
        rid = store.create_run(key=name, protocol="synthetic-loso", method="ststnet", params={},
                               seed=0, versions={}, git_commit=None, device=None, host=None,
                               info={"classes": ["a", "b"], "n_folds": 1, "inputs":
                                     f"/data/{name}/index.csv"})
        store.add_fold(rid, 0, "s01", 0, "t", [("synthetic/s01/x", "a", "a", {"a": 1.0})],
                       {"n_test": 1})
        store.set_status(rid, "finished")
    rows = reproduced(store)
    assert len({(r["method"], tuple(r["flags"])) for r in rows}) == 2
    assert sorted(f for r in rows for f in r["flags"]) == [
        "precomputed inputs (flow-a/index.csv)", "precomputed inputs (flow-b/index.csv)"]


def test_a_truncated_precomputed_input_is_named(tmp_path: Path, cli, in_tmp: Path) -> None:
    index = _index(tmp_path / "inputs", ["synthetic,s01,neg_01,0,x.png"])
    png = index.parent / "x.png"
    png.write_bytes(png.read_bytes()[:40])
    res = cli("data", "check", "folder", "--root", index)
    one_line(res, "1 problem(s) found")
    assert "synthetic/s01/neg_01: image" in res.out and "x.png is truncated" in res.out


def test_a_symlink_leading_outside_the_release_is_said(release: Path, tmp_path: Path,
                                                       cli) -> None:
    clip = release / "CASME2_RAW_selected" / "sub02" / "EP01"
    elsewhere = tmp_path / "elsewhere" / "EP01"
    elsewhere.parent.mkdir()
    shutil.move(str(clip), str(elsewhere))
    clip.symlink_to(elsewhere, target_is_directory=True)
    res = cli("data", "check", "casme2", "--root", release)
    assert res.code == 0, res.out + res.err
    assert "note: 1 clip folder(s) lead outside the release root" in res.out
    assert str(elsewhere) in res.out


def test_bad_clips_through_predict_and_run_are_one_line(tmp_path: Path, cli,
                                                        in_tmp: Path) -> None:
    assert cli("train", "-m", "diff-logreg", "-d", "synthetic", "--param", "subjects=2",
               "--param", "size=48", "--param", "frames=12", "-o", "model.pt").code == 0
    folder = tmp_path / "clip"
    folder.mkdir()
    for n in range(1, 9):
        cv2.imwrite(str(folder / f"img{n}.jpg"), frame(n))
    ok = cli("predict", "model.pt", folder, "--json")
    assert ok.code == 0, ok.err
    one_line(cli("predict", "model.pt", folder, "--onset", "6", "--offset", "3"),
             "onset 6 is after offset 3")
    one_line(cli("predict", "model.pt", folder, "--apex", "20"), "apex 20 is outside onset..offset")
    one_line(cli("predict", "model.pt", folder, "--offset", "12"), "4 frame(s) missing",
             "9, 10, 11, 12")
    blob = (folder / "img4.jpg").read_bytes()
    (folder / "img4.jpg").write_bytes(blob[:len(blob) // 2])  # the apex (middle of 1..8)
    one_line(cli("predict", "model.pt", folder), "img4.jpg is truncated")
    table = rows()
    table[3][4] = 2  # onset 10 after offset 2
    root = write_release(tmp_path / "CASME2", table)
    one_line(cli("run", "-p", "casme2-5class-loso", "-m", "diff-logreg", "--data-root",
                 f"casme2={root}"), "casme2/sub01/EP04: onset 10 is after offset 2")
