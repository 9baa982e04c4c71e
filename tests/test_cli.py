"""The `merbench` command: listings, runs, tables, and one-line errors (tracebacks only on --debug)."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import merbench

TINY_ARGS = ["--data-param", "synthetic.subjects=4", "--data-param", "synthetic.clips_per_class=2",
             "--data-param", "synthetic.size=32", "--data-param", "synthetic.frames=20"]


def _one_line_error(res, *needles: str) -> None:
    assert res.code == 2, (res.code, res.out, res.err)
    assert res.err.startswith("Error: ") and res.err.count("\n") == 1, res.err
    assert "Traceback" not in res.err + res.out
    for needle in needles:
        assert needle in res.err, res.err


def test_list_everything(cli) -> None:
    res = cli("list")
    assert res.code == 0
    lines = res.out.splitlines()
    assert lines[0].split() == ["kind", "name", "provided", "by", "description"]
    row = next(ln for ln in lines if ln.split()[:2] == ["method", "diff-logreg"])
    assert f"merbench {merbench.__version__}" in row
    assert "Apex - onset grey difference image + logistic regression" in row
    assert any(ln.split()[:2] == ["dataset", "synthetic"] for ln in lines)
    assert any(ln.split()[:2] == ["model", "logreg"] for ln in lines)
    assert any(ln.split()[:2] == ["protocol", "megc2019-composite"] for ln in lines)


def test_list_one_kind(cli) -> None:
    res = cli("list", "method")
    assert res.code == 0
    kinds = {ln.split()[0] for ln in res.out.splitlines()[2:] if ln.strip()}
    assert kinds == {"method"}
    names = [ln.split()[1] for ln in res.out.splitlines()[2:] if ln.strip()]
    assert {"diff-logreg", "apex-logreg", "chance"} <= set(names)
    chance = next(ln for ln in res.out.splitlines() if ln.split()[1:2] == ["chance"])
    assert "merbench" in chance and "Uniform random predictions: the chance floor" in chance
    protocols = cli("list", "protocol").out
    assert "synthetic-loso" in protocols and "merbench (protocols/)" in protocols
    assert "The built-in synthetic micro-expressions" in protocols
    bad = cli("list", "widget")
    assert bad.code == 2 and "Invalid value" in bad.err and "Traceback" not in bad.err


def test_run_then_leaderboard_in_every_format(cli, in_tmp: Path) -> None:
    res = cli("run", "-p", "synthetic-loso", "-m", "diff-logreg", *TINY_ARGS, "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert (out["protocol"], out["method"], out["seed"]) == ("synthetic-loso", "diff-logreg", 0)
    assert out["pooled"]["n"] == 24 and len(out["per_fold"]) == 4
    uf1 = out["pooled"]["UF1"]
    # CLI defaults: the store lands in ./merbench-results, the cache in MERBENCH_CACHE
    assert (in_tmp / "merbench-results" / "results.sqlite").is_file()

    text = cli("run", "-p", "synthetic-loso", "-m", "diff-logreg", *TINY_ARGS)
    assert text.code == 0
    assert f"run {out['run']})" in text.out  # the finished run is returned, not rerun
    headline = next(ln for ln in text.out.splitlines() if ln.startswith("pooled (headline)"))
    assert headline.split()[2:4] == ["24", f"{uf1:.4f}"]

    md = cli("leaderboard", "--format", "md")
    assert md.code == 0
    assert "### synthetic-loso" in md.out and "| diff-logreg " in md.out
    assert f"| {uf1:.4f} " in md.out and "| reproduced " in md.out
    assert "### megc2019-composite" in md.out and "| STSTNet " in md.out and "| reported " in md.out
    assert "Liong, Gan, See, Khor, Huang" in md.out

    rows = list(csv.reader(io.StringIO(cli("leaderboard", "--format", "csv").out)))
    mine = next(r for r in rows if r[:2] == ["synthetic-loso", "diff-logreg"])
    assert mine[2:5] == ["reproduced", "1", f"{uf1:.4f}"]
    assert ["megc2019-composite", "STSTNet", "reported", "", "0.7353", "0.7605"] in \
        [r[:6] for r in rows]

    latex = cli("leaderboard", "--format", "latex", "-p", "synthetic-loso").out
    assert "\\toprule" in latex and "diff-logreg" in latex and "STSTNet" not in latex

    board = json.loads(cli("leaderboard", "--format", "json").out)
    reproduced = [r for r in board if r["source"] == "reproduced"]
    assert [(r["method"], r["UF1"]["mean"]) for r in reproduced] == [("diff-logreg",
                                                                      pytest.approx(uf1))]
    reported = [r for r in board if r["source"] == "reported"]
    assert reported and all(r["citation"] for r in reported)

    written = cli("leaderboard", "--format", "md", "-o", "board.md", "--no-published")
    assert written.out == "wrote board.md\n"
    assert "STSTNet" not in (in_tmp / "board.md").read_text()


def test_leaderboard_without_a_store_shows_published_rows(cli, in_tmp: Path) -> None:
    res = cli("leaderboard", "-p", "megc2019-composite", "--format", "csv")
    assert res.code == 0 and "reproduced" not in res.out
    assert "HTNet" in res.out and "0.8603" in res.out
    assert not (in_tmp / "merbench-results").exists()


def test_data_summary_synthetic(cli) -> None:
    res = cli("data", "summary", "synthetic", "--json")
    assert res.code == 0
    assert json.loads(res.out) == {"samples": 90, "subjects": 10,
                                   "classes": {"negative": 30, "positive": 30, "surprise": 30}}
    small = json.loads(cli("data", "summary", "synthetic", "--param", "subjects=4", "--param",
                           "classes=5", "--labels", "megc2019", "--json").out)
    assert small == {"samples": 60, "subjects": 4,
                     "classes": {"negative": 36, "positive": 12, "surprise": 12}}
    text = cli("data", "summary", "synthetic", "--param", "subjects=2")
    assert text.out.splitlines()[0] == "18 samples, 2 subjects"


def test_data_check_synthetic(cli) -> None:
    res = cli("data", "check", "synthetic", "--param", "subjects=2", "--param",
              "clips_per_class=1", "--param", "size=32", "--param", "frames=20")
    assert res.code == 0, res.err
    assert "synthetic: 6 samples, 2 subjects" in res.out and "ok: no problems found" in res.out


@pytest.mark.parametrize("args, needles", [
    (["run", "-p", "synthetic-loso", "-m", "diff-logre"],
     ["unknown method 'diff-logre'", "did you mean diff-logreg"]),
    (["run", "-p", "synthetic-los", "-m", "diff-logreg"],
     ["unknown protocol 'synthetic-los'", "did you mean synthetic-loso"]),
    (["run", "-p", "megc2019-composite", "-m", "diff-logreg"],
     ["needs dataset", "no data root", "--data-root"]),
    (["run", "-p", "synthetic-loso", "-m", "diff-logreg", "--set", "model.Cee=1"],
     ["model 'logreg' has no parameter 'Cee'"]),
    (["run", "-p", "synthetic-loso", "-m", "diff-logreg", "--set", "C"],
     ["--set 'C' is not NAME=VALUE"]),
    (["run", "-p", "synthetic-loso", "-m", "diff-logreg", "--data-param", "subjects=3"],
     ["--data-param subjects needs NAME.KEY"]),
    (["data", "summary", "synthetc"], ["unknown dataset 'synthetc'", "did you mean synthetic"]),
    (["data", "summary"], ["name a dataset or pass --protocol"]),
    (["leaderboard", "-p", "nope-protocol"], ["unknown protocol 'nope-protocol'"]),
])
def test_user_errors_are_one_line(cli, in_tmp: Path, args: list[str], needles: list[str]) -> None:
    _one_line_error(cli(*args), *needles)


def test_scoring_errors_are_one_line(cli, in_tmp: Path) -> None:
    (in_tmp / "bad.txt").write_text("casme2 sub01\nEP02_01f 1 1 1\n")
    _one_line_error(cli("score", "bad.txt", "-p", "megc2019-composite"),
                    "bad.txt line 2: expected '<dataset> <subject>' or '<clip> <gt> <pred>'")
    (in_tmp / "labels.csv").write_text("id,pred\ncasme2/sub01/EP02_01f,happiness\n")
    _one_line_error(cli("score", "labels.csv", "-p", "megc2019-composite", "--partial"),
                    "labels.csv line 2: label 'happiness' is not one of "
                    "['negative', 'positive', 'surprise']")
    _one_line_error(cli("score", "missing.csv", "-p", "megc2019-composite"), "does not exist")


def test_score_a_partial_csv_in_text(cli, in_tmp: Path) -> None:
    (in_tmp / "p.csv").write_text("dataset,subject,clip,pred\ncasme2,1,EP02_01f,positive\n"
                                  "samm,6,6_1_2,negative\nsamm,6,006_1_3,surprise\n")
    res = cli("score", "p.csv", "-p", "megc2019-composite", "--partial")
    assert res.code == 0, res.err
    assert res.out.splitlines()[0] == "p.csv under megc2019-composite: 3 of 442 samples"
    assert "partial: 439 samples not predicted" in res.out
    data = json.loads(cli("score", "p.csv", "-p", "megc2019-composite", "--partial", "--json").out)
    # truth: EP02_01f positive, 006_1_2 negative, 006_1_3 negative -> 2 of 3 correct
    assert data["pooled"]["accuracy"] == pytest.approx(2 / 3)
    assert data["pooled"]["confusion"] == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
    assert data["pooled"]["undefined"]["recall"] == ["surprise"]


def test_score_without_gt_and_sample_list_says_to_pass_data_root(cli, in_tmp: Path) -> None:
    # a dataset read from files: its labels need the release (--data-root)
    (in_tmp / "c.toml").write_text('name = "c"\nkind = "loso"\nclasses = ["negative", '
                                   '"positive", "surprise"]\n[[datasets]]\nname = "casme2"\n'
                                   'labels = "megc2019"\n')
    (in_tmp / "c.csv").write_text("id,pred\ncasme2/sub01/EP02_01f,negative\n")
    _one_line_error(cli("score", "c.csv", "-p", "c.toml"),
                    "no official sample list", "--data-root", "--truth file")
    _one_line_error(cli("score", "c.csv", "-p", "c.toml", "--truth", "file"),
                    "no official sample list", "no gt for casme2/sub01/EP02_01f", "--data-root")
    # a dataset without files (synthetic) gives its labels itself: nothing to pass
    ids = [s.id for s in merbench.dataset("synthetic").samples]
    (in_tmp / "syn.csv").write_text("id,pred\n" + "".join(f"{i},negative\n" for i in ids))
    res = cli("score", "syn.csv", "-p", "synthetic-loso", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["pooled"]["UF1"] == pytest.approx(1 / 6)


def test_score_reads_ground_truth_from_the_data_root(cli, in_tmp: Path) -> None:
    ids = [s.id for s in merbench.dataset("synthetic").samples]
    (in_tmp / "syn.csv").write_text("id,pred\n" + "".join(f"{i},negative\n" for i in ids))
    res = cli("score", "syn.csv", "-p", "synthetic-loso", "--data-root", f"synthetic={in_tmp}",
              "--json")
    assert res.code == 0, res.err
    pooled = json.loads(res.out)["pooled"]
    # 90 samples, 30 per class, all predicted negative: F1 = 60/120, 0, 0 -> UF1 1/6; UAR 1/3
    assert pooled["n"] == 90 and pooled["confusion"] == [[30, 0, 0], [30, 0, 0], [30, 0, 0]]
    assert pooled["UF1"] == pytest.approx(1 / 6) and pooled["UAR"] == pytest.approx(1 / 3)


def test_debug_shows_the_traceback(in_tmp: Path) -> None:
    cmd = [sys.executable, "-c", "from merbench.cli import main; main()"]
    plain = subprocess.run(cmd + ["run", "-p", "synthetic-los", "-m", "chance"],
                           capture_output=True, text=True, timeout=120, cwd=in_tmp, check=False)
    assert plain.returncode == 2
    (line,) = plain.stderr.strip().splitlines()
    assert line.startswith("Error: unknown protocol 'synthetic-los' (did you mean synthetic-loso")
    debug = subprocess.run(cmd + ["--debug", "run", "-p", "synthetic-los", "-m", "chance"],
                           capture_output=True, text=True, timeout=120, cwd=in_tmp, check=False)
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr
    assert "merbench.errors.UnknownNameError: unknown protocol 'synthetic-los'" in debug.stderr
