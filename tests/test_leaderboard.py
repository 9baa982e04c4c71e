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
             protocol: str = "synthetic-loso", status: str = "finished") -> str:
    run_id = store.create_run(key=f"{method}-{seed}-{params}", protocol=protocol, method=method,
                              params=params or {"model.C": 1}, seed=seed, versions={},
                              git_commit=None, device="cpu", host="h",
                              info={"classes": CLASSES, "protocol_name": protocol,
                                    "trained": True})
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
    assert table[0] == ["protocol", "method", "source", "seeds", "UF1", "UAR", "accuracy"]
    assert table[1] == ["synthetic-loso", "solo", "reproduced", "1", "1.0000", "1.0000", "1.0000"]
    assert table[2][:4] == ["synthetic-loso", "toy", "reproduced", "2"]
    latex = render(rows, "latex")
    assert "\\toprule" in latex and "toy" in latex and "% synthetic-loso" in latex
    assert "<h3>synthetic-loso</h3>" in render(rows, "html")
    parsed = json.loads(render(rows, "json"))
    assert [r["method"] for r in parsed] == ["solo", "toy"]
    with pytest.raises(ConfigError, match="unknown format 'pdf'"):
        render(rows, "pdf")


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
    assert header.endswith("casme2 UF1,casme2 UAR,smic UF1,smic UAR")


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
