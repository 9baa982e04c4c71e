"""`merbench compare` (paired tests on the same samples) and `merbench sweep` (one-parameter
ablations stored as runs, with a figure and a table)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import merbench
from merbench.errors import ConfigError, DataError
from merbench.leaderboard import compare
from merbench.store import Store
from merbench.sweep import parse_sweep, split_values, sweep

from .test_site import _run

TINY_ARGS = ["--data-param", "synthetic.subjects=4", "--data-param", "synthetic.clips_per_class=2",
             "--data-param", "synthetic.size=32", "--data-param", "synthetic.frames=20"]


@pytest.fixture()
def runs(tmp_path: Path) -> tuple[Store, dict[str, str]]:
    st = Store(tmp_path / "c.sqlite")
    ids = {"fair": _run(st, "fair", 0, 3), "twin": _run(st, "twin", 0, 3),
           "good": _run(st, "good", 0, 0), "weak": _run(st, "weak", 0, 5)}
    return st, ids


def test_compare_identical_runs_gives_p_1(runs, cli) -> None:
    st, ids = runs
    out = compare(st, "megc2019-composite", "fair", ids["twin"], n_boot=500)
    assert out["bootstrap"]["UF1"]["p"] == 1.0 and out["bootstrap"]["UAR"]["p"] == 1.0
    assert out["bootstrap"]["UF1"]["delta"] == 0.0 and out["samples"] == 36
    assert out["mcnemar"] == {"a_only": 0, "b_only": 0, "p_exact": 1.0, "p_mid": 1.0}
    res = cli("compare", "-p", "megc2019-composite", "fair", "twin", "--store", st.path)
    assert res.code == 0, res.err
    assert "ΔUF1 (A − B) = +0.0000" in res.out and "p = 1.0000" in res.out
    assert "McNemar (exact binomial): A right & B wrong 0, A wrong & B right 0, p = 1" in res.out


def test_compare_a_run_with_a_much_worse_one_gives_a_small_p(runs, cli) -> None:
    st, ids = runs
    res = cli("compare", "-p", "megc2019-composite", ids["good"], "weak", "--store", st.path,
              "--json", "--bootstrap", "999")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    # good is right on all 36 clips, weak on 6: the 6 subjects agree, p = 2/(999+1)
    assert out["bootstrap"]["UF1"]["p"] == pytest.approx(2 / 1000)
    assert out["bootstrap"]["UAR"]["delta"] == pytest.approx(1 - 1 / 6)
    assert out["mcnemar"]["a_only"] == 30 and out["mcnemar"]["b_only"] == 0
    assert out["mcnemar"]["p_exact"] == pytest.approx(2 / 2 ** 30)


def test_compare_against_chance_on_a_real_run(tmp_path: Path, tiny) -> None:
    store = tmp_path / "r.sqlite"
    for method in ("diff-logreg", "chance"):
        merbench.run(protocol="synthetic-loso", method=method, dataset_params=tiny, store=store)
    out = compare(Store(store), "synthetic-loso", "diff-logreg", "chance")
    assert out["bootstrap"]["UF1"]["delta"] > 0.3
    assert out["bootstrap"]["UF1"]["p"] < 0.05 and out["mcnemar"]["p_exact"] < 0.05


def test_compare_refuses_runs_on_different_samples(runs, cli) -> None:
    st, ids = runs
    short = st.create_run(key="short", protocol="megc2019-composite", method="short",
                          params={}, seed=0, versions={}, git_commit=None, device=None,
                          host=None, info={"classes": ["negative", "positive", "surprise"],
                                           "protocol_name": "megc2019-composite"})
    st.add_fold(short, 0, "smic/s01", 0, "t", [("smic/s01/c1", "positive", "positive", {})])
    st.set_status(short, "finished")
    with pytest.raises(DataError, match=rf"run {ids['fair']} has 36 samples, run {short} 1; "
                                        rf"only in run {ids['fair']}: casme2/sub01/c0"):
        compare(st, "megc2019-composite", "fair", "short")
    res = cli("compare", "-p", "megc2019-composite", "fair", "short", "--store", st.path)
    assert res.code == 2 and "differ in their samples" in res.err and "Traceback" not in res.err
    res = cli("compare", "-p", "megc2019-composite", "fair", "nobody", "--store", st.path)
    assert res.code == 2 and "no finished run or method 'nobody'" in res.err
    assert "known methods: fair, good, short, twin, weak" in res.err


def test_sweep_values_are_parsed_with_brackets_and_one_swept_key() -> None:
    assert split_values("1,3,5") == ["1", "3", "5"]
    assert split_values("(1,1,4),(3,3,3)") == ["(1,1,4)", "(3,3,3)"]
    assert split_values("'a,b',c") == ["'a,b'", "c"]
    assert parse_sweep({"ars.n_key": "1,3", "model.epochs": "5"}) == (
        "ars.n_key", ["1", "3"], {"model.epochs": "5"})
    with pytest.raises(ConfigError, match="exactly one parameter, got 2"):
        parse_sweep({"a.x": "1,2", "a.y": "3,4"})
    with pytest.raises(ConfigError, match="exactly one parameter, got 0"):
        parse_sweep({"a.x": "1"})
    with pytest.raises(ConfigError, match="repeated"):
        parse_sweep({"a.x": "1,1"})
    with pytest.raises(ConfigError, match="empty value"):
        split_values("1,,2")


def test_sweep_stores_runs_and_writes_its_figure_and_table(tmp_path: Path, tiny, cli) -> None:
    store = tmp_path / "s.sqlite"
    out = tmp_path / "sweeps"
    result = sweep("synthetic-loso", "apex-logreg", "model.C", ["0.01", "1"], output=out,
                   store=store, dataset_params=tiny, n_boot=300)
    points = result["points"]
    assert [p["value"] for p in points] == ["0.01", "1"]
    recs = {r.id: r for r in Store(store).runs()}
    assert [recs[p["runs"][0]].params["model.C"] for p in points] == [0.01, 1]
    for p in points:
        assert p["CI"]["UF1"][0] <= p["UF1"] <= p["CI"]["UF1"][1]
    names = sorted(p.name for p in result["paths"])
    assert names == [f"sweep_apex-logreg_model.C.{e}" for e in ("csv", "json", "md", "png",
                                                                 "svg")]
    assert (out / "sweep_apex-logreg_model.C.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (out / "sweep_apex-logreg_model.C.svg").read_text()
    assert "<svg" in svg and "model.C" in svg
    md = (out / "sweep_apex-logreg_model.C.md").read_text()
    assert f"| 0.01      | 1       | {points[0]['UF1']:.4f} |" in md

    res = cli("sweep", "-p", "synthetic-loso", "-m", "apex-logreg", "--set", "model.C=0.01,1",
              *TINY_ARGS, "--store", store, "-o", out, "--bootstrap", "300")
    assert res.code == 0, res.err
    assert len(Store(store).runs()) == 2  # the stored runs are reused, not run again
    assert f"model.C=0.01: UF1 {points[0]['UF1']:.4f}" in res.out
    assert f"wrote {out / 'sweep_apex-logreg_model.C.svg'}" in res.out
    bad = cli("sweep", "-p", "synthetic-loso", "-m", "apex-logreg", "--set", "model.C=1")
    assert bad.code == 2 and "a sweep varies exactly one parameter" in bad.err
