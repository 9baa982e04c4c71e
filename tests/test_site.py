"""The static leaderboard site: its files, run pages, downloads and reproduce commands, hostile
names, and a real headless Chromium (Debian's chromium + chromium-driver via Selenium) loading it
from file://, sorting a table and opening every run page."""
from __future__ import annotations

import csv
import io
import json
import re
import shlex
from pathlib import Path

import pytest

import merbench
from merbench.leaderboard import leaderboard_rows
from merbench.metrics import score
from merbench.site import protocol_file, write_site
from merbench.store import Store

from .browser import chromium, console_errors, find_chromium, screenshot

CLASSES = ["negative", "positive", "surprise"]
SUBJECTS = ["smic/s01", "smic/s02", "casme2/sub01", "casme2/sub02", "samm/006", "samm/007"]
HOSTILE = '<img src=x onerror=alert(1)>"\'&'


def _run(st: Store, method: str, seed: int, wrong: int, protocol: str = "megc2019-composite",
         **info) -> str:
    """A hand-made run: 6 subjects × 6 clips; the first ``wrong`` clips of each subject are
    predicted as the next class."""
    run_id = st.create_run(key=f"{method}-{seed}", protocol=protocol, method=method,
                           params={"model.C": 1.0, "model.note": HOSTILE}, seed=seed,
                           versions={"merbench": "0.1.0", "plugins": {"baseline": "x"}},
                           git_commit="abc123", device="cpu (test)", host="host",
                           info={"classes": CLASSES, "protocol_name": protocol, "trained": True,
                                 "n_folds": len(SUBJECTS), "n_samples": 36, **info})
    for k, subject in enumerate(SUBJECTS):
        preds = []
        for c in range(6):
            true = CLASSES[c % 3]
            pred = CLASSES[(c + 1) % 3] if c < wrong else true
            preds.append((f"{subject}/c{c}", true, pred, {pred: 1.0}))
        st.add_fold(run_id, k, subject, k, "t", preds, {"seconds": 1.5 + k, "trained": True})
    st.set_status(run_id, "finished")
    return run_id


@pytest.fixture()
def board(tmp_path: Path) -> Store:
    st = Store(tmp_path / "results.sqlite")
    _run(st, "good", 0, 1)
    _run(st, "good", 1, 0)
    _run(st, "fair", 0, 3)
    _run(st, HOSTILE, 0, 4, fallbacks={"face-crop: centre crop fallback": 36})
    return st


def test_site_files_pages_and_json(board: Store, tmp_path: Path) -> None:
    site = tmp_path / "site"
    pages = write_site(board, site)
    assert pages[0] == site / "index.html"
    assert (site / protocol_file("megc2019-composite")) in pages
    rows = leaderboard_rows(board, "megc2019-composite")
    data = json.loads((site / "leaderboard.json").read_text())
    assert [r["method"] for r in data["rows"]] == [r["method"] for r in rows]
    assert data["bootstrap"] == {"n_boot": 2000, "seed": 0, "level": 0.95, "unit": "subject"}
    run_ids = [rid for r in rows for rid in r["runs"]]
    assert sorted(data["runs"]) == sorted(run_ids) and len(run_ids) == 4
    for rid in run_ids:
        folder = site / "run" / rid
        assert {p.name for p in folder.iterdir()} == {"index.html", "confusion.svg",
                                                      "predictions.csv", "run.json"}
        assert (folder / "confusion.svg").read_text().lstrip().startswith("<?xml")
    index = (site / "index.html").read_text()
    assert 'href="protocol/megc2019-composite.html"' in index and "HTNet" in index

    page = (site / protocol_file("megc2019-composite")).read_text()
    assert '<tr class="reported">' in page and "Liong, Gan, See, Khor, Huang" in page
    assert page.count('class="run-link"') == 5  # 3 rows (one with 2 seed links) + seed links
    assert "centre crop fallback (36 samples)" in page and "best reproduced" in page
    for text in [index, page] + [(site / "run" / r / "index.html").read_text() for r in run_ids]:
        assert "Content-Security-Policy" in text
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # nothing remote
        assert "<img src=x" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_run_page_facts_and_predictions_download(board: Store, tmp_path: Path) -> None:
    site = tmp_path / "site"
    write_site(board, site, "megc2019-composite", include_published=False)
    (rid,) = [r["runs"][0] for r in leaderboard_rows(board, include_published=False)
              if r["method"] == "fair"]
    page = (site / "run" / rid / "index.html").read_text()
    for needle in ("abc123", "cpu (test)", "host", "model.C", "seed 0", "smic/s01",
                   "<td>2.5</td>", "merbench run --protocol megc2019-composite --method fair",
                   "<th>precision</th>", 'src="confusion.svg"', 'href="predictions.csv"'):
        assert needle in page, needle
    # three of six clips wrong in every subject: pooled UF1 = UAR = accuracy = 1/2
    assert "<td>0.5000 [0.5000, 0.5000]</td>" in page
    rows = list(csv.DictReader(io.StringIO((site / "run" / rid / "predictions.csv").read_text())))
    assert len(rows) == 36 and set(rows[0]) == {"id", "fold", "gt", "pred", "p_negative",
                                                "p_positive", "p_surprise"}
    assert score([r["gt"] for r in rows], [r["pred"] for r in rows], CLASSES).uf1 == 0.5
    summary = json.loads((site / "run" / rid / "run.json").read_text())
    assert summary["report"]["pooled"]["UF1"] == 0.5 and summary["git_commit"] == "abc123"


