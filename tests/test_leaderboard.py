"""Leaderboard tables: reproduced rows from the store (hand-made runs), reported rows with citations."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest

from merbench.errors import ConfigError, DataError, UnknownNameError
from merbench.leaderboard import leaderboard_rows, published, render, write_tables
from merbench.store import Store
import merbench

CLASSES = ["negative", "positive", "surprise"]
N, P, S = CLASSES
# Seed 0: fold s1 true N N P -> N N N; fold s2 true P S S -> P S P.
# Pooled confusion N: 2 0 0 / P: 1 1 0 / S: 0 1 1 -> F1 4/5, 1/2, 2/3 -> UF1 59/90; UAR 2/3.
SEED0 = {"synthetic/s1": [("a", N, N), ("b", N, N), ("c", P, N)],
         "synthetic/s2": [("a", P, P), ("b", S, S), ("c", S, P)]}
# Seed 1: all correct -> UF1 1, UAR 1.
SEED1 = {f: [(c, t, t) for c, t, _ in rows] for f, rows in SEED0.items()}


def _add_run(store: Store, method: str, seed: int, folds: dict, params: dict | None = None,
             protocol: str = "synthetic-loso", status: str = "finished", **info) -> str:
    run_id = store.create_run(key=f"{method}-{seed}-{params}", protocol=protocol, method=method,
                              params=params or {"model.C": 1}, seed=seed, versions={},
                              git_commit=None, device="cpu", host="h",
                              info={"classes": CLASSES, "protocol_name": protocol,
                                    "trained": True, **info})
    for k, (fold, rows) in enumerate(folds.items()):
        store.add_fold(run_id, k, fold, k, "t", [(f"{fold}/{c}", t, p, {p: 1.0})
                                                 for c, t, p in rows])
    store.set_status(run_id, status)
    return run_id


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    st = Store(tmp_path / "results.sqlite")
    _add_run(st, "toy", 0, SEED0)
    _add_run(st, "toy", 1, SEED1)
    _add_run(st, "solo", 0, SEED1)
    _add_run(st, "crashed", 0, SEED1, status="failed")
    return st


def test_seeds_of_one_method_become_one_row_with_mean_and_std(store: Store) -> None:
    rows = leaderboard_rows(store, "synthetic-loso", include_published=False)
    assert [r["method"] for r in rows] == ["solo", "toy"]  # best UF1 first; failed runs left out
    toy = rows[1]
    assert toy["source"] == "reproduced" and toy["seeds"] == [0, 1] and len(toy["runs"]) == 2
    assert toy["UF1"]["mean"] == pytest.approx((59 / 90 + 1) / 2)
    assert toy["UF1"]["std"] == pytest.approx((1 - 59 / 90) / math.sqrt(2))  # sample std, ddof 1
    assert toy["UAR"]["mean"] == pytest.approx((2 / 3 + 1) / 2)
    assert rows[0]["UF1"] == {"mean": 1.0, "std": 0.0}


def test_a_later_run_of_the_same_seed_replaces_the_earlier(store: Store) -> None:
    _add_run(store, "solo", 0, SEED0)  # same method, params and seed, run again
    (solo,) = [r for r in leaderboard_rows(store, "synthetic-loso", False) if r["method"] == "solo"]
    assert solo["seeds"] == [0] and solo["UF1"]["mean"] == pytest.approx(59 / 90)


def test_parameter_variants_are_kept_apart(store: Store) -> None:
    _add_run(store, "solo", 0, SEED0, params={"model.C": 2})
    methods = sorted(r["method"] for r in leaderboard_rows(store, "synthetic-loso", False))
    assert methods[0].startswith("solo [") and methods[1].startswith("solo [")
    assert methods[0] != methods[1] and methods[2] == "toy"


def test_published_rows_carry_citations() -> None:
    rows = published("megc2019-composite")
    by_method = {r["method"]: r for r in rows}
    ststnet = by_method["STSTNet"]
    assert (ststnet["UF1"], ststnet["UAR"], ststnet["source"]) == (0.7353, 0.7605, "reported")
    assert "Liong" in ststnet["citation"] and "macro precision" in ststnet["note"]
    assert ststnet["per_dataset"]["casme2"] == {"UF1": 0.8382, "UAR": 0.8686}
    assert all(r["citation"] and r["source"] == "reported" for r in published())
    assert published("synthetic-loso") == []


def test_a_reported_row_without_citation_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "published.toml"
    path.write_text('[[result]]\nprotocol = "p"\nmethod = "m"\nuf1 = 0.5\n')
    with pytest.raises(DataError, match="reported row 'm' has no citation"):
        published(path=path)


def test_render_md_keeps_reproduced_and_reported_apart(store: Store) -> None:
    text = render(leaderboard_rows(store), "md")
    assert "### synthetic-loso" in text and "### megc2019-composite" in text
    assert "| toy " in text and f"{(59 / 90 + 1) / 2:.4f} ± {(1 - 59 / 90) / math.sqrt(2):.4f}" in text
    assert "| solo " in text and "| 1.0000 " in text
    assert "| STSTNet " in text and "| reported " in text and "| 0.7353 " in text
    assert "- STSTNet: Liong, Gan, See, Khor, Huang" in text
    assert text.index("### megc2019-composite") < text.index("### synthetic-loso")


def test_render_csv_latex_html_json(store: Store) -> None:
    rows = leaderboard_rows(store, "synthetic-loso")
    table = list(csv.reader(io.StringIO(render(rows, "csv"))))
    assert table[0][:14] == ["protocol", "method", "source", "seeds", "UF1", "UAR", "accuracy",
                             "UF1 std", "UAR std", "accuracy std", "UF1 CI low", "UF1 CI high",
                             "UAR CI low", "UAR CI high"]
    assert table[0][14:] == ["flags", "vs best p", "citation", "note", "runs"]
    assert table[1][:14] == ["synthetic-loso", "solo", "reproduced", "1", "1.0000", "1.0000",
                             "1.0000", "0.0000", "0.0000", "0.0000", "1.0000", "1.0000", "1.0000",
                             "1.0000"]
    assert table[2][:5] == ["synthetic-loso", "toy", "reproduced", "2", f"{(59 / 90 + 1) / 2:.4f}"]
    assert table[2][10:12] == ["0.7000", f"{5 / 6:.4f}"]
    latex = render(rows, "latex")
    assert "\\toprule" in latex and "toy" in latex and "% merbench leaderboard: synthetic-loso" in latex
    html_page = render(rows, "html")
    assert html_page.startswith("<!DOCTYPE html>") and "<h2>synthetic-loso</h2>" in html_page
    std = (1 - 59 / 90) / math.sqrt(2)
    assert f'<td class="num" data-v="0.827778">0.8278 ± {std:.4f}</td>' in html_page
    parsed = json.loads(render(rows, "json"))
    assert [r["method"] for r in parsed] == ["solo", "toy"]
    assert parsed[1]["CI"]["UF1"] == [0.7, pytest.approx(5 / 6)]
    with pytest.raises(ConfigError, match="unknown format 'pdf'"):
        render(rows, "pdf")
    with pytest.raises(ConfigError, match="unknown interval style"):
        render(rows, "md", interval="sd")


def test_write_tables_and_unknown_protocol(store: Store, tmp_path: Path) -> None:
    paths = write_tables(leaderboard_rows(store, "synthetic-loso"), tmp_path / "out", "board")
    assert sorted(p.name for p in paths) == ["board.csv", "board.html", "board.json", "board.md",
                                             "board.tex"]
    assert "toy" in (tmp_path / "out" / "board.md").read_text()
    with pytest.raises(UnknownNameError, match="did you mean synthetic-loso"):
        leaderboard_rows(store, "synthetic-los")


def test_per_dataset_columns_for_composite_runs(tmp_path: Path) -> None:
    st = Store(tmp_path / "r.sqlite")
    folds = {"smic/s01": [("a", N, N), ("b", P, N)], "casme2/sub01": [("a", S, S), ("b", N, N)]}
    _add_run(st, "mix", 0, folds, protocol="megc2019-composite")
    (row,) = leaderboard_rows(st, "megc2019-composite", include_published=False)
    assert row["per_dataset"]["casme2"]["UF1"]["mean"] == 1.0
    # smic: N 1 0 0 / P 1 0 0 -> F1 2/3, 0 (surprise undefined) -> UF1 1/3
    assert row["per_dataset"]["smic"]["UF1"]["mean"] == pytest.approx(1 / 3)
    header = render([row], "csv").splitlines()[0]
    assert "UAR CI high,casme2 UF1,casme2 UAR,smic UF1,smic UAR,flags," in header


# -- intervals, comparison with the best, data-quality flags, ordering, escaping ---------------
def test_rows_carry_subject_bootstrap_intervals_and_the_comparison_with_the_best(
        store: Store) -> None:
    solo, toy = leaderboard_rows(store, "synthetic-loso", include_published=False)
    assert solo["CI"]["UF1"] == [1.0, 1.0] and solo["CI"]["subjects"] == 2
    # toy, two subjects: a resample is s1+s1, s1+s2 or s2+s2 (1/4, 1/2, 1/4). Seed 0 gives
    # UF1 2/5, 59/90 and 2/3; seed 1 always 1; the row is the seed mean -> [0.7, 5/6]
    assert toy["CI"]["UF1"] == [pytest.approx(0.7), pytest.approx(5 / 6)]
    assert (toy["CI"]["n_boot"], toy["CI"]["level"], toy["CI"]["unit"]) == (2000, 0.95, "subject")
    assert solo["vs_best"] == {"best": True}
    # solo is right everywhere, so toy is below it in every resample: p = 2/(B+1)
    assert toy["vs_best"]["against"] == "solo" and toy["vs_best"]["same"] is False
    assert toy["vs_best"]["p"] == pytest.approx(2 / 2001)
    assert toy["vs_best"]["delta_UF1"] == pytest.approx((59 / 90 + 1) / 2 - 1)
    (plain,) = [r for r in leaderboard_rows(store, "synthetic-loso", False, n_boot=0)
                if r["method"] == "toy"]
    assert plain["CI"] is None and plain["vs_best"] is None
    assert "best (p=" not in render([toy, solo], "md")
    assert "best reproduced" in render([solo], "md")
    toy["vs_best"] = {**toy["vs_best"], "same": True, "p": 0.5}
    assert "≈ best (p=0.50)" in render([toy, solo], "md")


def _flagged_store(tmp_path: Path) -> Store:
    st = Store(tmp_path / "q.sqlite")
    _add_run(st, "degraded", 0, SEED1, params={"model.C": 2}, skipped={"synthetic/s1/z": "bad"},
             fallbacks={"face-crop: centre crop fallback": 442}, inputs="flow/index.csv",
             checkpoints="weights/", trained=False)
    _add_run(st, "clean", 0, SEED0, params={"model.C": 3})
    _add_run(st, "smoke", 0, SEED1, params={"model.C": 4}, partial=True)
    _add_run(st, "cut", 0, {"synthetic/s1": SEED1["synthetic/s1"]}, params={"model.C": 5},
             n_folds=2)
    return st


def test_data_quality_is_flagged_on_every_row_in_every_format(tmp_path: Path) -> None:
    st = _flagged_store(tmp_path)
    rows = leaderboard_rows(st, "synthetic-loso", include_published=False)
    assert [r["method"] for r in rows] == ["degraded", "clean"]  # partial runs left out
    expected = ["published weights (weights)", "precomputed inputs (flow/index.csv)",
                "1 samples skipped",
                "fallback: face-crop: centre crop fallback (442 samples)"]
    assert rows[0]["flags"] == expected and rows[1]["flags"] == []
    assert rows[0]["quality"]["fallbacks"] == {"face-crop: centre crop fallback": 442}
    for fmt in ("md", "csv", "latex", "html"):
        text = render(rows, fmt)
        assert "published weights" in text and "centre crop fallback (442 samples)" in text, fmt
    assert json.loads(render(rows, "json"))[0]["flags"] == expected

    every = leaderboard_rows(st, "synthetic-loso", include_published=False, include_partial=True)
    flagged = {r["method"]: r["flags"] for r in every}
    assert flagged["smoke"] == ["partial: 2 of ? folds"]
    assert "partial: 2 of ? folds" in render(every, "md")
    assert "cut" not in flagged  # recorded complete with a fold missing: damaged, left out


def test_reported_and_reproduced_rows_are_ranked_together_but_marked(tmp_path: Path) -> None:
    st = Store(tmp_path / "m.sqlite")
    # pooled N 2 0 0 / P 1 1 0 / S 0 1 1 -> UF1 59/90 = 0.656: between STSTNet and LBP-TOP
    folds = {"casme2/sub01": [("a", N, N), ("b", N, N), ("c", P, N)],
             "samm/006": [("a", P, P), ("b", S, S), ("c", S, P)]}
    _add_run(st, "mine", 0, folds, protocol="megc2019-composite")
    rows = leaderboard_rows(st, "megc2019-composite")
    assert [(r["method"], r["source"]) for r in rows] == [
        ("HTNet", "reported"), ("STSTNet", "reported"), ("mine", "reproduced"),
        ("LBP-TOP + SVM (MEGC2019 baseline)", "reported")]
    table = render(rows, "md")
    assert table.index("| HTNet ") < table.index("| mine ") < table.index("| LBP-TOP")


HOSTILE = '<img src=x onerror=alert(1)>|=cmd()|\\input{/etc/passwd}$_&#%~^{}'


def test_hostile_names_are_escaped_in_every_format(tmp_path: Path) -> None:
    st = Store(tmp_path / "h.sqlite")
    _add_run(st, HOSTILE, 0, SEED0, protocol=HOSTILE, params={"model.C": HOSTILE})
    # a registered method: the changed parameter value lands in the row label
    _add_run(st, "chance", 0, SEED1, protocol=HOSTILE, params={"apex-frame.size": HOSTILE})
    (published_path := tmp_path / "p.toml").write_text(
        f'[[result]]\nprotocol = {json.dumps(HOSTILE)}\nmethod = "=HYPERLINK(\\"x\\")"\n'
        f'uf1 = 0.5\ncitation = {json.dumps(HOSTILE)}\nnote = "<script>alert(2)</script>"\n')
    rows = leaderboard_rows(st) + published(path=published_path)
    assert {r["protocol"] for r in rows} >= {HOSTILE}

    md = render(rows, "md")
    assert "<img" not in md and "<script" not in md and "&lt;img src=x onerror=alert(1)&gt;" in md
    assert "### &lt;img" in md and "\\|=cmd()\\|" in md  # no cell break-out either
    assert "| chance (apex-frame.size=&lt;img src=x onerror=alert(1)&gt;\\|=cmd()" in md

    html_text = render(rows, "html")
    assert "<img" not in html_text and "<script>alert" not in html_text
    assert "&lt;img src=x onerror=alert(1)&gt;" in html_text
    assert "chance (apex-frame.size=&lt;img src=x" in html_text

    cells = [c for row in csv.reader(io.StringIO(render(rows, "csv"))) for c in row]
    assert "'=HYPERLINK(\"x\")" in cells and not any(c.startswith(("=", "+", "@")) for c in cells)
    assert not any(c.startswith("-") and not c.replace("-", "").replace(".", "").isdigit()
                   for c in cells)

    latex = render(rows, "latex")
    assert "\\input" not in latex.replace("\\textbackslash{}input", "")
    assert "\\textless{}img src=x onerror=alert(1)\\textgreater{}" in latex
    assert "chance (apex-frame.size=\\textless{}img" in latex
    assert "\\$\\_\\&\\#\\%\\textasciitilde{}\\textasciicircum{}\\{\\}" in latex

    parsed = json.loads(render(rows, "json"))
    assert HOSTILE in {r["protocol"] for r in parsed} and HOSTILE in {r["method"] for r in parsed}


def test_latex_is_booktabs_with_best_in_bold_intervals_by_option_and_a_caption(
        store: Store, tmp_path: Path) -> None:
    rows = leaderboard_rows(store, "synthetic-loso")
    latex = render(rows, "latex")
    assert "\\begin{table}" in latex and "\\midrule" in latex and "\\bottomrule" in latex
    assert "\\caption{Protocol \\texttt{synthetic-loso}: UF1 and UAR pooled over all folds" in latex
    assert "subject-level (cluster) bootstrap, B=2000, given as [low, high]" in latex
    solo = next(ln for ln in latex.splitlines() if ln.startswith("solo &"))
    toy = next(ln for ln in latex.splitlines() if ln.startswith("toy &"))
    assert "\\textbf{1.0000} [1.0000, 1.0000]" in solo and "\\textbf" not in toy
    assert f"0.8278 [0.7000, {5 / 6:.4f}]" in toy
    pm = render(rows, "latex", interval="pm")
    assert f"0.8278 $\\pm$ {(5 / 6 - 0.7) / 2:.4f}" in pm and "$\\pm$ half its width" in pm
    assert f"[{(5 / 6 - 0.7) / 2:.4f}" not in pm


def test_latex_compiles(store: Store, tmp_path: Path) -> None:
    import shutil
    import subprocess

    if not shutil.which("pdflatex"):
        pytest.skip("pdflatex is not installed (apt-get install texlive-latex-recommended)")
    _add_run(store, HOSTILE, 0, SEED0, protocol="synthetic-loso")
    body = render(leaderboard_rows(store), "latex", interval="pm") + \
        render(leaderboard_rows(store), "latex")
    doc = tmp_path / "t.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n"
                   "\\usepackage[margin=1cm,landscape]{geometry}\n\\begin{document}\n" + body
                   + "\\end{document}\n")
    res = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:]
    assert (tmp_path / "t.pdf").stat().st_size > 1000


def test_leaderboard_of_a_run_under_a_protocol_file(tmp_path: Path, tiny, cli) -> None:
    path = tmp_path / "custom.toml"
    path.write_text('name = "my-loso"\nkind = "loso"\nclasses = ["negative", "positive", '
                    '"surprise"]\n[[datasets]]\nname = "synthetic"\n')
    store = tmp_path / "s.sqlite"
    merbench.run(protocol=str(path), method="chance", store=str(store), dataset_params=tiny)
    res = cli("leaderboard", "--store", store, "--format", "csv")
    assert res.code == 0, res.err
    assert "my-loso,chance,reproduced,1" in res.out
    res = cli("leaderboard", "--store", tmp_path / "typo.sqlite")
    assert res.code != 0 and "does not exist" in res.err
