"""A real headless Chromium for the site tests (Debian's `chromium` + `chromium-driver`, driven
by Selenium; nothing is downloaded), and the README screenshot made by the same code.

Regenerate docs/leaderboard.png (runs a few fast methods on the synthetic set unless --store
points at a store that has synthetic-loso runs, e.g. the demo's)::

    .venv/bin/python tests/browser.py docs/leaderboard.png [--store merbench-results/demo.sqlite]
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--force-device-scale-factor=1")


def find_chromium() -> tuple[str, str] | str:
    """(browser, driver) paths, or the reason why a browser test cannot run here."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    browser = os.environ.get("MERBENCH_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
    driver = os.environ.get("MERBENCH_CHROMEDRIVER") or shutil.which("chromedriver")
    if not browser or not driver:
        return ("Debian's chromium and chromium-driver are not installed "
                "(apt-get install chromium chromium-driver; .ci/run does it)")
    return browser, driver


@contextlib.contextmanager
def chromium(profile_dir: str | Path, width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A headless Chromium WebDriver with a fresh profile and browser console logging."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_chromium()
    if isinstance(found, str):
        raise RuntimeError(found)
    browser, driver_path = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.add_argument(f"--user-data-dir={Path(profile_dir).resolve()}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[str]:
    """Severe browser console entries since the last call (JS errors, CSP violations, 404s)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def screenshot(driver: Any, url: str, path: str | Path, width: int = 1200,
               height: int | None = None) -> Path:
    """Load ``url`` and save a PNG of the page (``height=None``: the whole page)."""
    driver.set_window_size(width, 800)
    driver.get(url)
    if height is None:
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(width, min(max(height, 200), 4000))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return Path(path)


def _readme_store(store: str | None, tmp: Path) -> Any:
    """A store with synthetic-loso runs: the one given, or a few fast methods run now."""
    import merbench
    from merbench.store import Store

    if store:
        return Store(store)
    st = Store(tmp / "results.sqlite")
    for method, seeds, overrides in (("chance", 1, {}), ("apex-logreg", 1, {}),
                                     ("diff-logreg", 3, {}), ("lbptop-svm", 1, {})):
        merbench.run(protocol="synthetic-loso", method=method, seeds=seeds, overrides=overrides,
                     store=st, dataset_params={"synthetic": {"subjects": 6}})
    return st


def readme_screenshot(out: str | Path, store: str | None = None) -> Path:
    """Write the site of ``store`` and screenshot its synthetic-loso page to ``out``."""
    from merbench.site import protocol_file, write_site

    with tempfile.TemporaryDirectory(prefix="merbench-shot-") as tmp:
        st = _readme_store(store, Path(tmp))
        site = Path(tmp) / "site"
        write_site(st, site, "synthetic-loso", include_published=False)
        with chromium(Path(tmp) / "profile") as driver:
            screenshot(driver, (site / protocol_file("synthetic-loso")).resolve().as_uri(),
                       out, width=1280)
            errors = console_errors(driver)
            if errors:
                raise RuntimeError(f"browser console errors: {errors}")
    return Path(out)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Regenerate the README's site screenshot.")
    parser.add_argument("out", nargs="?", default="docs/leaderboard.png")
    parser.add_argument("--store", default=None, help="a store with synthetic-loso runs")
    args = parser.parse_args()
    print(f"wrote {readme_screenshot(args.out, args.store)}", file=sys.stderr)