def test_reproduce_command_and_predictions_csv_work(tmp_path: Path, tiny, cli) -> None:
    store = tmp_path / "r.sqlite"
    result = merbench.run(protocol="synthetic-loso", method="apex-logreg", seed=3,
                          overrides={"model.C": 0.5}, dataset_params=tiny, store=store)
    write_site(Store(store), tmp_path / "site", "synthetic-loso")
    folder = tmp_path / "site" / "run" / result.run_id
    page = (folder / "index.html").read_text()
    command = re.search(r"<pre><code>(.*?)</code></pre>", page, re.S).group(1)
    args = shlex.split(command.replace("&#x27;", "'").replace("&quot;", '"'))
    assert args[:2] == ["merbench", "run"] and "model.C=0.5" in args and "3" in args
    again = cli(*args[1:], "--store", store)
    assert again.code == 0, again.err
    assert f"run {result.run_id})" in again.out  # the same stored run, not a new one
    scored = cli("score", folder / "predictions.csv", "-p", "synthetic-loso", "--json",
                 *[a for k, v in tiny["synthetic"].items()
                   for a in ("--data-param", f"synthetic.{k}={v}")])
    assert scored.code == 0, scored.err
    assert json.loads(scored.out)["pooled"]["UF1"] == pytest.approx(result.uf1)


def test_site_and_leaderboard_site_commands(board: Store, tmp_path: Path, cli) -> None:
    res = cli("site", "-o", tmp_path / "a", "--store", board.path, "--bootstrap", "200")
    assert res.code == 0, res.err
    assert res.out.startswith(f"wrote {tmp_path / 'a' / 'index.html'}")
    data = json.loads((tmp_path / "a" / "leaderboard.json").read_text())
    assert data["bootstrap"]["n_boot"] == 200
    res = cli("leaderboard", "--format", "site", "-o", tmp_path / "b", "--store", board.path,
              "-p", "megc2019-composite", "--interval", "pm")
    assert res.code == 0 and (tmp_path / "b" / "index.html").is_file()
    assert "± 0.0" in (tmp_path / "b" / protocol_file("megc2019-composite")).read_text()
    bad = cli("leaderboard", "--format", "site", "--store", board.path)
    assert bad.code != 0 and "pass -o DIR" in bad.err


def _texts(driver, css: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


def test_site_in_a_real_headless_chromium(board: Store, tmp_path: Path) -> None:
    found = find_chromium()
    if isinstance(found, str):
        pytest.skip(found)
    from selenium.webdriver.common.by import By

    site = tmp_path / "site"
    write_site(board, site)
    rows = leaderboard_rows(board, "megc2019-composite")
    expected = [r["method"] for r in rows]
    uf1 = {r["method"]: (r["UF1"]["mean"] if isinstance(r["UF1"], dict) else r["UF1"])
           for r in rows}
    with chromium(tmp_path / "profile") as driver:
        driver.get((site / "index.html").as_uri())
        assert console_errors(driver) == []
        driver.find_element(By.CSS_SELECTOR, "a.protocol-link").click()
        assert driver.current_url.endswith(protocol_file("megc2019-composite"))
        methods = _texts(driver, "table.board tbody td:nth-child(2)")
        assert methods == expected and "HTNet" in methods and HOSTILE in methods
        assert len(_texts(driver, "table.board tbody tr.reported")) == 3

        uf1_head = next(th for th in driver.find_elements(By.CSS_SELECTOR, "table.board th")
                        if th.text.strip() == "UF1")
        uf1_head.click()
        ascending = _texts(driver, "table.board tbody td:nth-child(2)")
        assert ascending == sorted(expected, key=lambda m: uf1[m]) and ascending != expected
        assert uf1_head.get_attribute("aria-sort") == "ascending"
        uf1_head.click()
        assert _texts(driver, "table.board tbody td:nth-child(2)") == \
            sorted(expected, key=lambda m: -uf1[m])
        screenshot(driver, driver.current_url, tmp_path / "protocol.png")
        assert (tmp_path / "protocol.png").stat().st_size > 10_000
        assert console_errors(driver) == []

        links = {a.get_attribute("href") for a in
                 driver.find_elements(By.CSS_SELECTOR, "table.board a.run-link")}
        assert len(links) == 4
        for href in sorted(links):
            driver.get(href)
            img = driver.find_element(By.ID, "confusion")
            driver.execute_script("return arguments[0].decode ? arguments[0].decode() : true",
                                  img)
            assert driver.execute_script("return arguments[0].complete && "
                                         "arguments[0].naturalWidth", img) > 0, href
            assert len(driver.find_elements(By.TAG_NAME, "img")) == 1  # nothing injected
            assert driver.find_element(By.TAG_NAME, "h1").text in uf1
            assert console_errors(driver) == [], href
        screenshot(driver, driver.current_url, tmp_path / "run.png")
        assert (tmp_path / "run.png").is_file()


def test_demo_writes_the_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny) -> None:
    import functools

    from merbench import demo, runner

    # the output part, quickly: one method on the tiny set
    monkeypatch.setattr(demo, "demo_methods", lambda: [("chance", {})])
    monkeypatch.setattr(runner, "run", functools.partial(runner.run, dataset_params=tiny))
    lines: list[str] = []
    text = demo.run_demo(store=tmp_path / "demo.sqlite", output=tmp_path / "out", workers=1,
                         echo=lines.append)
    assert "| chance " in text
    index = tmp_path / "out" / "site" / "index.html"
    assert f"wrote {index} (the leaderboard site; open it in a browser)" in lines
    assert (tmp_path / "out" / "site" / protocol_file("synthetic-loso")).is_file()
    demo.run_demo(store=tmp_path / "demo.sqlite", workers=1, echo=lines.append)  # beside the store
    assert (tmp_path / "site" / "index.html").is_file()
