"""Smoke runs (--limit-folds, --subjects), `merbench runs`, and messages that fit the context:
an empty leaderboard, the demo's store, --seeds summaries, precomputed-input methods, missing
data roots."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import merbench
from merbench.errors import ConfigError, DataError
from merbench.store import Store

TINY_ARGS = ["--data-param", "synthetic.subjects=4", "--data-param", "synthetic.size=32",
             "--data-param", "synthetic.frames=20", "--data-param", "synthetic.clips_per_class=2"]


def test_limit_folds_runs_the_first_folds_as_a_partial_run(tmp_path: Path, tiny) -> None:
    common = dict(protocol="synthetic-loso", method="diff-logreg", dataset_params=tiny,
                  store=str(tmp_path / "r.sqlite"))
    smoke = merbench.run(limit_folds=2, **common)
    assert sorted({p.fold for p in smoke.predictions}) == ["synthetic/s01", "synthetic/s02"]
    assert smoke.info["partial"] is True and smoke.info["limits"] == {"limit_folds": 2}
    assert (smoke.info["n_folds"], smoke.info["n_folds_protocol"]) == (2, 4)
    full = merbench.run(**common)  # a later full run is another run, not the smoke run reused
    assert full.run_id != smoke.run_id and not full.reused
    assert "partial" not in full.info and len({p.fold for p in full.predictions}) == 4
    # the smoke run's folds are the full run's first folds, computed the same way
    first = {p.sample_id: p.pred for p in full.predictions if p.fold in ("synthetic/s01",
                                                                         "synthetic/s02")}
    assert first == {p.sample_id: p.pred for p in smoke.predictions}
    assert merbench.run(limit_folds=2, **common).run_id == smoke.run_id  # reused


def test_subjects_pick_the_folds_testing_on_them(tmp_path: Path, tiny) -> None:
    result = merbench.run(protocol="synthetic-loso", method="diff-logreg", dataset_params=tiny,
                          store=str(tmp_path / "r.sqlite"), subjects=["s03", "synthetic/s01"])
    assert sorted({p.fold for p in result.predictions}) == ["synthetic/s01", "synthetic/s03"]
    assert result.info["limits"] == {"subjects": ["s03", "synthetic/s01"]}
    with pytest.raises(ConfigError, match=r"--subjects: no subject 's09'.*synthetic/s01"):
        merbench.run(protocol="synthetic-loso", method="diff-logreg", dataset_params=tiny,
                     store=str(tmp_path / "r.sqlite"), subjects=["s09"])
    with pytest.raises(ConfigError, match="--limit-folds must be a positive integer"):
        merbench.run(protocol="synthetic-loso", method="diff-logreg", dataset_params=tiny,
                     store=str(tmp_path / "r.sqlite"), limit_folds=0)


def test_cli_smoke_run_says_it_is_partial_and_runs_lists_it(cli, in_tmp: Path) -> None:
    out = cli("run", "-p", "synthetic-loso", "-m", "chance", "-q", "--limit-folds", "1",
              *TINY_ARGS)
    assert out.code == 0, out.err
    assert "partial run: 1 of 4 folds (limit-folds 1); a smoke test, not a result" in out.out
    full = cli("run", "-p", "synthetic-loso", "-m", "chance", "-q", "--subjects", "s02,s04",
               *TINY_ARGS)
    assert "partial run: 2 of 4 folds (subjects s02,s04)" in full.out
    listing = cli("runs")
    assert listing.code == 0
    rows = [ln.split() for ln in listing.out.splitlines()[2:]]
    assert [(r[1], r[3], r[5]) for r in rows] == [("finished", "chance", "1/1"),
                                                 ("finished", "chance", "2/2")]
    assert "partial: 1 of 4 folds" in listing.out and "partial: 2 of 4 folds" in listing.out


def test_runs_show_gives_parameters_facts_and_folds(cli, in_tmp: Path) -> None:
    assert cli("run", "-p", "synthetic-loso", "-m", "diff-logreg", "-q", *TINY_ARGS).code == 0
    st = Store(in_tmp / "merbench-results" / "results.sqlite")
    rec = st.runs()[0]
    result = merbench.run(protocol="synthetic-loso", method="diff-logreg",
                          dataset_params={"synthetic": {"subjects": 4, "size": 32, "frames": 20,
                                                        "clips_per_class": 2}}, store=st)
    out = cli("runs", "show", rec.id[:6])
    assert out.code == 0, out.err
    assert out.out.startswith(f"run {rec.id}: diff-logreg on synthetic-loso, seed 0, finished")
    assert f"code {rec.info['code']}" in out.out
    assert "  apex-diff.size = 32" in out.out and "  model.C = 0.1" in out.out
    table = [ln.split() for ln in out.out.splitlines() if ln[:1].isdigit()]
    assert [r[1] for r in table] == [f"synthetic/s0{k}" for k in range(1, 5)]
    per_fold = result.report["per_fold"]
    assert [r[-2] for r in table] == [f"{per_fold[r[1]].uf1:.4f}" for r in table]
    assert [r[2:4] for r in table] == [["18", "6"]] * 4
    assert cli("runs", "show").out == out.out  # the latest run by default
    missing = cli("runs", "--store", "nope.sqlite")
    assert missing.code == 2 and "results store nope.sqlite does not exist" in missing.err


def test_runs_show_lists_skipped_samples_with_reasons(cli, in_tmp: Path) -> None:
    st = Store(in_tmp / "s.sqlite")
    run_id = st.create_run(key="k", protocol="p", method="m", params={"model.C": 1}, seed=0,
                           versions={"merbench": "0.1.0"}, git_commit=None, device="cpu",
                           host="h", info={"n_folds": 2, "classes": ["a", "b"]})
    st.set_status(run_id, "interrupted", {"skipped": {"d/s1/c1": "unreadable frame 3"},
                                          "fallbacks": {"centre crop": 2}})
    out = cli("runs", "show", run_id, "--store", str(in_tmp / "s.sqlite"))
    assert out.code == 0, out.err
    assert "interrupted (1 samples skipped; fallback: centre crop (2 samples))" in \
        out.out.splitlines()[0]
    assert "  d/s1/c1: unreadable frame 3" in out.out and "no fold stored yet" in out.out


def test_seeds_end_with_the_mean_and_std_over_seeds(cli, in_tmp: Path) -> None:
    out = cli("run", "-p", "synthetic-loso", "-m", "chance", "-q", "--seeds", "3", *TINY_ARGS)
    assert out.code == 0, out.err
    st = Store(in_tmp / "merbench-results" / "results.sqlite")
    from merbench.runner import stored_report

    uf1 = np.array([stored_report(st, r)[0]["pooled"].uf1 for r in st.runs()])
    uar = np.array([stored_report(st, r)[0]["pooled"].uar for r in st.runs()])
    last = out.out.strip().splitlines()[-1]
    assert last.startswith("3 seeds (0, 1, 2): ")
    assert f"UF1 {uf1.mean():.4f} ± {uf1.std(ddof=1):.4f}" in last
    assert f"UAR {uar.mean():.4f} ± {uar.std(ddof=1):.4f}" in last


def test_empty_leaderboard_says_so(cli, in_tmp: Path) -> None:
    out = cli("leaderboard", "-p", "synthetic-loso")
    assert out.code == 0
    assert out.out == "no finished runs of protocol synthetic-loso in " \
                      "merbench-results/results.sqlite\n"
    reported = cli("leaderboard", "-p", "megc2019-composite")
    assert "reported" in reported.out
    assert "no finished runs of protocol megc2019-composite" in reported.err


def test_demo_prints_its_leaderboard_command(cli, in_tmp: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("merbench.demo.run_demo", lambda **kw: "TABLE")
    out = cli("demo")
    assert out.out.splitlines()[0] == "TABLE"
    assert "  merbench leaderboard -p synthetic-loso --store merbench-results/demo.sqlite" in \
        out.out.splitlines()


def test_precomputed_input_method_without_inputs_asks_for_inputs(cli, in_tmp: Path) -> None:
    out = cli("run", "-p", "megc2019-composite", "-m", "ststnet")
    assert out.code == 2
    assert "method 'ststnet' has no preprocessing steps: it reads precomputed inputs" in out.err
    assert "pass --inputs INDEX.csv" in out.err and "--data-root" not in out.err


def test_missing_data_roots_are_named_together(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        merbench.run(protocol="megc2019-composite", method="diff-logreg",
                     data_roots={"casme2": str(tmp_path)}, store=str(tmp_path / "r.sqlite"))
    text = str(info.value)
    assert "needs datasets 'smic', 'samm' but no data root was given" in text
    assert "--data-root smic=/path/to/smic --data-root samm=/path/to/samm" in text


def test_a_limit_that_keeps_every_fold_is_the_full_run(tmp_path: Path, tiny) -> None:
    common = dict(protocol="synthetic-loso", method="chance", dataset_params=tiny,
                  store=str(tmp_path / "r.sqlite"))
    full = merbench.run(**common)
    assert merbench.run(limit_folds=10, **common).run_id == full.run_id
    # the same folds spelled two ways are one smoke run
    a = merbench.run(subjects=["s02"], **common)
    assert merbench.run(subjects=["synthetic/s02"], **common).run_id == a.run_id


def test_smoke_runs_stay_off_the_leaderboard(tmp_path: Path, tiny) -> None:
    from merbench.leaderboard import leaderboard_rows

    store = Store(tmp_path / "r.sqlite")
    common = dict(protocol="synthetic-loso", dataset_params=tiny, store=store)
    merbench.run(method="chance", limit_folds=1, **common)
    assert leaderboard_rows(store, "synthetic-loso", include_published=False) == []
    full = merbench.run(method="chance", **common)
    rows = leaderboard_rows(store, "synthetic-loso", include_published=False)
    assert [r["runs"] for r in rows] == [[full.run_id]]
