"""Shared test set-up: no test may write to the user's cache or ./merbench-results.

The whole session runs with MERBENCH_CACHE pointing into a temporary folder; tests that rely
on the CLI's default paths ask for ``in_tmp`` (chdir into their tmp_path). ``cli`` runs the real
``merbench`` entry point (:func:`merbench.cli.main`) in-process and returns its exit code,
stdout and stderr.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# licence-restricted annotation files and published logs: ../shared/realdata next to the
# checkout, or wherever MERBENCH_REALDATA points (README, Databases)
REALDATA = Path(os.environ.get("MERBENCH_REALDATA")
                or Path(__file__).resolve().parents[2] / "shared" / "realdata")

# The smallest synthetic set that still gives every LOSO fold every class in training
# (frames >= 17 keeps every synthetic apex inside the clip; see test_synthetic.py).
TINY = {"subjects": 4, "clips_per_class": 2, "size": 32, "frames": 20}


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("merbench-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("MERBENCH_CACHE", str(cache))
    try:
        yield cache
    finally:
        mp.undo()


@pytest.fixture()
def one_torch_thread() -> Iterator[None]:
    """Deep-model tests run on one torch thread: on a shared 2-core machine more threads make
    tiny models slower, not faster."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture()
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path, so CLI defaults (merbench-results/...) land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture()
def tiny() -> dict[str, dict[str, int]]:
    """dataset_params for a tiny synthetic set: 4 subjects x 3 classes x 2 clips = 24 samples."""
    return {"synthetic": dict(TINY)}


@pytest.fixture()
def realdata() -> Path:
    if not (REALDATA / "logs" / "expected_metrics.json").is_file():
        pytest.skip(f"licence-restricted real data not present at {REALDATA}")
    return REALDATA


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture()
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """``cli("list", "method")`` runs ``merbench list method`` through the real entry point."""
    from merbench.cli import main

    def invoke(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return invoke

